"""Health checks: uncorrected ECC, pending page retirement / row remapping, XID errors, PCIe replays, NVLink."""

from __future__ import annotations

import re

from ..targets import GpuTarget
from ..verdict import Verdict, failed, judged, not_applicable, passed, unreadable, warned
from .common import expectations, label, load_source, need, opened, smi_index
from .state import (
    F_ECC_MODE,
    F_ECC_UNCORR_AGGREGATE,
    F_ECC_UNCORR_VOLATILE,
    F_NVLINK,
    F_NVLINK_REMOTE,
    F_RECOVERY_ACTION,
    F_REMAPPED_ROWS,
    F_RETIRED_PENDING,
    NOT_NVIDIA,
    NOT_SUPPORTED,
    GpuState,
    LoadReadings,
    Unavailable,
)
from .xid import FAIL, INFO, RECOVERY_ACTIONS, WARN, Judged, judge, parse_events
from .xid_catalog import CATALOG_URL

RESET_FIX = "drain the GPU and reset it (`sudo nvidia-smi -i {i} -r`, or reboot); if it recurs, RMA the card"


def _no_ecc(gpu: GpuState) -> bool:
    mode = gpu.get(F_ECC_MODE)
    return isinstance(mode, Unavailable) and mode.code == NOT_SUPPORTED


@judged
def ecc(t: GpuTarget, gpu: GpuState | Unavailable) -> Verdict:
    """No uncorrected ECC error, volatile (since boot) or aggregate (lifetime)."""
    gpu = opened(t, gpu, "ECC state")
    if _no_ecc(gpu):
        # Memory without ECC (GeForce): there are no ECC counters to read, the check does not apply.
        return not_applicable(f"{label(t, gpu)}: no ECC memory (NVML: ECC mode not supported)")
    mode = need(t, gpu, F_ECC_MODE, "ECC mode")
    if mode[0] == 0:
        return not_applicable(f"{label(t, gpu)}: ECC disabled: no ECC counters")
    vol = need(t, gpu, F_ECC_UNCORR_VOLATILE, "uncorrected ECC error count (volatile)")
    agg = need(t, gpu, F_ECC_UNCORR_AGGREGATE, "uncorrected ECC error count (aggregate)")
    name = label(t, gpu)
    props: dict[str, object] = {
        "ecc_mode": mode[0],
        "ecc_uncorrected_volatile": vol,
        "ecc_uncorrected_aggregate": agg,
    }
    if mode[0] == 0:
        return not_applicable(f"{name}: ECC disabled: no ECC counters")
    if vol == 0 and agg == 0:
        return passed(f"{name}: no uncorrected ECC errors", properties=props)
    return failed(
        f"{name}: {vol} uncorrected ECC error(s) since boot, {agg} in the card's lifetime",
        measured=f"volatile {vol}, aggregate {agg}",
        expected="0 uncorrected ECC errors",
        fix=[RESET_FIX.format(i=smi_index(t, gpu)), "`nvidia-smi -q -d ECC,ROW_REMAPPER` for details"],
        properties=props,
    )


@judged
def rows_pending(t: GpuTarget, gpu: GpuState | Unavailable) -> Verdict:
    """No retired page (pre-Ampere) or remapped row (Ampere and later) waiting for a GPU reset, no remap failure."""
    gpu = opened(t, gpu, "memory repair state")
    name = label(t, gpu)
    retired, remapped = gpu.get(F_RETIRED_PENDING), gpu.get(F_REMAPPED_ROWS)
    if isinstance(retired, Unavailable) and isinstance(remapped, Unavailable):
        if _no_ecc(gpu) and retired.code == NOT_SUPPORTED and remapped.code == NOT_SUPPORTED:
            return not_applicable(f"{name}: no ECC memory: no page retirement or row remapping")
        return unreadable(
            f"{name}: neither retired-page nor remapped-row state readable: {retired}; {remapped}"
        )
    props: dict[str, object] = {}
    problems = []
    if isinstance(retired, int):
        props["retired_pages_pending"] = retired
        if retired:
            problems.append("retired pages pending (take effect at the next GPU reset)")
    if isinstance(remapped, list):
        corr, unc, pending, failure = remapped
        props.update(
            remapped_rows_correctable=corr,
            remapped_rows_uncorrectable=unc,
            remap_pending=pending,
            remap_failure=failure,
        )
        if pending:
            problems.append(f"row remapping pending ({corr} correctable, {unc} uncorrectable rows remapped)")
        if failure:
            problems.append("row remapping FAILED: no spare rows left")
    if not problems:
        return passed(f"{name}: no memory repair pending", properties=props)
    fix = [RESET_FIX.format(i=smi_index(t, gpu))]
    if isinstance(remapped, list) and remapped[3]:
        fix = ["the GPU ran out of spare rows: RMA the card"]
    return failed(
        f"{name}: {'; '.join(problems)}",
        measured=str(props),
        expected="nothing pending, no failure",
        fix=fix,
        properties=props,
    )


