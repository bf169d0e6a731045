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
        # iommu=pt with the CPU vendor's IOMMU not switched off: DMA passes through untranslated
        # (kernel-parameters.txt "iommu=pt"), even where the groups were not kept.
        (None, None, "iommu=pt", "amd", "passthrough", "kernel command line iommu=pt"),
        (None, ["ivhd0"], "ro iommu.passthrough=1", "amd", "passthrough", "iommu.passthrough=1"),
        (None, None, "iommu=pt iommu=nopt", "amd", "unknown", ""),  # the last one wins: not passthrough
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
        # FRESH3 F-I7: a registered unit but not one group is no state the kernel leaves: never "off"
        ({}, ["ivhd0"], "BOOT_IMAGE=/boot/vmlinuz root=/dev/x ro quiet", "amd", "unknown", ""),
        ({}, ["dmar0"], "ro intel_iommu=off", "intel", "unknown", ""),
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
    """A device's own group decides for it; a device without its own group, while groups exist, is unknown.

    gate.md D1/D17: a missing group was judged by other groups' types ("passthrough (group 6 type identity)")
    or called "translated (group None, type ?)".
    """
    state = read_iommu(_tree(tmp_path, groups={"3": "identity", "7": "DMA"}, units=["ivhd0"], cmdline=""))
    assert state.mode_of_group("3") == "passthrough"
    assert state.mode_of_group("7") == "translated"
    assert state.judge("7").evidence == "sys/kernel/iommu_groups/7/type = DMA"
    no_link = state.judge(None)
    assert no_link.mode == "unknown" and "no iommu_group link" in no_link.evidence
    missing = state.judge("6")
    assert missing.mode == "unknown" and "sys/kernel/iommu_groups/6 is missing" in missing.evidence


@pytest.mark.parametrize(
    ("cmdline", "mode", "evidence"),
    [
        ("ro quiet iommu=pt", "passthrough", "kernel command line iommu=pt"),
        ("ro iommu.passthrough=1", "passthrough", "iommu.passthrough=1"),
        ("ro iommu=pt iommu.passthrough=0", "translated", "iommu.passthrough=0"),
        ("ro intel_iommu=on", "unknown", "CONFIG_IOMMU_DEFAULT_PASSTHROUGH"),  # the build's default decides
        ("ro quiet", "unknown", "neither iommu=pt nor iommu.passthrough="),
        (None, "unknown", "proc/cmdline was not captured"),
    ],
)
def test_kernel_without_group_type_is_judged_from_the_cmdline(
    tmp_path: Path, cmdline: str | None, mode: str, evidence: str
) -> None:
    """Groups without a ``type`` file (Linux before 5.11 added iommu_groups/N/type, see
    Documentation/ABI/testing/sysfs-kernel-iommu_groups) are judged from the command line, never called translated."""
    root = tmp_path
    (root / "sys/kernel/iommu_groups/4/devices").mkdir(parents=True)
    if cmdline is not None:
        (root / "proc").mkdir()
        (root / "proc/cmdline").write_text(cmdline + "\n")
    j = read_iommu(Source(root), cpu_vendor="intel").judge("4")
    assert j.mode == mode and evidence in j.evidence, j
    if mode != "unknown":
        assert "no type file" in j.evidence


def test_unreadable_type_and_refused_cmdline(tmp_path: Path) -> None:
    """A group type that cannot be read, or a proc/cmdline link out of the snapshot, makes the device unknown
    (gate.md D15: the refusal surfaced as a raw SourceError), naming the file and the reason."""
    (tmp_path / "sys/kernel/iommu_groups/2").mkdir(parents=True)
    (tmp_path / "sys/kernel/iommu_groups/2/type").mkdir()  # a directory where a file should be
    j = read_iommu(Source(tmp_path), cpu_vendor="amd").judge("2")
    assert j.mode == "unknown" and "iommu_groups/2/type" in j.evidence
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cmdline").symlink_to("../../outside/cmdline")
    j = read_iommu(Source(tmp_path), cpu_vendor="amd").judge("2")
    assert j.mode == "unknown" and j.evidence.startswith(
        "proc/cmdline: symlink proc/cmdline -> ../../outside/cmdline leaves the snapshot"
    ), j


def test_empty_dirs_from_manifest(tmp_path: Path) -> None:
    """A directory the manifest says was present but empty (git drops them) counts as present."""
    state = read_iommu(
        _tree(tmp_path, groups=None, units=None, cmdline="ro"), frozenset({"sys/kernel/iommu_groups"})
    )
    assert state.mode == "off"


