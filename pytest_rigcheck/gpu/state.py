"""NVML state as plain data: what a check reads, and what ``nvml.json`` holds.

One ``GpuState`` per GPU, keyed by field name (the ``F_*`` constants). A field that could not be read
holds an ``Unavailable`` that says why (not supported, no permission, not captured), so a check that
needs it reports it as unreadable instead of passing. The same shape is written to and read from a
snapshot's ``nvml.json``, which is how every GPU check replays without a GPU.

``nvml.json`` (format 1)::

    {"format": 1, "origin": "...", "driver": "580.159.04", "cuda": 13000, "nvml": "13.580.159.04",
     "gpus": [{"index": 0, "bdf": "0000:17:00.0", "name": "NVIDIA GeForce RTX 3090", ...,
               "power_limit_mw": 350000, "ecc_mode": {"unavailable": "not supported", "code": "not_supported"},
               "load": {"samples": [[t_s, gen, width, reasons, power_mw, sm_mhz], ...], ...}}]}
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..pcie import PCIE_WIDTHS, link_above_max, link_pair_problem
from ..verdict import physical

FORMAT = 1
NVML_JSON = "nvml.json"

# Codes of an unavailable reading.
NOT_SUPPORTED = "not_supported"
NO_PERMISSION = "no_permission"
NOT_CAPTURED = "not_captured"
ERROR = "error"
CORRUPT = "corrupt"  # a value of the wrong type, or a reading no GPU can give
NOT_NVIDIA = "not_nvidia"  # a display function that is not an NVIDIA GPU: NVML checks do not apply
NOT_IN_NVML = "not_in_nvml"  # an NVIDIA GPU on the PCIe bus that NVML does not report

# Per-GPU fields (NVML call in the comment; units in the name).
F_INDEX = "index"  # NVML index = nvidia-smi -i N
F_BDF = "bdf"  # nvmlDeviceGetPciInfo().busId, normalized to sysfs spelling
F_NAME = "name"  # nvmlDeviceGetName
F_UUID = "uuid"
F_VBIOS = "vbios"  # nvmlDeviceGetVbiosVersion
F_MEM_TOTAL = "memory_total_b"  # nvmlDeviceGetMemoryInfo(v2).total
F_MEM_USED = "memory_used_b"  # v2 .used: excludes the driver's reservation
F_MEM_RESERVED = "memory_reserved_b"  # v2 .reserved
F_POWER_LIMIT = "power_limit_mw"  # nvmlDeviceGetPowerManagementLimit
F_POWER_ENFORCED = "enforced_limit_mw"  # nvmlDeviceGetEnforcedPowerLimit
F_POWER_DEFAULT = "default_limit_mw"  # nvmlDeviceGetPowerManagementDefaultLimit
F_POWER_CONSTRAINTS = "limit_constraints_mw"  # nvmlDeviceGetPowerManagementLimitConstraints: [min, max]
F_POWER_USAGE = "power_usage_mw"
F_PERSISTENCE = "persistence_mode"  # 1 enabled
F_DISPLAY_ACTIVE = "display_active"  # nvmlDeviceGetDisplayActive: 1 when a display is initialized on the GPU
F_PCIE_MAX_GEN = "pcie_max_gen"  # nvmlDeviceGetMaxPcieLinkGeneration: lesser of device and system
F_PCIE_MAX_WIDTH = "pcie_max_width"
F_PCIE_GEN = "pcie_gen"  # current, at the time of reading (idle)
F_PCIE_WIDTH = "pcie_width"
F_PCIE_REPLAY = "pcie_replay"  # nvmlDeviceGetPcieReplayCounter
F_CLOCK_REASONS = "clocks_event_reasons"  # idle reading
F_PSTATE = "pstate"
F_ECC_MODE = "ecc_mode"  # [current, pending]
F_ECC_UNCORR_VOLATILE = "ecc_uncorrected_volatile"
F_ECC_UNCORR_AGGREGATE = "ecc_uncorrected_aggregate"
F_RETIRED_PENDING = "retired_pages_pending"  # pre-Ampere page retirement
F_REMAPPED_ROWS = "remapped_rows"  # Ampere+: [correctable, uncorrectable, pending, failure]
F_NVLINK = "nvlink_states"  # {"0": 1, ...}; {} = the GPU has no NVLink
F_PROCESSES = "processes"  # [{"pid", "name", "used_b", "kind"}]
F_RECOVERY_ACTION = (
    "gpu_recovery_action"  # nvmlDeviceGetFieldValues(NVML_FI_DEV_GET_GPU_RECOVERY_ACTION): 0 None
)
# {"0": {"type": "gpu"|"switch"|"ibmnpu"|"unknown", "bdf": "0000:4b:00.0", "p2p": 1}, ...} per link of F_NVLINK:
# nvmlDeviceGetNvLinkRemoteDeviceType, nvmlDeviceGetNvLinkRemotePciInfo_v2, nvmlDeviceGetNvLinkCapability(P2P);
# a key is left out where NVML did not give it.
F_NVLINK_REMOTE = "nvlink_remote"
F_BAR1_TOTAL = "bar1_total_b"  # nvmlDeviceGetBAR1MemoryInfo().bar1Total
F_LOAD = "load"  # readings under load, see LoadReadings
F_TEMPERATURE = "temperature_c"  # nvmlDeviceGetTemperature(NVML_TEMPERATURE_GPU), where recorded

GPU_FIELDS = (
    F_NAME,
    F_UUID,
    F_VBIOS,
    F_MEM_TOTAL,
    F_MEM_USED,
    F_MEM_RESERVED,
    F_POWER_LIMIT,
    F_POWER_ENFORCED,
    F_POWER_DEFAULT,
    F_POWER_CONSTRAINTS,
    F_POWER_USAGE,
    F_PERSISTENCE,
    F_DISPLAY_ACTIVE,
    F_PCIE_MAX_GEN,
    F_PCIE_MAX_WIDTH,
    F_PCIE_GEN,
    F_PCIE_WIDTH,
    F_PCIE_REPLAY,
    F_CLOCK_REASONS,
    F_PSTATE,
    F_ECC_MODE,
    F_ECC_UNCORR_VOLATILE,
    F_ECC_UNCORR_AGGREGATE,
    F_RETIRED_PENDING,
    F_REMAPPED_ROWS,
    F_NVLINK,
    F_PROCESSES,
    F_RECOVERY_ACTION,
    F_NVLINK_REMOTE,
    F_BAR1_TOTAL,
)


@dataclass(frozen=True)
class Unavailable:
    """A reading that is not there, and why. Never a pass."""

    reason: str
    code: str = ERROR

    def __str__(self) -> str:
        return self.reason

    def to_json(self) -> dict[str, str]:
        return {"unavailable": self.reason, "code": self.code}


def from_json_value(value: Any) -> Any:
    if isinstance(value, dict) and set(value) <= {"unavailable", "code"} and "unavailable" in value:
        return Unavailable(str(value["unavailable"]), str(value.get("code", ERROR)))
    return value


def to_json_value(value: Any) -> Any:
    return value.to_json() if isinstance(value, Unavailable) else value


# -- what a reading may be --------------------------------------------------------------------------
# A value of the wrong type, or one no GPU can report, becomes Unavailable(code=corrupt) naming where it
# came from and the field, for live NVML and nvml.json alike: a check needing it is UNREADABLE, never a
# TypeError and never a pass. Bounds: NVML reports power in milliwatts (nvmlDeviceGetPowerManagementLimit,
# NVML API reference); no board is specified beyond a few kW, so more than MAX_POWER_MW is a corrupt reading.

MAX_POWER_MW = 5_000_000  # 5000 W
MAX_TEMPERATURE_C = 200
MAX_MEMORY_B = 1 << 50  # 1 PiB
MAX_COUNT = 1 << 63
# One sample under load: (name, lowest, highest); None is allowed where NVML gave nothing, except t_s.
SAMPLE_RULES = (
    ("t_s", 0.0, math.inf),
    ("gen", 1, 7),
    ("width", 1, 32),
    ("reasons", 0, MAX_COUNT),
    ("power_mw", 0, MAX_POWER_MW),
    ("sm_mhz", 0, 100_000),
)


def _integer(value: Any, lo: float, hi: float, unit: str) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{value!r} is not a number ({unit})"
    if physical(value, lo=lo, hi=hi) is None or float(value) != math.floor(float(value)):
        return f"{value!r} is not a possible reading ({unit}, {lo:g}..{hi:g})"
    return None


def _int_rule(lo: float, hi: float, unit: str) -> Callable[[Any], str | None]:
    return lambda v: _integer(v, lo, hi, unit)


def _width_rule(v: Any) -> str | None:
    problem = _integer(v, 1, 32, "lanes")
    if problem is None and v not in PCIE_WIDTHS:
        return f"{v!r} is not a PCIe link width ({', '.join(f'x{w}' for w in PCIE_WIDTHS)})"
    return problem


def _text_rule(v: Any) -> str | None:
    return None if isinstance(v, str) else f"{v!r} is not text"


def _list_rule(n: int, lo: float, hi: float, unit: str, ordered: bool = False) -> Callable[[Any], str | None]:
    def rule(v: Any) -> str | None:
        if not isinstance(v, list) or len(v) != n:
            return f"{v!r} is not a list of {n} numbers ({unit})"
        for x in v:
            if (problem := _integer(x, lo, hi, unit)) is not None:
                return problem
        if ordered and v != sorted(v):
            return f"{v!r}: minimum above maximum"
        return None

    return rule


# NVML_NVLINK_MAX_LINKS in nvml.h (NVML 13, nvidia-ml-py 13.x): no GPU has more links than this
# (H100/H200/B200 SXM have 18: NVIDIA H100 and Blackwell datasheets).
MAX_NVLINKS = 36


def _nvlink_rule(v: Any) -> str | None:
    if not isinstance(v, dict):
        return f"{v!r} is not an object of link number -> state"
    for k, x in v.items():
        if not str(k).isdigit() or _integer(x, 0, 1, "0 down, 1 up") is not None:
            return f"link {k!r} state {x!r} is not 0 or 1"
    links = sorted(int(k) for k in v)
    if len(links) > MAX_NVLINKS:
        return f"{len(links)} NVLinks: more than any GPU has (NVML_NVLINK_MAX_LINKS = {MAX_NVLINKS}, nvml.h)"
    if links != list(range(len(links))):
        # NVML numbers a GPU's links 0..n-1; the reader asks link by link and stops at the first it refuses.
        return (
            f"link numbers {links} are not 0..{len(links) - 1} (NVML numbers a GPU's links from 0, no gaps)"
        )
    return None


def _processes_rule(v: Any) -> str | None:
    if not isinstance(v, list):
        return f"{v!r} is not a list of processes"
    for i, p in enumerate(v):
        if not isinstance(p, dict):
            return f"[{i}] {p!r} is not an object"
        # the NVML reader writes all four for every process (gpu/nvml.py), used_b None where NVML has none
        missing = [k for k in ("pid", "name", "kind", "used_b") if k not in p]
        if missing:
            return f"[{i}] has no {', '.join(missing)}"
        if _integer(p.get("pid"), 0, MAX_COUNT, "pid") is not None:
            return f"[{i}].pid {p.get('pid')!r} is not a process id"
        used = p.get("used_b")
        if used is not None and _integer(used, 0, MAX_MEMORY_B, "bytes") is not None:
            return f"[{i}].used_b {used!r} is not a number of bytes"
        if not isinstance(p["name"], str) or not isinstance(p["kind"], str):
            return f"[{i}] name or kind is not text"
    return None


def _load_rule(v: Any) -> str | None:
    if not isinstance(v, dict):
        return f"{v!r} is not an object of readings under load"
    try:
        LoadReadings.from_json(v)
    except ValueError as exc:
        return str(exc)
    return None


RULES: dict[str, Callable[[Any], str | None]] = {
    F_NAME: _text_rule,
    F_UUID: _text_rule,
    F_VBIOS: _text_rule,
    F_MEM_TOTAL: _int_rule(1, MAX_MEMORY_B, "bytes"),
    F_MEM_USED: _int_rule(0, MAX_MEMORY_B, "bytes"),
    F_MEM_RESERVED: _int_rule(0, MAX_MEMORY_B, "bytes"),
    F_POWER_LIMIT: _int_rule(1, MAX_POWER_MW, "mW"),
    F_POWER_ENFORCED: _int_rule(1, MAX_POWER_MW, "mW"),
    F_POWER_DEFAULT: _int_rule(1, MAX_POWER_MW, "mW"),
    F_POWER_CONSTRAINTS: _list_rule(2, 0, MAX_POWER_MW, "mW", ordered=True),
    F_POWER_USAGE: _int_rule(0, MAX_POWER_MW, "mW"),
    F_PERSISTENCE: _int_rule(0, 1, "0 disabled, 1 enabled"),
    F_DISPLAY_ACTIVE: _int_rule(0, 1, "0 or 1"),
    F_PCIE_MAX_GEN: _int_rule(1, 7, "PCIe generation"),
    F_PCIE_MAX_WIDTH: _width_rule,
    F_PCIE_GEN: _int_rule(1, 7, "PCIe generation"),
    F_PCIE_WIDTH: _width_rule,
    F_PCIE_REPLAY: _int_rule(0, MAX_COUNT, "count"),
    F_CLOCK_REASONS: _int_rule(0, MAX_COUNT, "bit mask"),
    F_PSTATE: _int_rule(0, 32, "P-state, 32 unknown"),
    F_ECC_MODE: _list_rule(2, 0, 1, "[current, pending], 0 or 1"),
    F_ECC_UNCORR_VOLATILE: _int_rule(0, MAX_COUNT, "count"),
    F_ECC_UNCORR_AGGREGATE: _int_rule(0, MAX_COUNT, "count"),
    F_RETIRED_PENDING: _int_rule(0, 1, "0 or 1"),
    F_REMAPPED_ROWS: _list_rule(4, 0, MAX_COUNT, "[correctable, uncorrectable, pending, failure]"),
    F_NVLINK: _nvlink_rule,
    F_PROCESSES: _processes_rule,
    F_LOAD: _load_rule,
    F_TEMPERATURE: _int_rule(0, MAX_TEMPERATURE_C, "degrees C"),
    F_BAR1_TOTAL: _int_rule(1, MAX_MEMORY_B, "bytes"),
}


def _contradictions(v: dict[str, Any]) -> dict[str, str]:
    """Fields whose readings contradict each other: {field: why}. NVML sets the power limit only within
    nvmlDeviceGetPowerManagementLimitConstraints [min, max] (NVML API reference, nvmlDeviceSetPowerManagementLimit),
    and used memory is part of total memory (nvmlMemory_v2_t)."""
    out: dict[str, str] = {}
    cons = v.get(F_POWER_CONSTRAINTS)
    if isinstance(cons, Unavailable) and cons.code == CORRUPT:
        for key in (F_POWER_LIMIT, F_POWER_DEFAULT, F_POWER_ENFORCED):
            if key in v and not isinstance(v[key], Unavailable):
                out[key] = f"{v[key]!r} cannot be judged against {cons.reason}"
    elif isinstance(cons, list):
        lo, hi = cons
        for key in (F_POWER_LIMIT, F_POWER_DEFAULT, F_POWER_ENFORCED):
            x = v.get(key)
            # The enforced limit is the least of several limiters, so only above the maximum is impossible.
            number = isinstance(x, int | float) and not isinstance(x, bool)
            if number and (x > hi or (x < lo and key != F_POWER_ENFORCED)):
                out[key] = f"{x!r} is outside the card's own {F_POWER_CONSTRAINTS} {cons!r} (mW)"
    used, total, reserved = (
        x if isinstance(x, int) and not isinstance(x, bool) else None
        for x in (v.get(F_MEM_USED), v.get(F_MEM_TOTAL), v.get(F_MEM_RESERVED))
    )
    if used is not None and total is not None and used > total:
        why = f"{F_MEM_USED} {used!r} is above {F_MEM_TOTAL} {total!r} (bytes)"
        out[F_MEM_USED] = out[F_MEM_TOTAL] = why
    if reserved is not None and total is not None and reserved > total:
        out[F_MEM_RESERVED] = f"{F_MEM_RESERVED} {reserved!r} is above {F_MEM_TOTAL} {total!r} (bytes)"
    # The current link never exceeds the maximum NVML reports for it (nvmlDeviceGetCurrPcieLinkGeneration
    # and ...MaxPcieLinkGeneration; likewise the width): a Gen7 reading on a Gen4 link is no reading.
    for now_key, max_key in ((F_PCIE_GEN, F_PCIE_MAX_GEN), (F_PCIE_WIDTH, F_PCIE_MAX_WIDTH)):
        if (above := link_above_max(now_key, v.get(now_key), max_key, v.get(max_key))) is not None:
            out[now_key] = above
    return out


def load_problem(
    load: LoadReadings,
    gpu: GpuState | Any,
    where: str,
    sysfs_max: tuple[int | None, int | None, tuple[str, str]] | None = None,
) -> str | None:
    """Why readings under load cannot be real for this GPU, or None; live and ``nvml.json`` alike.

    The sampler takes one reading per interval (``gpu/load.py`` ``Sampler``), so sample times rise; and no
    sample's link is above the GPU's own ``pcie_max_gen``/``pcie_max_width`` (``pcie.link_pair_problem``), nor
    above ``sysfs_max`` (its sysfs ``max_link_speed``/``max_link_width`` as (gen, width, their names)).
    ``where`` names the source and GPU (``/snap/nvml.json (0000:05:00.0)``).
    """
    last = -math.inf
    for i, s in enumerate(load.samples):
        if s[0] <= last:
            return (
                f"{where} field load.samples[{i}] t_s = {s[0]!r} does not follow the previous sample's "
                f"{last!r}: one sample per interval, so the times rise (corrupt reading)"
            )
        last = s[0]
        most = [gpu.get(k) if isinstance(gpu, GpuState) else None for k in (F_PCIE_MAX_GEN, F_PCIE_MAX_WIDTH)]
        why = link_pair_problem(s[1], s[2], most[0], most[1], (F_PCIE_MAX_GEN, F_PCIE_MAX_WIDTH))
        if why is None and sysfs_max is not None:
            why = link_pair_problem(s[1], s[2], sysfs_max[0], sysfs_max[1], sysfs_max[2])
        if why is not None:
            return f"{where} field load.samples[{i}] {why} (corrupt reading)"
    return None


def load_checked(
    load: LoadReadings | Unavailable,
    gpu: GpuState | Any,
    where: str,
    sysfs_max: tuple[int | None, int | None, tuple[str, str]] | None = None,
) -> LoadReadings | Unavailable:
    """``load``, or ``Unavailable(code=corrupt)`` saying why (``load_problem``) when it cannot be real."""
    if isinstance(load, LoadReadings) and (why := load_problem(load, gpu, where, sysfs_max)) is not None:
        return Unavailable(why, CORRUPT)
    return load


def checked(values: dict[str, Any], where: str) -> dict[str, Any]:
    """``values`` with every value that breaks its field's rule replaced by ``Unavailable(code=corrupt)``.

    ``where`` names the source and the GPU (``/snap/nvml.json gpus[2] (0000:05:00.0)``); the reason names
    the field and the value, e.g. ``power_limit_mw: '350000' is not a number (mW)``.
    """
    out: dict[str, Any] = {}
    for key, value in values.items():
        rule = RULES.get(key)
        problem = None
        if rule is not None and not isinstance(value, Unavailable | LoadReadings):
            problem = rule(value)
        out[key] = (
            Unavailable(f"{where} field {key}: {problem}: corrupt reading", CORRUPT) if problem else value
        )
    for key, problem in _contradictions(out).items():
        out[key] = Unavailable(f"{where} field {key}: {problem}: corrupt reading", CORRUPT)
    return out


@dataclass(frozen=True)
class LoadReadings:
    """NVML sampled while the GPU was busy: link, clock event reasons, power, and the replay counter around it.

    ``samples`` are ``(t_s, gen, width, reasons, power_mw, sm_mhz)`` taken after the warm-up, so the link
    has left its idle speed; a value NVML would not give is ``None``.
    """

    samples: tuple[tuple[float, int | None, int | None, int | None, int | None, int | None], ...]
    how: str = ""
    window_s: float = 0.0
    replay_before: int | None = None
    replay_after: int | None = None

    @property
    def link(self) -> tuple[int, int] | None:
        """The lowest (gen, width) seen under load: the conservative reading."""
        gens = [s[1] for s in self.samples if s[1]]
        widths = [s[2] for s in self.samples if s[2]]
        if not gens or not widths:
            return None
        return min(gens), min(widths)

    @property
    def reasons(self) -> int | None:
        """Every clock event reason bit seen in any sample (OR)."""
        seen = [s[3] for s in self.samples if s[3] is not None]
        if not seen:
            return None
        out = 0
        for r in seen:
            out |= r
        return out

    def link_changes(self) -> int:
        """How often (gen, width) changed from one sample to the next."""
        pairs = [(s[1], s[2]) for s in self.samples if s[1] and s[2]]
        return sum(1 for a, b in zip(pairs, pairs[1:], strict=False) if a != b)

    @property
    def max_power_w(self) -> float | None:
        p = [s[4] for s in self.samples if s[4] is not None]
        return max(p) / 1000 if p else None

    @property
    def max_sm_mhz(self) -> int | None:
        c = [s[5] for s in self.samples if s[5] is not None]
        return max(c) if c else None

    def to_json(self) -> dict[str, Any]:
        return {
            "samples": [list(s) for s in self.samples],
            "how": self.how,
            "window_s": self.window_s,
            "replay_before": self.replay_before,
            "replay_after": self.replay_after,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoadReadings:
        """Read ``load``; a sample or counter of the wrong type or out of range raises ValueError naming it."""
        raw = data.get("samples", [])
        if not isinstance(raw, list):
            raise ValueError(f"load.samples {raw!r} is not a list")
        samples = []
        for i, sample in enumerate(raw):
            if not isinstance(sample, list | tuple) or len(sample) != len(SAMPLE_RULES):
                raise ValueError(
                    f"load.samples[{i}] {sample!r} is not [t_s, gen, width, reasons, power_mw, sm_mhz]"
                )
            for (name, lo, hi), x in zip(SAMPLE_RULES, sample, strict=True):
                if (x is not None or name == "t_s") and physical(x, lo=lo, hi=hi) is None:
                    raise ValueError(
                        f"load.samples[{i}] {name} {x!r} is not a possible reading ({lo:g}..{hi:g})"
                    )
            samples.append(tuple(sample))
        counters = {}
        for key in ("replay_before", "replay_after"):
            x = data.get(key)
            if x is not None and _integer(x, 0, MAX_COUNT, "count") is not None:
                raise ValueError(f"load.{key} {x!r} is not a count")
            counters[key] = x
        before, after = counters["replay_before"], counters["replay_after"]
        if before is not None and after is not None and after < before:
            # nvmlDeviceGetPcieReplayCounter only counts up (NVML API reference); down means a bad record.
            raise ValueError(
                f"load.replay_after {after!r} is below load.replay_before {before!r}: counters only rise"
            )
        window = data.get("window_s", 0.0)
        if physical(window) is None:
            raise ValueError(f"load.window_s {window!r} is not a number of seconds")
        return cls(
            samples=tuple(samples),
            how=str(data.get("how", "")),
            window_s=float(window),
            replay_before=counters["replay_before"],
            replay_after=counters["replay_after"],
        )


@dataclass
class GpuState:
    """One GPU as NVML reported it. ``get`` returns the value or an ``Unavailable``."""

    bdf: str
    index: int
    values: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str) -> Any:
        if key not in self.values:
            return Unavailable(f"{key} was not recorded", NOT_CAPTURED)
        return self.values[key]

    @property
    def name(self) -> str | None:
        v = self.values.get(F_NAME)
        return v if isinstance(v, str) else None

    def load(self) -> LoadReadings | Unavailable:
        v = self.get(F_LOAD)
        if isinstance(v, LoadReadings | Unavailable):
            return v
        if isinstance(v, dict):
            return LoadReadings.from_json(v)
        return Unavailable("no readings under load were recorded", NOT_CAPTURED)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {F_INDEX: self.index, F_BDF: self.bdf}
        for k, v in self.values.items():
            out[k] = v.to_json() if isinstance(v, LoadReadings) else to_json_value(v)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = NVML_JSON) -> GpuState:
        """One GPU entry of ``nvml.json``. A bad ``index`` or ``bdf`` raises ValueError (the GPU cannot be
        placed); any other field of the wrong type or out of range becomes ``Unavailable(code=corrupt)``."""
        from ..pcie import normalize_bdf

        if not isinstance(data, dict):
            raise ValueError(f"{where}: {data!r} is not an object")
        index, bdf = data.get(F_INDEX), data.get(F_BDF)
        if not isinstance(index, int) or _integer(index, 0, 1 << 16, "NVML index") is not None:
            raise ValueError(f"{where} field {F_INDEX}: {index!r} is not an NVML index")
        if not isinstance(bdf, str):
            raise ValueError(f"{where} field {F_BDF}: {bdf!r} is not a PCI address")
        bdf = normalize_bdf(bdf)
        values = {k: from_json_value(v) for k, v in data.items() if k not in (F_INDEX, F_BDF)}
        return cls(bdf, int(index), checked(values, f"{where} ({bdf})"))


@dataclass
class SystemState:
    """Driver-wide readings: versions, and where the state came from."""

    origin: str
    driver: str | Unavailable
    cuda: int | Unavailable  # nvmlSystemGetCudaDriverVersion: 12040 = 12.4
    nvml: str | Unavailable
    gpus: list[GpuState]
    raw: dict[str, Any] = field(default_factory=dict)
    # GPUs NVML counts but could not open: [{"index": 1, "error": "nvmlDeviceGetHandleByIndex: GPU is lost"}]
    unopened: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "origin": self.origin,
            "driver": to_json_value(self.driver),
            "cuda": to_json_value(self.cuda),
            "nvml": to_json_value(self.nvml),
            "gpus": [g.to_json() for g in self.gpus],
            **({"unopened": list(self.unopened)} if self.unopened else {}),
            **{
                k: v
                for k, v in self.raw.items()
                if k not in ("format", "origin", "driver", "cuda", "nvml", "gpus", "unopened")
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str) -> SystemState:
        if not isinstance(data, dict):
            raise ValueError(f"{where}: nvml.json is {type(data).__name__}, not an object")
        if data.get("format") != FORMAT:
            raise ValueError(
                f"{where}: nvml.json format {data.get('format')!r} (this version reads {FORMAT})"
            )
        gpus = data.get("gpus")
        if not isinstance(gpus, list):
            raise ValueError(f"{where}: 'gpus' must be a list")
        try:
            states = [GpuState.from_json(g, f"{where} gpus[{i}]") for i, g in enumerate(gpus)]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"bad GPU entry: {exc}") from None
        _mark_repeats(states, where)
        unopened = data.get("unopened", [])
        if not isinstance(unopened, list) or not all(
            isinstance(u, dict) and _integer(u.get("index"), 0, 1 << 16, "index") is None for u in unopened
        ):
            raise ValueError(f"{where}: 'unopened' must be a list of {{index, error}} objects")
        versions = checked_system(
            {
                k: from_json_value(data[k])
                if k in data
                else Unavailable(f"{k} was not recorded", NOT_CAPTURED)
                for k in ("driver", "cuda", "nvml")
            },
            where,
        )
        return cls(
            origin=str(data.get("origin", where)),
            driver=versions["driver"],
            cuda=versions["cuda"],
            nvml=versions["nvml"],
            gpus=states,
            raw=data,
            unopened=unopened,
        )


def _mark_repeats(states: list[GpuState], where: str) -> None:
    """Two entries with one NVML index, one BDF or one UUID cannot both be true (NVML numbers each GPU once,
    a PCI address names one function, a GPU UUID is unique: NVML API reference, nvmlDeviceGetUUID): every
    reading of such entries becomes ``Unavailable(code=corrupt)``."""
    for field_name, attr in ((F_INDEX, "index"), (F_BDF, "bdf"), (F_UUID, None)):
        seen: dict[Any, list[int]] = {}
        for i, g in enumerate(states):
            value = getattr(g, attr) if attr else g.values.get(field_name)
            if attr or (isinstance(value, str) and value):
                seen.setdefault(value, []).append(i)
        for value, where_at in seen.items():
            if len(where_at) < 2:
                continue
            entries = ", ".join(f"gpus[{i}]" for i in where_at)
            why = f"{where} field {field_name}: {value!r} appears in {entries}: corrupt reading"
            for i in where_at:
                g = states[i]
                keys = set(g.values) | set(RULES)
                g.values = {k: Unavailable(f"{why} (so {k} cannot be placed)", CORRUPT) for k in keys}


def checked_system(values: dict[str, Any], where: str) -> dict[str, Any]:
    """Driver and NVML versions as text, CUDA as NVML's integer (12040); else ``Unavailable(code=corrupt)``."""
    rules: dict[str, Callable[[Any], str | None]] = {
        "driver": _text_rule,
        "nvml": _text_rule,
        "cuda": _int_rule(1000, 999_999, "major*1000 + minor*10"),
    }
    out = {}
    for key, value in values.items():
        problem = None if isinstance(value, Unavailable) else rules[key](value)
        out[key] = (
            Unavailable(f"{where} field {key}: {problem}: corrupt reading", CORRUPT) if problem else value
        )
    return out


def cuda_text(version: int) -> str:
    """``12040`` -> ``12.4`` (NVML encodes major*1000 + minor*10)."""
    return f"{version // 1000}.{version % 1000 // 10}"


def mib(b: int) -> str:
    return f"{b / (1 << 20):.0f} MiB"