def _fn0(bdf: str) -> str:
    return bdf.rsplit(".", 1)[0] + ".0"


def _recovery(gpu: GpuState | Unavailable) -> tuple[int | None, str, bool]:
    """NVML's GPU recovery action: (value, what to say about it, corrupt); value None where it was not read.

    A value that is no count (a string, a negative number) is corrupt; an action this table does not know is
    kept (a newer driver's action is still not None)."""
    if isinstance(gpu, Unavailable):
        return None, "NVML recovery action: not read (GPU not in NVML)", False
    v = gpu.get(F_RECOVERY_ACTION)
    if isinstance(v, Unavailable):
        if v.code == NOT_SUPPORTED:
            return None, "NVML recovery action: not offered by this GPU/driver", False
        return None, f"NVML recovery action: not read ({v})", False
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        return None, f"NVML recovery action: impossible value {v!r}", True
    return v, f"NVML recovery action: {RECOVERY_ACTIONS.get(v, (f'unknown action {v}', ''))[0]}", False


def _counts(found: list[Judged]) -> str:
    seen: dict[str, list[Judged]] = {}
    for j in found:
        seen.setdefault(j.name, []).append(j)
    return "; ".join(f"{n} x{len(js)} -> {js[0].resolution}" for n, js in seen.items())


