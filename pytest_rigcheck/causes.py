"""Root causes first: which failing checks follow from another, as a pure function over the results.

A failure that follows from another sits under it in the summary, and its ``cause`` field (in the JSON
report and the HTML page) names the check it follows from (that check's id, its pytest node id). The
rules are a small table:

* ``CAUSES``: check -> what its target is (a bridge, the downstream end of a link, a GPU) and which kinds
  of dependent check it explains. ACS redirect on a bridge forces peer-to-peer traffic through the root
  complex (NVIDIA, "PCI Express ACS": https://docs.nvidia.com/deeplearning/nccl/user-guide/docs/troubleshooting.html#pci-access-control-services-acs),
  so slow P2P and NCCL on SHM between GPUs whose route passes that bridge follow from it; a link trained
  below its capability caps every transfer across it, host copies included; an IOMMU translating a GPU's
  DMA slows its P2P and host copies.
* ``DEPENDENTS``: check -> which devices its traffic passes (``pair``: the route between two GPUs,
  ``group``: every route within an NCCL group, ``host``: the GPU's path up to its root port).
* UNREADABLE results sharing their first fix line (e.g. "install pytest-rigcheck[nvml]") sit under the
  first of them: one missing dependency is one cause.

Everything here works on plain data (the report's result dicts and ``facts.topology`` dicts), so it is
the same for the terminal, the JSON and the HTML, and for a replayed report.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

FAILING = ("fail", "unreadable")
NOT_PASSING = ("fail", "unreadable", "warn")

# cause check -> (its target kind, kinds of dependent it explains)
CAUSES: dict[str, tuple[str, tuple[str, ...]]] = {
    "test_acs_redirect_off": ("bridge", ("pair", "group")),
    "test_link_trained": ("link", ("pair", "group", "host")),
    "test_iommu_not_translating": ("gpu", ("pair", "group", "host")),
}

# dependent check -> the kind of traffic it measures
DEPENDENTS: dict[str, str] = {
    "test_p2p_unidirectional": "pair",
    "test_p2p_bidirectional": "pair",
    "test_p2p_latency": "pair",
    "test_p2p_not_through_host": "pair",
    "test_nccl_busbw": "group",
    "test_nccl_uses_p2p": "group",
    "test_host_to_device": "host",
    "test_device_to_host": "host",
    "test_link_under_load": "host",
}


def check_name(nodeid: str) -> str:
    """``test_acs.py::test_acs_redirect_off[0000:02:00.0]`` -> ``test_acs_redirect_off``."""
    return nodeid.rsplit("::", 1)[-1].split("[", 1)[0]


def target_id(result: dict[str, Any]) -> str | None:
    t = result.get("target")
    if isinstance(t, dict):
        for key in ("id", "bdf"):
            if t.get(key) is not None:
                return str(t[key])
    nodeid = str(result.get("nodeid", ""))
    if nodeid.endswith("]"):
        param = nodeid.rsplit("[", 1)[1][:-1]
        return (
            param.split(":", 1)[1] if result.get("rig") and param.startswith(f"{result['rig']}:") else param
        )
    return None


def route(paths: dict[str, list[str]], a: str, b: str) -> list[str]:
    """Devices a transfer between GPUs ``a`` and ``b`` passes: both paths below their lowest common
    bridge, and that bridge (the same set ``PcieTree.bridges_between`` gives, plus the two GPUs)."""
    pa, pb = paths.get(a, [a]), paths.get(b, [b])
    k = 0
    while k < min(len(pa), len(pb)) and pa[k] == pb[k]:
        k += 1
    return pa[k:] + pb[k:] + ([pa[k - 1]] if k else [])


def _devices(kind: str, tid: str, topo: dict[str, Any], cache: dict[str, list[str]]) -> list[str]:
    if tid in cache:
        return cache[tid]
    paths = topo.get("paths") or {}
    out: list[str] = []
    if kind == "pair" and "->" in tid:
        a, _, b = tid.partition("->")
        out = route(paths, a, b)
    elif kind == "group":
        gpus = (topo.get("groups") or {}).get(tid) or (tid.split("+") if "+" in tid else [])
        seen: set[str] = set()
        for i, a in enumerate(gpus):
            for b in gpus[i + 1 :]:
                for d in route(paths, a, b):
                    if d not in seen:
                        seen.add(d)
                        out.append(d)
    elif kind == "host":
        out = list(paths.get(tid, [tid]))
    cache[tid] = out
    return out


def assign_causes(
    results: list[dict[str, Any]], topologies: dict[str, dict[str, Any] | None]
) -> list[dict[str, Any]]:
    """Set ``cause`` (the node id of the check it follows from) on each not-passing result that follows
    from a failing cause check of its rig; return ``results``. A cause the check itself recorded is kept.

    Args:
        results: the report's result dicts (``nodeid``, ``status``, ``rig``, ``target``, ``fix``...).
        topologies: rig name -> ``facts.topology`` dict (``paths``, ``groups``), or None if unknown.
    """
    # (rig, device) -> cause node id, per kind of cause target, first failing one wins (run order)
    by_device: dict[tuple[str | None, str], list[tuple[str, tuple[str, ...]]]] = {}
    for r in results:
        rule = CAUSES.get(check_name(str(r.get("nodeid", ""))))
        if rule is None or r.get("status") not in FAILING:
            continue
        tid = target_id(r)
        if tid:
            by_device.setdefault((r.get("rig"), tid), []).append((str(r["nodeid"]), rule[1]))
    caches: dict[tuple[str | None, str], dict[str, list[str]]] = {}
    for r in results:
        if r.get("cause") or r.get("status") not in NOT_PASSING:
            continue
        kind = DEPENDENTS.get(check_name(str(r.get("nodeid", ""))))
        tid = target_id(r)
        if kind is None or not tid or not by_device:
            continue
        topo = topologies.get(r.get("rig") or "") or {}
        devices = _devices(kind, tid, topo, caches.setdefault((r.get("rig"), kind), {}))
        for d in devices:
            found = [nid for nid, kinds in by_device.get((r.get("rig"), d), []) if kind in kinds]
            if found:
                r["cause"] = found[0]
                break
    # One reason for many UNREADABLEs (a missing library, an unreadable file): under the first of them.
    first: dict[tuple[str | None, str], str] = {}
    for r in results:
        if r.get("status") != "unreadable" or r.get("cause"):
            continue
        fix = r.get("fix")
        # the same first fix, or (none given) the same reason word for word
        reason = str(fix[0]) if isinstance(fix, list) and fix else r.get("message") or r.get("summary")
        if not reason:
            continue
        key = (r.get("rig"), str(reason))
        if key in first:
            r["cause"] = first[key]
        else:
            first[key] = str(r["nodeid"])
    return results


def grouped(
    results: Iterable[dict[str, Any]],
) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """The not-passing results as (root, its dependents): roots with dependents first, then failures,
    UNREADABLE, warnings, each in run order. A result whose cause is not among them is a root of its own."""
    results = list(results)
    bad = [r for r in results if r.get("status") in NOT_PASSING]
    ids = {str(r.get("nodeid")) for r in bad}
    roots = [r for r in bad if not r.get("cause") or r["cause"] not in ids]
    under: dict[str, list[dict[str, Any]]] = {}
    for r in bad:
        if r.get("cause") in ids:
            under.setdefault(str(r["cause"]), []).append(r)
    order = {"fail": 0, "unreadable": 1, "warn": 2}
    # causes with results under them first, then failures, UNREADABLE, warnings (stable: run order)
    roots.sort(key=lambda r: (str(r["nodeid"]) not in under, order.get(str(r.get("status")), 3)))
    return [(r, under.get(str(r["nodeid"]), [])) for r in roots]
