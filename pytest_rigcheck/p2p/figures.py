"""The ``p2p.json`` format: what each figure means, keys for pairs and groups, loading with checks.

``p2p.json`` sits in a snapshot beside ``nvml.json``. Top-level keys: ``format``, ``origin`` (how the
figures were obtained: captured, transcribed or modelled), ``definitions`` (each figure's meaning),
``gpus`` (per BDF: ``h2d_gbps``/``d2h_gbps`` readings, ``nvlink``), ``pairs`` (per ``"SRC->DST"``:
NVML P2P status, ``can_access_peer``, ``unidir_gbps``/``bidir_gbps``/``latency_us`` readings, the
peer-access-off control, data checks), ``nccl`` (``groups`` per ``"BDF+BDF"``, each with its ``control``;
``control`` of all GPUs, ``ipc``)
and ``runs`` (timings, hangs). A figure is a list of readings: the first, then any retry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import SnapshotError, SourceError
from ..verdict import Unjudgeable, physical, unreadable

if TYPE_CHECKING:
    from ..source import Source

P2P_JSON = "p2p.json"
FORMAT = 1
GB = "GB = 1e9 bytes"
DEFINITIONS = {
    "unidir_gbps": "P2P write bandwidth SRC->DST: 5 x cudaMemcpyPeerAsync of 160 MB (40,000,000 int32) on the source "
    "GPU's stream with peer access on, queued behind a spin kernel, timed by CUDA events; bytes / time; "
    f"{GB}; each reading the median of 3 runs after a warm-up (cuda-samples p2pBandwidthLatencyTest, "
    "'Unidirectional P2P=Enabled Bandwidth (P2P Writes)')",
    "bidir_gbps": "bidirectional P2P bandwidth: SRC->DST on the source's stream and DST->SRC on a second stream of the "
    "peer, both 5 x 160 MB, started together behind a spin kernel; the sum of both directions "
    f"(2 x bytes / time), {GB} (p2pBandwidthLatencyTest 'Bidirectional P2P=Enabled')",
    "latency_us": "P2P latency: 100 x cudaMemcpyPeerAsync of 16 B (one int4) SRC->DST queued behind a spin kernel; "
    "GPU time / 100, launch cost on the GPU timeline included (p2pBandwidthLatencyTest "
    "'P2P=Enabled Latency (P2P Writes)')",
    "control_unidir_gbps": "as unidir_gbps with peer access off: the driver stages the copy through host memory",
    "control_latency_us": "as latency_us with peer access off (staged through host memory)",
    "h2d_gbps": f"host-to-device: 5 x cudaMemcpyAsync of 160 MB from pinned host memory, spin-queued, CUDA events; {GB}",
    "d2h_gbps": f"device-to-host: 5 x cudaMemcpyAsync of 160 MB to pinned host memory, spin-queued, CUDA events; {GB}",
    "busbw_gbps": "NCCL all-reduce (float32 sum, one process per GPU, in place) at the largest size of the sweep up to "
    "512 MiB: 5 warm-up ops, 20 timed back-to-back on the host clock to a device synchronize, averaged "
    f"over ranks; algbw = bytes / time, busbw = algbw x 2(n-1)/n; {GB} (nccl-tests all_reduce_perf)",
    "nccl.control": "the same all-reduce at 512 MiB, per group, in a separate run with NCCL_P2P_DISABLE=1",
    "ipc": "CUDA IPC as vLLM's custom all-reduce uses it: each rank cudaMalloc's 4 MiB with its own pattern; every "
    "other rank opens it with cudaIpcOpenMemHandle and copies it out; the copy must match",
    "verified": "every timed copy's destination was poisoned first and compared element by element with the "
    "source's pattern afterwards",
}


def pair_key(src: str, dst: str) -> str:
    return f"{src}->{dst}"


def group_key(gpus: list[str]) -> str:
    return "+".join(gpus)


def load(source: Source, where: str) -> dict[str, Any]:
    """Read ``p2p.json`` through the rig's ``Source`` and sanity-check it.

    Absent raises ``KeyError``; refused (a link out of the snapshot, not a regular file), not JSON or
    malformed raises ``SnapshotError`` naming the file and the flaw. Every figure is then checked
    (``check``): one no hardware can give becomes a ``Corrupt`` in its place.
    """
    try:
        data = source.read_json(P2P_JSON)
    except SourceError as exc:
        raise SnapshotError(f"{where}: unreadable {P2P_JSON}: {exc.reason}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SnapshotError(
            f"{where}: {P2P_JSON} format {data.get('format') if isinstance(data, dict) else '?'!r} "
            f"is not {FORMAT}"
        )
    for key in ("gpus", "pairs", "nccl"):
        if not isinstance(data.get(key, {}), dict):
            raise SnapshotError(f"{where}: {P2P_JSON} {key!r} must be an object")
    data.setdefault("gpus", {})
    data.setdefault("pairs", {})
    data.setdefault("nccl", {"groups": {}})
    data["nccl"].setdefault("groups", {})
    return check(data, f"{where} {P2P_JSON}")


def readings(entry: dict[str, Any] | None, figure: str) -> list[float]:
    """A figure's readings as floats (a bare number counts as one reading); [] if absent, malformed or
    ``Corrupt`` (the checks read figures through ``measured``, which says so)."""
    if not entry:
        return []
    v = entry.get(figure)
    if isinstance(v, int | float) and not isinstance(v, bool):
        return [float(v)]
    if isinstance(v, list) and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v):
        return [float(x) for x in v]
    return []


# -- what a figure may be -------------------------------------------------------------------------

MAX_GBPS = 2000.0  # above any GPU link: NVLink 5 x18 is 900 GB/s per direction, 1800 both ways
MAX_LATENCY_US = 1e7  # 10 s for a 16-byte copy is a hang, not a latency
# No P2P copy completes in under 0.1 us: a 16-byte write crosses the GPU's copy engine and at least one PCIe or
# NVLink hop each way. The fastest public P2P latencies are 0.36-0.45 us (RTX PRO 6000 over a PCIe switch,
# local-inference-lab/rtx6kpro hardware/pcie-bandwidth.md); cuda-samples p2pBandwidthLatencyTest reports ~1-3 us
# on NVLink and ~10 us over PCIe. The host-staged control is slower still.
MIN_LATENCY_US = 0.1
BANDWIDTH = (0.0, MAX_GBPS, "a bandwidth is a finite number of GB/s above 0 and at most 2000")
LATENCY = (
    MIN_LATENCY_US,
    MAX_LATENCY_US,
    "a latency is a finite number of us above 0.1: no PCIe or NVLink round trip of a GPU copy is faster; "
    "the fastest public P2P latencies are ~0.4 us (PCIe switch), ~1-3 us on NVLink (p2pBandwidthLatencyTest)",
)
PAIR_FIGURES = {
    "unidir_gbps": BANDWIDTH,
    "bidir_gbps": BANDWIDTH,
    "latency_us": LATENCY,
    "control_unidir_gbps": BANDWIDTH,
    "control_bidir_gbps": BANDWIDTH,
    "control_latency_us": LATENCY,
}
GPU_FIGURES = {"h2d_gbps": BANDWIDTH, "d2h_gbps": BANDWIDTH}
GROUP_FIGURES = {"busbw_gbps": BANDWIDTH}
FLAGS = ("can_access_peer", "ok")  # booleans, besides every ``*_verified``


@dataclass(frozen=True)
class Corrupt:
    """A figure in place of which ``p2p.json`` (or a live run) holds something no hardware gives:
    a negative latency, an infinite, NaN or impossible bandwidth, text. ``reason`` names the file, the
    pair or group, the field and the value."""

    reason: str

    def __str__(self) -> str:
        return self.reason


def _figure_problem(value: Any, lo: float, hi: float, rule: str, zero: bool = False) -> str | None:
    """None if ``value`` is a reading (a number or a list of numbers within (lo, hi], [lo, hi] with ``zero``)
    or absent, else why not."""
    if value is None or value == []:
        return None  # not measured: the check says so
    values = value if isinstance(value, list) else [value]
    for v in values:
        if physical(v, lo=lo, hi=hi, allow_lo=zero) is None:
            shown = v if not isinstance(v, float) or math.isfinite(v) else str(v)
            return f"reading {shown!r} is impossible ({rule})"
    return None


def _count_problem(value: Any, lo: int = 0) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        return f"{value!r} is not a count"
    return None


def _check_entry(entry: Any, rules: dict[str, tuple[float, float, str]], where: str) -> None:
    if not isinstance(entry, dict):
        raise SnapshotError(f"{where}: {entry!r} is not an object")
    for name, (lo, hi, rule) in rules.items():
        if name in entry and not isinstance(entry[name], Corrupt):
            problem = _figure_problem(entry[name], lo, hi, rule)
            if problem:
                entry[name] = Corrupt(f"{where}.{name}: {problem}")


def _check_nvlink(info: Any, where: str) -> None:
    if info is None:
        return
    if not isinstance(info, dict):
        raise SnapshotError(f"{where}.nvlink: {info!r} is not an object")
    for key in ("active", "version"):
        if info.get(key) is not None and _count_problem(info[key]):
            raise SnapshotError(f"{where}.nvlink.{key}: {info[key]!r} is not a count")
    remotes = info.get("remotes") or {}
    if not isinstance(remotes, dict) or any(_count_problem(v) for v in remotes.values()):
        raise SnapshotError(f"{where}.nvlink.remotes: {remotes!r} is not an object of BDF -> link count")


def _check_flags(entry: Any, where: str) -> None:
    """Mark each boolean field of ``entry`` (``can_access_peer``, ``ok``, every ``*_verified``) that holds
    something else (``"false"``, ``0``, ``"no"``) ``Corrupt``: read as truthy it would pass a check."""
    if not isinstance(entry, dict):
        return
    for name, v in list(entry.items()):
        if (
            (name in FLAGS or name.endswith("_verified"))
            and v is not None
            and not isinstance(v, bool | Corrupt)
        ):
            entry[name] = Corrupt(f"{where}.{name}: {v!r} is not a boolean (true or false)")


def _check_outcome(entry: Any, where: str) -> None:
    """An IPC round trip or kernel access (``ok``, ``mismatches``): flags and count well-typed, and never
    ``ok`` true with elements that differ."""
    if not isinstance(entry, dict):
        return
    _check_flags(entry, where)
    if _count_problem(entry.get("mismatches")):
        entry["mismatches"] = Corrupt(f"{where}.mismatches: {_count_problem(entry['mismatches'])}")
    elif entry.get("ok") is True and (entry.get("mismatches") or 0) > 0:
        entry["ok"] = Corrupt(
            f"{where}.ok: true contradicts mismatches {entry['mismatches']} (a round trip with differing "
            "elements did not succeed)"
        )


def _check_nvml_status(entry: dict[str, Any], where: str) -> None:
    """``nvml`` per capability: an ``nvmlGpuP2PStatus_t`` code (a count), or an object recording the error."""
    nvml = entry.get("nvml")
    if not isinstance(nvml, dict):
        return
    for cap, v in nvml.items():
        if v is not None and not isinstance(v, dict | Corrupt) and _count_problem(v):
            nvml[cap] = Corrupt(f"{where}.nvml.{cap}: {v!r} is not an NVML P2P status code")


ROW_RULE = "a sweep row holds bytes > 0, a finite time_us > 0 and finite algbw/busbw >= 0 GB/s"
ROW_ROUNDING = (0.02, 0.1)  # (relative, GB/s): how far a recorded algbw/busbw may stray from its derivation


def _row_problem(s: Any, n: int | None) -> str | None:
    """Why one ``sweep`` row is impossible (named ``<field>: <why>``), or None.

    ``bytes`` a count >= 1; ``time_us`` finite and > 0; ``algbw_gbps``/``busbw_gbps`` finite in [0, 2000]
    (the smallest sizes round to 0.0 GB/s: captured on 2x H200, 8 B in 38.5 us); ``wrong``/``nan`` counts.
    Where recorded, algbw must be bytes / time and busbw algbw x 2(n-1)/n for a group of ``n`` GPUs
    (nccl-tests doc/PERFORMANCE.md, all_reduce_perf), within ``ROW_ROUNDING``.
    """
    if not isinstance(s, dict):
        return f"{s!r} is not an object"
    for name, problem in (
        ("bytes", _count_problem(s.get("bytes"), 1)),
        ("time_us", _figure_problem(s.get("time_us"), 0.0, math.inf, ROW_RULE)),
        ("algbw_gbps", _figure_problem(s.get("algbw_gbps"), *BANDWIDTH[:2], ROW_RULE, zero=True)),
        ("busbw_gbps", _figure_problem(s.get("busbw_gbps"), *BANDWIDTH[:2], ROW_RULE, zero=True)),
        ("wrong", _count_problem(s.get("wrong"))),
        ("nan", _count_problem(s.get("nan"))),
    ):
        if problem:
            return f"{name}: {problem}"
    rel, slack = ROW_ROUNDING
    size, time_us, alg, bus = (s.get(k) for k in ("bytes", "time_us", "algbw_gbps", "busbw_gbps"))
    if alg is not None and time_us is not None:
        want = size / (time_us * 1e3)  # bytes / us -> GB/s
        if abs(alg - want) > rel * want + slack:
            return f"algbw_gbps: {alg:.4g} GB/s contradicts {size} B in {time_us:.4g} us (= {want:.4g} GB/s)"
    if alg is not None and bus is not None and n and n > 1:
        want = alg * 2 * (n - 1) / n
        if abs(bus - want) > rel * want + slack:
            return (
                f"busbw_gbps: {bus:.4g} GB/s contradicts algbw {alg:.4g} GB/s x 2({n}-1)/{n} "
                f"(= {want:.4g} GB/s) for {n} GPUs"
            )
    return None


def _check_sweep(entry: dict[str, Any], where: str) -> None:
    """Mark ``entry["sweep"]`` ``Corrupt`` at its first impossible row, naming the row's size and field."""
    sweep = entry.get("sweep")
    if sweep is None or isinstance(sweep, Corrupt):
        return
    if not isinstance(sweep, list):
        entry["sweep"] = Corrupt(f"{where}.sweep: {sweep!r} is not a list")
        return
    gpus = entry.get("gpus")
    n = len(gpus) if isinstance(gpus, list) else None
    for i, s in enumerate(sweep):
        problem = _row_problem(s, n)
        if problem:
            size = s.get("bytes") if isinstance(s, dict) else None
            at = f" ({size} B)" if size is not None and not _count_problem(size, 1) else ""
            entry["sweep"] = Corrupt(f"{where}.sweep[{i}]{at} {problem}")
            return