@judged
def xid(t: GpuTarget, gpu: GpuState | Unavailable, log: str | Unavailable, where: str) -> Verdict:
    """No driver fault needing a GPU reset or worse for this GPU: kernel-log Xids found by NVIDIA's Xid catalog,
    the driver's messages without an Xid number, and NVML's GPU recovery action where the driver offers it.

    An Xid whose catalog resolution is a GPU reset or worse (RESET_GPU, RESTART_BM, ...) fails; one that only
    needs the application restarted warns with its count; one not in the catalog warns, naming it. A driver
    message naming no GPU counts for the only GPU of a one-GPU rig; on a larger rig it is put down to a GPU
    that has a failing Xid of its own, and warns on every GPU where none has.
    """
    if isinstance(gpu, Unavailable) and gpu.code == NOT_NVIDIA:
        opened(t, gpu, "XID")  # n/a: not an NVIDIA GPU
    name = label(t, gpu)
    i = smi_index(t, gpu)
    action, action_note, corrupt = _recovery(gpu)
    if corrupt:
        return unreadable(
            f"{name}: {action_note} (corrupt nvml.json?)", fix=["capture again: `rigcheck capture DIR`"]
        )
    action_fail = action is not None and action != 0
    action_fix = RECOVERY_ACTIONS.get(action or 0, ("", "read it with `nvidia-smi -q -i {i}`"))[1].format(i=i)
    props: dict[str, object] = {"gpu_recovery_action": action if action is not None else "n/a"}
    if isinstance(log, Unavailable):
        if action_fail:
            return failed(
                f"{name}: NVML says the GPU needs recovery: {action_note} (kernel log unreadable: {log})",
                measured=action_note,
                measured_value=action,
                expected="recovery action None",
                expected_value=0,
                fix=[action_fix],
                properties=props,
            )
        return unreadable(
            f"{name}: kernel log unreadable: {log}; {action_note}",
            fix=["run as root (sudo pytest --rig ...), or capture with `sudo rigcheck capture DIR`"],
            properties=props,
        )
    found = [judge(e) for e in parse_events(log)]
    rig_gpus = {_fn0(g.bdf) for g in t.rig.pcie.gpus}
    key = _fn0(t.gpu.bdf)
    mine = [j for j in found if j.event.bdf == key]
    loose = [j for j in found if j.event.bdf is None]
    if len(rig_gpus) == 1:  # a message naming no GPU can only be about this one
        mine, loose = mine + loose, []
    failing = [j for j in mine if j.severity == FAIL]
    warning = [j for j in mine if j.severity == WARN]
    info = [j for j in mine if j.severity == INFO]
    loose_fail = [j for j in loose if j.severity == FAIL]
    culprits = sorted({j.event.bdf for j in found if j.severity == FAIL and j.event.bdf in rig_gpus})
    props["xids"] = ",".join(str(j.event.xid) for j in mine if j.event.xid is not None)
    props["driver_faults"] = len(failing)
    loose_note = (
        f"{len(loose_fail)} driver message(s) naming no GPU ({', '.join(sorted({j.key for j in loose_fail}))}), "
        f"put down to the failing GPU(s) {', '.join(culprits)}: {loose_fail[-1].event.text}"
        if loose_fail and culprits
        else ""
    )
    if failing or action_fail:
        worst = failing[-1] if failing else None
        what = _counts(failing) if failing else action_note
        fix = []
        for j in failing:
            line = _fix_for(j, i)
            if line not in fix:
                fix.append(line)
        if action_fail:
            fix.append(f"{action_note}: {action_fix}")
        fix.append(
            f"if it recurs after the reset: `sudo nvidia-bug-report.sh` and contact the vendor ({CATALOG_URL})"
        )
        return failed(
            f"{name}: {what}",
            measured=worst.event.text if worst else action_note,
            measured_value=", ".join(dict.fromkeys(j.key for j in failing)) or action_note,
            expected=f"no driver fault whose NVIDIA resolution is a GPU reset or worse ({where}); recovery action None",
            expected_value="none",
            notes=[j.event.text for j in failing[-5:-1]]
            + ([loose_note] if loose_note and key in culprits else [])
            + [action_note],
            fix=fix,
            properties=props,
        )
    gone = [
        j for j in found if j.severity == FAIL and j.event.bdf is not None and j.event.bdf not in rig_gpus
    ]
    if gone:
        # A GPU that fell off the bus (Xid 79) or failed to initialise is often no longer enumerated: its
        # address is on no GPU of the bus now, and every GPU left may be the card the rig should have.
        addrs = ", ".join(sorted({str(j.event.bdf) for j in gone}))
        return failed(
            f"{name}: the driver logged {_counts(gone)} for PCI address {addrs}, which is no GPU on this "
            "rig's bus now: a GPU that fell off the bus or failed to initialise is no longer enumerated",
            measured=gone[-1].event.text,
            measured_value=", ".join(sorted({j.key for j in gone})),
            expected=f"no driver fault ({where}) and every GPU the driver knew still on the bus",
            fix=[
                f"find the card at {addrs} (`sudo lspci -s {addrs}`; `sudo dmesg | grep -i -e NVRM -e {addrs}`): "
                "reseat it and its power cables, or reboot; if it recurs, contact the vendor"
            ],
            properties=props,
        )
    if loose_fail and not culprits:
        kinds = ", ".join(sorted({j.name for j in loose_fail}))
        return warned(
            f"{name}: the driver logged a fault naming no GPU ({kinds}): cannot tell which of the "
            f"{len(rig_gpus)} GPUs it is; {action_note}",
            measured=loose_fail[-1].event.text,
            measured_value=", ".join(sorted({j.key for j in loose_fail})),
            expected=f"no driver fault ({where})",
            fix=[
                "find the GPU: `nvidia-smi -q | grep -i -A1 'recovery action'` and run a CUDA program on each GPU; "
                "reset the one that fails (`sudo nvidia-smi -r -i N`) or reboot"
            ],
            properties=props,
        )
    if warning:
        return warned(
            f"{name}: {len(warning)} Xid(s) that need no GPU reset: {_counts(warning)} ({where}); {action_note}",
            measured=warning[-1].event.text,
            measured_value=len(warning),
            expected="no Xid",
            expected_value=0,
            fix=[
                "restart the application that hit them; if they repeat, see NVIDIA's catalog: " + CATALOG_URL
            ],
            properties=props,
        )
    extra = f"; informational: {_counts(info)}" if info else ""
    tail = f"; {loose_note}" if loose_note else ""
    return passed(
        f"{name}: no Xid or driver fault needing a GPU reset ({where}); {action_note}{extra}{tail}",
        measured_value=0,
        expected_value=0,
        properties=props,
    )


def _fix_for(j: Judged, i: int) -> str:
    bucket = j.resolution.split(":", 1)[0]
    if bucket in ("RESET_GPU", "WORKFLOW_XID_48", "WORKFLOW_NVLINK_ERR", "WORKFLOW_NVLINK5_ERR"):
        return (
            f"{j.key}: {j.resolution}: stop every process on GPU{i} and reset it (`sudo nvidia-smi -r -i {i}`), "
            "or reboot"
        )
    return f"{j.key}: {j.resolution}"


