"""Is the rig idle enough to measure? Other work on the GPUs, read from NVML just before the GPU load and
the P2P/NCCL phases.

Figures taken while another process computes on a GPU measure the sharing, not the rig: on 2x H200 a
compute loop on one GPU took all-reduce busbw from 312 to 141 GB/s and every P2P and NCCL check still
passed. So before measuring, each GPU's processes (NVML ``nvmlDeviceGetComputeRunningProcesses`` and
``nvmlDeviceGetGraphicsRunningProcesses``) and utilization (``nvmlDeviceGetUtilizationRates``, percent
of the last sample period) are read, and the rig is busy when a GPU has

- a compute process that is not ours (this pytest process, or a process of a group it started through
  ``procgroup``: the load, P2P and NCCL workers, a vLLM server), or
- GPU utilization at or above ``UTIL_BUSY_PCT`` in two readings ``RECHECK_S`` apart (work NVML cannot
  list: a process in another container or VM).

A graphics process (a display server) alone does not make a GPU busy; it is named when the GPU is.
A busy rig's measurements are UNREADABLE, naming the process, its GPU and its use, never judged as the
rig's own speed; nothing is measured then. The record (``usage_record``) goes into ``p2p.json``
(``busy``) and, for the GPU load, into the readings kept in ``nvml.json``, so a replay says the same.

Stdlib only; the live reading goes through ``gpu.nvml.LiveNvml.usage``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

UTIL_BUSY_PCT = 20  # a GPU doing nothing of ours reads 0 %; a display at a desktop reads a few percent
RECHECK_S = 0.5  # utilization is averaged over 1/6 to 1 s (nvml.h nvmlDeviceGetUtilizationRates)
BUSY_CODE = "busy"  # the Unavailable code of readings refused because the rig was busy
FIX = (
    "stop the other work on these GPUs and run again: `nvidia-smi --query-compute-apps="
    "gpu_bus_id,pid,process_name,used_memory --format=csv` lists it"
)


@dataclass
class Usage:
    """One GPU's use by others, as read before a measurement.

    ``processes``: ``[{"pid", "name", "used_b", "kind": "compute"|"graphics"}]``; ``util_gpu``/``util_mem``:
    percent, None where NVML did not say; ``error``: why the GPU could not be read at all.
    """

    bdf: str
    index: int | None = None
    name: str | None = None
    processes: list[dict[str, Any]] = field(default_factory=list)
    util_gpu: int | None = None
    util_mem: int | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "bdf": self.bdf,
            "index": self.index,
            "name": self.name,
            "processes": self.processes,
            "utilization": {"gpu": self.util_gpu, "memory": self.util_mem},
            **({"error": self.error} if self.error else {}),
        }

    @classmethod
    def from_json(cls, d: Any) -> Usage | None:
        if not isinstance(d, dict) or not isinstance(d.get("bdf"), str):
            return None
        util = raw if isinstance(raw := d.get("utilization"), dict) else {}
        procs = [p for p in d.get("processes") or [] if isinstance(p, dict)]
        return cls(
            d["bdf"],
            _int(d.get("index")),
            d.get("name") if isinstance(d.get("name"), str) else None,
            procs,
            _int(util.get("gpu")),
            _int(util.get("memory")),
            d.get("error") if isinstance(d.get("error"), str) else None,
        )


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _mib(b: Any) -> str:
    return f"{b / 2**20:.0f} MiB" if isinstance(b, int) and not isinstance(b, bool) else "memory unknown"


def _gpu(u: Usage) -> str:
    return f"GPU{u.index if u.index is not None else '?'} {u.bdf}" + (f" ({u.name})" if u.name else "")


def foreign(usage: Iterable[Usage], own: Iterable[int]) -> list[str]:
    """One line per busy GPU (``[]``: idle enough to measure); pure, so modelled readings test it.

    Example:
        >>> u = Usage("0000:00:06.0", 0, "NVIDIA H200", [{"pid": 4242, "name": "python3",
        ...     "used_b": 2 * 2**30, "kind": "compute"}], 97, 3)
        >>> foreign([u], own=[1])
        ['GPU0 0000:00:06.0 (NVIDIA H200): pid 4242 (python3) computing, holds 2048 MiB; GPU utilization 97 %']
    """
    mine = set(own)
    out = []
    for u in usage:
        others = [p for p in u.processes if _int(p.get("pid")) not in mine]
        compute = [p for p in others if p.get("kind") != "graphics"]
        hot = u.util_gpu is not None and u.util_gpu >= UTIL_BUSY_PCT
        if not compute and not hot:
            continue
        shown = compute + ([p for p in others if p.get("kind") == "graphics"] if hot else [])
        what = [
            f"pid {p.get('pid')} ({p.get('name') or '?'}) "
            f"{'drawing (graphics)' if p.get('kind') == 'graphics' else 'computing'}, holds {_mib(p.get('used_b'))}"
            for p in shown
        ]
        if not shown:
            what = ["a process NVML does not list (another container or VM?)"]
        util = f"GPU utilization {u.util_gpu} %" if u.util_gpu is not None else "utilization not read"
        out.append(f"{_gpu(u)}: {', '.join(what)}; {util}")
    return out


def busy_text(lines: list[str], what: str) -> str:
    """The UNREADABLE reason for ``what`` (``"P2P/NCCL measurements"``) on a busy rig."""
    return (
        f"the rig is not idle: {'; '.join(lines)}: {what} taken now would measure the sharing, not the rig's "
        f"own speed, so none were taken; fix: {FIX}"
    )


def own_pids() -> set[int]:
    """This process and every live process of the groups it started (``procgroup``)."""
    from ..procgroup import group_members, live_groups

    out = {os.getpid()}
    for g in live_groups():
        out.add(g.pid)
        out.update(m[0] for m in group_members(g.pid))
    return out


def proc_comm(source: Any) -> Callable[[int], str | None]:
    """``pid -> /proc/PID/comm`` through the live rig's ``Source`` (None where it cannot be read)."""

    def comm(pid: int) -> str | None:
        text = source.read_optional(f"proc/{pid}/comm") if source is not None else None
        return text.strip() or None if isinstance(text, str) else None

    return comm


