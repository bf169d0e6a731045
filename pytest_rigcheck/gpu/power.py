"""Power checks: the limit the profile caps each GPU at, the limit actually enforced, persistence, the circuit.

NVML reports milliwatts (NVML API reference: ``nvmlDeviceGetPowerManagementLimit``,
``nvmlDeviceGetEnforcedPowerLimit``, ``nvmlDeviceSetPowerManagementLimit`` "not persistent across reboots or driver
unloads"). A limit set with ``nvidia-smi -pl`` is lost at reboot and
at driver unload, so the fix always says how to make it stick (a systemd oneshot unit).
"""

from __future__ import annotations

from collections.abc import Iterable

from ..rig import Rig
from ..targets import GpuTarget
from ..verdict import Verdict, failed, judged, not_applicable, passed, unreadable
from .common import expectations, label, need, opened, smi_index
from .state import (
    CORRUPT,
    F_PERSISTENCE,
    F_POWER_CONSTRAINTS,
    F_POWER_DEFAULT,
    F_POWER_ENFORCED,
    F_POWER_LIMIT,
    F_POWER_USAGE,
    NOT_NVIDIA,
    NVML_JSON,
    GpuState,
    Unavailable,
)

UNIT_DIR = "/etc/systemd/system"


def cap_fix(index: int, cap_w: float, bdf: str | None = None) -> list[str]:
    """The fix for a wrong limit: now (by index, as ``nvidia-smi`` lists the GPU), and at every boot.

    The boot-time unit is one per GPU, named by its PCI address (``nvidia-power-cap-0000-03-00.0.service``),
    so the fixes for two GPUs with different caps do not overwrite one another, and it selects the GPU by
    PCI address (``nvidia-smi -i`` takes one, NVIDIA nvidia-smi(1)): an index shifts when a GPU is missing
    at boot, and the cap would land on its neighbour.
    """
    w = f"{cap_w:g}"
    sel = f"0000{bdf.upper()}" if bdf else str(index)  # nvidia-smi's own form: 00000000:03:00.0
    unit = f"nvidia-power-cap-{(bdf or f'gpu{index}').replace(':', '-')}.service"
    return [
        f"sudo nvidia-smi -i {index} -pl {w}   (now; lost at reboot or driver reload)",
        f"every boot: a oneshot unit {UNIT_DIR}/{unit} with [Unit] After=nvidia-persistenced.service, "
        f"[Service] Type=oneshot ExecStart=/usr/bin/nvidia-smi -i {sel} -pl {w}, "
        f"[Install] WantedBy=multi-user.target; then `sudo systemctl enable --now {unit}`",
    ]


def _w(mw: int) -> str:
    return f"{mw / 1000:g} W"


