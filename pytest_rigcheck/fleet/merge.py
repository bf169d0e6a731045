"""``rigcheck merge REPORT... --out DIR``: one fleet verdict from every node's ``--rig-report``.

Each node runs ``pytest --rig --rig-report NODE.json`` on its own (through Slurm, Ansible or Kubernetes);
this reads the reports (format 1 or 2; unknown keys ignored; a FIFO, device, socket or directory refused
without opening it; values contradicting ``report-2.schema.json``, such as a status outside its five, or
contradicting each other, such as a pass whose test failed or counts its results do not add up to, or NaN,
make a report corrupt: UNREADABLE; a report in which nothing was checked is UNREADABLE too, never a pass:
see ``report.validate_report``) and writes:

- ``DIR/fleet.json``: per node its status, failing checks and figures, the outliers and the exit status
  (schema: ``pytest_rigcheck/schemas/fleet.schema.json``, shipped in the package);
- ``DIR/fleet.xml``: JUnit XML, one ``<testsuite>`` per node, one ``<testcase>`` per check;
- ``DIR/fleet.html``: a self-contained node x check grid, failing nodes first.

A node's name is its host for a live run, else its rigs' names (a snapshot replayed as a node), else the
report's file name. Each node counts once: of several runs of one node (different ``created``), the newest
counts and the older ones are named as left out (printed as a NOTE, ``left_out`` in fleet.json); a file
given twice, copies of one report, two machines under one name (different GPUs) and the like are refused
with one line naming both inputs, exit 2, nothing written (``one_run_per_node``). So is an ``--out`` whose
parent folder does not exist, before any report is read.

Outliers: for each figure where higher is better (P2P and host-link bandwidth, NCCL bus bandwidth, the soak's
clock fraction) a node's figure is its worst over its devices; a node is an outlier when its figure is below
``median - 3 * 1.4826 * MAD`` of all nodes' figures *and* at least 10 % below the median, with at least three
nodes measured among peers with the same GPUs (PCI vendor:device ids and count). The median absolute deviation scaled by 1.4826 estimates the standard deviation of normal
data while ignoring the outliers themselves (Rousseeuw & Croux, "Alternatives to the Median Absolute
Deviation", JASA 88 (1993) 1273-1283; NIST/SEMATECH e-Handbook of Statistical Methods, 1.3.5.17). The 10 %
floor keeps nodes of identical figures (MAD 0) from flagging run-to-run noise.

Exit status: 0 every node passes; 1 a node fails (an outlier that passes its thresholds is named, not
failed); 2 a node's report is missing, unreadable or incomplete (its run was stopped), each named.
"""

from __future__ import annotations

import html
import json
import os
import re
import statistics
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import RigcheckError
from ..report import read_valid_report

FAILING = ("fail", "unreadable")
STATUS_ORDER = {"unreadable": 0, "fail": 1, "warn": 2, "pass": 3, "n/a": 4}
# Figures where a low value on one node, among peers built alike, says something is wrong with it.
FIGURES = {
    "test_p2p_unidirectional": "P2P",
    "test_p2p_bidirectional": "P2P",
    "test_host_to_device": "host link",
    "test_device_to_host": "host link",
    "test_nccl_busbw": "NCCL",
    "test_multinode_busbw": "NCCL",
    "test_soak": "soak",
}
MAD_K = 3.0
MAD_SCALE = 1.4826
MIN_DROP = 0.10
MIN_NODES = 3
SHOW = 6  # failing results printed per node
RULE = (
    f"outlier: the node's worst figure < median - {MAD_K:g} x {MAD_SCALE} x MAD over all nodes measured "
    f"and at least {MIN_DROP:.0%} below the median (robust: median and median absolute deviation; "
    f"needs {MIN_NODES}+ nodes; peers are the nodes with the same GPUs)"
)


class ReportError(Exception):
    """A node's report that cannot be used: missing, not JSON, not a rigcheck report, unknown format."""


class MergeError(RigcheckError):
    """The merge as asked cannot be done (``--out`` cannot be written): one line, exit 2, nothing written."""


def check_out(out: Path) -> None:
    """Refuse ``--out`` before any report is read: it must be a folder, or a new name in an existing folder
    this user can write (the same check as ``rigcheck capture``'s; missing parents are never created).
    Raises ``MergeError`` with one line naming the path."""
    from ..capture import check_folder

    if out.exists() and not out.is_dir():
        raise MergeError(
            f"cannot write into {out}: it exists and is not a folder (give a folder for fleet.json)"
        )
    check_folder(out, out if out.is_dir() else out.parent, MergeError)


