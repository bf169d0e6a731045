"""Checks on readings taken while the GPU is busy: PCIe link as NVML sees it, link flapping, clock event reasons.

Idle GPUs downshift their link (``nvidia-smi -q`` shows "PCIe Generation Max 4, Current 1" at idle;
DCGM's pcie plugin reads gen/width only in P0, NVIDIA/DCGM ``nvvs/plugin_src/pcie/PcieMain.cpp``), so
the link is judged only under load. Clock event reason bits (NVML API reference,
``nvmlClocksEventReasons``; the same masks as Azure/azurehpc-health-checks
``customTests/azure_gpu_clock_throttling.nhc``): 0x4 SW power cap is what a capped rig shows under load
and passes; 0x8 HW slowdown, 0x20 SW thermal, 0x40 HW thermal and 0x80 HW power brake fail.
"""

from __future__ import annotations

from ..pcie import fmt_link
from ..targets import GpuTarget
from ..verdict import Unjudgeable, Verdict, failed, judged, passed, unreadable
from .common import expectations, label, load_source, need, opened
from .state import (
    CORRUPT,
    F_PCIE_GEN,
    F_PCIE_MAX_GEN,
    F_PCIE_MAX_WIDTH,
    F_PCIE_WIDTH,
    GpuState,
    LoadReadings,
    Unavailable,
)

MIN_SAMPLES = 10  # a flapping window needs more than a couple of readings
MIN_SPAN_FRACTION = 0.5  # the samples span the window less one interval; half of it is far short

REASONS = {
    0x1: "GPU idle",
    0x2: "applications clocks setting",
    0x4: "SW power cap",
    0x8: "HW slowdown",
    0x10: "sync boost",
    0x20: "SW thermal slowdown",
    0x40: "HW thermal slowdown",
    0x80: "HW power brake slowdown",
    0x100: "display clocks setting",
}
BAD_REASONS = 0x8 | 0x20 | 0x40 | 0x80
REASON_FIX = {
    0x8: "HW slowdown: the board asserted slowdown (over-temperature or power supply sag): check cooling, fans "
    "and that every PCIe power connector is plugged into its own PSU cable",
    0x20: "SW thermal slowdown: the GPU is above its thermal target: improve airflow, clean the heatsink, "
    "space the cards apart (`nvidia-smi -q -d TEMPERATURE`)",
    0x40: "HW thermal slowdown: the GPU hit its hardware temperature limit: fix cooling before running load",
    0x80: "HW power brake: the board's external power-brake signal fired (PSU overload or a shared circuit): "
    "check the PSU rating and its cables; lower the cap with nvidia-smi -pl",
}


def decode_reasons(bits: int) -> str:
    """``0x5`` -> ``0x5 (GPU idle, SW power cap)``."""
    names = [n for b, n in REASONS.items() if bits & b]
    unknown = bits & ~sum(REASONS)
    if unknown:
        names.append(f"unknown {unknown:#x}")
    return f"{bits:#x} ({', '.join(names) or 'none'})"


def _load(
    t: GpuTarget, gpu: GpuState | Unavailable, load: LoadReadings | Unavailable, what: str
) -> LoadReadings:
    gpu = opened(t, gpu, what)
    if isinstance(load, Unavailable):
        raise Unjudgeable(unreadable(f"{label(t, gpu)}: {what} unknown: {load}", fix=[_load_fix(str(load))]))
    if not load.samples:
        raise Unjudgeable(unreadable(f"{label(t, gpu)}: {what} unknown: no sample was taken under load"))
    return load


def _load_fix(why: str) -> str:
    """The fix for a load that could not run, fitting why: a variable that hid the GPU is the cause."""
    if "CUDA_VISIBLE_DEVICES" in why:
        return "unset CUDA_VISIBLE_DEVICES (or list every GPU in it) and run again"
    if "torch" in why and ("not installed" in why or "no module" in why.lower()):
        return "pip install 'pytest-rigcheck[torch]' (the CUDA build matching your driver) and run again"
    return (
        "run live with torch installed (pytest-rigcheck[torch]) so the suite can load the GPU, "
        "or capture with `rigcheck capture DIR` on a machine with torch"
    )


