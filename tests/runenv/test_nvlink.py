"""Which pairs are NVLink peers, from what the figures and nvml.json recorded (never a PCIe class for them)."""

from __future__ import annotations

import json

from pytest_rigcheck.p2p.nvlink import nvlink_links, nvlink_text
from pytest_rigcheck.profile import Profile
from pytest_rigcheck.rig import Rig
from pytest_rigcheck.snapshot import open_snapshot

from ..conftest import SNAPSHOTS

A, B = "0000:00:06.0", "0000:00:07.0"


def h200() -> Rig:
    return Rig.replay(open_snapshot(SNAPSHOTS / "h200x2-nvlink"), Profile())


def test_h200_capture_is_nv18() -> None:
    """The capture's nvidia-smi topo -m shows NV18; p2p.json and nvml.json both say so."""
    data = json.loads((SNAPSHOTS / "h200x2-nvlink" / "p2p.json").read_text())
    assert nvlink_text(nvlink_links(h200(), data, A, B)) == "NVLink peers (NV18)"
    assert nvlink_links(h200(), None, A, B) == 18  # nvml.json alone


def test_remote_pci_info_counts_links() -> None:
    data = {"gpus": {A: {"nvlink": {"active": 12, "remotes": {B[-12:]: 12}}}, B: {"nvlink": {"active": 12}}}}
    assert nvlink_links(h200(), data, A, B) == 12


def test_links_to_nvswitches_fall_back_to_the_pair_status() -> None:
    sw = {"0000:80:00.0"[-12:]: 18}
    data = {
        "gpus": {A: {"nvlink": {"active": 18, "remotes": sw}}, B: {"nvlink": {"active": 18, "remotes": sw}}},
        "pairs": {f"{A}->{B}": {"nvml": {"nvlink": 0}}},
    }
    assert nvlink_text(nvlink_links(h200(), data, A, B)) == "NVLink peers (NV18)"


def test_not_peers() -> None:
    data = {"pairs": {f"{A}->{B}": {"nvml": {"nvlink": 5}}}}
    assert nvlink_links(h200(), data, A, B) == 0 and nvlink_text(0) is None
    pcie = Rig.replay(open_snapshot(SNAPSHOTS / "rtx3090x2-gen4"), Profile())
    assert nvlink_text(nvlink_links(pcie, None, "0000:21:00.0", "0000:4b:00.0")) is None


def test_topology_check_names_nvlink_peers() -> None:
    """test_topology_class on 2x H200: NVLink peers (NV18), not 'PHB: NCCL uses P2P only up to PXB'."""
    import tomllib

    from pytest_rigcheck.pcie_checks import topology
    from pytest_rigcheck.profile import parse_profile
    from pytest_rigcheck.targets import PairTarget

    rig = Rig.replay(
        open_snapshot(SNAPSHOTS / "h200x2-nvlink"),
        parse_profile(tomllib.loads('[topology]\nmax_class = "PIX"\n'), "rig.toml"),
    )
    v = topology(PairTarget(rig, rig.pcie.functions[A], rig.pcie.functions[B]))
    assert v.ok and "NVLink peers (NV18)" in v.summary and "PXB" not in v.summary
    assert v.properties["topology"] == "NV18"