@dataclass
class Node:
    """One node: where its report came from, its name, status and per-check results."""

    report: str
    name: str
    status: str  # pass, fail, missing, unreadable, incomplete
    reason: str = ""
    host: str | None = None
    rigs: list[str] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    exit_status: int | None = None
    hardware: str = ""  # the GPUs (PCI device ids, sorted): peers for outliers are nodes built alike
    created: str | None = None  # the report's own time of writing (report.py: ISO 8601 with zone)
    when: datetime | None = None  # ``created`` parsed; None when absent or not a time
    kind: str = "gate"  # "gate" (pytest --rig-report) or "multinode" (multinode collect)
    live: bool = False  # read from the machine itself, not replayed from a snapshot
    gpus: frozenset[str] = frozenset()  # "rig: bdf vendor:device" per GPU: what the node is built of
    left_out: list[dict[str, Any]] = field(default_factory=list)  # older runs of this node not counted

    @property
    def failing(self) -> list[dict[str, Any]]:
        return [r for r in self.results if r.get("status") in FAILING]


def check_id(nodeid: str) -> str:
    """The check a result belongs to, comparable across nodes: the node id without its parameters."""
    return nodeid.split("[", 1)[0]


def check_name(nodeid: str) -> str:
    return check_id(nodeid).rsplit("::", 1)[-1]


def load_report(path: Path) -> dict[str, Any]:
    """Read one node's report. Raises ``ReportError`` with one line saying why it cannot be used.

    Read by ``report.read_report_json`` (the one rooted reader: a FIFO, device node or directory is refused
    before any ``open``; a file above its size limit is refused, not cut short; NaN or Infinity is not
    JSON) and checked by ``report.validate_report``, the same checks ``rigcheck diff`` and
    ``html.render`` get through ``report.load_report``: a corrupt or contradictory report, or one in which
    nothing was checked, is an UNREADABLE node, never a pass.
    """
    try:
        return read_valid_report(path)
    except KeyError:
        raise ReportError("missing (the node wrote no report: it did not run, hung or died)") from None
    except ValueError as exc:
        raise ReportError(f"unreadable: {exc}") from None


def read_node(path: Path) -> Node:
    """One node from its report path; a report that cannot be used is a node with status missing/unreadable."""
    try:
        doc = load_report(path)
    except ReportError as exc:
        status = "missing" if str(exc).startswith("missing") else "unreadable"
        return Node(str(path), _stem(path), status, str(exc).removeprefix("unreadable: "))
    rigs = [
        str(r.get("name")) if isinstance(r, dict) else str(r) for r in doc.get("rigs") or [] if r is not None
    ]
    host = doc.get("host") or doc.get("hostname")
    host = str(host) if host else None
    # A snapshot's rig name (several nodes of one host in CI), else the host, else the file's name.
    live = all(isinstance(r, dict) and r.get("source") == "live" for r in doc.get("rigs") or [{}])
    name = (host if live and host else None) or "+".join(rigs) or host or _stem(path)
    results = []
    for r in doc.get("results", doc.get("checks")) or []:
        results.append({**r, "nodeid": str(r.get("nodeid") or r.get("id"))})  # status checked by load_report
    exit_status = doc.get("exit_status")
    node = Node(str(path), name, "pass", host=host, rigs=rigs, results=results)
    node.exit_status = exit_status if isinstance(exit_status, int) else None
    node.hardware = " ".join(
        sorted(
            f"{g.get('vendor')}:{g.get('device')}"
            for r in doc.get("rigs") or []
            if isinstance(r, dict)
            for g in r.get("gpus") or []
            if isinstance(g, dict)
        )
    )
    node.gpus = frozenset(
        f"{r.get('name')}: {g.get('bdf')} {g.get('vendor')}:{g.get('device')}"
        for r in doc.get("rigs") or []
        if isinstance(r, dict)
        for g in r.get("gpus") or []
        if isinstance(g, dict)
    )
    node.live = live
    node.kind = "multinode" if "multinode" in str(doc.get("tool") or "") else "gate"
    created = doc.get("created")
    node.created = str(created) if created else None
    node.when = _when(node.created)
    if doc.get("stopped_by"):
        node.status, node.reason = "incomplete", f"the run was stopped by {doc['stopped_by']}"
    elif node.failing:
        node.status = "fail"
    elif node.exit_status not in (None, 0, 5):
        node.status, node.reason = "fail", f"pytest exited {node.exit_status}"
    return node


