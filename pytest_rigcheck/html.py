"""``--rig-html FILE.html``: one self-contained page (no script, no font, no request: inline CSS and SVG).

Per rig: who it is, the PCIe topology drawn as SVG (root port -> switch ports -> GPUs, gen/width per hop,
failing devices and links in red, ACS-on bridges marked, NVLink peers as green arcs), the P2P
bandwidth heatmap (rows are sources, as in p2pBandwidthLatencyTest), the NCCL sweep (nccl-tests'
all_reduce_perf columns); then the root causes with their fixes, and every check with its figures.
Several rigs sit on one page. Rendered from the format-2 report document (``report.RigResults.doc``),
so a report file can be rendered again: ``pytest_rigcheck.html.render(load_report(path))``.
"""

from __future__ import annotations

import html
from typing import Any

from .causes import grouped, target_id
from .summary import fix_block, link_expected

STATUS_COLOUR = {
    "pass": "#1a7f37",
    "warn": "#9a6700",
    "fail": "#cf222e",
    "unreadable": "#8250df",
    "n/a": "#57606a",
}

CSS = """
body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#1f2328;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin:28px 0 8px;border-bottom:2px solid #d0d7de}
h3{font-size:15px;margin:18px 0 6px} .muted{color:#57606a} code,pre{font-family:ui-monospace,Menlo,monospace}
pre{background:#f6f8fa;border:1px solid #d0d7de;padding:10px;overflow-x:auto;font-size:13px}
table{border-collapse:collapse;margin:6px 0} td,th{border:1px solid #d0d7de;padding:3px 7px;text-align:left;
vertical-align:top;font-size:13px} th{background:#f6f8fa}
.badge{display:inline-block;padding:1px 7px;border-radius:10px;color:#fff;font-size:12px;font-weight:600}
.cause{border-left:5px solid #cf222e;padding:6px 12px;margin:10px 0;background:#fff5f5}
.dep{color:#57606a;font-size:13px} .num{text-align:right;font-variant-numeric:tabular-nums}
.counts span{margin-right:10px} pre{white-space:pre-wrap;word-break:break-word}
td{word-break:break-word;max-width:520px} td code{word-break:break-all} table{max-width:100%} .pics{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
.ident td,.ident th{padding:1px 7px}
"""


def _e(v: Any) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def _badge(status: str) -> str:
    return (
        f'<span class="badge" style="background:{STATUS_COLOUR.get(status, "#57606a")}">{_e(status)}</span>'
    )