def read_usage(
    nvml: Any, gpus: dict[str, int], comm: Callable[[int], str | None] | None = None
) -> list[Usage]:
    """Every GPU of ``{bdf: nvml_index}`` read now through ``nvml.usage(index)``; each process named by
    ``comm`` (``/proc/PID/comm``) where it can be read, else by NVML."""
    out = []
    for bdf, i in gpus.items():
        try:
            procs, ug, um = nvml.usage(i)
        except Exception as exc:  # noqa: BLE001 - a GPU that cannot be read is recorded as such, not busy
            out.append(Usage(bdf, i, error=f"{type(exc).__name__}: {exc}"))
            continue
        for p in procs:
            seen = comm(p["pid"]) if comm is not None and isinstance(p.get("pid"), int) else None
            p["name"] = seen or p.get("name") or "?"
        out.append(Usage(bdf, i, None, procs, ug, um))
    return out


def check(
    nvml: Any,
    gpus: dict[str, int],
    names: dict[str, str | None] | None = None,
    comm: Callable[[int], str | None] | None = None,
    own: Iterable[int] | None = None,
    recheck_s: float = RECHECK_S,
) -> tuple[list[str], dict[str, Any]]:
    """The one decision, live: ``(busy lines, record)``; ``lines`` empty when the GPUs are idle enough.

    Utilization alone is read twice, ``recheck_s`` apart, and the lower reading counts (the tail of a
    phase of ours that just ended is not someone else's work). ``record`` is what ``p2p.json`` keeps
    under ``busy``: ``{"checked": "...", "gpus": [Usage.to_json()], "lines": [...]}``.
    """
    mine = set(own if own is not None else own_pids())
    usage = read_usage(nvml, gpus, comm)
    for u in usage:
        u.name = (names or {}).get(u.bdf)
    lines = foreign(usage, mine)
    if lines and recheck_s > 0 and not foreign([_no_util(u) for u in usage], mine):
        time.sleep(recheck_s)
        again = {u.bdf: u for u in read_usage(nvml, gpus, comm)}
        for u in usage:
            v = again.get(u.bdf)
            if v is not None and v.util_gpu is not None and u.util_gpu is not None:
                u.util_gpu = min(u.util_gpu, v.util_gpu)
        lines = foreign(usage, mine)
    record = {
        "checked": "NVML compute/graphics processes and utilization, just before measuring",
        "gpus": [u.to_json() for u in usage],
        "lines": lines,
    }
    return lines, record


def _no_util(u: Usage) -> Usage:
    return Usage(u.bdf, u.index, u.name, u.processes, None, None, u.error)


def check_nvml(nvml: Any, gpus: dict[str, int]) -> list[str]:
    """``check``'s busy lines for the GPU load (``gpu/load.py``), names from ``nvml.system()``; ``[]``
    from an NVML that cannot tell (no ``usage``)."""
    if not hasattr(nvml, "usage"):
        return []
    try:
        names = {g.bdf: g.name for g in nvml.system().gpus}
    except Exception:  # noqa: BLE001 - the names only decorate the lines
        names = {}
    from ..source import Source

    return check(nvml, gpus, names, proc_comm(Source("/")))[0]


def live_record(rig: Any, bdfs: list[str]) -> dict[str, Any]:
    """``check`` on the live rig's GPUs ``bdfs`` through the rig's GPU session's NVML (or one opened
    here); ``{"checked": "not checked: why"}`` when NVML cannot be read (the GPU checks report that)."""
    from ..errors import RigcheckError

    gpu = rig.extras.get("gpu")
    nvml, opened = None, False
    try:
        if gpu is not None:
            nvml = gpu.nvml
        else:
            from ..gpu.nvml import LiveNvml

            nvml, opened = LiveNvml(), True
        state = nvml.system()
    except RigcheckError as exc:
        return {"checked": f"not checked: {exc}", "lines": []}
    try:
        if not hasattr(nvml, "usage"):
            return {"checked": "not checked: no live NVML", "lines": []}
        by_bdf = {g.bdf: g for g in state.gpus}
        gpus = {b: by_bdf[b].index for b in bdfs if b in by_bdf}
        names = {b: by_bdf[b].name for b in gpus}
        _, record = check(nvml, gpus, names, proc_comm(rig.source))
        return record
    finally:
        if opened and nvml is not None:
            nvml.close()


def nothing_measured(record: dict[str, Any]) -> dict[str, Any]:
    """The ``p2p.json`` of a busy rig: the record and no figures."""
    from .figures import DEFINITIONS, FORMAT

    return {
        "format": FORMAT,
        "definitions": DEFINITIONS,
        "gpus": {},
        "pairs": {},
        "nccl": {"groups": {}},
        "runs": {},
        "busy": record,
    }


def recorded(data: Any) -> list[str]:
    """Busy lines recorded in a ``p2p.json`` (``busy.lines``), ``[]`` where none or not recorded."""
    busy = data.get("busy") if isinstance(data, dict) else None
    lines = busy.get("lines") if isinstance(busy, dict) else None
    return [str(x) for x in lines] if isinstance(lines, list) else []


__all__ = ["BUSY_CODE", "UTIL_BUSY_PCT", "Usage", "busy_text", "check", "foreign", "own_pids", "recorded"]