def _when(created: str | None) -> datetime | None:
    """``created`` as a time with its zone (report.py writes ``%Y-%m-%dT%H:%M:%S%z``); None if it is not one."""
    if not created:
        return None
    for parse in (lambda t: datetime.strptime(t, "%Y-%m-%dT%H:%M:%S%z"), datetime.fromisoformat):
        try:
            when = parse(created)
        except ValueError:
            continue
        return when if when.tzinfo is not None else None  # a time without a zone cannot be ordered safely
    return None


def _stem(path: Path) -> str:
    return path.name.removesuffix(".json").removesuffix(".multinode")


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def figure(r: dict[str, Any]) -> tuple[float, str] | None:
    """A result's figure and unit: a ``*_gbps`` property (GB/s), a numeric ``measured``, or the number
    before ``GB/s`` in the measured text; ``None`` if it has none."""
    raw = r.get("properties")
    props: dict[str, Any] = raw if isinstance(raw, dict) else {}
    for key, value in props.items():
        if key.endswith("_gbps") and _num(value) is not None:
            return float(value), "GB/s"
    value = _num(r.get("measured"))
    if value is not None:
        return value, str(r.get("unit") or "")
    m = _GBPS.search(str(r.get("measured") or ""))
    return (float(m.group(1)), "GB/s") if m else None


_GBPS = re.compile(r"(\d+(?:\.\d+)?) ?GB/s")


def figures(node: Node) -> dict[str, dict[str, Any]]:
    """The node's worst (lowest) figure per check of ``FIGURES``: ``{check: {kind, value, unit, target}}``."""
    out: dict[str, dict[str, Any]] = {}
    for r in node.results:
        name = check_name(r["nodeid"])
        fig = figure(r) if name in FIGURES and r.get("status") != "n/a" else None
        if fig is None:
            continue
        cid = check_id(r["nodeid"])
        if cid not in out or fig[0] < out[cid]["value"]:
            out[cid] = {"kind": FIGURES[name], "value": fig[0], "unit": fig[1], "target": _target(r)}
    return out


def _target(r: dict[str, Any]) -> str:
    t = r.get("target")
    if isinstance(t, dict):
        return str(t.get("id") or t.get("bdf") or t.get("name") or "")
    if t is not None:
        return str(t)
    nodeid = r.get("nodeid", "")
    return nodeid.rsplit("[", 1)[1][:-1] if nodeid.endswith("]") else ""


def outliers(nodes: list[Node]) -> list[dict[str, Any]]:
    """Nodes whose figure sits far below their peers' median (see ``RULE``)."""
    per_check: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for n in nodes:
        for cid, fig in figures(n).items():
            per_check.setdefault((cid, n.hardware), {})[n.name] = fig
    found = []
    for (cid, _hw), by_node in sorted(per_check.items()):
        values = [f["value"] for f in by_node.values()]
        if len(values) < MIN_NODES:
            continue
        med = statistics.median(values)
        mad = statistics.median(abs(v - med) for v in values)
        limit = min(med - MAD_K * MAD_SCALE * mad, med * (1 - MIN_DROP))
        for name, fig in sorted(by_node.items()):
            if fig["value"] < limit:
                found.append(
                    {
                        "node": name,
                        "check": cid,
                        "kind": fig["kind"],
                        "target": fig["target"],
                        "value": fig["value"],
                        "unit": fig["unit"],
                        "median": med,
                        "mad": mad,
                        "limit": round(limit, 6),
                        "below_median": round(1 - fig["value"] / med, 4) if med else None,
                        "nodes": len(values),
                    }
                )
    return found


KINDS = {
    "gate": "gate report (pytest --rig-report)",
    "multinode": "multi-node all-reduce report (multinode collect)",
}