def render(doc: dict[str, Any]) -> str:
    """The whole page for a format-2 report document."""
    results = doc.get("results") or []
    rigs = doc.get("rigs") or []
    counts = doc.get("counts") or {}
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>rigcheck: {_e(', '.join(str(r.get('name')) for r in rigs) or 'no rig')}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>rigcheck report: {_e(', '.join(str(r.get('name')) for r in rigs) or 'no rig')}</h1>",
        f'<div class="muted">{_e(doc.get("tool"))}, {_e(doc.get("created"))}, pytest exit status '
        f"{_e(doc.get('exit_status'))}</div>",
        '<p class="counts">'
        + "".join(f"<span>{_badge(s)} {int(n)}</span>" for s, n in sorted(counts.items()))
        + "</p>",
    ]
    for rig in rigs:  # the pictures first: what the rig is and where it hurts
        mine = [r for r in results if r.get("rig") == rig.get("name")] if len(rigs) > 1 else results
        parts += rig_html(rig, mine)
    parts += causes_html(doc)
    for rig in rigs:
        if rig.get("nccl"):
            parts.append(f"<h2>NCCL sweeps: {_e(rig.get('name'))}</h2>")
        for sweep in rig.get("nccl") or []:
            parts += sweep_html(sweep)
    parts += checks_html(results, len(rigs) > 1)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def causes_html(doc: dict[str, Any]) -> list[str]:
    groups = grouped(doc.get("results") or [])
    if not groups:
        return ['<h2>Root causes</h2><p style="color:#1a7f37">Every check passed.</p>']
    out = ["<h2>Root causes first</h2>"]
    root_fixes: dict[str, None] = {}  # ordered sets: thousands of results on a large rig
    dep_fixes: dict[str, None] = {}
    multi = len(doc.get("rigs") or []) > 1
    for root, deps in groups:
        where = f"[{_e(root.get('rig'))}] " if multi else ""
        out.append('<div class="cause">')
        out.append(f"<div>{_badge(str(root.get('status')))} {where}<b>{_e(root.get('message'))}</b></div>")
        for key in ("measured", "expected"):
            if root.get(key) not in (None, ""):
                out.append(f"<div>{key}: <code>{_e(_fmt(root.get(key), root.get('unit')))}</code></div>")
        out.append(f'<div class="dep">check <code>{_e(root.get("id") or root.get("nodeid"))}</code></div>')
        if deps:
            out.append(f'<details><summary class="dep">{len(deps)} checks follow from it</summary><ul>')
            out += [
                f'<li class="dep"><code>{_e(d.get("nodeid"))}</code>: {_e(_fmt(d.get("measured"), d.get("unit")))}</li>'
                for d in deps
            ]
            out.append("</ul></details>")
        out.append("</div>")
        root_fixes.update(dict.fromkeys(root.get("fix") or []))
        for d in deps:
            dep_fixes.update(dict.fromkeys(d.get("fix") or []))
    block = fix_block(list(root_fixes), list(dep_fixes))
    if block:
        out.append("<h3>Fix (copy-paste; each command once)</h3>")
        out.append("<pre>" + _e("\n".join(block)) + "</pre>")
    return out


def _fmt(v: Any, unit: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, dict | list):
        import json

        return json.dumps(v, default=str)
    return f"{v} {unit}".strip() if isinstance(v, int | float) and unit else str(v)


def rig_html(rig: dict[str, Any], results: list[dict[str, Any]]) -> list[str]:
    ident = rig.get("identity") or {}
    out = [f"<h2>Rig {_e(rig.get('name'))}</h2>", '<table class="ident">']
    rows = [
        ("source", f"{rig.get('source')} [{rig.get('kind')}]"),
        ("host", ident.get("host")),
        (
            "GPUs",
            "; ".join(f"GPU{g.get('index')} {g.get('bdf')} {g.get('name')}" for g in ident.get("gpus") or []),
        ),
        ("driver", rig.get("driver")),
        ("CUDA", ident.get("cuda")),
        ("kernel", rig.get("kernel")),
        ("profile", rig.get("profile")),
    ]
    out += [f"<tr><th>{_e(k)}</th><td>{_e(v if v not in (None, '') else '?')}</td></tr>" for k, v in rows]
    out.append("</table>")
    served = rig.get("served_model")
    if served:
        out.append("<h3>Served model</h3><table>")
        out += [
            f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in served.items() if v not in (None, [], "")
        ]
        out.append("</table>")
    topo = rig.get("topology")
    out.append('<div class="pics">')
    if topo:
        out.append("<div><h3>PCIe topology</h3>")
        out.append(topology_svg(topo, results) + "</div>")
    if rig.get("p2p"):
        out.append("<div><h3>P2P bandwidth (unidirectional, GB/s; rows are sources)</h3>")
        out.append(heatmap_svg(rig["p2p"], _failing_pairs(rig["p2p"], results)) + "</div>")
    out.append("</div>")
    return out


def _bad_devices(results: list[dict[str, Any]], topo: dict[str, Any]) -> tuple[dict[str, str], set[str]]:
    """(device -> worst status of a not-passing root check on it, downstream ends of failing links)."""
    nodes = topo.get("nodes") or {}
    devices: dict[str, str] = {}
    links: set[str] = set()
    for r in results:
        if r.get("status") not in ("fail", "unreadable") or r.get("cause"):
            continue
        tid = target_id(r) or ""
        t = r.get("target") or {}
        bdf = t.get("bdf") if isinstance(t, dict) and t.get("bdf") in nodes else tid if tid in nodes else None
        if bdf:
            if devices.get(bdf) != "fail":
                devices[bdf] = str(r.get("status"))
            if str(r.get("check", "")).startswith("test_link") or "link" in str(r.get("check", "")):
                links.add(bdf)
    for bdf, n in nodes.items():
        exp = link_expected(n, nodes.get(n.get("parent") or ""))
        if exp and (n.get("gen"), n.get("width")) != exp and n.get("gen"):
            links.add(bdf)
    return devices, links