@judged
def replay_growth(t: GpuTarget, gpu: GpuState | Unavailable, load: LoadReadings | Unavailable) -> Verdict:
    """The PCIe replay counter does not grow while the GPU is busy (``[gpu] max_replay_growth``, default 0)."""
    exp = expectations(t.rig.profile, t)
    gpu = opened(t, gpu, "PCIe replay counter growth")
    name = label(t, gpu)
    if isinstance(load, Unavailable):
        return unreadable(f"{name}: PCIe replay counter growth unknown: {load}")
    if load.replay_before is None or load.replay_after is None:
        return unreadable(f"{name}: PCIe replay counter not read before and after the load")
    grew = load.replay_after - load.replay_before
    if not load.samples and grew <= exp.max_replay_growth:
        # the samples are what shows the GPU was busy between the two counter reads (gpu/load.py Sampler)
        return unreadable(
            f"{name}: PCIe replay counter {load.replay_before} -> {load.replay_after}, but no sample was taken "
            f"under load ({load_source(t.rig)}: load.samples is empty): nothing shows the GPU was busy between the two reads",
            measured=f"0 samples under load (window_s {load.window_s:g})",
            expected="samples taken while the load ran",
            fix=[
                "run live (pytest --rig), or capture again with `rigcheck capture DIR` on a machine with torch"
            ],
        )
    props: dict[str, object] = {
        "pcie_replay_before": load.replay_before,
        "pcie_replay_after": load.replay_after,
        "pcie_replay_growth": grew,
    }
    measured = f"{load.replay_before} -> {load.replay_after} over {load.window_s:g} s under load"
    if grew <= exp.max_replay_growth:
        return passed(f"{name}: PCIe replay counter {measured}", properties=props)
    return failed(
        f"{name}: PCIe replay counter grew by {grew} under load: link-level retransmissions "
        "(signal integrity)",
        measured=measured,
        expected=f"growth at most {exp.max_replay_growth} ({exp.said('max_replay_growth')}, {exp.where})",
        path=[t.rig.pcie.path_text(t.gpu.bdf)],
        fix=[
            "reseat or replace the riser/cable; a Gen4/Gen5 link over a long riser needs a rated one",
            "if it persists, set the slot's BIOS link speed one generation lower",
        ],
        properties=props,
    )


_FM_FIX = (
    "NVSwitch system: `systemctl status nvidia-fabricmanager` (start it, matching the driver version), "
    "`nvidia-smi -q | grep -i -A3 fabric`"
)


