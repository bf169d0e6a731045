"""The soak's pure parts: its duration setting, the ``[soak]`` profile section, the samples and the verdict.

A GPU that cools badly or is power-starved does not fail a 3-second check: it "silently downclocks"
after minutes. The soak keeps every GPU busy for the whole window and samples NVML once a second; the
judge then looks at the samples of each GPU:

- clock event reasons (``nvmlClocksEventReasons`` in nvml.h; NVML API Reference, "Clock Event
  Reasons"): HW slowdown ``0x8``, SW thermal slowdown ``0x20``, HW thermal slowdown ``0x40`` and HW power
  brake slowdown ``0x80`` fail when present in ``REASON_MIN_SAMPLES`` samples or more. The SW power cap
  (``0x4``) is the normal state of a GPU at full load and is not judged;
- the sustained SM clock: the median of every ``window`` seconds after the baseline may fall at most
  ``[soak] max_clock_drop`` (default 0.10, a tenth) below the baseline, the median of the first
  ``min(60 s, a third of the run)``. Medians over windows, so a single low sample is noise, a minute of
  them is not;
- temperature: the windowed median of the GPU (and memory, where NVML reports it) temperature may not
  pass ``[soak] max_temp_c`` / ``max_mem_temp_c`` (not judged when the profile sets none: the thermal
  slowdown reasons are the driver's own limits);
- error counters: the PCIe replay counter (``nvmlDeviceGetPcieReplayCounter``) and the AER counters of
  every hop to the GPU (sysfs ``aer_dev_*``) may not grow.

Record (``soak.json`` in a snapshot, ``SoakRecord.to_json``)::

    {"format": 1, "duration_s": 600, "interval_s": 1.0, "how": "...", "stopped": "completed",
     "fields": ["t_s", "sm_mhz", ...],
     "gpus": {"0000:17:00.0": {"index": 0, "name": "...", "samples": [[0.0, 1980, ...], ...],
                               "aer_hops": {"0000:00:01.1": {"start": [cor, nonfatal, fatal], "end": [...]}}}}}
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass, field
from typing import Any

from ..errors import ProfileError
from ..pcie import link_pair_problem
from ..profile import check_keys
from ..verdict import Verdict, failed, passed, physical, unreadable

FORMAT = 1
SOAK_JSON = "soak.json"
FIELDS = (
    "t_s",
    "sm_mhz",
    "mem_mhz",
    "temp_c",
    "mem_temp_c",
    "power_mw",
    "reasons",
    "fan_pct",
    "replay",
    "gen",
    "width",
    "aer_cor",
    "aer_nonfatal",
    "aer_fatal",
)
COL = {name: i for i, name in enumerate(FIELDS)}
# Physical bounds of each column: a reading outside them is corrupt, never judged.
BOUNDS: dict[str, tuple[float, float]] = {
    "t_s": (0, 7 * 86400),
    "sm_mhz": (0, 5000),
    "mem_mhz": (0, 30000),
    "temp_c": (-40, 150),
    "mem_temp_c": (-40, 150),
    "power_mw": (0, 5_000_000),
    "reasons": (0, 2**64 - 1),
    "fan_pct": (0, 255),
    "replay": (0, 2**64 - 1),
    "gen": (1, 6),
    "width": (1, 32),
    "aer_cor": (0, 2**64 - 1),
    "aer_nonfatal": (0, 2**64 - 1),
    "aer_fatal": (0, 2**64 - 1),
}
COUNTERS = ("replay", "aer_cor", "aer_nonfatal", "aer_fatal")
AER_KINDS = ("correctable", "nonfatal", "fatal")

# nvml.h nvmlClocksEventReasons (NVML API Reference, "Clock Event Reasons").
BAD_REASONS = {
    0x8: "HW slowdown",
    0x20: "SW thermal slowdown",
    0x40: "HW thermal slowdown",
    0x80: "HW power brake slowdown",
}
REASON_MIN_SAMPLES = 2  # one sample with a reason bit is a blip; two seconds or more is a slowdown
DEFAULT_MAX_CLOCK_DROP = 0.10
BASELINE_S = 60.0  # the first minute's median, or the first third of a shorter run
WINDOW_S = 10.0  # sustained = the median of a 10-second window
MIN_SAMPLES = 6
AGAIN_FIX = [
    "run the soak again on the rig: pytest --rig --rig-soak 10m (add --rig-soak-save soak.json to keep it)"
]

PRESETS = {"": 1, "s": 1, "m": 60, "h": 3600}
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*$")
MIN_SOAK_S, MAX_SOAK_S = 10.0, 24 * 3600.0
SHORT_TOLERANCE = 0.1  # a completed soak's samples reach its duration_s, less a tenth (a slow NVML read)
# The lowest SM clock NVIDIA GPUs run at is a couple of hundred MHz (`nvidia-smi -q -d SUPPORTED_CLOCKS`
# lists the graphics clocks a board supports: about 210 MHz on Ampere, more on Hopper): a GPU drawing the
# power of real work with its SM clock below MIN_LOADED_SM_MHZ is no reading.
MIN_LOADED_SM_MHZ = 100
LOADED_POWER_MW = 100_000  # 100 W: above any GPU's idle draw, so the GPU is working

THERMAL_FIX = [
    "check the GPU's cooling: fans spinning, heatsink and filters free of dust, the chassis airflow "
    "front-to-back with blanking panels, inlet air below the server's limit (`nvidia-smi -q -d TEMPERATURE,PERFORMANCE`)",
    "on passive (SXM / data-centre) cards, the server fans must be in their performance profile (BMC/IPMI fan mode)",
]
POWER_FIX = [
    "check each GPU's power cables (every 8-pin / 12V-2x6 connector seated, one cable per connector) and the PSU's "
    "rating; HW power brake means the board or PSU signalled an external power limit",
]


def parse_duration(text: str) -> float:
    """``600``, ``"90s"``, ``"10m"``, ``"1.5h"`` -> seconds; ``0`` / ``"off"`` -> 0 (no soak).

    Raises ``ValueError`` saying what is allowed (the setting resolver names the value and its source).
    """
    t = str(text).strip().lower()
    if t in ("0", "off", "no", "false", ""):
        return 0.0
    m = DURATION.match(t)
    if not m:
        raise ValueError("seconds or a length such as 600, 90s, 10m, 1h (0 or off: no soak)")
    seconds = float(m.group(1)) * PRESETS[m.group(2)]
    if not MIN_SOAK_S <= seconds <= MAX_SOAK_S:
        raise ValueError(f"between {MIN_SOAK_S:.0f} s and 24 h (or 0/off)")
    return seconds


@dataclass(frozen=True)
class SoakExpect:
    """``[soak]`` of a profile. ``source`` says where the numbers came from, for messages."""

    max_clock_drop: float = DEFAULT_MAX_CLOCK_DROP
    max_temp_c: float | None = None
    max_mem_temp_c: float | None = None
    source: str = "pytest-rigcheck defaults"


SOAK_KEYS = {
    "max_clock_drop": "a fraction from 0.01 to 0.9, e.g. 0.10 (SM clock may fall 10% below the first minute's)",
    "max_temp_c": "degrees Celsius from 30 to 120, e.g. 83",
    "max_mem_temp_c": "degrees Celsius from 30 to 120, e.g. 95",
}


def parse_soak(table: Any, where: str) -> SoakExpect:
    """Validate ``[soak]``; a bad key or value raises ``ProfileError`` naming ``soak.KEY``."""
    if table is None:
        return SoakExpect()
    if not isinstance(table, dict):
        raise ProfileError(where, "soak", table, "must be a table ([soak])")
    check_keys(where, "soak", table, SOAK_KEYS)
    drop = table.get("max_clock_drop", DEFAULT_MAX_CLOCK_DROP)
    if physical(drop, lo=0.01, hi=0.9) is None:
        raise ProfileError(where, "soak.max_clock_drop", drop, SOAK_KEYS["max_clock_drop"])
    temps: dict[str, float | None] = {}
    for key in ("max_temp_c", "max_mem_temp_c"):
        v = table.get(key)
        if v is not None and physical(v, lo=30, hi=120) is None:
            raise ProfileError(where, f"soak.{key}", v, SOAK_KEYS[key])
        temps[key] = None if v is None else float(v)
    return SoakExpect(float(drop), temps["max_temp_c"], temps["max_mem_temp_c"], f"[soak] of {where}")


# -- the record -----------------------------------------------------------------------------------------


@dataclass
class GpuSamples:
    """One GPU's samples (rows in ``FIELDS`` order, ``None`` where NVML gave nothing) and its hops' AER
    totals at the start and end of the soak: ``{hop_bdf: {"start": [cor, nonfatal, fatal], "end": [...]}}``."""

    bdf: str
    index: int | None = None
    name: str = ""
    samples: list[list[float | None]] = field(default_factory=list)
    aer_hops: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    unavailable: str | None = None  # why there are no samples (the load could not run on it)

    def column(self, name: str) -> list[float | None]:
        i = COL[name]
        return [row[i] for row in self.samples]


@dataclass
class SoakRecord:
    """Every GPU's samples from one soak, live or from ``soak.json``."""

    duration_s: float
    interval_s: float
    how: str
    stopped: str  # "completed", "interrupted after N s (Ctrl-C)", "the load ended early: ..."
    gpus: dict[str, GpuSamples] = field(default_factory=dict)
    origin: str = "live"

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "duration_s": self.duration_s,
            "interval_s": self.interval_s,
            "how": self.how,
            "stopped": self.stopped,
            "fields": list(FIELDS),
            "gpus": {
                b: {
                    "index": g.index,
                    "name": g.name,
                    "samples": g.samples,
                    "aer_hops": g.aer_hops,
                    **({"unavailable": g.unavailable} if g.unavailable else {}),
                }
                for b, g in self.gpus.items()
            },
        }

    @classmethod
    def from_json(cls, data: Any, origin: str) -> SoakRecord:
        """From ``soak.json``; raises ``ValueError`` saying what is wrong with its shape (values are the judge's)."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a soak record of format {FORMAT}")
        fields = data.get("fields")
        if fields != list(FIELDS):
            raise ValueError(f"fields {fields!r} are not {list(FIELDS)!r}")
        dur, interval = (
            physical(data.get("duration_s"), lo=0),
            physical(data.get("interval_s"), lo=0, allow_lo=False),
        )
        if dur is None or interval is None:
            raise ValueError("duration_s / interval_s missing or impossible")
        gpus = data.get("gpus")
        if not isinstance(gpus, dict):
            raise ValueError("'gpus' is not an object")
        out: dict[str, GpuSamples] = {}
        for bdf, g in gpus.items():
            if not isinstance(g, dict) or not isinstance(g.get("samples", []), list):
                raise ValueError(f"{bdf}: not an object with a 'samples' list")
            rows = g.get("samples", [])
            for row in rows:
                if not isinstance(row, list) or len(row) != len(FIELDS):
                    raise ValueError(f"{bdf}: a sample is not a list of {len(FIELDS)} values: {row!r}")
            hops = g.get("aer_hops", {})
            if not isinstance(hops, dict) or not all(
                isinstance(v, dict) and all(_counts(v.get(k)) for k in ("start", "end"))
                for v in hops.values()
            ):
                raise ValueError(f"{bdf}: aer_hops is not {{hop: {{start: [3 counts], end: [3 counts]}}}}")
            for hop, v in hops.items():
                if any(e < b for b, e in zip(v["start"], v["end"], strict=True)):
                    # AER counters only rise (Documentation/PCI/pcieaer-howto.rst): end below start is corrupt
                    raise ValueError(
                        f"{bdf}: aer_hops[{hop}] end {v['end']!r} is below start {v['start']!r}: "
                        "counters only rise, corrupt reading"
                    )
            out[bdf] = GpuSamples(
                bdf,
                g.get("index") if isinstance(g.get("index"), int) else None,
                str(g.get("name") or ""),
                rows,
                hops,
                str(g["unavailable"]) if g.get("unavailable") else None,
            )
        indices = [g.index for g in out.values() if g.index is not None]
        if len(indices) != len(set(indices)):
            raise ValueError(f"two GPUs have one NVML index: {sorted(indices)}")
        return cls(
            float(dur),
            float(interval),
            str(data.get("how") or ""),
            str(data.get("stopped") or ""),
            out,
            origin,
        )


def _counts(v: Any) -> bool:
    return (
        isinstance(v, list)
        and len(v) == 3
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in v)
    )


# -- judging ------------------------------------------------------------------------------------------


def _check_rows(g: GpuSamples) -> str | None:
    """Why the samples cannot be real (a value out of bounds, time going back, a counter falling), or None."""
    last_t = -math.inf
    prev: dict[str, float] = {}
    for n, row in enumerate(g.samples):
        for name, value in zip(FIELDS, row, strict=True):
            if value is None:
                if name == "t_s":
                    return f"sample {n} has no time"
                continue
            lo, hi = BOUNDS[name]
            if physical(value, lo=lo, hi=hi) is None:
                return f"sample {n}: {name} = {value!r} is not a possible reading ({lo:g} to {hi:g})"
        sm, power = row[COL["sm_mhz"]], row[COL["power_mw"]]
        if sm is not None and power is not None and sm < MIN_LOADED_SM_MHZ and power >= LOADED_POWER_MW:
            return (
                f"sample {n}: sm_mhz = {sm:g} MHz while power_mw = {power:g} ({power / 1000:.0f} W): a GPU drawing "
                f"that power runs its SM clock (never below {MIN_LOADED_SM_MHZ} MHz, nvidia-smi -q -d SUPPORTED_CLOCKS)"
            )
        t = float(row[0])  # type: ignore[arg-type]
        if t <= last_t:
            return f"sample {n}: time {t} s does not follow {last_t} s"
        last_t = t
        for name in COUNTERS:
            v = row[COL[name]]
            if v is None:
                continue
            if name in prev and v < prev[name]:
                return f"sample {n}: {name} fell from {prev[name]:g} to {v:g}: a counter never falls"
            prev[name] = float(v)
    return None


def _against_duration(g: GpuSamples, rec: SoakRecord) -> str | None:
    """Samples that contradict the record's own duration: the soak samples every ``interval_s`` from the
    warm-up's end until ``duration_s`` (``soak/run.py`` ``SoakSampler``), so a last sample more than two
    intervals past it, or a ``completed`` soak whose samples stop well short of it (more than
    ``SHORT_TOLERANCE`` of it, and three intervals), cannot both be true; an interrupted or failed soak
    says so in ``stopped``."""
    times = [float(t) for row in g.samples if (t := row[COL["t_s"]]) is not None]  # rows checked: no None
    last = max(times, default=0.0)
    if last > rec.duration_s + 2 * rec.interval_s:
        return (
            f"samples run to {last:g} s but the record says the soak lasted duration_s = {rec.duration_s:g} s "
            "(contradictory)"
        )
    short = max(SHORT_TOLERANCE * rec.duration_s, 3 * rec.interval_s)
    if rec.stopped == "completed" and times and last < rec.duration_s - short:
        return (
            f"the record says the soak completed its duration_s = {rec.duration_s:g} s (stopped = 'completed'), "
            f"but its samples end at {last:g} s (contradictory: an interrupted soak says so in 'stopped')"
        )
    return None


def windowed_medians(times: list[float], values: list[float], window_s: float) -> list[tuple[float, float]]:
    """``(start time, median)`` of every window of ``window_s`` seconds starting at each sample (windows
    that would run past the end are left out; one window of all the samples when the run is shorter)."""
    out: list[tuple[float, float]] = []
    j = 0
    n = len(times)
    for i in range(n):
        while j < n and times[j] - times[i] < window_s:
            j += 1
        if j == n and times[-1] - times[i] < window_s * 0.999 and out:
            break
        out.append((times[i], statistics.median(values[i:j])))
    return out


@dataclass(frozen=True)
class Stats:
    lo: float
    median: float
    hi: float

    def text(self, unit: str, scale: float = 1.0) -> str:
        return f"{self.lo / scale:.0f}/{self.median / scale:.0f}/{self.hi / scale:.0f} {unit}"


def stats(values: list[float | None]) -> Stats | None:
    got = [float(v) for v in values if v is not None]
    return Stats(min(got), statistics.median(got), max(got)) if got else None


def _above_link(g: GpuSamples, link_max: LinkMax) -> str | None:
    """The first sample whose link (``gen``, ``width``) is no PCIe link or above the GPU's own maximum."""
    max_gen, max_width, names = link_max
    for n, row in enumerate(g.samples):
        why = link_pair_problem(row[COL["gen"]], row[COL["width"]], max_gen, max_width, names)
        if why is not None:
            return f"sample {n}: {why}"
    return None