def _failing_pairs(p2p: dict[str, Any], results: list[dict[str, Any]]) -> set[tuple[int, int]]:
    index = {b: i for i, b in enumerate(p2p.get("gpus") or [])}
    out: set[tuple[int, int]] = set()
    for r in results:
        if r.get("check") != "test_p2p_unidirectional" or r.get("status") not in (
            "fail",
            "unreadable",
            "warn",
        ):
            continue
        a, _, b = (target_id(r) or "").partition("->")
        if a in index and b in index:
            out.add((index[a], index[b]))
    return out


def topology_svg(topo: dict[str, Any], results: list[dict[str, Any]]) -> str:
    """Left to right: root ports, switch ports, GPUs; one row per leaf."""
    nodes: dict[str, dict[str, Any]] = topo.get("nodes") or {}
    kids: dict[str | None, list[str]] = {}
    for bdf, n in nodes.items():
        kids.setdefault(n.get("parent") if n.get("parent") in nodes else None, []).append(bdf)
    bad, bad_links = _bad_devices(results, topo)
    pos: dict[str, tuple[float, float]] = {}
    row = [0]
    depth_max = [0]

    def place(bdf: str, depth: int) -> float:
        depth_max[0] = max(depth_max[0], depth)
        children = sorted(kids.get(bdf, []))
        y: float
        if not children:
            y = row[0]
            row[0] += 1
        else:
            ys = [place(c, depth + 1) for c in children]
            y = (ys[0] + ys[-1]) / 2
        pos[bdf] = (depth, y)
        return y

    for root in sorted(kids.get(None, [])):
        place(root, 0)
    bw, bh, gapx, gapy, pad = 250, 44, 90, 14, 20
    width = pad * 2 + (depth_max[0] + 1) * (bw + gapx) + 40
    height = pad * 2 + max(row[0], 1) * (bh + gapy)

    def xy(bdf: str) -> tuple[float, float]:
        d, y = pos[bdf]
        return pad + d * (bw + gapx), pad + y * (bh + gapy)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="PCIe topology" '
        'style="font-family:ui-monospace,Menlo,monospace;font-size:11px">'
    ]
    for bdf, n in nodes.items():  # links first, under the boxes
        parent = n.get("parent")
        if parent not in pos or bdf not in pos:
            continue
        (x1, y1), (x2, y2) = xy(parent), xy(bdf)
        red = bdf in bad_links
        colour, w = ("#cf222e", 4) if red else ("#8c959f", 2)
        mx = x1 + bw + gapx / 3
        parts.append(
            f'<path d="M{x1 + bw},{y1 + bh / 2} H{mx} V{y2 + bh / 2} H{x2}" fill="none" '
            f'stroke="{colour}" stroke-width="{w}"/>'
        )
        if n.get("gen"):
            parts.append(
                f'<text x="{x2 - 4}" y="{y2 + bh / 2 - 5}" text-anchor="end" fill="{colour}">'
                f"Gen{_e(n['gen'])} x{_e(n['width'])}</text>"
            )
    for bdf in pos:
        n = nodes[bdf]
        x, y = xy(bdf)
        gpu = n.get("gpu_index") is not None
        state = bad.get(bdf) or ("fail" if n.get("acs") == "on" else None)
        fill = {"fail": "#ffebe9", "unreadable": "#fbefff", "warn": "#fff8c5"}.get(
            state or "", "#dafbe1" if gpu else "#f6f8fa"
        )
        stroke = {"fail": "#cf222e", "unreadable": "#8250df", "warn": "#9a6700"}.get(
            state or "", "#1a7f37" if gpu else "#8c959f"
        )
        title = f"GPU{n['gpu_index']} {bdf}" if gpu else f"{bdf} {n.get('role')}"
        tag = (
            "ACS on: P2P redirected"
            if n.get("acs") == "on"
            else ("ACS unknown" if n.get("acs") == "unknown" else "")
        )
        sub = str(n.get("name") or "")[:32]
        parts.append(
            f"<g><title>{_e(bdf)} {_e(n.get('role'))} ({_e(n.get('name'))}) {_e(tag)} {_e(state or '')}</title>"
            f'<rect x="{x}" y="{y}" width="{bw}" height="{bh}" rx="6" fill="{fill}" stroke="{stroke}" '
            f'stroke-width="{3 if state else 1.5}"/>'
            f'<text x="{x + 8}" y="{y + 17}" font-weight="bold">{_e(title)}</text>'
            + (
                f'<text x="{x + 8}" y="{y + 34}" fill="#cf222e" font-weight="bold">{_e(tag)}</text>'
                if tag
                else f'<text x="{x + 8}" y="{y + 34}" fill="#57606a">{_e(sub)}</text>'
            )
            + "</g>"
        )
    for link in topo.get("nvlink") or []:  # NVLink peers: green arcs to the right of the GPUs
        if link["a"] not in pos or link["b"] not in pos:
            continue
        (xa, ya), (_, yb) = xy(link["a"]), xy(link["b"])
        x = xa + bw
        bulge = x + 30 + abs(yb - ya) / 6
        label = f"NV{link['links']}" if link.get("links") else "NVLink"
        parts.append(
            f'<path d="M{x},{ya + bh / 2} C{bulge},{ya + bh / 2} {bulge},{yb + bh / 2} {x},{yb + bh / 2}" '
            f'fill="none" stroke="#1a7f37" stroke-width="2.5" stroke-dasharray="6 3"/>'
            f'<text x="{bulge - 6}" y="{(ya + yb) / 2 + bh / 2}" fill="#1a7f37">{_e(label)}</text>'
        )
    iommu = (topo.get("iommu") or {}).get("mode", "unknown")
    parts.append("</svg>")
    legend = (
        f'<div class="muted">IOMMU {_e(iommu)}. Red: a failing device or link (a link trained below what both '
        "ends can do), or a bridge with ACS redirecting peer-to-peer traffic. Green dashed: NVLink peers.</div>"
    )
    return "".join(parts) + legend


