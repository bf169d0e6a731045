"""The terminal summary at the end of ``pytest --rig``: per rig who it is, its PCIe tree, the P2P matrix
and the NCCL sweep when measured, then the root causes first, with one copy-paste block of fixes.

Registered by the plugin when ``--rig`` is on. By default (no ``-v``, ``--tb`` left at ``auto``) the rig
checks' failures are told here only: pytest's per-failure section and its short summary skip them (a
failure that follows from another would repeat its cause hundreds of times on a large rig), and their
per-test text is the verdict without the Python source echo. ``-v`` or ``--tb=long`` (any ``--tb``
other than auto) bring pytest's own detail back.

The matrix is laid out as CUDA's p2pBandwidthLatencyTest prints it (``D\\D`` header, rows are sources),
the sweep in nccl-tests' all_reduce_perf columns (size, time, algbw, busbw, #wrong).
"""

from __future__ import annotations

import math
import re
from collections.abc import Generator, Iterator
from typing import Any

import pytest

from .causes import check_name, grouped, target_id
from .options import BRIEF, value
from .pcie_checks import IDLE_MAX_GEN
from .report import RESULT_PROPERTY

MAX_PER_CHECK = 4  # roots of one check shown in full in the terminal; the rest counted (all in the report)
MAX_SWEEP_ROWS = 6  # largest sizes shown in the terminal; the report and the HTML page keep them all
ACS_REDIR = re.compile(r"pci=disable_acs_redir=([0-9a-fA-F:.;]+)")


def condensed(config: pytest.Config) -> bool:
    """Whether rig failures are told by this summary only (the default: no -v, --tb auto)."""
    return config.get_verbosity() <= 0 and config.getoption("tbstyle", "auto") == "auto"


def _has_verdict(report: Any) -> bool:
    return any(k == RESULT_PROPERTY for k, _ in getattr(report, "user_properties", ()))


class Summary:
    """The rig summary plugin (see the module docstring)."""

    def __init__(self, config: pytest.Config, results: Any) -> None:
        self.config = config
        self.results = results  # report.RigResults, or None on an xdist worker

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if report.failed and report.when == "call" and condensed(self.config) and _has_verdict(item):
            report.longrepr = _verdict_text(report)  # the verdict as the check wrote it: no source echo
        return report

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> Iterator[None]:
        stats = terminalreporter.stats
        hidden: list[Any] = []
        if condensed(self.config) and self.results is not None and value(self.config, BRIEF):
            kept: list[Any] = []
            for rep in stats.get("failed", []):
                (hidden if getattr(rep, "when", None) == "call" and _has_verdict(rep) else kept).append(rep)
            if hidden:
                stats["failed"] = kept
        try:
            return (yield)
        finally:
            if hidden:
                stats["failed"] = stats.get("failed", []) + hidden
            doc = self.results.doc if self.results is not None else None
            if doc is not None:
                for line, markup in render(doc, width=terminalreporter._tw.fullwidth):
                    terminalreporter.write_line(line, **markup)


def _verdict_text(report: Any) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    text = str(getattr(crash, "message", None) or report.longreprtext)
    for prefix in ("AssertionError: ", "Failed: "):
        text = text.removeprefix(prefix)
    return text.split("\nassert ")[0].rstrip()


# -- rendering (pure: the format-2 document in, lines out) ------------------------------------------

Line = tuple[str, dict[str, bool]]


def render(doc: dict[str, Any], width: int = 100) -> list[Line]:
    """The summary's lines with their markup (``red``, ``bold``...), from a format-2 report document."""
    out: list[Line] = []
    for rig in doc.get("rigs") or []:
        out += rig_lines(rig, width)
    out += cause_lines(doc, width)
    return out