# The GPU's own link maximum: (generation, width, their names for messages), e.g. sysfs max_link_speed/width.
LinkMax = tuple[int | None, int | None, tuple[str, str]]
NO_LINK_MAX: LinkMax = (None, None, ("max_gen", "max_width"))


def judge(
    rec: SoakRecord,
    bdf: str,
    label: str,
    expect: SoakExpect,
    path: list[str] | None = None,
    link_max: LinkMax = NO_LINK_MAX,
    aer_path: list[str] | None = None,
) -> Verdict:
    """One GPU's soak verdict from the samples: PASS, FAIL (slowdown, clock drop, temperature, errors
    growing; every reason found is listed) or UNREADABLE (no samples, too few, or impossible ones, such as
    a link above ``link_max``, the GPU's own maximum; or a hop of ``aer_path``, the hops to the GPU whose
    AER counters the kernel keeps (``linkhealth.aer_kept``), with no AER reading in ``aer_hops``)."""
    from ..linkhealth import aer_lost_text

    path = path or []
    g = rec.gpus.get(bdf)
    where = f"soak samples ({rec.origin})"
    if g is None:
        return unreadable(f"{label}: no soak samples for this GPU in {where}", path=path, fix=list(AGAIN_FIX))
    if g.unavailable:
        return unreadable(f"{label}: no soak could be run: {g.unavailable}", path=path, fix=list(AGAIN_FIX))
    bad = _check_rows(g) or _against_duration(g, rec) or _above_link(g, link_max)
    if bad:
        return unreadable(f"{label}: {where} are corrupt: {bad}", path=path, fix=list(AGAIN_FIX))
    lost = [hop for hop in aer_path or [] if hop not in g.aer_hops]
    if lost:
        # the soak fails on any AER counter on the path growing: one never recorded cannot be ruled out
        return unreadable(
            aer_lost_text(label, lost, f"the soak record ({rec.origin}) aer_hops"),
            path=path,
            fix=list(AGAIN_FIX),
        )
    rows = [r for r in g.samples if r[COL["sm_mhz"]] is not None]
    if len(rows) < MIN_SAMPLES:
        return unreadable(
            f"{label}: {len(rows)} SM clock sample(s) in {where} ({rec.stopped}); at least {MIN_SAMPLES} "
            "are needed to judge a soak",
            path=path,
            fix=list(AGAIN_FIX),
        )
    t0 = float(rows[0][0])  # type: ignore[arg-type]
    times = [float(r[0]) - t0 for r in rows]  # type: ignore[arg-type]
    sm = [float(r[COL["sm_mhz"]]) for r in rows]  # type: ignore[arg-type]
    span = times[-1]
    base_s = min(BASELINE_S, span / 3)
    window_s = max(min(WINDOW_S, (span - base_s) / 2), 2 * rec.interval_s)
    base_vals = [v for t, v in zip(times, sm, strict=True) if t <= base_s]
    baseline = statistics.median(base_vals)
    if baseline < MIN_LOADED_SM_MHZ:
        # a clock that low under the soak's load is no reading: a "held" clock of 0 MHz is no evidence
        return unreadable(
            f"{label}: {where}: SM clock {baseline:.0f} MHz (median of the first {base_s:.0f} s) during a soak "
            f"that loads the GPU: below the {MIN_LOADED_SM_MHZ} MHz no loaded NVIDIA GPU runs at "
            "(nvidia-smi -q -d SUPPORTED_CLOCKS): the load did not run or the clock reading is corrupt",
            path=path,
            fix=list(AGAIN_FIX),
            measured=f"{baseline:.0f} MHz",
            expected=f"at least {MIN_LOADED_SM_MHZ} MHz under load",
            measured_value=baseline,
            expected_value=MIN_LOADED_SM_MHZ,
            unit="MHz",
        )
    after = [(t, v) for t, v in zip(times, sm, strict=True) if t > base_s]
    problems: list[str] = []
    fixes: list[str] = []
    notes: list[str] = []
    props: dict[str, object] = {}

    # 1. slowdown reasons
    reasons = [(float(r[0]) - t0, int(r[COL["reasons"]])) for r in g.samples if r[COL["reasons"]] is not None]  # type: ignore[arg-type]
    if not reasons:
        return unreadable(
            f"{label}: no clock event reasons in {where}: slowdown cannot be ruled out",
            path=path,
            fix=[
                "update the NVIDIA driver (clock event reasons need nvmlDeviceGetCurrentClocksEventReasons)"
            ],
        )
    for bit, name in BAD_REASONS.items():
        hits = [t for t, v in reasons if v & bit]
        if len(hits) >= REASON_MIN_SAMPLES:
            problems.append(
                f"{name} (0x{bit:x}) in {len(hits)} of {len(reasons)} samples, from {hits[0]:.0f} s"
            )
            fixes += POWER_FIX if bit == 0x80 else THERMAL_FIX
    # 2. sustained clock
    drop = 0.0
    worst: tuple[float, float] | None = None
    if after:
        meds = windowed_medians([t for t, _ in after], [v for _, v in after], window_s)
        worst = min(meds, key=lambda m: m[1])
        drop = 1 - worst[1] / baseline if baseline > 0 else 0.0
        if drop > expect.max_clock_drop:
            problems.append(
                f"sustained SM clock fell to {worst[1]:.0f} MHz ({window_s:.0f} s median from {worst[0]:.0f} s), "
                f"{drop:.0%} below the first {base_s:.0f} s ({baseline:.0f} MHz); allowed {expect.max_clock_drop:.0%} "
                f"({expect.source})"
            )
            fixes += THERMAL_FIX
    # 3. temperatures
    for col, limit, what in (
        ("temp_c", expect.max_temp_c, "GPU temperature"),
        ("mem_temp_c", expect.max_mem_temp_c, "memory temperature"),
    ):
        pts = [(float(r[0]) - t0, float(r[COL[col]])) for r in g.samples if r[COL[col]] is not None]  # type: ignore[arg-type]
        if limit is None:
            continue
        if not pts:
            if col == "temp_c":
                return unreadable(
                    f"{label}: no {what} in {where}; the profile limits it to {limit:g} C",
                    path=path,
                    fix=[
                        f"remove [soak] max_temp_c from {expect.source}, or run as root to read the temperature"
                    ],
                )
            notes.append(f"NVML reports no {what} on this GPU: {limit:g} C limit not judged")
            continue
        meds = windowed_medians([t for t, _ in pts], [v for _, v in pts], window_s)
        hot = [m for m in meds if m[1] > limit]
        if hot:
            peak = max(meds, key=lambda m: m[1])
            problems.append(
                f"{what} {peak[1]:.0f} C ({window_s:.0f} s median) above {limit:g} C ({expect.source}), "
                f"from {hot[0][0]:.0f} s"
            )
            fixes += THERMAL_FIX
    # 4. error counters
    for col, what in (
        ("replay", "PCIe replay counter"),
        ("aer_cor", "AER correctable"),
        ("aer_nonfatal", "AER non-fatal"),
        ("aer_fatal", "AER fatal"),
    ):
        vals = [v for v in g.column(col) if v is not None]
        hop = _grown_hop(g, col)
        if (len(vals) >= 2 and vals[-1] > vals[0]) or hop:
            # the samples' sums over the path, or a hop's own start/end counts (aer_hops): either growing fails
            grew = (
                f"{vals[0]:.0f} -> {vals[-1]:.0f} (+{vals[-1] - vals[0]:.0f})"
                if len(vals) >= 2 and vals[-1] > vals[0]
                else "between the soak's first and last reading"
            )
            problems.append(f"{what} grew {grew}{hop}")
            fixes.append(
                f"reseat or replace the riser/cable of the link{hop.replace(' on', '') or ' to this GPU'}; "
                "check the slot; `sudo dmesg | grep -i -e aer -e pcie`"
            )
    # figures
    figures = {
        "sm_mhz": stats(g.column("sm_mhz")),
        "mem_mhz": stats(g.column("mem_mhz")),
        "temp_c": stats(g.column("temp_c")),
        "mem_temp_c": stats(g.column("mem_temp_c")),
        "power_w": stats([None if v is None else v / 1000 for v in g.column("power_mw")]),
        "fan_pct": stats(g.column("fan_pct")),
    }
    for k, s in figures.items():
        if s is not None:
            props[f"soak_{k}"] = {"min": s.lo, "median": s.median, "max": s.hi}
    gens = [v for v in g.column("gen") if v is not None]
    widths = [v for v in g.column("width") if v is not None]
    changes = sum(1 for a, b in zip(gens, gens[1:], strict=False) if a != b) + sum(
        1 for a, b in zip(widths, widths[1:], strict=False) if a != b
    )
    props["soak_link_changes"] = changes
    # 5. the link under sustained load: it trains to its top speed and width as the load starts; a sample
    # below the soak's own best (a downtrain mid-run, a riser that gives way warm) fails here: nothing else
    # reads the soak's samples (test_link_not_flapping judges the short load window)
    for col, name, fmt in (("gen", "speed", "Gen{:.0f}"), ("width", "width", "x{:.0f}")):
        link_pts = [
            (float(t) - t0, float(v))
            for r in g.samples
            if (t := r[COL["t_s"]]) is not None and (v := r[COL[col]]) is not None
        ]
        if not link_pts:
            continue
        best = max(v for _, v in link_pts)
        first = next(i for i, (_, v) in enumerate(link_pts) if v == best)  # before it: the link training up
        low = [(t, v) for t, v in link_pts[first:] if v < best]
        if low:
            problems.append(
                f"link {name} fell below {fmt.format(best)} in {len(low)} of {len(link_pts)} samples under load "
                f"(lowest {fmt.format(min(v for _, v in low))}, from {low[0][0]:.0f} s)"
            )
            fixes.append(
                "reseat or replace the riser/cable of this GPU's link; set the slot's PCIe speed in the BIOS "
                "rather than Auto; `sudo dmesg | grep -i -e aer -e pcie`"
            )
    if changes:
        notes.append(f"the link changed speed/width {changes} time(s)")
    props["soak_baseline_sm_mhz"] = baseline
    props["soak_clock_drop"] = round(drop, 4)
    props["soak_seconds"] = round(span, 1)
    props["soak_curve"] = [
        [
            r[COL["t_s"]],
            r[COL["sm_mhz"]],
            r[COL["temp_c"]],
            r[COL["mem_temp_c"]],
            r[COL["power_mw"]],
            r[COL["reasons"]],
        ]
        for r in g.samples
    ]
    summary_bits = [
        f"SM {figures['sm_mhz'].text('MHz')}" if figures["sm_mhz"] else "",
        f"temp {figures['temp_c'].text('C')}" if figures["temp_c"] else "",
        f"power {figures['power_w'].text('W')}" if figures["power_w"] else "",
    ]
    measured = f"{span:.0f} s, min/median/max: " + ", ".join(b for b in summary_bits if b)
    if rec.stopped and rec.stopped != "completed":
        notes.append(f"soak {rec.stopped}: judged on what was sampled")
    if rec.how:
        notes.append(rec.how)
    expected = (
        f"no thermal/HW slowdown, sustained SM clock within {expect.max_clock_drop:.0%} of the first {base_s:.0f} s, "
        + (f"GPU temperature <= {expect.max_temp_c:g} C, " if expect.max_temp_c is not None else "")
        + f"no error counter growing ({expect.source})"
    )
    common: dict[str, Any] = dict(
        measured=measured,
        expected=expected,
        measured_value=round(drop, 4),
        expected_value=expect.max_clock_drop,
        unit="fraction of baseline SM clock",
        path=path,
        notes=notes,
        properties=props,
    )
    if problems:
        return failed(
            f"{label}: soak of {span:.0f} s: {'; '.join(problems)}", fix=list(dict.fromkeys(fixes)), **common
        )
    return passed(
        f"{label}: soak of {span:.0f} s held: SM clock {worst[1] if worst else baseline:.0f} MHz sustained vs "
        f"{baseline:.0f} MHz in the first {base_s:.0f} s ({drop:.1%} drop), no slowdown, no errors",
        **common,
    )