@judged
def link_under_load(t: GpuTarget, gpu: GpuState | Unavailable, load: LoadReadings | Unavailable) -> Verdict:
    """NVML's current PCIe generation and width while busy reach the profile's (else NVML's max for device and system)."""
    max_gen = need(t, gpu, F_PCIE_MAX_GEN, "maximum PCIe generation")
    max_width = need(t, gpu, F_PCIE_MAX_WIDTH, "maximum PCIe width")
    gpu = opened(t, gpu, "PCIe link")
    name = label(t, gpu)
    want = t.rig.profile.link_for(t.gpu.bdf, t.gpu.slot, t.index)
    exp_gen, exp_width = want.gen or max_gen, want.width or max_width
    src = t.rig.profile.source if (want.gen or want.width) else "NVML max link (lesser of GPU and system)"
    for key, what in ((F_PCIE_GEN, "PCIe generation at idle"), (F_PCIE_WIDTH, "PCIe width at idle")):
        got = gpu.get(key)
        if isinstance(got, Unavailable) and got.code == CORRUPT:
            need(t, gpu, key, what)  # quoted beside the verdict: a corrupt one makes the record no evidence
    idle = gpu.get(F_PCIE_GEN), gpu.get(F_PCIE_WIDTH)
    idle_txt = fmt_link(*idle) if all(isinstance(x, int) for x in idle) else "unknown"
    if (
        isinstance(load, Unavailable)
        and load.code != CORRUPT  # a record whose load readings cannot be real is no evidence of the rest
        and isinstance(idle[0], int)
        and isinstance(idle[1], int)
        and idle[0] >= exp_gen
        and idle[1] >= exp_width
    ):
        # Measured at full speed and width already: a load could only confirm it (idle links go down, not up).
        return passed(
            f"{name}: {idle_txt} read at idle, already the expected {fmt_link(exp_gen, exp_width)} "
            f"({src}); no load reading ({load})",
            properties={"link_gen_idle": idle[0], "link_width_idle": idle[1], "expected_gen": exp_gen},
        )
    ld = _load(t, gpu, load, "PCIe link under load")
    link = ld.link
    if link is None:
        return unreadable(f"{name}: NVML gave no PCIe link reading under load ({len(ld.samples)} samples)")
    gen, width = link
    props: dict[str, object] = {
        "link_gen_under_load": gen,
        "link_width_under_load": width,
        "link_gen_idle": idle[0] if isinstance(idle[0], int) else "",
        "expected_gen": exp_gen,
        "expected_width": exp_width,
        "samples": len(ld.samples),
    }
    measured = (
        f"{fmt_link(gen, width)} under load (lowest of {len(ld.samples)} samples, {ld.how or 'recorded'}); "
        f"{idle_txt} at idle; NVML max {fmt_link(max_gen, max_width)}"
    )
    expected = f"{fmt_link(exp_gen, exp_width)} ({src})"
    slot = f'slot "{t.gpu.slot}"' if t.gpu.slot else "its slot"
    if width < exp_width:
        return failed(
            f"{name}: PCIe link x{width} under load, expected x{exp_width}",
            measured=measured,
            expected=expected,
            path=[t.rig.pcie.path_text(t.gpu.bdf)],
            fix=[
                f"reseat the card (and riser) in {slot}: a riser or cable that loses lanes trains narrower",
                "check the BIOS bifurcation for that slot (x16, not x8x8)",
            ],
            properties=props,
        )
    if gen < exp_gen:
        return failed(
            f"{name}: PCIe link Gen{gen} under load, expected Gen{exp_gen}: the link trained down, not an "
            "idle downshift",
            measured=measured,
            expected=expected,
            path=[t.rig.pcie.path_text(t.gpu.bdf)],
            fix=[
                f"reseat the riser/cable in {slot}; use one rated for Gen{exp_gen}",
                f'set the BIOS PCIe link speed for {slot} to "Gen{exp_gen}" if it keeps falling back',
            ],
            properties=props,
        )
    return passed(f"{name}: {fmt_link(gen, width)} under load ({idle_txt} at idle)", properties=props)