def test_refused_group_link_is_no_evidence(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """Fresh-user finding: a GPU's iommu_group as an absolute symlink (out of the snapshot) was refused by the
    containment check, yet the IOMMU check still took group 6 from the link's text and passed
    ("passthrough"). The refused link is no evidence: that GPU's check is UNREADABLE saying why."""
    import shutil

    from .conftest import SNAPSHOTS

    snap = tmp_path / "snap"
    shutil.copytree(SNAPSHOTS / "rtx3090x2-iommu-dma", snap, symlinks=True)
    for t in (snap / "sys/kernel/iommu_groups").glob("*/type"):
        t.write_text("identity\n")
    devices = snap / "sys/bus/pci/devices"
    link = (devices / "0000:4b:00.0").resolve() / "iommu_group"
    link.unlink()
    link.symlink_to("/sys/kernel/iommu_groups/6")
    result = pytester.runpytest(f"--rig-snapshot={snap}", "-p", "no:cacheprovider", "-k", "iommu", "-rf")
    out = result.stdout.str()
    assert "FAILED test_iommu.py::test_iommu_not_translating[0000:4b:00.0] - UNREADABLE" in out, out
    assert "iommu_group -> /sys/kernel/iommu_groups/6 leaves the snapshot: refused" in out, out
    assert "Traceback" not in out


@pytest.mark.parametrize(
    ("cmdline", "off"),
    [
        ("ro amd_iommu=off intel_iommu=off", True),
        ("ro amd_iommu=off intel_iommu=off intel_iommu=on", False),  # the last one counts
        ("ro amd_iommu=off intel_iommu=on intel_iommu=off", True),
    ],
)
def test_last_iommu_argument_counts(tmp_path: Path, cmdline: str, off: bool) -> None:
    """Fresh-user finding: `intel_iommu=off intel_iommu=on` passed as "IOMMU off"; the kernel applies them in
    order, so the IOMMU is on."""
    state = read_iommu(_tree(tmp_path, groups=None, units=None, cmdline=cmdline))
    assert (state.judge(None).mode == "off") is off, state.judge(None)


def test_oversized_cmdline_is_refused_not_parsed(tmp_path: Path) -> None:
    """Fresh-user finding: a 50 MB proc/cmdline was read and split whole (44 s). A kernel command line is a
    few KiB at most (COMMAND_LINE_SIZE): a larger file is recorded as unreadable, not read."""
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cmdline").write_text("a" * (5 << 20))
    state = read_iommu(Source(tmp_path))
    assert state.cmdline_error and "larger than" in state.cmdline_error


def test_unit_without_groups_names_both_places(tmp_path: Path) -> None:
    """FRESH3 F-I7: the contradiction is named, with both sysfs places, for every device."""
    state = read_iommu(_tree(tmp_path, groups={}, units=["ivhd0"], cmdline="ro quiet"), cpu_vendor="amd")
    j = state.judge(None, "0000:01:00.0")
    assert j.mode == "unknown" and "sys/class/iommu lists IOMMU unit(s) ivhd0" in j.evidence, j
    assert "sys/kernel/iommu_groups holds no group" in j.evidence


def test_group_devices_must_list_the_device(tmp_path: Path) -> None:
    """FRESH3 F-I4: a device whose iommu_group names a group whose devices/ does not list it is unknown; a
    group without a devices/ folder (a hand-made tree) is judged by its type alone."""
    src = _tree(tmp_path, groups={"3": "identity", "4": "identity"}, units=["ivhd0"], cmdline="")
    (tmp_path / "sys/kernel/iommu_groups/3/devices").mkdir()
    (tmp_path / "sys/kernel/iommu_groups/3/devices/0000:01:00.1").mkdir()
    state = read_iommu(src, cpu_vendor="amd")
    j = state.judge("3", "0000:01:00.0")
    assert j.mode == "unknown" and "iommu_groups/3/devices does not list 0000:01:00.0" in j.evidence, j
    assert state.judge("3", "0000:01:00.1").mode == "passthrough"
    assert state.judge("4", "0000:02:00.0").mode == "passthrough"


@pytest.mark.parametrize(
    ("text", "mode"),
    [
        ("DMA", "translated"),
        ("DMA-FQ", "translated"),
        ("identity", "passthrough"),
        ("unmanaged", "other"),
        ("blocked", "other"),
        ("unknown", "other"),
        ("bogus", "unknown"),
        ("identity\nDMA", "unknown"),
        ("Identity", "unknown"),
        ("", "unknown"),
    ],
)
def test_group_type_values(tmp_path: Path, text: str, mode: str) -> None:
    """Only what drivers/iommu/iommu.c iommu_group_show_type writes is a group type; other text is corrupt."""
    state = read_iommu(_tree(tmp_path, groups={"3": text}, units=["ivhd0"], cmdline=""), cpu_vendor="amd")
    j = state.judge("3")
    assert j.mode == mode, j
    if mode == "unknown":
        assert "is not a value the kernel writes" in j.evidence, j