def _grown_hop(g: GpuSamples, col: str) -> str:
    """`` on 0000:00:01.1`` naming the hop whose AER counter grew, from ``aer_hops``; '' for the replay counter."""
    if col == "replay":
        return ""
    k = {"aer_cor": 0, "aer_nonfatal": 1, "aer_fatal": 2}[col]
    grown = [hop for hop, v in g.aer_hops.items() if v["end"][k] > v["start"][k]]
    return f" on {', '.join(grown)}" if grown else ""


def progress_line(
    elapsed_s: float, total_s: float, latest: dict[str, list[float | None]], with_time: bool = True
) -> str:
    """``soak 42/600 s  GPU0 1980 MHz 71 C 690 W  GPU1 ...`` from each GPU's latest sample (keyed by label);
    without ``with_time``, just the GPUs' part (the status line shows the time itself)."""
    parts = [f"soak {elapsed_s:.0f}/{total_s:.0f} s"] if with_time else []
    for name, row in latest.items():
        sm, temp, power = row[COL["sm_mhz"]], row[COL["temp_c"]], row[COL["power_mw"]]
        bits = [
            f"{sm:.0f} MHz" if sm is not None else "? MHz",
            f"{temp:.0f} C" if temp is not None else "? C",
            f"{power / 1000:.0f} W" if power is not None else "? W",
        ]
        reasons = row[COL["reasons"]]
        slow = [n for b, n in BAD_REASONS.items() if reasons is not None and int(reasons) & b]
        parts.append(f"{name} {' '.join(bits)}{' ' + ','.join(slow) if slow else ''}")
    return "  ".join(parts)