def refuse_same_file(paths: list[Path]) -> None:
    """One file given twice (by two spellings, a link or a hard link) would count its node twice: raises
    ``MergeError`` naming both inputs."""
    seen: dict[object, Path] = {}
    for b in paths:
        try:
            st = b.stat()
            key: object = (st.st_dev, st.st_ino)
        except OSError:  # missing or unreadable: the path itself
            key = b.resolve()
        a = seen.setdefault(key, b)
        if a is not b:
            raise MergeError(f"{a} and {b} are the same file: each node counts once; give it once")


def one_run_per_node(nodes: list[Node]) -> list[Node]:
    """Each node once: of several reports of one node (one name, the same kind of report and the same
    GPUs) with different ``created`` times, the newest counts and the older ones are recorded in its
    ``left_out``. Raises ``MergeError`` (one line naming both inputs) for reports that cannot be told apart
    or do not agree: copies of one report, two reports of one run (same ``created``) with different
    results, a run without ``created`` beside another, one name with different GPUs (two machines sharing
    a hostname, or a node whose GPUs changed), a gate report beside a multi-node one, a live run beside a
    replay of a snapshot of that node (whose ``created`` is the replay's, so "newest" would mislead). Reports that could
    not be read have no node to compare and are kept as they are."""
    groups: dict[str, list[Node]] = {}
    for n in nodes:
        if n.status not in ("missing", "unreadable"):
            groups.setdefault(n.name, []).append(n)
    problems: list[str] = []
    older: set[int] = set()
    for name, group in groups.items():
        if len(group) < 2:
            continue
        clash = next(
            (c for i, a in enumerate(group) for b in group[i + 1 :] if (c := _clash(name, a, b))), None
        )
        if clash:
            problems.append(clash)
            continue
        ordered = sorted(group, key=lambda n: n.when.timestamp() if n.when else 0.0, reverse=True)
        ordered[0].left_out = [{"report": n.report, "created": n.created} for n in ordered[1:]]
        older.update(id(n) for n in ordered[1:])
    if problems:
        more = f" (and {len(problems) - 1} more nodes given twice)" if len(problems) > 1 else ""
        raise MergeError(problems[0] + more)
    return [n for n in nodes if id(n) not in older]


def _clash(name: str, a: Node, b: Node) -> str | None:
    """Why reports ``a`` and ``b`` of node ``name`` cannot be merged as two runs of it; None if they can."""
    both = f"{a.report} and {b.report}"
    if a.kind != b.kind:
        return (
            f"{a.report} is node {name}'s {KINDS[a.kind]} and {b.report} its {KINDS[b.kind]}: "
            "merge each kind on its own, so that each node counts once"
        )
    if a.live != b.live:
        live, replay = (a, b) if a.live else (b, a)
        return (
            f"{live.report} is a live run of node {name} and {replay.report} a replay of a snapshot of it "
            "(its 'created' is when the replay ran, not when the machine was read): merge only one of them"
        )
    if a.gpus and b.gpus and a.gpus != b.gpus:
        only_a, only_b = _few(a.gpus - b.gpus), _few(b.gpus - a.gpus)
        return (
            f"{both} both report node {name} but with different GPUs ({only_a} vs {only_b}): two machines "
            f"share the name {name}, or its GPUs changed between runs; give each machine its own hostname, "
            "or merge only the current report"
        )
    if a.when is not None and b.when is not None and a.when != b.when:
        return None  # two runs of one node: the newest counts
    if a.results == b.results:
        at = f" (created {a.created})" if a.when is not None and a.when == b.when else ""
        return f"{both} are the same report of node {name}{at}: each node counts once; give one of them"
    if a.when is None or b.when is None:
        which = a.report if a.when is None else b.report
        return (
            f"{both} are different runs of node {name} but {which} has no 'created' time to tell which is "
            "newer: merge only the current report"
        )
    return (
        f"{both} both claim node {name}'s run of {a.created} but their results differ: two machines share "
        f"the name {name}, or a report was edited; give each machine its own hostname"
    )


def _few(gpus: frozenset[str], show: int = 2) -> str:
    items = sorted(gpus)
    text = ", ".join(items[:show]) or "no other GPU"
    return text + (f" and {len(items) - show} more" if len(items) > show else "")


