"""``rigcheck topo`` as ``nvidia-smi topo -m`` prints it, and ``rigcheck topo --tree`` (issue 10 #5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_rigcheck.cli import main

SNAPSHOTS = Path(__file__).resolve().parent.parent / "fixtures" / "sysfs-snapshots"

# ``nvidia-smi topo -m`` on the 2x H200 SXM rig the h200x2-nvlink snapshot was captured from (driver
# 580.159.04; /work/shared/captures/h200x2-nvlink/nvidia-smi-topo.txt, header's underline escapes dropped).
H200_TOPO = """\
\tGPU0\tGPU1\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID
GPU0\t X \tNV18\t0-31\t0\t\tN/A
GPU1\tNV18\t X \t0-31\t0\t\tN/A

Legend:

  X    = Self
  SYS  = Connection traversing PCIe as well as the SMP interconnect between NUMA nodes (e.g., QPI/UPI)
  NODE = Connection traversing PCIe as well as the interconnect between PCIe Host Bridges within a NUMA node
  PHB  = Connection traversing PCIe as well as a PCIe Host Bridge (typically the CPU)
  PXB  = Connection traversing multiple PCIe bridges (without traversing the PCIe Host Bridge)
  PIX  = Connection traversing at most a single PCIe bridge
  NV#  = Connection traversing a bonded set of # NVLinks
"""


def test_h200_matches_nvidia_smi(capsys: pytest.CaptureFixture[str]) -> None:
    """NV18 between the two H200s (from nvml.json), not PHB; affinity columns and legend as nvidia-smi's."""
    assert main(["topo", str(SNAPSHOTS / "h200x2-nvlink")]) == 0
    assert capsys.readouterr().out == H200_TOPO


def test_pcie_classes_without_nvlink(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["topo", str(SNAPSHOTS / "rtxpro6000x4-switch")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split("\t")[:5] == ["GPU0", " X ", "PIX", "PIX", "PIX"]
    assert main(["topo", str(SNAPSHOTS / "rtx3090x2-gen4")]) == 0
    assert capsys.readouterr().out.splitlines()[1].split("\t")[:3] == ["GPU0", " X ", "PHB"]


def test_tree_marks_acs_and_links(capsys: pytest.CaptureFixture[str]) -> None:
    """The hop tree: root port -> switch upstream -> four downstream ports with ACS on -> GPUs, gen/width
    per hop."""
    assert main(["topo", "--tree", str(SNAPSHOTS / "rtxpro6000x4-acs-switch")]) == 0
    out = capsys.readouterr().out
    assert out.count("[ACS on: P2P redirected]") == 4, out
    assert "`-- 0000:00:01.1 root port Gen4 x16" in out
    assert "    `-- 0000:01:00.0 switch upstream port Gen4 x16" in out
    assert "0000:03:00.0 GPU0 NVIDIA RTX PRO 6000" in out


def test_tree_shows_nvlink_peers_and_narrow_links(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["topo", "--tree", str(SNAPSHOTS / "h200x2-nvlink")]) == 0
    assert "GPU0 NVIDIA H200 Gen5 x16 (32.0 GT/s)  NVLink: GPU1 NV18" in capsys.readouterr().out
    assert main(["topo", "--tree", str(SNAPSHOTS / "rtx3090x2-riser-x8")]) == 0
    assert "GPU1 NVIDIA GeForce RTX 3090 Gen4 x8 (16.0 GT/s) (can do Gen4 x16" in capsys.readouterr().out


def test_bad_snapshot_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["topo", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rigcheck: ") and len(err.strip().splitlines()) == 1


def test_tree_marks_unreadable_acs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A bridge whose config space was read short (100 bytes) shows "[ACS unknown: ...]", not nothing."""
    import shutil

    snap = tmp_path / "s"
    shutil.copytree(SNAPSHOTS / "rtx3090x2-acs-root-port", snap, symlinks=True)
    cfg = snap / "sys/devices/pci0000:00/0000:00:03.1/config"
    cfg.write_bytes(cfg.read_bytes()[:100])
    assert main(["topo", "--tree", str(snap)]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "0000:00:03.1 root port" in x)
    assert "[ACS unknown: " in line, out
