"""A random topology from the builder survives capture and replay unchanged."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_rigcheck.capture import capture
from pytest_rigcheck.source import Source
from pytest_rigcheck.testing import GPU_MODELS, RigBuilder
from pytest_rigcheck.tree import PcieTree


@st.composite
def rigs(draw: st.DrawFn) -> RigBuilder:
    b = RigBuilder("random", iommu=draw(st.sampled_from(["off", "identity", "DMA"])))
    host = b.host_bridge()
    bus = 1
    for port in range(draw(st.integers(1, 3))):
        rp = b.root_port(
            host,
            f"0000:00:{port + 1:02x}.1",
            cap=(draw(st.integers(3, 5)), draw(st.sampled_from([8, 16]))),
            acs_ctrl=draw(st.sampled_from([0, 0x1D])),
        )
        if draw(st.booleans()):
            n = draw(st.integers(1, 4))
            _, downs = b.switch(
                rp, f"0000:{bus:02x}:00.0", [f"0000:{bus + 1:02x}:{i:02x}.0" for i in range(n)]
            )
            for i, d in enumerate(downs):
                b.gpu(
                    d, f"0000:{bus + 2 + i:02x}:00.0", GPU_MODELS[draw(st.sampled_from(sorted(GPU_MODELS)))]
                )
            bus += 2 + n
        else:
            b.gpu(rp, f"0000:{bus:02x}:00.0", GPU_MODELS["rtx3090"], link=(draw(st.integers(1, 4)), 16))
            bus += 1
    return b


def _shape(tree: PcieTree) -> dict[str, tuple]:
    return {
        bdf: (
            f.vendor,
            f.device,
            f.class_code,
            f.parent,
            f.port_type,
            f.link_now,
            f.link_cap,
            f.config.acs.ctrl if f.config and f.config.acs else None,
            f.driver,
            f.iommu_group,
        )
        for bdf, f in tree.functions.items()
    }


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rigs())
def test_capture_replay_roundtrip(builder: RigBuilder) -> None:
    """Capturing a built tree (as if it were a live root) and replaying the capture reads the same tree."""
    with tempfile.TemporaryDirectory() as tmp:
        built = builder.write(Path(tmp) / "built")
        again = capture(Path(tmp) / "captured", root=built, name="again")
        assert _shape(PcieTree.read(Source(built))) == _shape(PcieTree.read(Source(again)))
