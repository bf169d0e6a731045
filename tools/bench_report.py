"""Benchmark of the report path (issue 10 #1): a modelled 64-GPU rig replayed healthy and with ACS on at
6 switch ports, through every shipped suite with the default terminal output. Reported, not a timed test.

    python tools/bench_report.py [DIR]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from itertools import permutations
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ACS_PORTS = 6
# The P2P thresholds the modelled figures are judged by (as on the shipped 4-GPU switch rigs); its GPU count
# of 4 fails test_gpu_count on both rigs alike.
PROFILE = "4x-rtxpro6000-gen4-switch"


def build(out: Path, acs_on: bool) -> list[str]:
    """8 switches of 8 GPUs under 2 host bridges (RTX PRO 6000 behind Gen4 x16 switches, as the modelled figures are); ACS on at 6 downstream ports."""
    from pytest_rigcheck.gpu.models import modelled_nvml
    from pytest_rigcheck.p2p.models import modelled_p2p
    from pytest_rigcheck.testing import GPU_MODELS, RigBuilder

    b = RigBuilder("rig64-acs" if acs_on else "rig64")
    gpus: list[str] = []
    acs_ports: list[str] = []
    for h, base in enumerate((0x00, 0x80)):
        host = b.host_bridge(0, base, numa=h)
        for k in range(4):
            rp = b.root_port(host, f"0000:{base:02x}:{k + 1:02x}.1", cap=(4, 16))
            up = base + 1 + k * 0x10
            downs = [f"0000:{up + 1:02x}:{i:02x}.0" for i in range(8)]
            _, ports = b.switch(
                rp, f"0000:{up:02x}:00.0", downs, cap=(4, 16), down_cap=(4, 16), acs_offset=0x170
            )
            for i, port in enumerate(ports):
                bdf = f"0000:{up + 2 + i:02x}:00.0"
                b.gpu(port, bdf, GPU_MODELS["rtxpro6000"])
                gpus.append(bdf)
            if acs_on and len(acs_ports) < ACS_PORTS:
                for d in downs[: ACS_PORTS - len(acs_ports)][:3]:
                    node = b.nodes[d]
                    node.acs = (node.acs[0], node.acs[1], 0x001D)
                    acs_ports.append(d)
    b.write(out)
    healthy = modelled_p2p("rtxpro6000x4-switch", gpus)
    slow = modelled_p2p("rtxpro6000x4-acs-switch", gpus)
    if acs_on:  # pairs whose route passes an ACS-on port get the ACS-on figures; so does the all-GPU group
        parent = {g: b.nodes[g].parent for g in gpus}
        for a, c in permutations(gpus, 2):
            if parent[a] in acs_ports or parent[c] in acs_ports:
                healthy["pairs"][f"{a}->{c}"] = slow["pairs"][f"{a}->{c}"]
        healthy["nccl"] = slow["nccl"]
    (out / "p2p.json").write_text(json.dumps(healthy))
    nvml = modelled_nvml("rtxpro6000x4-switch", gpus)
    (out / "nvml.json").write_text(json.dumps(nvml))
    return acs_ports


def run(snap: Path, cwd: Path) -> tuple[float, int, str]:
    t = time.perf_counter()
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            f"--rig-snapshot={snap}",
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    return time.perf_counter() - t, len(p.stdout.splitlines()), p.stdout


def main() -> None:
    keep = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    with tempfile.TemporaryDirectory() as d:
        root = keep or Path(d)
        for acs in (False, True):
            snap = root / ("rig64-acs" if acs else "rig64")
            build(snap, acs)
            secs, lines, out = run(snap, root)
            print(f"{snap.name}: {secs:.1f} s, {lines} lines; {out.splitlines()[-1] if lines else ''}")


if __name__ == "__main__":
    main()