def _sep(title: str, width: int, **markup: bool) -> Line:
    title = f" {title} "
    fill = max(width - len(title), 4)
    return ("=" * (fill // 2) + title + "=" * (fill - fill // 2), markup)


def rig_lines(rig: dict[str, Any], width: int = 100) -> list[Line]:
    ident = rig.get("identity") or {}
    out: list[Line] = [_sep(f"rigcheck: {rig.get('name')}", width, bold=True)]
    where = (
        "live " + str(ident.get("host") or rig.get("name"))
        if rig.get("kind") == "live"
        else (f"snapshot {rig.get('source')} [{rig.get('kind')}]")
    )
    gpus = ident.get("gpus") or rig.get("gpus") or []
    names: dict[str, int] = {}
    for g in gpus:
        n = str(g.get("name") or g.get("device"))
        names[n] = names.get(n, 0) + 1
    what = ", ".join(f"{c}x {n}" for n, c in names.items()) or "no GPU"
    out.append((f"{where}: {what}", {}))
    out.append(
        (
            f"driver {rig.get('driver') or '?'}, CUDA {ident.get('cuda') or '?'}, kernel {rig.get('kernel') or '?'};"
            f" {rig.get('profile')}",
            {},
        )
    )
    topo = rig.get("topology")
    if topo:
        out += tree_lines(topo)
    if rig.get("p2p"):
        out += matrix_lines(rig["p2p"])
    for sweep in rig.get("nccl") or []:
        out += sweep_lines(sweep, topo)
    served = rig.get("served_model")
    if served:
        out.append(
            (
                f"served model {served.get('id') or served.get('model') or '?'} at {served.get('url') or '?'}"
                f" (server {served.get('server_version') or '?'})",
                {},
            )
        )
    return out


def link_expected(n: dict[str, Any], parent: dict[str, Any] | None) -> tuple[int, int] | None:
    """What the link above ``n`` can train to: the lesser capability of its two ends (gen, width)."""
    caps = [
        (gen, width)
        for x in (n, parent)
        if x is not None
        for gen, width in [(x.get("max_gen"), x.get("max_width"))]
        if gen and width
    ]
    if not caps:
        return None
    return min(c[0] for c in caps), min(c[1] for c in caps)


def _link(n: dict[str, Any], parent: dict[str, Any] | None) -> tuple[str, bool]:
    """``Gen4 x16`` (and ``, can Gen5 x16`` when trained below what both ends can do), down-trained?"""
    if not n.get("gen") or not n.get("width"):
        return "link ?", False
    text = f"Gen{n['gen']} x{n['width']}"
    exp = link_expected(n, parent)
    if exp and exp[1] <= n["width"] and exp[0] > n["gen"] <= IDLE_MAX_GEN:
        # full width at Gen1/2: GPUs drop the link speed at idle (test_link_trained says whether it is one)
        return f"{text} (idle speed; both ends can Gen{exp[0]} x{exp[1]})", False
    if exp and (exp[0] > n["gen"] or exp[1] > n["width"]):
        return f"{text} (DOWN: both ends can Gen{exp[0]} x{exp[1]})", True
    return text, False


def tree_lines(topo: dict[str, Any]) -> list[Line]:
    """The PCIe tree from root ports to GPUs: gen/width per hop, ACS state, NVLink peers."""
    nodes: dict[str, dict[str, Any]] = topo.get("nodes") or {}
    kids: dict[str | None, list[str]] = {}
    for bdf, n in nodes.items():
        kids.setdefault(n.get("parent") if n.get("parent") in nodes else None, []).append(bdf)
    peers: dict[str, list[str]] = {}
    for link in topo.get("nvlink") or []:
        ia, ib = (nodes.get(link["a"], {}).get("gpu_index"), nodes.get(link["b"], {}).get("gpu_index"))
        nv = f"NV{link['links']}" if link.get("links") else "NVLink"
        peers.setdefault(link["a"], []).append(f"GPU{ib} {nv}")
        peers.setdefault(link["b"], []).append(f"GPU{ia} {nv}")
    iommu = (topo.get("iommu") or {}).get("mode", "unknown")
    if iommu not in ("off", "unknown"):  # the rig-wide mode does not speak for a GPU without its own group
        lost = [
            f"GPU{n['gpu_index']}"
            for n in nodes.values()
            if n.get("gpu_index") is not None and n.get("iommu_group") in (None, "refused")
        ]
        if lost:
            iommu += f", but no group known for {', '.join(lost)}"
    out: list[Line] = [
        (f"PCIe topology (IOMMU {iommu}; 'ACS on' = peer-to-peer redirected to the root):", {})
    ]

    def walk(bdf: str, prefix: str, last: bool, top: bool) -> None:
        n = nodes[bdf]
        branch = "" if top else ("└─ " if last else "├─ ")
        label = f"GPU{n['gpu_index']} {bdf}" if n.get("gpu_index") is not None else f"{bdf} {n.get('role')}"
        link, down = _link(n, nodes.get(n.get("parent") or ""))
        bits = [link]
        if n.get("acs") == "on":
            bits.append("ACS on")
        elif n.get("acs") == "unknown":
            bits.append("ACS ?")
        if bdf in peers:
            bits.append("NVLink: " + ", ".join(peers[bdf]))
        bad = n.get("acs") == "on" or down
        out.append((f"  {prefix}{branch}{label}  {'  '.join(bits)}", {"red": True} if bad else {}))
        children = sorted(kids.get(bdf, []))
        for i, c in enumerate(children):
            walk(c, prefix + ("" if top else ("   " if last else "│  ")), i == len(children) - 1, False)

    for root in sorted(kids.get(None, [])):
        walk(root, "", True, True)
    return out


def _cell(v: Any, fmt: str = "{:7.2f}") -> str:
    """A figure in its column; ``-`` where there is none, ``?`` where it is not a finite number. A figure
    wider than the column keeps a space before it, so it never runs into its neighbour (``-1500.00``)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return f"{'-':>7}"
    if not math.isfinite(v):
        return f"{'?':>7}"
    text = fmt.format(v)
    return text if text.startswith(" ") else " " + text


def matrix_lines(p2p: dict[str, Any]) -> list[Line]:
    """Unidirectional P2P bandwidth as p2pBandwidthLatencyTest prints it (rows: source, columns: peer)."""
    gpus = p2p.get("gpus") or []
    rows = p2p.get("unidir_gbps") or []
    if not gpus or not rows:
        return []
    if len(gpus) > 16:  # a large rig: the matrix is in the report and the HTML page; here its range
        vals = [v for row in rows for v in row if isinstance(v, int | float)]
        if not vals:
            return []
        return [(f"P2P unidirectional: {len(gpus)} GPUs, min {min(vals):.2f}, max {max(vals):.2f} GB/s", {})]
    out: list[Line] = [("Unidirectional P2P=Enabled Bandwidth (P2P Writes) Matrix (GB/s)", {})]
    out.append(("   D\\D" + "".join(f"{i:>7}" for i in range(len(gpus))), {}))
    for i, row in enumerate(rows):
        out.append((f"{i:>6} " + "".join(_cell(v) for v in row), {}))
    return out


def _size(n: int) -> str:
    return f"{n:>12}"


def sweep_lines(sweep: dict[str, Any], topo: dict[str, Any] | None) -> list[Line]:
    """The NCCL all-reduce sweep in nccl-tests' all_reduce_perf columns (largest sizes)."""
    rows = sweep.get("sweep") or []
    if not rows:
        return []
    nodes = (topo or {}).get("nodes") or {}
    idx = [nodes.get(b, {}).get("gpu_index") for b in sweep.get("gpus") or []]
    who = ",".join(str(i) for i in idx) if all(i is not None for i in idx) else sweep.get("group")
    shown = rows[-MAX_SWEEP_ROWS:]
    more = f"; {len(rows) - len(shown)} smaller sizes in the report" if len(rows) > len(shown) else ""
    out: list[Line] = [
        (f"NCCL all_reduce_perf, GPUs {who}, NCCL {sweep.get('nccl') or '?'} (float sum, in place{more})", {})
    ]
    out.append((f"{'size':>12} {'time':>9} {'algbw':>7} {'busbw':>7} {'#wrong':>6}", {}))
    out.append((f"{'(B)':>12} {'(us)':>9} {'(GB/s)':>7} {'(GB/s)':>7} {'':>6}", {}))
    for s in shown:
        out.append(
            (
                f"{s['bytes']:>12} {_cell(s.get('time_us'), '{:9.1f}'):>9} {_cell(s.get('algbw_gbps')):>7}"
                f" {_cell(s.get('busbw_gbps')):>7} {s.get('wrong') if s.get('wrong') is not None else '?':>6}",
                {},
            )
        )
    return out


def _figure(r: dict[str, Any], key: str) -> str:
    v = r.get(key)
    if v is None or isinstance(v, dict | list):
        return ""
    unit = r.get("unit") or ""
    return f"{v} {unit}".strip() if isinstance(v, int | float) else str(v)


def _short(text: str, width: int, indent: str = "") -> str:
    text = indent + " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _wrapped(text: str, width: int, lines: int = 2) -> list[str]:
    import textwrap

    return textwrap.wrap(
        " ".join(str(text).split()), width, subsequent_indent="    ", max_lines=lines, placeholder=" ..."
    ) or [""]


def cause_lines(doc: dict[str, Any], width: int = 100) -> list[Line]:
    """Root causes first: each faulty device once, measured vs expected, what follows from it, then the
    fix commands de-duplicated into one copy-paste block."""
    results = doc.get("results") or []
    groups = grouped(results)
    if not groups:
        return []
    failing = sum(1 for r in results if r.get("status") in ("fail", "unreadable"))
    roots = sum(1 for r, _ in groups if r.get("status") in ("fail", "unreadable"))
    multi = len(doc.get("rigs") or []) > 1
    title = (
        f"rigcheck: {failing} failing check{'s' if failing != 1 else ''}, "
        f"{roots} root cause{'s' if roots != 1 else ''} first"
        if failing
        else "rigcheck: warnings"
    )
    out: list[Line] = [_sep(title, width, red=bool(failing), yellow=not failing, bold=True)]
    root_fixes: dict[str, None] = {}  # ordered sets: thousands of results on a large rig
    dep_fixes: dict[str, None] = {}
    shown: dict[str, int] = {}
    more: dict[str, int] = {}
    for root, deps in groups:
        name = check_name(str(root.get("nodeid")))
        if not deps and shown.get(name, 0) >= MAX_PER_CHECK:
            more[name] = more.get(name, 0) + 1
            continue
        shown[name] = shown.get(name, 0) + 1
        status = str(root.get("status")).upper()
        where = f"[{root.get('rig')}] " if multi and root.get("rig") else ""
        red = {"red": True} if status != "WARN" else {"yellow": True}
        for i, line in enumerate(
            _wrapped(f"{status} {where}{root.get('message') or root.get('nodeid')}", width)
        ):
            out.append((line, red if i == 0 else {}))
        m, e = _figure(root, "measured"), _figure(root, "expected")
        if m:
            out.append((_short(f"measured {m}", width, "    "), {}))
        if e:
            out.append((_short(f"expected {e}", width, "    "), {}))
        if deps:
            counts: dict[str, int] = {}
            for d in deps:
                counts[check_name(str(d.get("nodeid")))] = counts.get(check_name(str(d.get("nodeid"))), 0) + 1
            what = ", ".join(f"{n.removeprefix('test_')} x{c}" for n, c in counts.items())
            out.append((_short(f"-> {len(deps)} follow from it: {what}", width, "    "), {}))
        out.append((f"    check: {root.get('nodeid')}", {}))
        root_fixes.update(dict.fromkeys(root.get("fix") or []))
        for d in deps:
            dep_fixes.update(dict.fromkeys(d.get("fix") or []))
    for name, n in more.items():
        out.append(
            (
                f"... and {n} more not passing {name} with no cause among the checks (all in --rig-report/--rig-html)",
                {},
            )
        )
    block = fix_block(list(root_fixes), list(dep_fixes))
    if block:
        out.append(("fix (copy-paste; each command once):", {"bold": True}))
        out += [(f"  {line}", {}) for line in block]
    return out


def fix_block(fixes: list[str], follow: list[str] = ()) -> list[str]:  # type: ignore[assignment]
    """Fix lines as one copy-paste block: each command once (one ``setpci`` per bridge), then the other
    advice as ``#`` comments, once each, with the devices of ``pci=disable_acs_redir`` lines that differ
    only in them merged into one kernel parameter (``pci=disable_acs_redir=<dev>[;<dev>]*``, Linux
    admin-guide kernel-parameters). ``follow``: fixes of dependent checks; only their commands are kept
    (their explanation repeats their cause's)."""
    commands: dict[str, None] = {}
    notes: dict[str, list[str]] = {}  # note with devices replaced by @ -> devices
    roots = set(fixes)
    for f in dict.fromkeys([*fixes, *follow]):
        cmd, _, tail = f.partition("   (")
        cmd, tail = cmd.strip(), tail.removesuffix(")").strip()
        dependent = f not in roots
        if _is_command(cmd):
            commands[cmd] = None
            words = cmd.removeprefix("sudo ").split(" ", 1)
            tail = f"{words[0]}: {tail}" if tail and not ACS_REDIR.search(tail) else tail
        elif not dependent:
            tail = f"{cmd} ({tail})" if tail else cmd
        else:
            tail = ""
        if dependent or not tail:
            continue
        devs = [d for found in ACS_REDIR.findall(tail) for d in found.split(";") if d]
        key = ACS_REDIR.sub("pci=disable_acs_redir=@", tail)
        merged = notes.setdefault(key, [])
        merged += [d for d in devs if d not in merged]
    out = list(commands)
    for key, devs in notes.items():
        out.append("# " + key.replace("pci=disable_acs_redir=@", "pci=disable_acs_redir=" + ";".join(devs)))
    return out


def _is_command(text: str) -> bool:
    first = text.split(" ", 1)[0]
    return first in (
        "sudo",
        "setpci",
        "nvidia-smi",
        "echo",
        "modprobe",
        "pip",
        "rigcheck",
        "sysctl",
        "ulimit",
    )


def target_label(r: dict[str, Any]) -> str:
    return target_id(r) or ""