def _check_totals(entry: dict[str, Any], where: str) -> None:
    """Mark the group's ``wrong``/``nan`` total ``Corrupt`` where it contradicts its sweep rows.

    The rows are rank 0's sweep; the total sums the rows of every checked rank (``measure._fold_nccl``),
    so it can be no smaller than the rows' sum, and with ``checked_ranks`` 1 it is that sum. A total of 0
    beside rows with wrong elements is a file no run wrote: corrupt (UNREADABLE), not a FAIL, since nothing
    in it can be trusted to say how many elements were wrong or where; the verdict still names the sizes.
    """
    sweep = entry.get("sweep")
    if not isinstance(sweep, list):
        return
    for key in ("wrong", "nan"):
        total = entry.get(key)
        if not isinstance(total, int) or isinstance(total, bool):
            continue
        rows = [(s.get("bytes"), s[key]) for s in sweep if isinstance(s.get(key), int) and s[key] > 0]
        in_rows = sum(c for _, c in rows)
        one_rank = entry.get("checked_ranks") == 1
        if total < in_rows or (one_rank and total != in_rows):
            at = ", ".join(f"{c} at {b} B" for b, c in rows[:4]) + (", ..." if len(rows) > 4 else "")
            sizes = f"{len(rows)} size{'s' if len(rows) != 1 else ''}" + (f": {at}" if rows else "")
            entry[key] = Corrupt(
                f"{where}.{key}: total {total} contradicts its sweep rows ({in_rows} at {sizes}): the total "
                "sums every checked rank's rows, so it is "
                f"{'their sum' if one_rank else 'at least their sum'}"
            )


