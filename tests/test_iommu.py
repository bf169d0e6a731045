"""IOMMU state from what a snapshot or the live system holds: groups, units, the kernel command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_rigcheck.iommu import read_iommu
from pytest_rigcheck.source import Source


def _tree(
    root: Path, *, groups: dict[str, str] | None, units: list[str] | None, cmdline: str | None
) -> Source:
    if groups is not None:
        (root / "sys/kernel/iommu_groups").mkdir(parents=True)
        for g, kind in groups.items():
            (root / f"sys/kernel/iommu_groups/{g}").mkdir()
            (root / f"sys/kernel/iommu_groups/{g}/type").write_text(kind + "\n")
    if units is not None:
        (root / "sys/class/iommu").mkdir(parents=True)
        for u in units:
            (root / f"sys/class/iommu/{u}").mkdir()
    if cmdline is not None:
        (root / "proc").mkdir()
        (root / "proc/cmdline").write_text(cmdline + "\n")
    return Source(root)


@pytest.mark.parametrize(
    ("groups", "units", "cmdline", "vendor", "mode", "evidence"),
    [
        ({}, None, "ro quiet", "amd", "off", "0 group(s)"),
        ({"3": "identity"}, ["ivhd0"], "iommu=pt", "amd", "passthrough", "1 group(s)"),
        ({"3": "DMA-FQ", "4": "identity"}, ["ivhd0"], "", "amd", "translated", "2 group(s)"),
        (None, [], "ro", None, "off", "sys/class/iommu empty"),
        (None, None, "ro amd_iommu=off iommu=off", "amd", "off", "kernel command line amd_iommu=off"),
        (
            None,
            None,
            'BOOT_IMAGE="/vmlinuz x" intel_iommu=off',
            "intel",
            "off",
            "kernel command line intel_iommu=off",
        ),
        (None, None, "ro amd_iommu=off", "intel", "unknown", ""),  # the other vendor's switch does nothing
        (None, None, "ro amd_iommu=off", None, "unknown", ""),  # vendor unknown: one switch is not enough
        (None, None, "amd_iommu=off intel_iommu=off", None, "off", "amd_iommu=off intel_iommu=off"),
        (None, None, "ro quiet", "amd", "unknown", ""),  # nothing either way: never taken as off
        (None, None, "iommu=pt", "amd", "unknown", ""),  # passthrough asked for, but no group seen
        (None, None, None, "amd", "unknown", ""),
        (
            None,
            ["dmar0"],
            "intel_iommu=off",
            "intel",
            "unknown",
            "",
        ),  # a unit registered despite the argument
        (None, None, 'unbalanced "quote amd_iommu=off', "amd", "off", "amd_iommu=off"),
    ],
)
def test_mode_and_evidence(
    tmp_path: Path,
    groups: dict[str, str] | None,
    units: list[str] | None,
    cmdline: str | None,
    vendor: str | None,
    mode: str,
    evidence: str,
) -> None:
    state = read_iommu(_tree(tmp_path, groups=groups, units=units, cmdline=cmdline), cpu_vendor=vendor)
    assert state.mode == mode
    assert evidence in state.evidence
    assert state.known == (mode != "unknown")


def test_group_of_a_device(tmp_path: Path) -> None:
    """A device's own group decides for it; a device in no group is off only where no group translates."""
    state = read_iommu(_tree(tmp_path, groups={"3": "identity", "7": "DMA"}, units=["ivhd0"], cmdline=""))
    assert state.mode_of_group("3") == "passthrough"
    assert state.mode_of_group("7") == "translated"
    assert state.mode_of_group(None) == "translated"


def test_empty_dirs_from_manifest(tmp_path: Path) -> None:
    """A directory the manifest says was present but empty (git drops them) counts as present."""
    state = read_iommu(
        _tree(tmp_path, groups=None, units=None, cmdline="ro"), frozenset({"sys/kernel/iommu_groups"})
    )
    assert state.mode == "off"
