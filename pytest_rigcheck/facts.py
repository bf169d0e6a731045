"""What the summary, the JSON report (format 2) and the HTML page show about one rig, as plain data.

``rig_facts(rig)`` reads the rig once (through its ``Source``, like every check) and returns a dict:

* ``identity``: name, source (``live`` or the snapshot path), kind, host, GPUs (index, BDF, name),
  driver, CUDA, kernel, profile.
* ``topology``: the PCIe functions on the paths from root ports to GPUs (``nodes`` keyed by BDF: role,
  name, parent, trained and capable gen/width of the link above it, ACS state, IOMMU group, GPU index),
  ``paths`` (GPU BDF -> BDFs from its root port down to it), ``groups`` (NCCL group id -> GPU BDFs),
  ``iommu`` (mode and evidence) and ``nvlink`` (GPU pairs that are NVLink peers, with their link count,
  from the NVML state recorded with the rig).
* ``p2p``: the P2P matrices (unidirectional and bidirectional GB/s, latency us; best reading per pair,
  rows are sources as in CUDA's p2pBandwidthLatencyTest) and ``nccl`` (per group the all-reduce sweep in
  nccl-tests' all_reduce_perf columns: size, time, algbw, busbw, #wrong), or ``None`` when not measured.

Reading a fact never fails the run: what cannot be read is ``None`` (the checks judge it, not this).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .errors import SourceError

if TYPE_CHECKING:
    from .rig import Rig

ACS_P2P_BLOCKING = 0x0004 | 0x0008 | 0x0010 | 0x0020  # ReqRedir, CmpltRedir, UpstreamFwd, EgressCtrl


def rig_facts(rig: Rig) -> dict[str, Any]:
    """``{"identity", "topology", "p2p", "nccl"}`` for ``rig`` (see the module docstring)."""
    out: dict[str, Any] = {"identity": identity(rig), "topology": None, "p2p": None, "nccl": None}
    try:
        out["topology"] = topology(rig)
    except Exception:  # noqa: BLE001 - a picture of the rig must never break the run; the checks judge it
        out["topology"] = None
    try:
        figures = _figures(rig)
    except Exception:  # noqa: BLE001
        figures = None
    if figures:
        out["p2p"] = p2p_matrix(rig, figures)
        out["nccl"] = nccl_sweeps(figures)
    return out


def identity(rig: Rig) -> dict[str, Any]:
    from .report import driver_and_kernel

    m = rig.manifest
    driver, kernel = driver_and_kernel(rig)
    names = _gpu_names(rig)
    return {
        "name": rig.name,
        "source": "live" if rig.is_live else str(rig.snapshot.origin if rig.snapshot else rig.root),
        "kind": "live" if m is None else m.kind,
        "host": rig.name if m is None else None,
        "gpus": [
            {
                "index": i,
                "bdf": g.bdf,
                "name": names.get(g.bdf) or g.name,
                "vendor": f"0x{g.vendor:04x}",
                "device": f"0x{g.device:04x}",
                "slot": g.slot,
            }
            for i, g in enumerate(rig.pcie.gpus)
        ],
        "driver": driver or None,
        "cuda": _cuda(rig),
        "kernel": kernel or None,
        "profile": rig.profile.source,
    }


def topology(rig: Rig) -> dict[str, Any]:
    tree = rig.pcie
    iommu = rig.iommu
    nodes: dict[str, dict[str, Any]] = {}
    paths: dict[str, list[str]] = {}
    for i, gpu in enumerate(tree.gpus):
        chain = [*tree.ancestors(gpu.bdf), gpu]
        paths[gpu.bdf] = [f.bdf for f in chain]
        for fn in chain:
            if fn.bdf in nodes:
                continue
            try:
                gen, width = fn.link_now
                cap_gen, cap_width = fn.link_cap
            except SourceError:  # corrupt or impossible readings: the link checks say why; here unknown
                gen = width = cap_gen = cap_width = None
            nodes[fn.bdf] = {
                "role": fn.role,
                "name": fn.name,
                "parent": fn.parent if fn.parent in tree.functions else None,
                "gen": gen,
                "width": width,
                "max_gen": cap_gen,
                "max_width": cap_width,
                "acs": _acs(fn) if fn.is_bridge else None,
                "iommu_group": _iommu_group(fn),
                "gpu_index": i if fn.bdf == gpu.bdf else None,
                "slot": fn.slot,
            }
    from .p2p.targets import groups

    try:
        nccl_groups = {g.id: g.bdfs for g in groups(rig)}
    except Exception:  # noqa: BLE001 - a profile group naming absent GPUs: the NCCL checks say so
        nccl_groups = {}
    return {
        "nodes": nodes,
        "paths": paths,
        "groups": nccl_groups,
        "iommu": {"mode": iommu.mode, "evidence": iommu.evidence},
        "nvlink": _nvlink(rig),
    }


def _acs(fn: Any) -> str:
    """``on`` (P2P redirected or blocked), ``off``, ``none`` (no ACS capability) or ``unknown``."""
    cfg = fn.config
    if cfg is None or cfg.size <= 64:
        return "unknown"
    if cfg.acs is None:
        return "none" if cfg.size >= 4096 or cfg.port_type is None else "unknown"
    return "on" if cfg.acs.ctrl & ACS_P2P_BLOCKING else "off"


def _nvlink(rig: Rig) -> list[dict[str, Any]]:
    from .p2p.nvlink import nvlink_links

    gpus = [g.bdf for g in rig.pcie.gpus]
    out = []
    for i, a in enumerate(gpus):
        for b in gpus[i + 1 :]:
            try:
                n = nvlink_links(rig, None, a, b)
            except Exception:  # noqa: BLE001
                n = None
            if n:
                out.append({"a": a, "b": b, "links": n if n > 0 else None})
    return out


def _gpu_names(rig: Rig) -> dict[str, str]:
    out: dict[str, str] = {}
    gpus = _nvml_json(rig).get("gpus")
    for g in gpus if isinstance(gpus, list) else []:
        if isinstance(g, dict) and isinstance(g.get("name"), str) and isinstance(g.get("bdf"), str):
            out[g["bdf"].lower()] = g["name"]
    return out


def _cuda(rig: Rig) -> str | None:
    """The CUDA driver API version NVML reported (``12080`` -> ``12.8``), as recorded with the rig."""
    data = _nvml_json(rig)
    v = data.get("cuda")
    if isinstance(v, int) and not isinstance(v, bool) and v > 0:
        return f"{v // 1000}.{v % 1000 // 10}"
    return str(v) if isinstance(v, str) and v else None


def _nvml_json(rig: Rig) -> dict[str, Any]:
    if rig.is_live:
        from .p2p.nvlink import _recorded_nvml

        try:
            return _recorded_nvml(rig) or {}
        except Exception:  # noqa: BLE001
            return {}
    try:
        data = rig.source.read_json("nvml.json")
    except Exception:  # noqa: BLE001 - absent or corrupt: the GPU checks judge it
        return {}
    return data if isinstance(data, dict) else {}


def _figures(rig: Rig) -> dict[str, Any] | None:
    """The P2P/NCCL figures: recorded in this run (live or replay), else the snapshot's p2p.json."""
    from .p2p.session import recorded_figures

    data = recorded_figures(rig)
    if data is None and not rig.is_live:
        from .p2p.figures import load

        try:
            data = load(rig.source, f"snapshot {rig.name}")
        except Exception:  # noqa: BLE001 - absent or corrupt: the P2P checks judge it
            return None
    return data