def _check_members(entry: dict[str, Any], key: str | None, where: str) -> None:
    """Raise ``SnapshotError`` where a group's ``gpus`` repeats a GPU or is not its key's members
    (``group_key``): such a file cannot say which GPUs a figure belongs to."""
    gpus = entry.get("gpus")
    if gpus is None:
        return
    if not isinstance(gpus, list) or not all(isinstance(b, str) for b in gpus):
        raise SnapshotError(f"{where}.gpus: {gpus!r} is not a list of BDFs")
    repeated = sorted({b for b in gpus if gpus.count(b) > 1})
    if repeated:
        raise SnapshotError(
            f"{where}.gpus: {', '.join(repeated)} listed twice in {gpus!r}: a group's GPUs are distinct; corrupt"
        )
    if key is not None and sorted(gpus) != sorted(key.split("+")):
        raise SnapshotError(
            f"{where}.gpus: {gpus!r} are not the GPUs of its key {key!r} (group key = GPUs joined by '+'); corrupt"
        )


def _check_judged(entry: dict[str, Any], where: str) -> None:
    """Mark ``judged_bytes`` ``Corrupt`` where the group has a sweep but no row of that size, and ``busbw_gbps``
    where its first reading (the judged row's busbw; retries append later ones, ``measure.retry``) strays
    from that row's busbw by more than ``ROW_ROUNDING``."""
    sweep, size = entry.get("sweep"), entry.get("judged_bytes")
    if not isinstance(sweep, list) or not sweep or not isinstance(size, int) or isinstance(size, bool):
        return
    rows = [s for s in sweep if isinstance(s, dict) and s.get("bytes") == size]
    if not rows:
        sizes = [s.get("bytes") for s in sweep if isinstance(s, dict)]
        entry["judged_bytes"] = Corrupt(
            f"{where}.judged_bytes: {size} B is no size of its sweep ({sizes[0]}..{sizes[-1]} B, "
            f"{len(sizes)} rows): the judged size is one of the sweep's"
        )
        return
    row_bus, first = rows[0].get("busbw_gbps"), readings(entry, "busbw_gbps")[:1]
    if isinstance(entry.get("busbw_gbps"), Corrupt) or not first or not isinstance(row_bus, int | float):
        return
    rel, slack = ROW_ROUNDING
    if abs(first[0] - row_bus) > rel * row_bus + slack:
        entry["busbw_gbps"] = Corrupt(
            f"{where}.busbw_gbps: first reading {first[0]:.4g} GB/s contradicts its sweep row at judged_bytes "
            f"{size} B (busbw {row_bus:.4g} GB/s): the first reading is that row's busbw, within 2% + 0.1 GB/s"
        )


