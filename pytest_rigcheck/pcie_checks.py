"""The PCIe conformance checks, as pure functions from a target to a ``Verdict``.

ACS (PCIe Base Spec 7.7.8, ACS Extended Capability), IOMMU mode (Linux
Documentation/ABI/testing/sysfs-kernel-iommu_groups), link speed and width per hop (PCIe Base Spec 7.5.3.6
Link Capabilities, 7.5.3.8 Link Status, 7.5.3.19 Link Control 2; pciutils ``lib/header.h``), root-port
bifurcation, GPU-pair topology class and GPU count. Suites call these and assert; no check writes anything.

Every check is wrapped by ``judged``: a reading that is garbage or refused (``SourceError``,
``ConfigSpaceError``) or an ``Unjudgeable`` raised inside ends the check as an UNREADABLE verdict naming the
file and the reason, never as a Python traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from .errors import ConfigSpaceError, SourceError
from .iommu import grub_fix
from .pcie import ACS_BITS, ACS_P2P_BLOCKING, SPEED_GT, decode_acs, fmt_link, normalize_bdf
from .profile import TOPOLOGY_CLASSES
from .rig import Rig
from .targets import BridgeTarget, GpuTarget, LaneGroupTarget, LinkTarget, PairTarget
from .topology import pair_class
from .tree import PciFunction
from .verdict import Unjudgeable, Verdict, failed, not_applicable, passed, unreadable, warned

ROOT_HINT = (
    "run as root (sudo pytest --rig ...), or replay a snapshot captured as root (sudo rigcheck capture DIR)"
)
CORRUPT_HINT = (
    "the reading is corrupt or was refused: capture the rig again (sudo rigcheck capture DIR); live, "
    "check the device with `sudo lspci -vvv -s BDF` and `dmesg | grep -i pci`"
)

F = TypeVar("F", bound=Callable[..., Verdict])


def judged(check: F) -> F:
    """Run ``check``; a garbage or refused reading inside it becomes an UNREADABLE verdict, not a traceback.

    ``SourceError`` (a file that cannot be read, holds text that is not what the kernel writes, or a link
    that leaves the snapshot) and ``ConfigSpaceError`` name the path or device and the reason; the verdict
    repeats both. ``Unjudgeable(verdict)`` ends the check with its verdict.
    """

    @functools.wraps(check)
    def run(target: Any, *args: Any, **kwargs: Any) -> Verdict:
        try:
            return check(target, *args, **kwargs)
        except Unjudgeable as exc:
            return exc.verdict
        except (SourceError, ConfigSpaceError) as exc:
            rig = target if isinstance(target, Rig) else getattr(target, "rig", None)
            what = (
                getattr(target, "label", None) or getattr(target, "id", None) or getattr(rig, "name", "rig")
            )
            bdf = exc.bdf if isinstance(exc, ConfigSpaceError) else getattr(target, "id", "")
            try:
                bdf = normalize_bdf(str(bdf))
            except ValueError:
                bdf = "<BDF>"
            return unreadable(
                f"{what}: cannot judge {check.__name__.replace('_', ' ')}: {exc}",
                measured=str(exc),
                fix=[CORRUPT_HINT.replace("BDF", bdf)],
            )

    return run  # type: ignore[return-value]


# -- GPU count ------------------------------------------------------------------------------------


@judged
def gpu_count(rig: Rig) -> Verdict:
    """The GPUs on the PCIe bus against the profile's ``[rig] gpus`` (or at least one).

    GPUs are NVIDIA and AMD accelerators by vendor and class (``pcie.accelerator_kind``); display devices
    left out (a BMC's ASPEED or Matrox VGA) are named in the notes.
    """
    tree = rig.pcie
    found = len(tree.gpus)
    listing = ", ".join(tree.gpu_label(g) for g in tree.gpus) or "none"
    props: dict[str, object] = {"gpu_count": found}
    notes = [f"not counted: {fn.bdf} {fn.name} [{fn.ids}]: {why}" for fn, why in tree.left_out]
    if notes:
        props["gpus_left_out"] = ", ".join(fn.bdf for fn, _ in tree.left_out)
    common: dict[str, Any] = dict(properties=props, notes=notes, measured_value=found, unit="GPUs")
    # An imported paste (rigcheck import-lspci) that lists only part of the bus cannot show how many GPUs
    # there are: fewer than expected, or as many, is unknown; only more than expected is a finding.
    imported = rig.manifest.raw.get("imported", {}) if rig.manifest is not None else {}
    partial = imported.get("gpu_count_unknown") if isinstance(imported, dict) else None
    if partial and not (rig.profile.gpus is not None and found > rig.profile.gpus):
        return unreadable(
            f"{rig.name}: the imported text shows {found} GPU(s) ({listing}), but not the whole bus: {partial}",
            expected=f"{rig.profile.gpus} ({rig.profile.source})" if rig.profile.gpus is not None else "",
            fix=["paste the whole `sudo lspci -vvv` (or `lspci -nn` for the count), unfiltered"],
            properties=props,
        )
    if rig.profile.gpus is not None:
        want, where = rig.profile.gpus, rig.profile.source
        if found == want:
            return passed(f"{found} GPUs, as expected", expected_value=want, **common)
        return failed(
            f"{rig.name}: {found} GPU(s) on the PCIe bus, expected {want}",
            measured=f"{found}: {listing}",
            expected=f"{want} ({where})",
            expected_value=want,
            fix=[
                "reseat the missing card and its riser; check its power cables; check `dmesg | grep -i -e NVRM -e pcie`",
                "check the BIOS enables the slot (and Above 4G Decoding / Resizable BAR for large-BAR GPUs)",
            ],
            **common,
        )
    if found:
        return passed(f"{found} GPU(s): {listing}", **common)
    return failed(
        f"{rig.name}: no GPU (NVIDIA class 0300/0302, AMD class 0300/0380/1200) in sys/bus/pci/devices",
        measured="0" + (f" ({len(notes)} display device(s) left out)" if notes else ""),
        expected="at least one GPU (no profile gives a count)",
        fix=[
            "check the cards are seated and powered; `lspci -d 10de::0300; lspci -d 10de::0302; lspci -d 1002:`"
        ],
        **common,
    )


# -- ACS ------------------------------------------------------------------------------------------


@judged
def acs(t: BridgeTarget) -> Verdict:
    """ACS Control of a bridge that GPU-to-GPU traffic passes: no P2P redirect, forwarding or egress bits.

    Bits: PCIe Base Spec 7.7.8.3 ACS Control Register; pciutils ``lib/header.h`` PCI_ACS_CTRL.
    """
    br, rig = t.bridge, t.rig
    tree = rig.pcie
    pairs = [f"GPU{tree.gpu_index(a.bdf)} {a.bdf} <-> GPU{tree.gpu_index(b.bdf)} {b.bdf}" for a, b in t.pairs]
    path = [tree.path_text(g.bdf) for g in _unique_gpus(t.pairs)]
    if br.config is None:
        return unreadable(
            f"{br.describe()}: config space unreadable ({br.config_error}); ACS state unknown",
            measured=br.config_error or "",
            path=path,
            fix=[rig.config_fix(br)],
        )
    if br.config.size <= 64:
        return unreadable(
            f"{br.describe()}: only {br.config.size} bytes of config space readable; ACS lives in extended "
            "config space (from offset 0x100), so its state is unknown",
            path=path,
            fix=[rig.config_fix(br)],
        )
    props: dict[str, object] = {"bdf": br.bdf}
    if br.config.acs is None:
        if br.config.size < 4096 and br.config.port_type is not None:
            return unreadable(
                f"{br.describe()}: a PCI Express port, but only {br.config.size} bytes of its config space were "
                "read: ACS lives in extended config space (0x100-0xfff), so its state is unknown",
                path=path,
                fix=[
                    rig.config_fix(br),
                    "if root already reads 256 bytes, the kernel has no ECAM/MMCONFIG access here",
                ],
            )
        why = (
            "a conventional PCI bridge (no extended config space)"
            if br.config.size < 4096
            else "no ACS capability"
        )
        return passed(f"{br.describe()}: {why}: peer-to-peer is not redirected", properties=props)
    ctrl, cap = br.config.acs.ctrl, br.config.acs.cap
    if 0xFFFF in (ctrl, cap):
        # ACS Capability and Control have reserved bits (15:7 of Control); all ones is a failed read
        # (Linux include/linux/pci.h PCI_ERROR_RESPONSE), not a setting.
        return unreadable(
            f"{br.describe()}: ACS registers at {br.config.acs.offset:#x} read ACSCap {cap:#06x} ACSCtl {ctrl:#06x}, "
            "the value of a failed config read: ACS state unknown",
            path=path,
            fix=[CORRUPT_HINT.replace("BDF", br.bdf)],
        )
    props.update(acs_ctrl=f"{ctrl:#06x}", acs_cap=f"{cap:#06x}", acs_offset=f"{br.config.acs.offset:#x}")
    blocking = ctrl & ACS_P2P_BLOCKING
    values: dict[str, Any] = dict(
        measured_value=f"{ctrl:#06x}", expected_value=f"{ACS_P2P_BLOCKING:#06x} bits clear", unit="ACSCtl"
    )
    if not blocking:
        return passed(f"{br.describe()}: ACSCtl {ctrl:#06x} ({decode_acs(ctrl)})", properties=props, **values)
    bits = ", ".join(long for bit, _, long in ACS_BITS if blocking & bit)
    notes = [f"between {p}" for p in pairs]
    if _iommu_mode(rig) == "translated":
        notes.append(
            "the IOMMU is translating: the kernel sets ACS again at boot while it is on; turn it off too (test_iommu)"
        )
    return failed(
        f"{br.describe()}: ACS {bits} enabled: peer-to-peer traffic between GPUs is redirected to the root complex "
        "(slow P2P, NCCL hangs)",
        measured=f"ACSCtl {ctrl:#06x} = {decode_acs(ctrl)} (ACS capability at {br.config.acs.offset:#x})",
        expected="ReqRedir- CmpltRedir- UpstreamFwd- EgressCtrl- on every bridge between two GPUs",
        path=path,
        notes=notes,
        fix=[
            f"sudo setpci -s {br.bdf} ECAP_ACS+0x6.w=0000   (now; lost at reboot)",
            f'kernel parameter "pci=disable_acs_redir={br.bdf}" in GRUB_CMDLINE_LINUX (every boot; clears '
            "ReqRedir, CmpltRedir and EgressCtrl; UpstreamFwd needs pci=config_acs=)",
            'or disable "ACS" / "PCIe ACS Control" in the BIOS (AMD CBS > NBIO, Intel > IIO)',
        ],
        properties=props,
        **values,
    )


def _iommu_mode(rig: Rig) -> str:
    """The rig's IOMMU mode for a note; ``unknown`` where its evidence cannot be read."""
    try:
        return rig.iommu.mode
    except SourceError:
        return "unknown"


def _unique_gpus(pairs: tuple[tuple[object, object], ...]) -> list:  # type: ignore[type-arg]
    seen: dict[str, object] = {}
    for a, b in pairs:
        for g in (a, b):
            seen.setdefault(g.bdf, g)  # type: ignore[attr-defined]
    return list(seen.values())


# -- IOMMU ----------------------------------------------------------------------------------------


@judged
def iommu(t: GpuTarget) -> Verdict:
    """Whether the IOMMU translates this GPU's DMA, judged from the GPU's own group (``iommu.IommuState.judge``).

    Only the GPU's own group ``type`` (``DMA``/``DMA-FQ``) says translated; a group that is missing or
    unreadable, or no evidence at all, is UNREADABLE naming what is missing. A kernel without group ``type``
    files (before 5.11) is judged from ``iommu=pt``/``iommu.passthrough=`` on the command line
    (Linux Documentation/admin-guide/kernel-parameters.txt).
    """
    rig, gpu = t.rig, t.gpu
    state = rig.iommu
    j = state.judge(gpu.iommu_group, gpu.bdf)
    cmd = state.cmdline if state.cmdline is not None else "(not in this snapshot)"
    props: dict[str, object] = {"iommu_mode": j.mode, "iommu_group": j.group or ""}
    allow = rig.profile.iommu_allow
    where = rig.profile.source
    expected = f"IOMMU {' or '.join(allow)} ({where})"
    common: dict[str, Any] = dict(properties=props, measured_value=j.mode, expected_value=list(allow))
    if j.mode == "unknown":
        return unreadable(
            f"{t.label}: IOMMU state unreadable: {j.evidence}",
            measured=f"iommu group {j.group or 'none'}; kernel command line: {cmd}",
            expected=expected,
            fix=[
                "capture again with `sudo rigcheck capture DIR` (it records sys/kernel/iommu_groups, each "
                "device's iommu_group link and /proc/cmdline)",
                f"live: `readlink /sys/bus/pci/devices/{gpu.bdf}/iommu_group` and `cat "
                "/sys/kernel/iommu_groups/*/type`",
            ],
            **common,
        )
    if j.mode == "off" or (j.mode == "passthrough" and "passthrough" in allow):
        return passed(f"{t.label}: IOMMU {j.mode} ({j.evidence})", **common)
    what = {
        "translated": "GPU peer-to-peer DMA goes through IOMMU translation; NCCL can hang",
        "passthrough": "passthrough, but the profile allows only " + " or ".join(allow),
        "other": f"group type {j.group_type} is neither passthrough (identity) nor off",
    }[j.mode]
    return failed(
        f"{t.label}: IOMMU {j.mode} ({j.evidence}): {what}",
        measured=f"{j.evidence}; kernel command line: {cmd}",
        expected=expected,
        fix=[
            grub_fix(rig.cpu_vendor, "passthrough" in allow),
            "or disable IOMMU (AMD: NBIO > IOMMU; Intel: VT-d) in the BIOS",
        ],
        **common,
    )


# -- links ----------------------------------------------------------------------------------------


def _least(values: list[int | None]) -> int | None:
    known = [v for v in values if v]
    return min(known) if known else None


@judged
def link(t: LinkTarget) -> Verdict:
    """A link on the way to a GPU trained to its expected generation and width.

    Both ends are read (the upstream port's and the downstream device's sysfs ``current_link_*`` and
    config-space LnkSta); the lesser of all readings counts and a disagreement is named. The expectation
    is the profile's, else the lesser of both ends' capability (sysfs ``max_link_*``, LnkCap). A known
    width fault fails even when the speed is unknown; when both are short, one verdict names both.
    """
    rig, up, down = t.rig, t.up, t.down
    tree = rig.pcie
    gpu_names = ", ".join(tree.gpu_label(g) for g in t.gpus)
    where_label = (
        f"link {up.bdf} -> {down.bdf}" if up else f"link of {down.bdf} (on root bus {down.host_bridge})"
    )
    head = f"{where_label} (to {gpu_names})"
    path = [tree.path_text(g.bdf) for g in t.gpus]
    readings = [r for f in (up, down) if f is not None for r in f.link_readings(strict=False)]
    garbage = [str(e) for f in (up, down) if f is not None for e in f.link_errors()]
    cur_gen = _least([g for _, g, _ in readings])
    cur_width = _least([w for _, _, w in readings])
    notes: list[str] = []
    if len({g for _, g, _ in readings if g}) > 1 or len({w for _, _, w in readings if w}) > 1:
        notes.append(
            "the readings of this link disagree (the lesser counts): "
            + "; ".join(f"{where} {fmt_link(g, w)}" for where, g, w in readings)
        )
    cap_gen, cap_width = down.link_cap
    up_gen, up_width = up.link_cap if up else (None, None)
    hw_gen, hw_width = _least([cap_gen, up_gen]), _least([cap_width, up_width])
    gpu_index = next((i for i, g in enumerate(tree.gpus) if g.bdf == down.bdf), None)
    want = rig.profile.link_for(down.bdf, down.slot, gpu_index)
    exp_gen, exp_width = want.gen or hw_gen, want.width or hw_width
    src_gen = (
        rig.profile.link_source(down.bdf, down.slot, gpu_index, "gen")
        if want.gen
        else "lesser of both ends' capability"
    )
    src_width = (
        rig.profile.link_source(down.bdf, down.slot, gpu_index, "width")
        if want.width
        else "lesser of both ends' capability"
    )
    props: dict[str, object] = {
        "link_gen": cur_gen,
        "link_width": cur_width,
        "expected_gen": exp_gen,
        "expected_width": exp_width,
    }
    slot = down.slot or (up.slot if up else None)
    slot_txt = f'slot "{slot}"' if slot else "its slot"
    caps = f"capability: {down.bdf} {fmt_link(cap_gen, cap_width)}" + (
        f", {up.bdf} {fmt_link(up_gen, up_width)}" if up else ""
    )
    measured = f"{fmt_link(cur_gen, cur_width)}; {caps}"
    common: dict[str, Any] = dict(
        path=path,
        properties=props,
        measured_value={"gen": cur_gen, "width": cur_width},
        expected_value={"gen": exp_gen, "width": exp_width},
    )

    unknown: list[str] = []
    if cur_width is None:
        unknown.append("current width")
    if cur_gen is None:
        unknown.append("current speed")
    if exp_width is None:
        unknown.append("width capability")
    if exp_gen is None:
        unknown.append("speed capability")
    config_why = down.config_error or (
        f"read only to {down.config.size} bytes (no capabilities)"
        if down.config is not None and down.config.size <= 64
        else "has no such PCIe capability field"
    )
    problems = list(garbage)  # garbage text in a reading: what was read cannot be trusted
    if unknown:
        problems.append(
            f"{' and '.join(unknown)} unreadable: no usable current/max_link_* in sysfs, and config space {config_why}"
        )
    # A link cannot train above what either end can do (LnkSta <= LnkCap, PCIe Base Spec 7.5.3.6/7.5.3.8):
    # such readings contradict each other (an edited or mixed-up capture), so they cannot be judged.
    above = [
        f"{what} {now} above {fn.bdf}'s capability {cap}"
        for fn in (up, down)
        if fn is not None
        for what, now, cap in (
            ("trained gen", cur_gen, fn.link_cap[0]),
            ("trained width", cur_width, fn.link_cap[1]),
        )
        if now and cap and now > cap
    ]
    if above:
        problems.append("contradictory readings: " + "; ".join(above))
    why_unknown = "; ".join(problems)

    width_short = cur_width is not None and exp_width is not None and cur_width < exp_width
    speed = None
    if cur_gen is not None and exp_gen is not None and cur_gen < exp_gen:
        speed = _speed_short(rig, up, down, cur_gen, exp_gen, hw_gen or exp_gen, slot_txt, props)

    faults: list[str] = []
    fixes: list[str] = []
    exp_parts: list[str] = []
    if width_short:
        faults.append(f"trained to x{cur_width}, expected x{exp_width}")
        exp_parts.append(f"x{exp_width} ({src_width})")
        fixes += [
            f"reseat the card (and riser) in {slot_txt}; a riser or cable that loses lanes trains the link narrower",
            "check the BIOS bifurcation setting for that slot (x16, not x8x8)",
            f"confirm with `sudo lspci -vv -s {down.bdf} | grep -e LnkCap -e LnkSta`",
        ]
    if speed is not None and speed.status == "fail":
        faults.append(speed.text)
        exp_parts.append(f"Gen{exp_gen} ({src_gen})")
        fixes += [f for f in speed.fix if f not in fixes]
        if speed.measured:
            measured = f"{measured}; {speed.measured}"
    elif speed is not None and faults:
        notes.append(f"speed: {speed.text}")  # an idle downshift or an unreadable speed beside a width fault
    if faults:
        if problems:
            notes.append(why_unknown)
        return failed(
            f"{head}: " + "; and ".join(faults),
            measured=measured,
            expected=", ".join(exp_parts),
            notes=notes,
            fix=fixes,
            **common,
        )
    if problems:
        fix = [CORRUPT_HINT.replace("BDF", down.bdf)] if garbage else [rig.config_fix(down)]
        return unreadable(f"{head}: link status {why_unknown}", notes=notes, fix=fix, **common)
    if speed is not None and speed.status == "unreadable":
        return unreadable(f"{head}: {speed.text}", notes=notes, fix=speed.fix, **common)
    if speed is not None:  # an idle downshift
        return passed(f"{where_label}: {speed.text}", notes=notes, **common)
    return passed(f"{where_label}: {fmt_link(cur_gen, cur_width)}", notes=notes, **common)


class _Speed:
    """What a link below its expected speed is: ``fail`` (with the cause), ``idle`` or ``unreadable``."""

    def __init__(self, status: str, text: str, fix: list[str] | None = None, measured: str = "") -> None:
        self.status, self.text, self.fix, self.measured = status, text, fix or [], measured


def _speed_short(
    rig: Rig,
    up: PciFunction | None,
    down: PciFunction,
    cur_gen: int,
    exp_gen: int,
    hw_gen: int,
    slot_txt: str,
    props: dict[str, object],
) -> _Speed:
    """Why a link is below its expected speed: hardware that cannot do it, a configured cap, a real
    downtrain, or an idle GPU saving power."""
    props["link_state"] = "below"
    if hw_gen < exp_gen:
        slower = up if up is not None and up.link_cap[0] == hw_gen else down
        return _Speed(
            "fail",
            f"at most Gen{hw_gen}, expected Gen{exp_gen}: {slower.describe()} is a Gen{hw_gen} part",
            [
                f"move the GPU to a Gen{exp_gen}-capable slot or switch, or correct the profile ([links] gen = {hw_gen})"
            ],
        )
    target = _target_speed(up, down)
    if target is not None and target < exp_gen:
        return _Speed(
            "fail",
            f"speed capped at Gen{target} by Target Link Speed, expected Gen{exp_gen}",
            [
                f'set the BIOS PCIe link speed for {slot_txt} to "Auto" or "Gen{exp_gen}" (it is forced to Gen{target})'
            ],
            f"LnkCtl2 target Gen{target}",
        )
    load = _under_load(rig, down.bdf)
    if load is not None:
        props["link_gen_under_load"] = load[0]
        if load[0] >= exp_gen:
            props["link_state"] = "idle-downshift"
            return _Speed(
                "idle", f"Gen{cur_gen} at idle, Gen{load[0]} under load: power-saving downshift, not a fault"
            )
        return _Speed(
            "fail",
            f"Gen{load[0]} under load, expected Gen{exp_gen}: the link trained down",
            _downtrain_fix(slot_txt, exp_gen),
            f"Gen{cur_gen} at idle, Gen{load[0]} under load",
        )
    unread = [f.bdf for f in (up, down) if f is not None and (f.config is None or f.config.link is None)]
    if unread and down.is_gpu and down.vendor == 0x10DE:
        # LBMS, HASD and the target speed are what tell an idle downshift from a downtrain here.
        return _Speed(
            "unreadable",
            f"Gen{cur_gen} now, Gen{exp_gen} expected, no reading under load, and the link registers (LnkSta, "
            f"LnkCtl2) of {', '.join(unread)} unreadable: an idle downshift cannot be told from a downtrain",
            [ROOT_HINT, "or run live with the GPU suites: a reading under load decides"],
        )
    why = _not_idle_downshift(up, down, cur_gen)
    if why is None:
        # NVIDIA GPUs drop link speed when idle (NVIDIA: nvidia-smi -q shows "PCIe Generation Current" below
        # "Max" at idle; the link returns to full speed under load); no retrain for reliability is recorded
        # on the port above (LnkSta LBMS clear), and the target speed allows full speed, so this is the
        # power-saving downshift. The GPU suite re-reads it under load.
        props["link_state"] = "idle-downshift"
        return _Speed(
            "idle",
            f"Gen{cur_gen} now, Gen{exp_gen} capable: idle power-saving downshift (target speed "
            f"Gen{target or '?'}, no reliability retrain recorded); the GPU suite confirms it under load",
        )
    return _Speed(
        "fail",
        f"trained to Gen{cur_gen}, expected Gen{exp_gen} ({why})",
        _downtrain_fix(slot_txt, exp_gen),
        f"target Gen{target or '?'}",
    )


# NVIDIA GPUs idle at 2.5 GT/s, some cycling through 5 GT/s (an RTX PRO 6000 cycles 32 -> 5 -> 2.5 GT/s:
# github.com/local-inference-lab/rtx6kpro issue 88); a link held at Gen3 or above is not an idle state.
IDLE_MAX_GEN = 2


def _not_idle_downshift(up: PciFunction | None, down: PciFunction, cur_gen: int) -> str | None:
    """Why a slow link without a reading under load is not an idle downshift; None when it may be one."""
    if not (down.is_gpu and down.vendor == 0x10DE):
        return "not an NVIDIA GPU: links here do not downshift at idle"
    if up and up.config and up.config.link and up.config.link.bw_mgmt_status:
        return "LnkSta LBMS set on the port above: retrained for reliability"
    pinned = [
        f.bdf
        for f in (up, down)
        if f and f.config and f.config.link and f.config.link.hw_autonomous_speed_disable
    ]
    if pinned:
        return (
            f"LnkCtl2 Hardware Autonomous Speed Disable set on {', '.join(pinned)}: the link cannot change speed "
            "on its own, so this is where it trained"
        )
    if cur_gen > IDLE_MAX_GEN:
        return (
            f"an idle NVIDIA GPU drops to Gen1 or Gen2 (2.5 or 5 GT/s), not Gen{cur_gen}: a link stopped "
            "between speeds trained down"
        )
    return None


def _downtrain_fix(slot_txt: str, gen: int) -> list[str]:
    return [
        f"reseat the riser/cable in {slot_txt}; use one rated for Gen{gen} ({SPEED_GT[gen]:.0f} GT/s): "
        "signal loss makes the link retrain slower",
        f'set the BIOS PCIe link speed for {slot_txt} to "Gen{gen}" rather than Auto if it keeps falling back',
    ]


def _target_speed(up: object, down: object) -> int | None:
    # The downstream port (upper end) controls training; its LnkCtl2 target caps the link.
    for fn in (up, down):
        cfg = getattr(fn, "config", None)
        if cfg is not None and cfg.link is not None and cfg.link.target_speed:
            return int(cfg.link.target_speed)
    return None


def _under_load(rig: Rig, bdf: str) -> tuple[int, int] | None:
    readings = rig.extras.get("link_under_load")
    if isinstance(readings, dict):
        value = readings.get(bdf)
        if isinstance(value, tuple) and len(value) == 2:
            return int(value[0]), int(value[1])
    return None


# -- bifurcation ----------------------------------------------------------------------------------


def _below(tree: Any, port: PciFunction) -> list[PciFunction]:
    """The devices on a port's link, one function each: the bridge or GPU, else function 0.

    All functions of a multi-function device share its one link (a Switchtec's management endpoint
    ``01:00.1`` beside its upstream port ``01:00.0``, a GPU's audio function): counted once.
    """
    by_device: dict[str, list[PciFunction]] = {}
    for bdf in port.children:
        fn = tree.functions[bdf]
        by_device.setdefault(fn.bdf.rsplit(".", 1)[0], []).append(fn)
    out = []
    for fns in by_device.values():
        fns.sort(key=lambda f: (not (f.is_bridge or f.is_gpu), f.bdf))
        out.append(fns[0])
    return sorted(out, key=lambda f: f.bdf)


@judged
def bifurcation(t: LaneGroupTarget) -> Verdict:
    """How a CPU lane group's root ports are split (x16, x8x8...), against the profile or the devices below.

    A port's width is the lesser of its sysfs ``max_link_width`` and config LnkCap; a port whose link
    trained narrower than both ends can do (its own ``current_link_width``/LnkSta) is named too.
    """
    rig, tree = t.rig, t.rig.pcie
    widths = []
    for p in t.ports:
        w = p.link_cap[1]
        if w is None:
            return unreadable(
                f"{p.describe()}: link capability unreadable (no max_link_width, config {p.config_error})",
                fix=[rig.config_fix(p)],
            )
        widths.append(w)
    split = "".join(f"x{w}" for w in widths)
    props: dict[str, object] = {"lane_group": t.key, "split": split}
    slot_names = t.slots
    want = next((rig.profile.bifurcation[k] for k in t.profile_keys if k in rig.profile.bifurcation), None)

    def port_text(p: PciFunction, w: int) -> str:
        try:
            now = p.link_now[1]
        except SourceError:
            now = None
        return f"{p.bdf} x{w}" + (f" (trained x{now})" if now and now < w else "")

    ports_txt = ", ".join(port_text(p, w) for p, w in zip(t.ports, widths, strict=True))
    common: dict[str, Any] = dict(properties=props, measured_value=split)
    gpus_of = {p.bdf: [g for g in tree.gpus if p in tree.ancestors(g.bdf)] for p in t.ports}
    if want is not None:
        if want == split:
            return passed(
                f"lane group {t.key}: {split} as the profile expects ({ports_txt})",
                expected_value=want,
                **common,
            )
        return failed(
            f"lane group {t.key}: root ports split {split}, expected {want}",
            measured=f"{split} ({ports_txt})",
            expected=f"{want} ({rig.profile.source})",
            expected_value=want,
            path=[tree.path_text(g.bdf) for p in t.ports for g in gpus_of[p.bdf]],
            fix=[
                f'set the BIOS "PCIe bifurcation" for {", ".join(slot_names) or "this slot"} to {want} '
                "(AMD CBS > NBIO > PCIe link configuration; vendor boards: Advanced > PCI Subsystem)"
            ],
            **common,
        )
    narrow: list[tuple[PciFunction, PciFunction, int, int]] = []  # port, device below, its width, port width
    lost: list[tuple[PciFunction, PciFunction, int, int]] = []  # port trained narrower than both ends
    unread_now: list[str] = []
    for p, pw in zip(t.ports, widths, strict=True):
        for child in _below(tree, p):
            cw = child.link_cap[1]
            if cw is None and child.port_type is not None:  # a PCIe device whose width we cannot read
                return unreadable(
                    f"{child.describe()} below lane group {t.key}: link capability unreadable "
                    f"(no max_link_width, config {child.config_error})",
                    fix=[rig.config_fix(child)],
                )
            if not cw:
                continue
            if cw > pw:
                narrow.append((p, child, cw, pw))
                continue
            try:
                now = _least([p.link_now[1], child.link_now[1]])
            except SourceError as exc:  # the split is judged on capability; the trained width is only shown
                unread_now.append(f"trained width not shown: {exc}")
                continue
            if now and now < min(cw, pw):
                lost.append((p, child, min(cw, pw), now))
    lost_lines = [
        f"{p.bdf} and {c.describe()} can both do x{w} but the link between them trained x{now}: lanes lost on "
        "the link (riser, seating), not the split; test_link_trained judges it"
        for p, c, w, now in lost
    ] + unread_now
    if not narrow:
        if lost:
            return warned(
                f"lane group {t.key}: {split} as wired, but a port's link trained narrower ({ports_txt})",
                notes=lost_lines,
                **common,
            )
        return passed(
            f"lane group {t.key}: {split}; every port is as wide as the device below it ({ports_txt})",
            notes=unread_now,
            **common,
        )
    feeds = {p.bdf: (", ".join(tree.gpu_label(g) for g in gpus_of[p.bdf]) or "no GPU") for p in t.ports}
    lines = [
        f"{p.bdf} is x{pw} but {c.describe()} below it can use x{cw}; feeds {feeds[p.bdf]}"
        for p, c, cw, pw in narrow
    ] + lost_lines
    faulty = list(dict.fromkeys(p.bdf for p, *_ in narrow))
    fix = [
        f'set the BIOS "PCIe bifurcation" for {", ".join(slot_names) or "this slot"} to x16 (it is split '
        f'{split}); or, if the split is intended, say so in the profile: [bifurcation] "{t.key}" = "{split}"'
    ]
    summary = f"lane group {t.key}: split {split}: a GPU sits on a port narrower than it can use"
    return failed(
        summary,
        measured=f"{split} ({ports_txt})",
        expected="each root port at least as wide as the device below it (no profile bifurcation entry)",
        path=list(dict.fromkeys(tree.path_text(g.bdf) for b in faulty for g in gpus_of[b])),
        notes=lines,
        fix=fix,
        **common,
    )


# -- topology -------------------------------------------------------------------------------------


@judged
def topology(t: PairTarget) -> Verdict:
    """The pair's connection class (nvidia-smi topo legend: PIX, PXB, PHB, NODE, SYS) within the profile's limit."""
    rig, tree = t.rig, t.rig.pcie
    pair = f"{tree.gpu_label(t.a)} <-> {tree.gpu_label(t.b)}"
    # An imported paste that leaves out a bridge above either GPU (rigcheck import-lspci puts a
    # placeholder there) cannot tell how the two connect.
    imported = rig.manifest.raw.get("imported", {}) if rig.manifest is not None else {}
    holes = set(imported.get("placeholders", [])) if isinstance(imported, dict) else set()
    cut = sorted({x.bdf for g in (t.a, t.b) for x in tree.ancestors(g.bdf) if x.bdf in holes})
    if cut:
        return unreadable(
            f"{pair}: connection unknown: the imported text does not show the bridges above "
            f"{', '.join(g.bdf for g in (t.a, t.b))} (placeholders {', '.join(cut)})",
            fix=["paste the whole `sudo lspci -vvv` (its Bus: lines place every bridge), or add `lspci -tv`"],
        )
    cls = pair_class(tree, t.a.bdf, t.b.bdf)
    if imported and cls == "NODE" and (t.a.numa_node is None or t.b.numa_node is None):
        # across host bridges, NODE or SYS turns on the NUMA nodes, which this paste does not show
        return unreadable(
            f"{pair}: on different host bridges ({t.a.host_bridge}, {t.b.host_bridge}); NODE or SYS is unknown: "
            "the imported text shows no NUMA node",
            fix=["paste `lspci -vvv` (it prints NUMA node:) or `nvidia-smi topo -m`"],
        )
    props: dict[str, object] = {"topology": cls}
    limit = rig.profile.max_topology_class
    from .p2p.nvlink import nvlink_links, nvlink_text

    nvlink = nvlink_text(nvlink_links(rig, None, t.a.bdf, t.b.bdf))
    if nvlink:  # GPU-to-GPU traffic takes NVLink, closer than any PCIe class (nvidia-smi topo -m: NV#)
        props["topology"] = nvlink.removeprefix("NVLink peers (").rstrip(")") if "(" in nvlink else "NV"
        return passed(
            f"{pair}: {nvlink} (PCIe path {cls}, not used between them)",
            properties=props,
            measured_value=props["topology"],
        )
    if limit is None:
        note = ""
        if TOPOLOGY_CLASSES.index(cls) > TOPOLOGY_CLASSES.index("PXB"):
            note = " (NCCL uses P2P only up to PXB unless NCCL_P2P_LEVEL is set)"
        return passed(f"{pair}: {cls}{note}", properties=props, measured_value=cls)
    if TOPOLOGY_CLASSES.index(cls) <= TOPOLOGY_CLASSES.index(limit):
        return passed(
            f"{pair}: {cls}, within {limit}", properties=props, measured_value=cls, expected_value=limit
        )
    return failed(
        f"{pair}: connection {cls}, expected {limit} or closer",
        measured=cls,
        expected=f"at most {limit} ({rig.profile.source})",
        path=[tree.path_text(t.a.bdf), tree.path_text(t.b.bdf)],
        fix=[
            "move the cards so that tensor-parallel peers share a switch (PIX) or a root complex (PHB)",
            "check `nvidia-smi topo -m` agrees",
        ],
        properties=props,
        measured_value=cls,
        expected_value=limit,
    )


__all__ = ["acs", "bifurcation", "gpu_count", "iommu", "link", "not_applicable", "topology"]