def merge(paths: list[Path]) -> dict[str, Any]:
    """The fleet document (``fleet.schema.json``) from the nodes' report paths, each node once (see
    ``one_run_per_node``). Raises ``MergeError`` for a file given twice or reports of one node that
    cannot be told apart."""
    paths = [Path(p) for p in paths]
    refuse_same_file(paths)
    nodes = one_run_per_node([read_node(p) for p in paths])
    seen: dict[str, int] = {}
    for n in nodes:  # a missing or unreadable report named like another node (same file name elsewhere)
        seen[n.name] = seen.get(n.name, 0) + 1
        if seen[n.name] > 1:
            n.name = f"{n.name}#{seen[n.name]}"
    found = outliers([n for n in nodes if n.status in ("pass", "fail", "incomplete")])
    lost = [n for n in nodes if n.status in ("missing", "unreadable", "incomplete")]
    failed = [n for n in nodes if n.status == "fail"]
    exit_status = 2 if lost else 1 if failed else 0
    checks = sorted({check_id(r["nodeid"]) for n in nodes for r in n.results})
    return {
        "format": 1,
        "kind": "rigcheck-fleet",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "exit_status": exit_status,
        "verdict": {0: "pass", 1: "fail", 2: "incomplete"}[exit_status],
        "outlier_rule": RULE,
        "nodes": [_node_doc(n) for n in _ordered(nodes)],
        "failing_nodes": [n.name for n in _ordered(nodes) if n.status != "pass"],
        "checks": checks,
        "outliers": found,
    }


def _ordered(nodes: list[Node]) -> list[Node]:
    rank = {"missing": 0, "unreadable": 0, "incomplete": 1, "fail": 2, "pass": 3}
    return sorted(nodes, key=lambda n: (rank[n.status], n.name))


def _node_doc(n: Node) -> dict[str, Any]:
    cells: dict[str, dict[str, Any]] = {}
    for r in n.results:
        cid = check_id(r["nodeid"])
        cell = cells.setdefault(cid, {"status": "n/a", "count": 0, "failing": []})
        cell["count"] += 1
        if STATUS_ORDER[r["status"]] < STATUS_ORDER[cell["status"]]:
            cell["status"] = r["status"]
        if r["status"] in FAILING:
            cell["failing"].append(
                {
                    "target": _target(r),
                    "status": r["status"],
                    "message": str(r.get("message") or r.get("summary") or ""),
                    "measured": r.get("measured"),
                    "expected": r.get("expected"),
                    "unit": r.get("unit"),
                    "fix": [str(f) for f in r.get("fix") or []] if isinstance(r.get("fix"), list) else [],
                }
            )
    counts: dict[str, int] = {}
    for r in n.results:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    doc: dict[str, Any] = {
        "name": n.name,
        "report": n.report,
        "status": n.status,
        "host": n.host,
        "rigs": n.rigs,
        "exit_status": n.exit_status,
        "counts": counts,
        "failing_checks": sorted(c for c, cell in cells.items() if cell["status"] in FAILING),
        "cells": cells,
        "figures": figures(n),
    }
    if n.reason:
        doc["reason"] = n.reason
    doc["created"] = n.created
    if n.left_out:
        doc["left_out"] = n.left_out
    return doc


# -- outputs ----------------------------------------------------------------------------------------


def write_all(doc: dict[str, Any], out: Path) -> list[Path]:
    """Write fleet.json, fleet.xml and fleet.html into ``out`` (made if missing; its parent must exist, see
    ``check_out``), each atomically."""
    out.mkdir(exist_ok=True)
    files = {
        "fleet.json": json.dumps(doc, indent=1, default=str) + "\n",
        "fleet.xml": junit(doc),
        "fleet.html": page(doc),
    }
    written = []
    for name, text in files.items():
        path = out / name
        tmp = out / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        written.append(path)
    return written