def _heat(v: float, hi: float) -> str:
    """Share of the fastest pair: red (0) through amber to green (1)."""
    t = max(0.0, min(1.0, v / hi)) if hi > 0 else 0.0
    r = int(215 - 175 * t) if t > 0.5 else 215
    g = int(50 + 250 * t) if t <= 0.5 else int(175 - 20 * (1 - t))
    return f"rgb({r},{min(g, 200)},70)"


def heatmap_svg(p2p: dict[str, Any], failing: set[tuple[int, int]] = frozenset()) -> str:  # type: ignore[assignment]
    """Unidirectional P2P GB/s per pair; the colour is the share of the fastest pair, a red frame marks
    a pair whose bandwidth check did not pass."""
    gpus = p2p.get("gpus") or []
    rows = p2p.get("unidir_gbps") or []
    vals = [v for row in rows for v in row if isinstance(v, int | float)]
    if not gpus or not vals:
        return '<p class="muted">no P2P bandwidth recorded</p>'
    lo, hi = min(vals), max(vals)
    n = len(gpus)
    cell = 56 if n <= 8 else max(10, 560 // n)
    pad = 40
    size = max(pad + n * cell + 10, 190)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size + 170}" height="{size}" role="img" '
        f'aria-label="P2P bandwidth heatmap" style="font-family:ui-monospace,Menlo,monospace;font-size:11px">'
    ]
    for i in range(n):
        if cell >= 16:
            parts.append(f'<text x="{pad + i * cell + cell / 2 - 4}" y="{pad - 8}">{i}</text>')
            parts.append(f'<text x="{pad - 20}" y="{pad + i * cell + cell / 2 + 4}">{i}</text>')
    for i, row in enumerate(rows):
        for j, v in enumerate(row):
            x, y = pad + j * cell, pad + i * cell
            if isinstance(v, int | float):
                frame = ' stroke="#cf222e" stroke-width="4"' if (i, j) in failing else ""
                parts.append(
                    f'<rect x="{x + 2}" y="{y + 2}" width="{cell - 5}" height="{cell - 5}" fill="{_heat(v, hi)}"'
                    f"{frame}><title>GPU{i} -> GPU{j}: {v:.2f} GB/s</title></rect>"
                )
                if cell >= 40:
                    parts.append(f'<text x="{x + 8}" y="{y + cell / 2 + 4}" fill="#fff">{v:.1f}</text>')
            else:
                parts.append(f'<rect x="{x}" y="{y}" width="{cell - 1}" height="{cell - 1}" fill="#eaeef2"/>')
    lx = pad + n * cell + 20
    for k, share in enumerate((1.0, 0.75, 0.5, 0.25)):
        parts.append(
            f'<rect x="{lx}" y="{pad + k * 22}" width="18" height="18" fill="{_heat(share * hi, hi)}"/>'
        )
        parts.append(f'<text x="{lx + 24}" y="{pad + k * 22 + 13}">{share * hi:.1f} GB/s</text>')
    parts.append(f'<text x="{lx}" y="{pad + 104}">range {lo:.1f} .. {hi:.1f} GB/s</text>')
    if failing:
        parts.append(
            f'<rect x="{lx}" y="{pad + 114}" width="18" height="18" fill="none" stroke="#cf222e" stroke-width="3"/>'
            f'<text x="{lx + 24}" y="{pad + 127}">below expected</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def sweep_html(sweep: dict[str, Any]) -> list[str]:
    rows = sweep.get("sweep") or []
    if not rows:
        return []
    out = [
        f"<h3>NCCL all_reduce_perf, group {_e(sweep.get('group'))} (NCCL {_e(sweep.get('nccl') or '?')})</h3>",
        "<table><tr><th>size (B)</th><th>time (us)</th><th>algbw (GB/s)</th><th>busbw (GB/s)</th>"
        "<th>#wrong</th></tr>",
    ]
    for s in rows:
        out.append(
            "<tr>"
            + "".join(
                f'<td class="num">{_e(s.get(k))}</td>'
                for k in ("bytes", "time_us", "algbw_gbps", "busbw_gbps", "wrong")
            )
            + "</tr>"
        )
    out.append("</table>")
    return out


def checks_html(results: list[dict[str, Any]], multi: bool) -> list[str]:
    order = {"fail": 0, "unreadable": 1, "warn": 2, "pass": 3, "n/a": 4}
    out = [
        "<h2>Every check</h2><table><tr><th>status</th>"
        + ("<th>rig</th>" if multi else "")
        + "<th>check</th><th>target</th><th>measured</th><th>expected</th><th>message</th><th>follows from</th></tr>"
    ]
    for r in sorted(results, key=lambda r: order.get(str(r.get("status")), 5)):
        out.append(
            f"<tr><td>{_badge(str(r.get('status')))}</td>"
            + (f"<td>{_e(r.get('rig'))}</td>" if multi else "")
            + f"<td><code>{_e(r.get('id') or r.get('nodeid'))}</code></td>"
            f"<td>{_e(target_id(r))}</td>"
            f"<td>{_e(_fmt(r.get('measured'), r.get('unit')))}</td>"
            f"<td>{_e(_fmt(r.get('expected'), r.get('unit')))}</td>"
            f"<td>{_e(r.get('message'))}</td>"
            f"<td>{_e(r.get('cause') or '')}</td></tr>"
        )
    out.append("</table>")
    return out