@judged
def nvlink(
    t: GpuTarget, gpu: GpuState | Unavailable, peers: dict[str, GpuState | Unavailable] | None = None
) -> Verdict:
    """The GPU's NVLinks are as the rig should have them (``[gpu] nvlink``, per GPU ``[gpu.device.X] nvlink``).

    Three cases told apart: no NVLink hardware (NVML: link 0 not supported); NVLink hardware with nothing
    fitted (GeForce RTX 3090, RTX A6000, A100/H100 PCIe without a bridge: every link inactive); links that
    should be up and are down. ``"none"``: no link need be up. ``"bridge"``/``"nvswitch"``: every link up.
    Unsaid: a GPU whose links are all inactive passes with a warning unless another GPU of the rig has a link
    up (then the links were meant to be used) or it is an SXM board (its baseboard wires the links); a GPU
    with some links up must have all of them up.
    ``peers`` are the rig's GPUs as NVML sees them (for that one inference).
    """
    exp = expectations(t.rig.profile, t)
    states = need(t, gpu, F_NVLINK, "NVLink state")
    gpu = opened(t, gpu, "NVLink state")
    name = label(t, gpu)
    i = smi_index(t, gpu)
    want = exp.nvlink
    said = f'{exp.said("nvlink")} = "{want}" ({exp.where})' if want else "no [gpu] nvlink in the profile"
    set_none = 'if this rig has no NVLink bridge or switch, say so in the profile: [gpu] nvlink = "none"'
    if not states:
        if want in (None, "none"):
            return not_applicable(f"{name}: no NVLink on this GPU (NVML: link 0 not supported)")
        return failed(
            f"{name}: the profile expects NVLink ({want}) but this GPU has no NVLink hardware",
            measured="no NVLink (NVML: link 0 not supported)",
            measured_value=0,
            expected=said,
            expected_value=want,
            unit="links",
            fix=[
                'a card without NVLink (RTX 4090 and later GeForce cards have none): set [gpu] nvlink = "none"; '
                "otherwise check the driver sees the links (`nvidia-smi nvlink -s -i " + str(i) + "`)"
            ],
        )
    if want is None and gpu.name and is_sxm(gpu.name):
        # An SXM board sits on a baseboard that wires every NVLink (to NVSwitches, or GPU to GPU on 4-GPU HGX);
        # a VM given the GPU without its NVLinks shows none (handled above).
        want, said = "nvswitch", f"an SXM board ({gpu.name}): its NVLinks are wired on the baseboard"
    n = len(states)
    up = sorted(int(k) for k, v in states.items() if v)
    down = sorted(int(k) for k, v in states.items() if not v)
    remote = gpu.get(F_NVLINK_REMOTE)
    ends = _remote_text(remote if isinstance(remote, dict) else {}, up)
    props: dict[str, object] = {"nvlinks": n, "nvlinks_up": len(up), "nvlinks_down": len(down)}
    kw: dict[str, object] = {"measured_value": len(up), "unit": "links active", "properties": props}
    if want == "none":
        if not up:
            return passed(
                f"{name}: NVLink hardware ({n} links) with no bridge or switch fitted: all inactive, as {said}",
                expected_value=0,
                **kw,
            )
        return warned(
            f"{name}: {len(up)} of {n} NVLinks active{ends}, but {said}",
            measured=f"links up: {up}",
            expected="no NVLink in use",
            expected_value=0,
            fix=['set [gpu] nvlink = "bridge" (or "nvswitch") so a link that drops is caught'],
            **kw,
        )
    if not up:
        peers_up = any(
            isinstance(g, GpuState) and isinstance(g.get(F_NVLINK), dict) and any(g.get(F_NVLINK).values())
            for b, g in (peers or {}).items()
            if b != t.gpu.bdf
        )
        if want is None and not peers_up:
            return warned(
                f"{name}: NVLink hardware ({n} links) but no link active on any GPU of this rig: "
                "no NVLink bridge or switch fitted?",
                measured=f"all {n} links inactive",
                expected=f"nothing said ({said})",
                fix=[set_none, 'if a bridge is fitted: [gpu] nvlink = "bridge", and reseat it (power off)'],
                **kw,
            )
        if want == "nvswitch":
            fix = [
                _FM_FIX,
                f"reset the GPU (`sudo nvidia-smi -r -i {i}`) or reboot; if the links stay down, contact the vendor",
            ]
        else:
            fix = [
                "fit the NVLink bridge across the GPUs it should join (power off first), or reseat it: every link "
                "of this GPU is inactive",
                set_none,
            ]
        return failed(
            f"{name}: no NVLink active (0 of {n} up)"
            + (": the GPU is not connected to its NVLink bridge" if want == "bridge" else "")
            + ("" if want else ": other GPUs of this rig have NVLink up"),
            measured=f"all {n} links inactive",
            expected=f"{n} links up ({said})",
            expected_value=n,
            fix=fix,
            **kw,
        )
    if not down:
        return passed(f"{name}: all {n} NVLinks up{ends}", expected_value=n, **kw)
    fix = [f"`nvidia-smi nvlink -s -i {i}`, `nvidia-smi nvlink -e -i {i}` (error counters)"]
    if want != "bridge":
        fix.append(_FM_FIX)
    if want != "nvswitch":
        fix.append("reseat the NVLink bridge (power off first); try a known-good bridge")
    fix.append(
        f"reset the GPU (`sudo nvidia-smi -r -i {i}`) or reboot; if the same links stay down, contact the vendor"
    )
    return failed(
        f"{name}: NVLink(s) {', '.join(map(str, down))} down ({len(up)} of {n} up{ends})",
        measured=f"links down: {down}",
        expected=f"all {n} links up ({said})",
        expected_value=n,
        fix=fix,
        **kw,
    )


def is_sxm(name: str) -> bool:
    """Whether NVML's product name is an SXM board: "SXM" in it (A100-SXM4-80GB), or a Hopper/Blackwell data-center
    part without "PCIe"/"NVL" (NVIDIA H100 80GB HBM3, NVIDIA H200, NVIDIA B200; the H100/H200 NVL are PCIe cards)."""
    if "SXM" in name.upper():
        return True
    return bool(re.match(r"NVIDIA (H100|H200|H800|H20|B100|B200|B300)\b", name)) and not re.search(
        r"PCIe|\bNVL\b", name, re.I
    )


def _remote_text(remote: dict[str, object], up: list[int]) -> str:
    """`` to GPU 0000:4b:00.0`` / `` to NVSwitch``: what the active links reach, where NVML said."""
    ends: list[str] = []
    for link in up:
        r = remote.get(str(link))
        if not isinstance(r, dict):
            continue
        kind = {"gpu": "GPU", "switch": "NVSwitch", "ibmnpu": "IBM NPU"}.get(str(r.get("type")), "")
        text = " ".join(x for x in (kind, str(r.get("bdf", "")) if kind != "NVSwitch" else "") if x)
        if text and text not in ends:
            ends.append(text)
    return f" to {', '.join(ends)}" if ends else ""