def junit(doc: dict[str, Any]) -> str:
    """JUnit XML: one ``testsuite`` per node (named by it), one ``testcase`` per check of that node."""
    root = ET.Element("testsuites", name="rigcheck fleet")
    for n in doc["nodes"]:
        suite = ET.SubElement(root, "testsuite", name=n["name"], hostname=n.get("host") or n["name"])
        tests = failures = errors = skipped = 0
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="report", value=n["report"])
        ET.SubElement(props, "property", name="node_status", value=n["status"])
        for r in n.get("left_out", []):
            ET.SubElement(props, "property", name="left_out", value=f"{r['report']} (created {r['created']})")
        if n["status"] in ("missing", "unreadable", "incomplete"):
            case = ET.SubElement(suite, "testcase", classname=n["name"], name="report")
            ET.SubElement(case, "error", message=n.get("reason", n["status"]), type=n["status"])
            tests, errors = 1, 1
        for cid, cell in sorted(n["cells"].items()):
            tests += 1
            classname, _, name = cid.rpartition("::")
            case = ET.SubElement(
                suite, "testcase", classname=classname.replace("/", ".").removesuffix(".py"), name=name
            )
            if cell["status"] in FAILING:
                text = "\n".join(
                    f"{f['target']}: {f['message']}" + "".join(f"\n  fix: {x}" for x in f["fix"])
                    for f in cell["failing"]
                )
                kind = "failure" if cell["status"] == "fail" else "error"
                first = cell["failing"][0]["message"].splitlines()[0] if cell["failing"] else cell["status"]
                el = ET.SubElement(case, kind, message=first, type=cell["status"])
                el.text = text
                failures += kind == "failure"
                errors += kind == "error"
            elif cell["status"] == "n/a":
                ET.SubElement(case, "skipped", message="does not apply on this node")
                skipped += 1
        for o in doc["outliers"]:
            if o["node"] == n["name"]:
                ET.SubElement(props, "property", name=f"outlier:{o['check']}", value=_outlier_text(o))
        suite.set("tests", str(tests))
        suite.set("failures", str(failures))
        suite.set("errors", str(errors))
        suite.set("skipped", str(skipped))
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _outlier_text(o: dict[str, Any]) -> str:
    drop = f", {o['below_median']:.0%} below" if o.get("below_median") is not None else ""
    return (
        f"{o['kind']} {o['value']:g} {o['unit']} at {o['target'] or 'node'} vs median {o['median']:g} "
        f"(MAD {o['mad']:g}{drop}, {o['nodes']} nodes)"
    )


_COLORS = {
    "pass": "#2e7d32",
    "warn": "#f9a825",
    "fail": "#c62828",
    "unreadable": "#6a1b9a",
    "n/a": "#9e9e9e",
    "missing": "#424242",
    "incomplete": "#424242",
}


def page(doc: dict[str, Any]) -> str:
    """A self-contained HTML page (no script, no network): the verdict, outliers, the node x check grid."""
    e = html.escape
    checks = doc["checks"]
    outl = {(o["node"], o["check"]) for o in doc["outliers"]}
    head = "".join(f'<th class="c"><span>{e(c.rsplit("::", 1)[-1])}</span></th>' for c in checks)
    rows = []
    for n in doc["nodes"]:
        cells = []
        for c in checks:
            cell = n["cells"].get(c)
            if cell is None:
                st = n["status"] if n["status"] in ("missing", "unreadable") else "n/a"
                cells.append(f'<td style="background:{_COLORS.get(st, "#eee")}" title="{e(st)}"></td>')
                continue
            tip = f"{c}: {cell['status']} ({cell['count']})"
            for f in cell["failing"]:
                tip += f"\n{f['target']}: {f['message']}"
            mark = "&#9660;" if (n["name"], c) in outl else ""
            cells.append(f'<td style="background:{_COLORS[cell["status"]]}" title="{e(tip)}">{mark}</td>')
        rows.append(
            f'<tr><th class="n" style="color:{_COLORS.get(n["status"], "#000")}">{e(n["name"])}'
            f"<small> {e(n['status'])}{(': ' + e(n['reason'])) if n.get('reason') else ''}"
            f"{_left_out_html(n)}</small></th>" + "".join(cells) + "</tr>"
        )
    fails = []
    for n in doc["nodes"]:
        if n["status"] == "pass":
            continue
        items = "".join(
            f"<li><b>{e(c)}</b><ul>"
            + "".join(
                f"<li>{e(f['target'])}: {e(f['message'])}"
                + "".join(f"<pre>{e(x)}</pre>" for x in f["fix"])
                + "</li>"
                for f in n["cells"][c]["failing"]
            )
            + "</ul></li>"
            for c in n["failing_checks"]
        )
        fails.append(
            f"<h3>{e(n['name'])}: {e(n['status'])}</h3><p>{e(n.get('reason', ''))}</p><ul>{items}</ul>"
        )
    out_items = "".join(
        f"<li><b>{e(o['node'])}</b> {e(o['check'])}: {e(_outlier_text(o))}</li>" for o in doc["outliers"]
    )
    verdict = doc["verdict"]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>rigcheck fleet: {e(verdict)}</title>
