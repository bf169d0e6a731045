"""Benchmarks of the PCIe part (reported, not timed tests).

1. Plugin load: what pytest-rigcheck adds to a pytest run without --rig (median of N runs,
   `pytest` vs `pytest -p no:rigcheck` on one trivial test), and the plugin's own import time.
2. Replay: all shipped snapshots through the PCIe suites, then through every suite, in one pytest run each.
3. Analysis: a modelled 8-GPU rig with two switches and 300 PCI functions, read and checked.

    python tools/bench.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SNAPS = REPO / "fixtures" / "sysfs-snapshots"
# Installed packages run from cached bytecode; PYTHONDONTWRITEBYTECODE=1 would time the compiler instead.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
PCIE_SUITES = [
    "test_acs",
    "test_iommu",
    "test_pcie_link",
    "test_bifurcation",
    "test_topology",
    "test_gpu_count",
]


def _run(args: list[str], cwd: Path) -> float:
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pytest", *args], cwd=cwd, capture_output=True, check=False, env=ENV
    )
    return time.perf_counter() - t


def plugin_load(n: int = 30) -> None:
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "test_x.py").write_text("def test_x():\n    pass\n")
        base = ["-q", "-p", "no:cacheprovider"]
        with_, without = [], []
        for _ in range(n):
            without.append(_run([*base, "-p", "no:rigcheck"], Path(d)))
            with_.append(_run(base, Path(d)))
    delta = (statistics.median(with_) - statistics.median(without)) * 1000
    code = "import time; t=time.perf_counter(); import pytest_rigcheck.plugin; print((time.perf_counter()-t)*1000)"
    imports = [
        float(
            subprocess.run(
                [sys.executable, "-c", "import pytest; " + code],
                capture_output=True,
                text=True,
                check=True,
                env=ENV,
            ).stdout
        )
        for _ in range(n + 1)
    ][1:]  # first run writes .pyc
    print(
        f"plugin load: pytest run {statistics.median(with_) * 1000:.1f} ms with, {statistics.median(without) * 1000:.1f} ms "
        f"without (-p no:rigcheck): +{delta:.1f} ms median of {n}; import of pytest_rigcheck.plugin "
        f"{statistics.median(imports):.2f} ms"
    )


def replay_all() -> None:
    from pytest_rigcheck.plugin import suites_dir

    snaps = sorted(p for p in SNAPS.iterdir() if (p / "MANIFEST.toml").exists())
    base = [f"--rig-snapshot={s}" for s in snaps] + ["-q", "-p", "no:cacheprovider"]
    pcie = [str(suites_dir() / f"{name}.py") for name in PCIE_SUITES]
    times = [_run([*base, *pcie], REPO) for _ in range(3)]
    print(
        f"replay: {len(snaps)} shipped snapshots through the PCIe suites in one pytest run: "
        f"{statistics.median(times):.2f} s wall (median of 3, pytest start-up included)"
    )
    whole = [_run(base, REPO) for _ in range(3)]
    print(
        f"replay: the same snapshots through every suite (PCIe, GPU, P2P/NCCL, vLLM fit, soak, run "
        f"environment) in one pytest run: {statistics.median(whole):.2f} s wall (median of 3)"
    )


def big_rig() -> None:
    from pytest_rigcheck import pcie_checks, targets
    from pytest_rigcheck.profile import Profile
    from pytest_rigcheck.rig import Rig
    from pytest_rigcheck.source import Source
    from pytest_rigcheck.testing import GPU_MODELS, RigBuilder

    b = RigBuilder("8gpu-2switch")
    h0, h1 = b.host_bridge(0, 0, numa=0), b.host_bridge(0, 0x80, numa=1)
    gpu = 0
    for host, bus in ((h0, 0x01), (h1, 0x81)):
        rp = b.root_port(host, f"0000:{bus - 1:02x}:01.1", cap=(5, 16))
        downs = [f"0000:{bus + 1:02x}:{i:02x}.0" for i in range(4)]
        _, ports = b.switch(
            rp,
            f"0000:{bus:02x}:00.0",
            downs,
            vendor=0x1000,
            device=0xC030,
            cap=(5, 16),
            down_cap=(5, 16),
            acs_offset=0x170,
        )
        for i, port in enumerate(ports):
            b.gpu(port, f"0000:{bus + 2 + i:02x}:00.0", GPU_MODELS["h100"])
            gpu += 1
    n = 0
    while len(b.nodes) < 300:  # the rest of a server: NICs, NVMe, chipset functions on the root buses
        host = (h0, h1)[n % 2]
        base, m = (0x00 if host is h0 else 0x80), n // 2
        b.root_port(host, f"0000:{base:02x}:{8 + m // 8:02x}.{m % 8}", cap=(4, 4), acs_ctrl=None)
        n += 1
    with tempfile.TemporaryDirectory() as d:
        b.write(Path(d) / "big")
        times = []
        for _ in range(20):
            t = time.perf_counter()
            rig = Rig("big", Source(Path(d) / "big"), Profile())
            verdicts = [pcie_checks.gpu_count(rig)]
            verdicts += [pcie_checks.acs(x) for x in targets.bridges(rig)]
            verdicts += [pcie_checks.iommu(x) for x in targets.gpus(rig)]
            verdicts += [pcie_checks.link(x) for x in targets.links(rig)]
            verdicts += [pcie_checks.bifurcation(x) for x in targets.lane_groups(rig)]
            verdicts += [pcie_checks.topology(x) for x in targets.gpu_pairs(rig)]
            times.append(time.perf_counter() - t)
        print(
            f"analysis: {len(rig.pcie.functions)} functions, {gpu} GPUs, 2 switches, {len(verdicts)} verdicts: "
            f"{statistics.median(times) * 1000:.1f} ms median of 20 (read from disk + all PCIe checks)"
        )


if __name__ == "__main__":
    plugin_load()
    replay_all()
    big_rig()