def _best(values: Any, lowest: bool = False) -> float | None:
    from .p2p.figures import readings

    vals = readings({"v": values}, "v")
    if not vals:
        return None
    return min(vals) if lowest else max(vals)


def p2p_matrix(rig: Rig, data: dict[str, Any]) -> dict[str, Any] | None:
    """Best reading per ordered pair; ``None`` cells where not measured (diagonal included)."""
    gpus = [g.bdf for g in rig.pcie.gpus]
    pairs = data.get("pairs") or {}
    if not pairs:
        return None
    out: dict[str, Any] = {"gpus": gpus, "unidir_gbps": [], "bidir_gbps": [], "latency_us": []}
    for a in gpus:
        rows: dict[str, list[float | None]] = {"unidir_gbps": [], "bidir_gbps": [], "latency_us": []}
        for b in gpus:
            p = pairs.get(f"{a}->{b}") if a != b else None
            for fig in rows:
                rows[fig].append(_best(p.get(fig), fig == "latency_us") if isinstance(p, dict) else None)
        for fig, row in rows.items():
            out[fig].append(row)
    out["origin"] = data.get("origin")
    return out


def _iommu_group(fn: Any) -> str | None:
    """The function's IOMMU group for the report, or ``"refused"`` where its link leaves the snapshot."""

    try:
        return fn.iommu_group  # type: ignore[no-any-return]
    except SourceError:
        return "refused"


def _shown(v: Any) -> Any:
    """A sweep row's value as the summary and the report show it: the number, or ``None`` where the
    figures hold something else (a ``Corrupt`` reading: the checks say UNREADABLE, the table shows ``?``)."""
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return v


def nccl_sweeps(data: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Each NCCL group's sweep for the summary and the report; a corrupt value is shown as ``None``, never
    a crash (the checks judge it)."""
    nccl = data.get("nccl")
    groups = (nccl.get("groups") if isinstance(nccl, dict) else None) or {}
    out = []
    for key, g in groups.items() if isinstance(groups, dict) else ():
        if not isinstance(g, dict):
            continue
        rows = []
        sweep = g.get("sweep")
        for s in sweep if isinstance(sweep, list) else []:
            if (
                isinstance(s, dict)
                and isinstance(s.get("bytes"), int)
                and not isinstance(s.get("bytes"), bool)
            ):
                rows.append(
                    {
                        "bytes": s["bytes"],
                        "time_us": _shown(s.get("time_us")),
                        "algbw_gbps": _shown(s.get("algbw_gbps")),
                        "busbw_gbps": _shown(s.get("busbw_gbps")),
                        "wrong": _shown(s.get("wrong")),
                    }
                )
        members = g.get("gpus")
        out.append(
            {
                "group": key,
                "gpus": [str(m) for m in members] if isinstance(members, list) else key.split("+"),
                "nccl": g.get("nccl") if isinstance(g.get("nccl"), str) else None,
                "busbw_gbps": _best(g.get("busbw_gbps")),
                "sweep": rows,
            }
        )
    return out or None
