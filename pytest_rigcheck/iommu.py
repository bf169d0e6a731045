"""IOMMU state: off, passthrough (``identity`` groups) or translating (``DMA``, ``DMA-FQ``), per device.

Sources (public):

- ``/sys/kernel/iommu_groups/<N>/type`` and its values ``DMA``, ``DMA-FQ``, ``identity`` (and ``blocked``,
  ``unmanaged`` when a driver such as VFIO owns the group): Linux
  ``Documentation/ABI/testing/sysfs-kernel-iommu_groups``; the attribute appeared in Linux 5.11, so an older
  kernel lists groups without it. The kernel writes one of those words, or ``unknown`` for a group without a
  default domain (``drivers/iommu/iommu.c`` ``iommu_group_show_type``): any other text is no kernel's.
- A device's group: the ``/sys/bus/pci/devices/<BDF>/iommu_group`` symlink, and the group's
  ``/sys/kernel/iommu_groups/<N>/devices/`` folder, which lists every device of the group (same document).
- An IOMMU unit the kernel registered appears in ``/sys/class/iommu`` (``iommu_device_sysfs_add``), and an
  active IOMMU puts every device it translates in a group (``iommu_probe_device``): a unit with no group at all
  contradicts itself.
- An empty ``/sys/kernel/iommu_groups`` means no IOMMU translation (scitix/sichek
  ``components/.../check_dependences/iommu.go``).
- ``iommu=pt`` / ``iommu=nopt`` and ``iommu.passthrough=0|1`` choose the default domain type; ``amd_iommu=off`` and
  ``intel_iommu=off`` switch each vendor's IOMMU off (Linux
  ``Documentation/admin-guide/kernel-parameters.txt``). Where several are given, the last one wins.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from .errors import SourceError
from .source import Source

GROUPS = "sys/kernel/iommu_groups"
IOMMU_CLASS = "sys/class/iommu"
TRANSLATED = ("DMA", "DMA-FQ")
PASSTHROUGH = "identity"
# Every text iommu_group_show_type (drivers/iommu/iommu.c) writes to a group's `type`.
KERNEL_TYPES = (*TRANSLATED, PASSTHROUGH, "blocked", "unmanaged", "unknown")

CMDLINE_MAX = 64 << 10  # bytes
# The argument that turns off each vendor's IOMMU driver (the other vendor's is ignored by the kernel).
CMDLINE_OFF = {"amd": ("amd_iommu=off",), "intel": ("intel_iommu=off",)}


@dataclass(frozen=True)
class Judgement:
    """What the IOMMU does to one device's DMA, and why.

    ``mode``: ``off``, ``passthrough``, ``translated``, ``other`` (a group type that is neither, e.g.
    ``unmanaged``) or ``unknown`` (no evidence, or the device's own group could not be read).
    ``evidence``: what decided it, or for ``unknown`` what is missing.
    """

    mode: str
    evidence: str
    group: str | None = None
    group_type: str | None = None


@dataclass(frozen=True)
class IommuState:
    """What the rig's IOMMU does, and the evidence for it.

    ``group_types`` holds the groups whose ``type`` was read; ``untyped`` the groups listed without a
    ``type`` file (kernels before 5.11); ``type_errors`` the groups whose ``type`` could not be read.
    """

    known: bool  # False when the snapshot holds no evidence either way
    group_types: dict[str, str]  # group number -> type ("DMA", "identity", ...)
    units: tuple[str, ...]  # sys/class/iommu entries (dmar0, ivhd0, ...)
    cmdline: str | None
    evidence: str = ""  # what decided it, for the verdict
    groups_listed: bool = False  # sys/kernel/iommu_groups was read (present, maybe empty)
    untyped: frozenset[str] = frozenset()
    type_errors: dict[str, str] = field(default_factory=dict)
    cmdline_error: str | None = None  # proc/cmdline refused or unreadable
    cpu_vendor: str | None = None
    default_mode: str = "unknown"  # with no groups: "off" or "passthrough" (from the command line)
    # group -> the devices its devices/ folder lists; a group without that folder is left out
    group_devices: dict[str, frozenset[str]] = field(default_factory=dict)
    contradiction: str | None = None  # the IOMMU evidence contradicts itself: every device is unknown

    @property
    def groups(self) -> frozenset[str]:
        return frozenset(self.group_types) | self.untyped | frozenset(self.type_errors)

    @property
    def mode(self) -> str:
        """The rig as a whole: ``off``, ``passthrough``, ``translated`` or ``unknown``."""
        if not self.known:
            return "unknown"
        if not self.groups:
            return self.default_mode
        modes = {self.judge(g).mode for g in self.groups}
        if "translated" in modes:
            return "translated"
        return "passthrough" if modes <= {"passthrough", "other"} and "passthrough" in modes else "unknown"

    def mode_of_group(self, group: str | None, bdf: str | None = None) -> str:
        """The mode of a device (``bdf``) whose ``iommu_group`` link names ``group`` (``None``: no link)."""
        return self.judge(group, bdf).mode

    def judge(self, group: str | None, bdf: str | None = None) -> Judgement:
        """What the IOMMU does to a device (``bdf``) whose ``iommu_group`` link names ``group`` (``None``: no link).

        Only the device's own group type says ``translated``; a group that is named but missing, a group
        whose ``devices/`` folder does not list the device, or a device without a group while groups exist,
        is ``unknown`` (never another group's type).
        """
        if self.cmdline_error is not None:
            return Judgement("unknown", f"proc/cmdline: {self.cmdline_error}", group)
        if self.contradiction is not None:
            return Judgement("unknown", self.contradiction, group)
        if not self.known:
            return Judgement(
                "unknown",
                "neither sys/kernel/iommu_groups nor sys/class/iommu was captured, and the kernel command line "
                "neither switches the IOMMU off nor asks for passthrough (iommu=pt)",
                group,
            )
        if not self.groups:
            if group is not None and self.groups_listed:
                return Judgement(
                    "unknown",
                    f"its iommu_group link names group {group}, but {GROUPS} holds no group: the snapshot "
                    "contradicts itself",
                    group,
                )
            return Judgement(self.default_mode, self.evidence, group)
        if group is None:
            return Judgement(
                "unknown",
                f"no iommu_group link, while {GROUPS} holds {len(self.groups)} group(s): the IOMMU is on, and "
                "this device's own group (so its translation type) is not recorded",
            )
        if group not in self.groups:
            return Judgement(
                "unknown",
                f"its iommu_group link names group {group}, but {GROUPS}/{group} is missing (other groups: "
                f"{', '.join(sorted(self.groups, key=_num)[:8])}{', ...' if len(self.groups) > 8 else ''})",
                group,
            )
        listed = self.group_devices.get(group)
        if bdf is not None and listed is not None and bdf not in listed:
            return Judgement(
                "unknown",
                f"its iommu_group link names group {group}, but {GROUPS}/{group}/devices does not list {bdf} "
                f"(it lists {', '.join(sorted(listed)[:8]) or 'nothing'}): the two sysfs views contradict each other",
                group,
            )
        if group in self.type_errors:
            return Judgement("unknown", f"{GROUPS}/{group}/type: {self.type_errors[group]}", group)
        if group in self.untyped:
            return self._from_cmdline(group)
        t = self.group_types[group]
        where = f"{GROUPS}/{group}/type = {t}"
        if t in TRANSLATED:
            return Judgement("translated", where, group, t)
        if t == PASSTHROUGH:
            return Judgement("passthrough", where, group, t)
        return Judgement("other", where, group, t)

    def _from_cmdline(self, group: str) -> Judgement:
        """A group without a ``type`` file (kernel before 5.11): the command line's default domain decides."""
        why = f"{GROUPS}/{group} has no type file (kernels before 5.11 lack it)"
        if self.cmdline is None:
            return Judgement("unknown", f"{why}, and proc/cmdline was not captured", group)
        choice = passthrough_choice(self.cmdline)
        if choice is None:
            return Judgement(
                "unknown",
                f"{why}, and the kernel command line has neither iommu=pt nor iommu.passthrough=: the default "
                "domain is the kernel build's choice (CONFIG_IOMMU_DEFAULT_PASSTHROUGH); "
                "`dmesg | grep 'Default domain type'` says which",
                group,
            )
        arg, passthrough = choice
        if passthrough:
            return Judgement("passthrough", f"kernel command line {arg} ({why})", group)
        return Judgement("translated", f"kernel command line {arg} ({why})", group)

    def cmdline_iommu_args(self) -> list[str]:
        if self.cmdline is None:
            return []
        return [a for a in _args(self.cmdline) if "iommu" in a.split("=", 1)[0]]


def passthrough_choice(cmdline: str | None) -> tuple[str, bool] | None:
    """The last command-line argument choosing the default IOMMU domain: (argument, passthrough?), or None.

    ``iommu=pt`` and ``iommu.passthrough=1|y|on`` ask for passthrough; ``iommu=nopt`` and
    ``iommu.passthrough=0|n|off`` for translation (kernel-parameters.txt).
    """
    choice: tuple[str, bool] | None = None
    for arg in _args(cmdline):
        key, _, value = arg.partition("=")
        if key == "iommu":
            opts = value.split(",")
            if "pt" in opts:
                choice = (arg, True)
            elif "nopt" in opts:
                choice = (arg, False)
        elif key == "iommu.passthrough":
            if value.lower() in ("1", "y", "yes", "on"):
                choice = (arg, True)
            elif value.lower() in ("0", "n", "no", "off"):
                choice = (arg, False)
    return choice


def read_iommu(
    source: Source, empty_dirs: frozenset[str] = frozenset(), cpu_vendor: str | None = None
) -> IommuState:
    """Read IOMMU groups, units and the kernel command line through ``source``.

    ``empty_dirs`` names directories a snapshot recorded as present but empty (git and some
    archivers drop empty directories). ``cpu_vendor`` (``amd``/``intel``) says which command-line
    argument switches this machine's IOMMU off; unknown, only both together count.

    A group ``type`` that cannot be read, or a refused ``proc/cmdline``, is recorded (``type_errors``,
    ``cmdline_error``) so that only the devices that need it become unreadable.
    """
    has_groups = source.exists(GROUPS) or GROUPS in empty_dirs
    has_class = source.exists(IOMMU_CLASS) or IOMMU_CLASS in empty_dirs
    types: dict[str, str] = {}
    untyped: set[str] = set()
    errors: dict[str, str] = {}
    members: dict[str, frozenset[str]] = {}
    for group in source.listdir(GROUPS):
        devices = f"{GROUPS}/{group}/devices"
        if source.exists(devices) or devices in empty_dirs:
            try:
                members[group] = frozenset(source.listdir(devices))
            except SourceError as exc:
                errors[group] = f"{devices}: {exc.reason}"
                continue
        try:
            text = source.read_text(f"{GROUPS}/{group}/type")
        except KeyError:
            untyped.add(group)
            continue
        except SourceError as exc:
            errors[group] = exc.reason
            continue
        if text not in KERNEL_TYPES:
            errors[group] = (
                f"{text!r} is not a value the kernel writes ({', '.join(KERNEL_TYPES)}: drivers/iommu/iommu.c "
                "iommu_group_show_type): the file is corrupt"
            )
        else:
            types[group] = text
    units = tuple(source.listdir(IOMMU_CLASS))
    cmdline: str | None = None
    cmdline_error = None
    try:
        # COMMAND_LINE_SIZE is at most a few KiB on every architecture (arch/*/include/uapi/asm/setup.h):
        # a larger file is no kernel command line
        cmdline = (
            source.read_bytes("proc/cmdline", CMDLINE_MAX, whole=True).decode("utf-8", "replace").strip()
        )
    except KeyError:
        cmdline = None
    except SourceError as exc:
        cmdline_error = exc.reason
    args = _args(cmdline)
    needed = CMDLINE_OFF.get(cpu_vendor or "", CMDLINE_OFF["amd"] + CMDLINE_OFF["intel"])
    # the last `intel_iommu=` / `amd_iommu=` counts: the kernel parses them in order, each overriding the last
    # (drivers/iommu/intel/iommu.c intel_iommu_setup, drivers/iommu/amd/init.c parse_amd_iommu_options)
    off_args = list(needed) if all(_last(args, a.split("=")[0]) == a for a in needed) else []
    pt = passthrough_choice(cmdline)
    default = "unknown"
    groups_found = bool(types or untyped or errors)
    contradiction = None
    if has_groups and not groups_found and units:
        # a registered IOMMU unit probes every device behind it into a group (drivers/iommu/iommu.c
        # iommu_probe_device): units without a single group is no state the kernel leaves
        contradiction = (
            f"{IOMMU_CLASS} lists IOMMU unit(s) {', '.join(units[:4])}{', ...' if len(units) > 4 else ''} but "
            f"{GROUPS} holds no group: an active IOMMU puts every device in a group, so the snapshot "
            "contradicts itself (neither 'off' nor a mode is evidenced)"
        )
    if has_groups:
        evidence = f"{GROUPS}: {len(types) + len(untyped) + len(errors)} group(s)"
        if not groups_found:
            default, evidence = "off", f"no IOMMU group; {GROUPS}: 0 group(s)"
    elif has_class and not units:
        default, evidence = "off", f"no IOMMU group; {IOMMU_CLASS} empty"
    elif off_args and not units:
        # Neither directory was kept (a hand-made or trimmed snapshot), but the kernel was told to
        # switch translation off, and no IOMMU unit registered.
        default, evidence = "off", f"kernel command line {' '.join(off_args)}"
    elif pt is not None and pt[1] and not off_args:
        # The groups were not kept, but the CPU vendor's IOMMU is not switched off and the kernel was
        # told to pass DMA through untranslated.
        default, evidence = "passthrough", f"kernel command line {pt[0]}"
    else:
        evidence = ""
    if contradiction is not None:
        default, evidence = "unknown", ""
    return IommuState(
        known=bool(evidence),
        group_types=types,
        units=units,
        cmdline=cmdline,
        evidence=evidence,
        groups_listed=has_groups,
        untyped=frozenset(untyped),
        type_errors=errors,
        cmdline_error=cmdline_error,
        cpu_vendor=cpu_vendor,
        default_mode=default,
        group_devices=members,
        contradiction=contradiction,
    )


def _num(group: str) -> tuple[int, str]:
    return (int(group), "") if group.isdigit() else (1 << 30, group)


def _last(args: list[str], key: str) -> str | None:
    """The last ``key=value`` argument for ``key`` (``intel_iommu=off``), or None."""
    found = [a for a in args if a.split("=", 1)[0] == key]
    return found[-1] if found else None


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