@judged
def power_limit(t: GpuTarget, gpu: GpuState | Unavailable) -> Verdict:
    """The power limit (requested and enforced) equals the GPU's cap within its tolerance (W).

    The cap is the GPU's own ``[power.device.X] cap_w`` (X its PCI address, GPU index or slot), else
    ``[power] cap_w``; likewise ``tolerance_w``.
    """
    exp = expectations(t.rig.profile, t)
    limit = need(t, gpu, F_POWER_LIMIT, "power limit")
    enforced = need(t, gpu, F_POWER_ENFORCED, "enforced power limit")
    gpu = opened(t, gpu, "power limit")
    draw = gpu.get(F_POWER_USAGE)
    if isinstance(draw, Unavailable) and draw.code == CORRUPT:
        need(t, gpu, F_POWER_USAGE, "power draw")  # a negative or impossible wattage: the record is corrupt
    name = label(t, gpu)
    default = gpu.get(F_POWER_DEFAULT)
    constraints = gpu.get(F_POWER_CONSTRAINTS)
    props: dict[str, object] = {"power_limit_w": limit / 1000, "enforced_limit_w": enforced / 1000}
    if isinstance(default, int):
        props["default_limit_w"] = default / 1000
    measured = (
        f"limit {_w(limit)}, enforced {_w(enforced)}"
        + (f", default {_w(default)}" if isinstance(default, int) else "")
        + (f", drawing {_w(draw)}" if isinstance(draw, int) else "")
        + (f", allowed {_w(constraints[0])}..{_w(constraints[1])}" if isinstance(constraints, list) else "")
    )
    if exp.cap_w is None:
        if enforced + 1000 * exp.tolerance_w < limit:
            return failed(
                f"{name}: enforced limit {_w(enforced)} is below the requested {_w(limit)}: another "
                "limiter (thermal, board, chassis) holds the GPU lower",
                measured=measured,
                expected=f"enforced = requested limit (no [power] cap_w for this GPU in {exp.where})",
                measured_value=enforced / 1000,
                expected_value=limit / 1000,
                unit="W",
                fix=["check cooling and the board's power connectors; `nvidia-smi -q -d POWER,PERFORMANCE`"],
                properties=props,
            )
        return passed(
            f"{name}: {measured} (no [power] cap_w for this GPU in the profile: nothing to compare)",
            properties=props,
            measured_value=limit / 1000,
            unit="W",
        )
    cap_mw, tol_mw = exp.cap_w * 1000, exp.tolerance_w * 1000
    props["expected_cap_w"] = exp.cap_w
    expected = f"{exp.cap_w:g} W +/- {exp.tolerance_w:g} W ({exp.said('cap_w')}, {exp.where})"
    values: dict[str, object] = {"expected_value": exp.cap_w, "unit": "W"}
    idx = smi_index(t, gpu)
    notes = []
    if isinstance(constraints, list) and not constraints[0] <= cap_mw <= constraints[1]:
        notes.append(
            f"the profile's cap {exp.cap_w:g} W is outside what this card allows "
            f"({_w(constraints[0])}..{_w(constraints[1])}): nvidia-smi will refuse it"
        )
    if abs(limit - cap_mw) > tol_mw:
        why = (
            " (the card's default: the cap was never set, or was lost at reboot)" if limit == default else ""
        )
        return failed(
            f"{name}: power limit {_w(limit)}{why}, expected {exp.cap_w:g} W",
            measured=measured,
            expected=expected,
            notes=notes,
            fix=cap_fix(idx, exp.cap_w, t.gpu.bdf),
            properties=props,
            measured_value=limit / 1000,
            **values,
        )
    if abs(enforced - cap_mw) > tol_mw:
        return failed(
            f"{name}: enforced power limit {_w(enforced)}, expected {exp.cap_w:g} W (requested {_w(limit)}): "
            "another limiter overrides the cap",
            measured=measured,
            expected=expected,
            notes=notes,
            fix=[
                "check the board's power connectors and cooling; `nvidia-smi -q -d POWER`",
                *cap_fix(idx, exp.cap_w, t.gpu.bdf),
            ],
            properties=props,
            measured_value=enforced / 1000,
            **values,
        )
    return passed(
        f"{name}: power limit {_w(limit)}, enforced {_w(enforced)} (cap {exp.cap_w:g} W, {exp.said('cap_w')})",
        properties=props,
        measured_value=enforced / 1000,
        **values,
    )


@judged
def persistence(t: GpuTarget, gpu: GpuState | Unavailable) -> Verdict:
    """Persistence mode is on, so the driver keeps the GPU initialized (and its settings) between processes."""
    mode = need(t, gpu, F_PERSISTENCE, "persistence mode")
    gpu = opened(t, gpu, "persistence mode")
    props: dict[str, object] = {"persistence_mode": mode}
    if mode == 1:
        return passed(f"{label(t, gpu)}: persistence mode enabled", properties=props)
    return failed(
        f"{label(t, gpu)}: persistence mode disabled: the driver tears the GPU down between processes "
        "(slow start, settings dropped)",
        measured="Persistence Mode: Disabled",
        expected="Enabled (a serving rig keeps its GPUs initialized)",
        fix=[
            "sudo systemctl enable --now nvidia-persistenced   (every boot)",
            f"or, legacy and deprecated: sudo nvidia-smi -i {smi_index(t, gpu)} -pm 1   (lost at reboot)",
        ],
        properties=props,
    )


