"""Health checks: uncorrected ECC, pending page retirement / row remapping, XID errors, PCIe replays, NVLink."""

from __future__ import annotations

from ..errors import ProfileError
from ..targets import GpuTarget
from ..verdict import Verdict, failed, judged, not_applicable, passed, unreadable
from .common import expectations, label, need, opened, smi_index
from .state import (
    F_ECC_MODE,
    F_ECC_UNCORR_AGGREGATE,
    F_ECC_UNCORR_VOLATILE,
    F_NVLINK,
    F_REMAPPED_ROWS,
    F_RETIRED_PENDING,
    NOT_NVIDIA,
    NOT_SUPPORTED,
    GpuState,
    LoadReadings,
    Unavailable,
)
from .xid import FATAL_XIDS, XidEvent, parse_xids

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


@judged
def xid(t: GpuTarget, gpu: GpuState | Unavailable, log: str | Unavailable, where: str) -> Verdict:
    """No fatal XID for this GPU in the kernel log."""
    if isinstance(gpu, Unavailable) and gpu.code == NOT_NVIDIA:
        opened(t, gpu, "XID")  # n/a: not an NVIDIA GPU
    name = label(t, gpu)
    if isinstance(log, Unavailable):
        return unreadable(
            f"{name}: kernel log unreadable: {log}",
            fix=["run as root (sudo pytest --rig ...), or capture with `sudo rigcheck capture DIR`"],
        )
    key = t.gpu.bdf.rsplit(".", 1)[0] + ".0"
    events = [e for e in parse_xids(log) if e.bdf == key]
    fatal = [e for e in events if e.xid in FATAL_XIDS]
    props: dict[str, object] = {"xids": ",".join(str(e.xid) for e in events)}
    if not fatal:
        other = f"; non-fatal XIDs {_counts(events)} (application faults)" if events else ""
        return passed(f"{name}: no fatal XID in the kernel log ({where}){other}", properties=props)
    return failed(
        f"{name}: fatal XID(s) {_counts(fatal)} in the kernel log",
        measured=fatal[-1].text,
        expected=f"no XID from {sorted(FATAL_XIDS)} ({where})",
        notes=[e.text for e in fatal[-5:-1]],
        fix=[
            RESET_FIX.format(i=smi_index(t, gpu)),
            "XID 79 (fallen off the bus): reseat the card and its riser, check power cables; "
            "XID 48/63/64/94/95: memory errors, see the ECC check",
        ],
        properties=props,
    )


def _counts(events: list[XidEvent]) -> str:
    seen: dict[int, int] = {}
    for e in events:
        seen[e.xid] = seen.get(e.xid, 0) + 1
    return ", ".join(f"{x} (x{n})" for x, n in sorted(seen.items()))


@judged
def replay_growth(t: GpuTarget, gpu: GpuState | Unavailable, load: LoadReadings | Unavailable) -> Verdict:
    """The PCIe replay counter does not grow while the GPU is busy (``[gpu] max_replay_growth``, default 0)."""
    try:
        exp = expectations(t.rig.profile)
    except ProfileError as exc:
        return unreadable(f"{t.label}: profile error: {exc}")
    gpu = opened(t, gpu, "PCIe replay counter growth")
    name = label(t, gpu)
    if isinstance(load, Unavailable):
        return unreadable(f"{name}: PCIe replay counter growth unknown: {load}")
    if load.replay_before is None or load.replay_after is None:
        return unreadable(f"{name}: PCIe replay counter not read before and after the load")
    grew = load.replay_after - load.replay_before
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
        expected=f"growth at most {exp.max_replay_growth} ([gpu] max_replay_growth, {exp.where})",
        path=[t.rig.pcie.path_text(t.gpu.bdf)],
        fix=[
            "reseat or replace the riser/cable; a Gen4/Gen5 link over a long riser needs a rated one",
            "if it persists, set the slot's BIOS link speed one generation lower",
        ],
        properties=props,
    )


@judged
def nvlink(t: GpuTarget, gpu: GpuState | Unavailable) -> Verdict:
    """Every NVLink of a GPU that has NVLink is up."""
    states = need(t, gpu, F_NVLINK, "NVLink state")
    gpu = opened(t, gpu, "NVLink state")
    name = label(t, gpu)
    if not states:
        return not_applicable(f"{name}: no NVLink on this GPU")
    down = sorted((int(k) for k, v in states.items() if not v))
    props: dict[str, object] = {"nvlinks": len(states), "nvlinks_down": len(down)}
    if not down:
        return passed(f"{name}: all {len(states)} NVLinks up", properties=props)
    return failed(
        f"{name}: NVLink(s) {', '.join(map(str, down))} down ({len(states) - len(down)} of {len(states)} up)",
        measured=f"links down: {down}",
        expected=f"all {len(states)} links up",
        fix=[
            f"`nvidia-smi nvlink -s -i {smi_index(t, gpu)}`; check the fabric manager "
            "(`systemctl status nvidia-fabricmanager`) on NVSwitch systems; reseat the NVLink bridge on PCIe cards",
            RESET_FIX.format(i=smi_index(t, gpu)),
        ],
        properties=props,
    )