@judged
def link_flapping(t: GpuTarget, gpu: GpuState | Unavailable, load: LoadReadings | Unavailable) -> Verdict:
    """The link holds its speed while busy: changes of (gen, width) over the sampling window within ``[gpu] max_link_changes``."""
    exp = expectations(t.rig.profile, t)
    ld = _load(t, gpu, load, "link stability under load")
    gpu = opened(t, gpu, "link stability under load")
    name = label(t, gpu)
    n = len([s for s in ld.samples if s[1] and s[2]])
    if n < MIN_SAMPLES:
        return unreadable(
            f"{name}: only {n} link reading(s) under load: a flapping check needs a window of "
            f"{MIN_SAMPLES} or more",
            fix=["run live (pytest --rig), or capture with `rigcheck capture DIR`"],
        )
    changes = ld.link_changes()
    seen = sorted({fmt_link(s[1], s[2]) for s in ld.samples if s[1] and s[2]})
    span = ld.samples[-1][0] - ld.samples[0][0]
    if span < ld.window_s * MIN_SPAN_FRACTION:
        # The sampler reads every interval for the whole window (gpu/load.py Sampler): samples covering a
        # sliver of it say nothing about the link over the window
        return unreadable(
            f"{name}: the {n} link readings under load cover {span:.2f} s of the {ld.window_s:g} s window "
            f"recorded (load.window_s, {load_source(t.rig)}): no evidence the link held over the window",
            measured=f"{n} samples over {span:.2f} s",
            expected=f"samples spanning at least {MIN_SPAN_FRACTION:.0%} of window_s = {ld.window_s:g} s",
            fix=["run live (pytest --rig), or capture again with `rigcheck capture DIR`"],
            measured_value=round(span, 3),
            expected_value=round(ld.window_s * MIN_SPAN_FRACTION, 3),
            unit="s",
        )
    props: dict[str, object] = {"link_changes": changes, "samples": n, "window_s": round(span, 2)}
    measured = (
        f"{changes} change(s) in {n} samples over {span:.1f} s under load; speeds seen: {', '.join(seen)}"
    )
    if changes <= exp.max_link_changes:
        return passed(f"{name}: link steady under load ({measured})", properties=props)
    return failed(
        f"{name}: PCIe link flapping under load: {changes} speed/width changes in {span:.1f} s",
        measured=measured,
        expected=f"at most {exp.max_link_changes} ({exp.said('max_link_changes')}, {exp.where})",
        path=[t.rig.pcie.path_text(t.gpu.bdf)],
        fix=[
            "a marginal riser, cable or slot retrains the link under load: reseat or replace it",
            'set the BIOS PCIe link speed for the slot to a fixed generation instead of "Auto"',
        ],
        properties=props,
    )


@judged
def clock_reasons(t: GpuTarget, gpu: GpuState | Unavailable, load: LoadReadings | Unavailable) -> Verdict:
    """Under load no HW slowdown, thermal (HW or SW) or power-brake reason is active; SW power cap passes."""
    ld = _load(t, gpu, load, "clock event reasons under load")
    gpu = opened(t, gpu, "clock event reasons")
    name = label(t, gpu)
    bits = ld.reasons
    if bits is None:
        return unreadable(
            f"{name}: NVML gave no clock event reasons under load",
            fix=["nvmlDeviceGetCurrentClocksEventReasons is not supported here: check the driver"],
        )
    props: dict[str, object] = {"clocks_event_reasons": f"{bits:#x}", "samples": len(ld.samples)}
    if ld.max_power_w is not None:
        props["max_power_w"] = ld.max_power_w
    if ld.max_sm_mhz is not None:
        props["max_sm_mhz"] = ld.max_sm_mhz
    extra = "".join(
        [
            f", up to {ld.max_power_w:.0f} W" if ld.max_power_w is not None else "",
            f", SM up to {ld.max_sm_mhz} MHz" if ld.max_sm_mhz is not None else "",
        ]
    )
    measured = f"{decode_reasons(bits)} seen across {len(ld.samples)} samples under load{extra}"
    bad = bits & BAD_REASONS
    if not bad:
        why = ": SW power cap is the expected limiter on a capped rig" if bits & 0x4 else ""
        return passed(f"{name}: clock event reasons under load {decode_reasons(bits)}{why}", properties=props)
    fixes = [REASON_FIX[b] for b in (0x80, 0x40, 0x20, 0x8) if bad & b]
    return failed(
        f"{name}: clocks held back under load by {decode_reasons(bad)}",
        measured=measured,
        expected="none of HW slowdown 0x8, SW thermal 0x20, HW thermal 0x40, HW power brake 0x80 "
        "(SW power cap 0x4 is fine)",
        fix=fixes,
        properties=props,
    )