def _check_group(entry: Any, where: str, key: str | None = None) -> None:
    if not isinstance(entry, dict):
        raise SnapshotError(f"{where}: {entry!r} is not an object")
    _check_members(entry, key, where)
    _check_entry(entry, GROUP_FIGURES, where)
    for count in ("wrong", "nan"):
        if _count_problem(entry.get(count)):
            entry[count] = Corrupt(f"{where}.{count}: {_count_problem(entry[count])}")
    if _count_problem(entry.get("judged_bytes"), 1):
        entry["judged_bytes"] = Corrupt(f"{where}.judged_bytes: {_count_problem(entry['judged_bytes'], 1)}")
    _check_sweep(entry, where)
    _check_totals(entry, where)
    _check_judged(entry, where)
    control = entry.get("control")
    if control is not None:
        _check_group(control, f"{where}.control", key)


def check(data: dict[str, Any], where: str) -> dict[str, Any]:
    """Replace every impossible figure of ``data`` (``p2p.json`` form) by a ``Corrupt`` naming it.

    Pairs: ``unidir_gbps``, ``bidir_gbps``, ``latency_us`` and their ``control_*``; GPUs: ``h2d_gbps``,
    ``d2h_gbps`` and the ``nvlink`` counts; NCCL groups and controls: ``busbw_gbps``, ``sweep`` (each row,
    ``_row_problem``), ``wrong``, ``nan`` (and their totals against the rows, ``_check_totals``),
    ``judged_bytes`` (a size of the sweep, whose row's busbw is the first busbw reading: ``_check_judged``);
    a group's ``gpus`` distinct and its key's members (else ``SnapshotError``); booleans (``can_access_peer``, every ``*_verified``, the IPC ``ok`` of a pair
    and of its ``kernel_read``/``kernel_write``) that are not true/false, an IPC ``ok`` true with
    ``mismatches`` above 0, and NVML P2P status codes that are not codes. An entry that is not an object raises ``SnapshotError`` (the file is corrupt).
    A figure's readings are each a finite number in (0, 2000] GB/s, or (0.1, 1e7] us for a latency.
    """
    for key, entry in data.get("pairs", {}).items():
        _check_entry(entry, PAIR_FIGURES, f'{where} pairs["{key}"]')
        _check_flags(entry, f'{where} pairs["{key}"]')
        _check_nvml_status(entry, f'{where} pairs["{key}"]')
    for bdf, entry in data.get("gpus", {}).items():
        _check_entry(entry, GPU_FIGURES, f'{where} gpus["{bdf}"]')
        _check_flags(entry, f'{where} gpus["{bdf}"]')
        _check_nvlink(entry.get("nvlink"), f'{where} gpus["{bdf}"]')
    nccl = data.get("nccl", {})
    if not isinstance(nccl.get("groups", {}), dict):
        raise SnapshotError(f"{where} nccl.groups: must be an object")
    for key, entry in nccl.get("groups", {}).items():
        _check_group(entry, f'{where} nccl.groups["{key}"]', key)
    if nccl.get("control") is not None:
        _check_group(nccl["control"], f"{where} nccl.control")
    ipc = nccl.get("ipc")
    for key, entry in ((ipc or {}).get("pairs") or {}).items() if isinstance(ipc, dict) else ():
        _check_outcome(entry, f'{where} nccl.ipc.pairs["{key}"]')
        for part in ("kernel_read", "kernel_write"):
            if isinstance(entry, dict):
                _check_outcome(entry.get(part), f'{where} nccl.ipc.pairs["{key}"].{part}')
    return data


def value(entry: dict[str, Any] | None, name: str, what: str) -> Any:
    """``entry[name]`` (None if absent); raise ``Unjudgeable`` (UNREADABLE, corrupt) where it is ``Corrupt``.

    ``what`` names the check's device and figure for the verdict: ``GPU0 ... -> GPU1 ...: P2P latency``.
    """
    v = (entry or {}).get(name)
    if isinstance(v, Corrupt):
        raise Unjudgeable(
            unreadable(
                f"{what}: corrupt figure: {v}",
                measured=v.reason,
                expected="readings real hardware can give, booleans true or false",
                fix=["measure again live (pytest --rig), or capture again with `rigcheck capture DIR`"],
            )
        )
    return v


def measured(entry: dict[str, Any] | None, figure: str, what: str) -> list[float]:
    """A figure's readings as floats, [] if not measured; ``Unjudgeable`` (UNREADABLE) where corrupt."""
    value(entry, figure, what)
    return readings(entry, figure)