<style>
body{{font-family:sans-serif;margin:1em}} table{{border-collapse:collapse}}
td{{width:1.4em;height:1.4em;border:1px solid #fff;text-align:center;color:#fff;font-size:.8em}}
th.n{{text-align:left;padding-right:1em;white-space:nowrap}} th.c{{height:12em;vertical-align:bottom}}
th.c span{{writing-mode:vertical-rl;transform:rotate(180deg);font-weight:normal;font-size:.8em}}
pre{{background:#f4f4f4;padding:.2em}} .legend span{{display:inline-block;padding:.1em .5em;color:#fff;margin-right:.3em}}
</style></head><body>
<h1>rigcheck fleet: <span style="color:{_COLORS.get(verdict, "#000")}">{e(verdict)}</span>
({len(doc["nodes"])} nodes, {len(doc["failing_nodes"])} not passing, {len(doc["outliers"])} outliers)</h1>
<p class="legend">{"".join(f'<span style="background:{c}">{e(s)}</span>' for s, c in _COLORS.items())}
&#9660; outlier</p>
<table><tr><th></th>{head}</tr>
{"".join(rows)}
</table>
<h2>Outliers</h2><p>{e(doc["outlier_rule"])}</p><ul>{out_items or "<li>none</li>"}</ul>
<h2>Failing nodes</h2>{"".join(fails) or "<p>none</p>"}
</body></html>
"""


def _left_out_html(n: dict[str, Any]) -> str:
    runs = n.get("left_out") or []
    if not runs:
        return ""
    text = "; ".join(f"{r['report']} (created {r['created']})" for r in runs)
    return f' <span title="{html.escape(text)}">(newest of {len(runs) + 1} runs)</span>'


def summary(doc: dict[str, Any]) -> list[str]:
    """The lines ``rigcheck merge`` prints: failing nodes and checks, outliers, the verdict."""
    lines = []
    for n in doc["nodes"]:
        if n["status"] in ("missing", "unreadable", "incomplete"):
            lines.append(f"NODE {n['name']}: {n['status'].upper()}: {n.get('reason', '')} ({n['report']})")
        elif n["status"] == "fail":
            names = ", ".join(c.rsplit("::", 1)[-1] for c in n["failing_checks"])
            lines.append(f"NODE {n['name']}: FAIL: {names or n.get('reason', '')}")
            shown = [(c, f) for c in n["failing_checks"] for f in n["cells"][c]["failing"]]
            for c, f in shown[:SHOW]:
                first = (f["message"].splitlines() or [""])[0]
                lines.append(f"  {c.rsplit('::', 1)[-1]} [{f['target']}]: {first}")
            if len(shown) > SHOW:
                lines.append(f"  ... and {len(shown) - SHOW} more (fleet.json, fleet.html)")
    for o in doc["outliers"]:
        lines.append(f"OUTLIER {o['node']}: {o['check'].rsplit('::', 1)[-1]}: {_outlier_text(o)}")
    if doc["outliers"]:
        lines.append(f"({doc['outlier_rule']})")
    left = 0
    for n in doc["nodes"]:
        if n.get("left_out"):
            left += len(n["left_out"])
            runs = ", ".join(f"{r['report']} (created {r['created']})" for r in n["left_out"])
            lines.append(
                f"NOTE {n['name']}: counted its newest run {n['report']} (created {n['created']}); "
                f"older runs left out: {runs}"
            )
    passed = sum(n["status"] == "pass" for n in doc["nodes"])
    lines.append(
        f"rigcheck merge: {doc['verdict'].upper()}: {passed}/{len(doc['nodes'])} nodes pass, "
        f"{len(doc['outliers'])} outliers"
        + (f", {left} older run{'s' * (left > 1)} left out" if left else "")
    )
    return lines


def run_merge(reports: list[Path], out: Path) -> int:
    """``rigcheck merge``: write the three files, print the summary, return the exit status (0, 1, 2).
    Raises ``MergeError`` (before reading any report) when ``out`` cannot be written."""
    check_out(out)
    doc = merge(reports)
    written = write_all(doc, out)
    for line in summary(doc):
        print(line)
    print(f"rigcheck merge: wrote {', '.join(str(p) for p in written)}")
    return int(doc["exit_status"])
