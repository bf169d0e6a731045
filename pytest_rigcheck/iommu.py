"""IOMMU state: off, passthrough (``identity`` groups) or translating (``DMA``, ``DMA-FQ``).

Group types are documented in the kernel's Documentation/ABI/testing/sysfs-kernel-iommu_groups.
An empty ``/sys/kernel/iommu_groups`` means no IOMMU translation (sichek check_dependences/iommu.go).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from .errors import SourceError
from .source import Source

GROUPS = "sys/kernel/iommu_groups"
IOMMU_CLASS = "sys/class/iommu"
TRANSLATED = ("DMA", "DMA-FQ")
PASSTHROUGH = "identity"


@dataclass(frozen=True)
class IommuState:
    """What the rig's IOMMU does, and the evidence for it."""

    known: bool  # False when the snapshot holds no evidence either way
    group_types: dict[str, str]  # group number -> type ("DMA", "identity", ...)
    units: tuple[str, ...]  # sys/class/iommu entries (dmar0, ivhd0, ...)
    cmdline: str | None
    evidence: str = ""  # what decided it, for the verdict

    @property
    def mode(self) -> str:
        """``off``, ``passthrough``, ``translated`` or ``unknown``."""
        if not self.known:
            return "unknown"
        if not self.group_types:
            return "off"
        if any(t in TRANSLATED for t in self.group_types.values()):
            return "translated"
        return "passthrough"

    def mode_of_group(self, group: str | None) -> str:
        if not self.known:
            return "unknown"
        if group is None or group not in self.group_types:
            return "off" if not self.group_types else self.mode
        t = self.group_types[group]
        return "translated" if t in TRANSLATED else "passthrough" if t == PASSTHROUGH else f"type {t}"

    def cmdline_iommu_args(self) -> list[str]:
        if self.cmdline is None:
            return []
        return [a for a in _args(self.cmdline) if "iommu" in a.split("=", 1)[0]]


def read_iommu(
    source: Source, empty_dirs: frozenset[str] = frozenset(), cpu_vendor: str | None = None
) -> IommuState:
    """Read IOMMU groups, units and the kernel command line through ``source``.

    ``empty_dirs`` names directories a snapshot recorded as present but empty (git and some
    archivers drop empty directories). ``cpu_vendor`` (``amd``/``intel``) says which command-line
    argument switches this machine's IOMMU off; unknown, only both together count.
    """
    has_groups = source.exists(GROUPS) or GROUPS in empty_dirs
    has_class = source.exists(IOMMU_CLASS) or IOMMU_CLASS in empty_dirs
    types: dict[str, str] = {}
    for group in source.listdir(GROUPS):
        try:
            types[group] = source.read_text(f"{GROUPS}/{group}/type")
        except KeyError:
            # Kernels before 5.11 have no type attribute: the group exists, so translation is on
            # unless iommu=pt; the command line tells (checked by the caller's message).
            types[group] = "DMA"
        except SourceError as exc:
            raise SourceError(f"{GROUPS}/{group}/type", exc.reason) from exc
    units = tuple(source.listdir(IOMMU_CLASS))
    cmdline = source.read_optional("proc/cmdline")
    args = _args(cmdline)
    needed = CMDLINE_OFF.get(cpu_vendor or "", CMDLINE_OFF["amd"] + CMDLINE_OFF["intel"])
    off_args = list(needed) if all(a in args for a in needed) else []
    if has_groups:
        evidence = f"{GROUPS}: {len(types)} group(s)"
    elif has_class and not units:
        evidence = f"{IOMMU_CLASS} empty"
    elif off_args and not units:
        # Neither directory was kept (a hand-made or trimmed snapshot), but the kernel was told to
        # switch translation off, and no IOMMU unit registered.
        evidence = f"kernel command line {' '.join(off_args)}"
    else:
        evidence = ""
    return IommuState(bool(evidence), types, units, cmdline, evidence)


# The argument that turns off each vendor's IOMMU driver (the other vendor's is ignored by the kernel).
CMDLINE_OFF = {"amd": ("amd_iommu=off",), "intel": ("intel_iommu=off",)}


def _args(cmdline: str | None) -> list[str]:
    try:
        return shlex.split(cmdline or "")
    except ValueError:  # unbalanced quotes: fall back on plain words
        return (cmdline or "").split()


def grub_fix(cpu_vendor: str | None, allow_passthrough: bool) -> str:
    """The kernel parameters that turn translation off, for the GRUB line."""
    off = {"amd": "amd_iommu=off iommu=off", "intel": "intel_iommu=off"}.get(
        cpu_vendor or "", "iommu=off amd_iommu=off intel_iommu=off"
    )
    text = f'add "{off}" to GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub (or grub2-mkconfig) and reboot'
    if allow_passthrough:
        text += '; or, to keep the IOMMU for other devices, "iommu=pt" (passthrough, allowed by the profile)'
    return text