def circuit(rig: Rig, gpus: dict[str, GpuState | Unavailable], nvml_gpus: Iterable[GpuState] = ()) -> Verdict:
    """Every GPU's enforced limit plus the host allowance fits the circuit the profile gives (``[power] circuit_w``, W).

    ``nvml_gpus`` is every GPU NVML lists; one whose BDF is not on the PCIe bus makes the sum UNREADABLE
    (NVML and sysfs disagree on what draws power: the record is corrupt).

    The fix caps each GPU at its own profile cap (``[power.device.X] cap_w``, else ``[power] cap_w``)
    when those caps fit the circuit; otherwise it shares what the host leaves evenly.
    """
    exp = expectations(rig.profile)
    if exp.circuit_w is None:
        return not_applicable(f"{rig.name}: no [power] circuit_w in the profile: no circuit budget to check")
    tree = rig.pcie
    if not tree.gpus:
        return not_applicable(f"{rig.name}: no GPU")
    on_bus = {fn.bdf for fn in tree.gpus}
    stray = sorted(f"GPU{g.index} {g.bdf}" for g in nvml_gpus if g.bdf not in on_bus)
    if stray:
        return unreadable(
            f"{rig.name}: NVML ({NVML_JSON} field bdf in a snapshot) lists "
            f"{', '.join(stray)}, not on the PCIe bus ({len(on_bus)} GPU(s) in sysfs): NVML and PCIe disagree, "
            "corrupt reading: the circuit budget cannot be summed",
            fix=["capture again with `rigcheck capture DIR` (NVML and sysfs from one moment)"],
        )
    parts: list[str] = []
    limits: list[tuple[int, int, float | None]] = []  # (nvidia-smi index, enforced mW, the GPU's own cap W)
    for fn in tree.gpus:
        g = gpus.get(fn.bdf, Unavailable(f"{fn.bdf} not in NVML"))
        if isinstance(g, Unavailable) and g.code == NOT_NVIDIA:
            continue  # not an NVIDIA GPU (a BMC's display): NVML has no power limit for it
        v = g.get(F_POWER_ENFORCED) if isinstance(g, GpuState) else g
        if isinstance(v, Unavailable):
            return unreadable(
                f"{rig.name}: enforced power limit of {tree.gpu_label(fn)} unreadable: {v}: "
                "the circuit budget cannot be summed"
            )
        idx = g.index if isinstance(g, GpuState) else tree.gpu_index(fn.bdf)
        limits.append((idx, int(v), expectations(rig.profile, GpuTarget(rig, fn)).cap_w))
        parts.append(f"GPU{idx} {_w(int(v))}")
    total = sum(mw for _, mw, _ in limits)
    sum_w = total / 1000 + exp.host_w
    props: dict[str, object] = {
        "gpu_limits_w": total / 1000,
        "host_w": exp.host_w,
        "circuit_w": exp.circuit_w,
    }
    measured = f"{' + '.join(parts)} + host {exp.host_w:g} W = {sum_w:g} W"
    expected = f"at most {exp.circuit_w:g} W ([power] circuit_w, host_w from {exp.where})"
    values: dict[str, object] = {"measured_value": sum_w, "expected_value": exp.circuit_w, "unit": "W"}
    if sum_w <= exp.circuit_w:
        return passed(
            f"{rig.name}: {measured}, within the {exp.circuit_w:g} W circuit", properties=props, **values
        )
    notes: list[str] = []
    fix: list[str] = []
    capped = [(i, mw, cap) for i, mw, cap in limits if cap is not None]
    if len(capped) == len(limits):
        planned = sum(cap for _, _, cap in capped) + exp.host_w
        plan = " + ".join(f"GPU{i} {cap:g} W" for i, _, cap in capped)
        if planned <= exp.circuit_w:
            cmds = "; ".join(
                f"sudo nvidia-smi -i {i} -pl {cap:g}" for i, mw, cap in capped if mw > cap * 1000
            )
            fix.append(
                f"cap each GPU at its profile cap ({plan} + host {exp.host_w:g} W = {planned:g} W): {cmds} "
                f"(and a oneshot unit per GPU in {UNIT_DIR}, as test_power_limit's fix says, so it survives reboot)"
            )
        else:
            notes.append(
                f"the profile's own caps ({plan} + host {exp.host_w:g} W = {planned:g} W) exceed circuit_w too"
            )
    if not fix:
        room = (exp.circuit_w - exp.host_w) / len(tree.gpus)
        fix = [
            f"cap every GPU at {room:.0f} W or less: sudo nvidia-smi -pl {room:.0f} (and a oneshot unit in "
            f"{UNIT_DIR}/nvidia-power-cap.service running the same command, so it survives reboot), and set "
            "[power] cap_w to match"
        ]
    return failed(
        f"{rig.name}: GPU power limits plus host draw {sum_w:g} W exceed the {exp.circuit_w:g} W circuit: "
        "the breaker trips under full load",
        measured=measured,
        expected=expected,
        notes=notes,
        fix=[*fix, "or split the rig over two circuits and raise [power] circuit_w"],
        properties=props,
        **values,
    )
