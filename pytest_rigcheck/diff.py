"""``rigcheck diff A B``: what changed between two snapshots, two ``--rig-report`` files, or one of each.

Each side is read into the same plain facts (``Side``): the GPUs (BDF -> name), every link on the paths from
root ports to GPUs (BDF -> trained gen, width), each bridge's ACS Control register (or just on/off from a
report), each GPU's enforced power cap, the IOMMU mode, the P2P/NCCL figures, and the checks' statuses.
A snapshot is read through ``snapshot.open_snapshot`` and ``rig.Rig.replay``: the same code path and the same
rooted ``Source`` as the suites. A report is read as written by ``--rig-report`` (format 1: rigs with their
GPUs, results with their status; format 2 adds per rig ``topology`` nodes with gen/width/ACS and the IOMMU
mode). Only what both sides record is compared.

Changes are listed worse first (``WORSE``: a link down a generation or lanes, ACS P2P redirect switched on,
a power cap that moved, a GPU that vanished, the IOMMU now translating, a figure that fell beyond the
run-to-run spread, a check from pass to fail), then ``CHANGED`` (other differences), then ``BETTER``.

Run-to-run spread: a figure counts as fallen when B's best reading is below A's best by more than the
larger of ``SPREAD`` (5 %) and the spread of the readings recorded on either side ((max - min) / max).
P2P and NCCL bandwidths vary by a few percent between runs on a healthy rig (NVIDIA's nccl-tests
README asks for several iterations for that reason), so smaller moves are not reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import RigcheckError, SourceError

WORSE, CHANGED, BETTER = "WORSE", "CHANGED", "BETTER"
_RANK = {WORSE: 0, CHANGED: 1, BETTER: 2}
SPREAD = 0.05  # relative; the least run-to-run spread assumed for a bandwidth figure
_PASSING = {"pass", "warn"}


@dataclass
class Side:
    """The facts of one side, ``None`` where that side does not record them."""

    label: str
    gpus: dict[str, str] | None = None
    links: dict[str, tuple[int | None, int | None]] | None = None
    roles: dict[str, str] = field(default_factory=dict)
    acs: dict[str, int | str] | None = None  # BDF -> ACS Control value (snapshot) or "on"/"off" (report)
    caps: dict[str, int] | None = None  # GPU BDF -> enforced power limit, mW
    iommu: str | None = None
    figures: dict[str, list[float]] | None = None  # "GB/s P2P unidir GPU0->GPU1" -> readings
    checks: dict[str, str] | None = None  # check id -> status


@dataclass
class Change:
    level: str
    what: str
    where: str
    before: str
    after: str
    note: str = ""

    def line(self) -> str:
        note = f" ({self.note})" if self.note else ""
        return f"{self.level:7} {self.what}: {self.where}: {self.before} -> {self.after}{note}"


def read_side(path: Path) -> Side:
    """A report (a ``.json`` file with ``format``, read and checked by ``report.load_report``, as
    ``rigcheck merge`` checks a node's: a corrupt, contradictory or empty report is refused) or a snapshot
    (directory or archive). Raises ``RigcheckError`` or ``ValueError`` with one line when it cannot be
    read."""
    if path.suffix == ".json" and not path.exists():
        raise ValueError(f"{path}: no such report (a .json path is read as a --rig-report file)")
    if path.is_file() and path.suffix == ".json":
        from .report import load_report

        return _report_side(path, load_report(path))  # a corrupt or empty report: one line, exit 2
    from .profile import Profile
    from .rig import Rig
    from .snapshot import open_snapshot

    rig = Rig.replay(open_snapshot(path), Profile())
    try:
        return _snapshot_side(rig, str(path))
    finally:
        rig.close()


def _snapshot_side(rig: Any, label: str) -> Side:
    tree = rig.pcie
    side = Side(label)
    side.gpus = {g.bdf: g.name for g in tree.gpus}
    side.links, side.acs = {}, {}
    for g in tree.gpus:
        for fn in [*tree.ancestors(g.bdf), g]:
            try:
                side.links[fn.bdf] = fn.link_now
            except SourceError:  # a corrupt or impossible reading: compared as not read (below)
                side.links[fn.bdf] = (None, None)
            side.roles[fn.bdf] = "GPU" + str(tree.gpu_index(fn.bdf)) if fn.is_gpu else fn.role
            if fn.acs_unread is not None:
                side.acs[fn.bdf] = f"unreadable ({fn.acs_unread})"
            elif fn.is_bridge and fn.config is not None and fn.config.acs is not None:
                side.acs[fn.bdf] = fn.config.acs.ctrl
    side.iommu = rig.iommu.mode
    nvml = _json(rig, "nvml.json")
    if isinstance(nvml, dict) and isinstance(nvml.get("gpus"), list):
        side.caps = {}
        for g in nvml["gpus"]:
            if not isinstance(g, dict):
                continue
            cap = g.get("enforced_limit_mw", g.get("power_limit_mw"))
            if isinstance(cap, int) and not isinstance(cap, bool):
                side.caps[str(g.get("bdf", "")).lower()[-12:]] = cap
    p2p = _json(rig, "p2p.json")
    if isinstance(p2p, dict):
        side.figures = _figures(p2p, {g.bdf: f"GPU{i}" for i, g in enumerate(tree.gpus)})
    return side


def _json(rig: Any, name: str) -> Any:

    try:
        return rig.source.read_json(name, limit=64 << 20)
    except (KeyError, SourceError):
        return None


def _nums(v: Any) -> list[float]:
    vals = v if isinstance(v, list) else [v]
    return [float(x) for x in vals if isinstance(x, int | float) and not isinstance(x, bool) and x > 0]


def _figures(p2p: dict[str, Any], label: dict[str, str]) -> dict[str, list[float]]:
    """Bandwidth readings from a ``p2p.json``: per pair unidir/bidir, per GPU host links, per NCCL group."""
    out: dict[str, list[float]] = {}
    for key, p in (p2p.get("pairs") or {}).items():
        if not isinstance(p, dict) or "->" not in key:
            continue
        a, b = key.split("->", 1)
        for fig, name in (("unidir_gbps", "P2P unidirectional"), ("bidir_gbps", "P2P bidirectional")):
            if _nums(p.get(fig)):
                out[f"{name} {label.get(a, a)}->{label.get(b, b)} GB/s"] = _nums(p.get(fig))
    for bdf, g in (p2p.get("gpus") or {}).items():
        for fig, name in (("h2d_gbps", "host->device"), ("d2h_gbps", "device->host")):
            if isinstance(g, dict) and _nums(g.get(fig)):
                out[f"{name} {label.get(bdf, bdf)} GB/s"] = _nums(g.get(fig))
    for key, g in ((p2p.get("nccl") or {}).get("groups") or {}).items():
        if isinstance(g, dict) and _nums(g.get("busbw_gbps")):
            gpus = "+".join(label.get(b, b) for b in key.split("+"))
            out[f"NCCL all-reduce busbw {gpus} GB/s"] = _nums(g.get("busbw_gbps"))
    return out


def _report_side(path: Path, doc: dict[str, Any]) -> Side:
    """The facts of a report ``load_report`` read and checked (its rigs and results are lists)."""
    rigs, results = doc["rigs"], doc["results"]
    side = Side(str(path))
    side.checks = {}
    names = [str((x.get("identity") or x).get("name") or "") for x in rigs if isinstance(x, dict)]
    for r in results:
        cid = r.get("id", r.get("nodeid")) if isinstance(r, dict) else None
        if isinstance(cid, str):
            side.checks[_check_id(cid, names)] = str(r.get("status", ""))
    side.gpus = {}
    for rig in rigs:
        if not isinstance(rig, dict):
            continue
        ident: dict[str, Any] = rig["identity"] if isinstance(rig.get("identity"), dict) else rig
        for g in ident.get("gpus") or []:
            if isinstance(g, dict) and isinstance(g.get("bdf"), str):
                side.gpus[g["bdf"]] = str(g.get("name") or g.get("device") or "")
        topo = rig.get("topology")
        if isinstance(topo, dict) and isinstance(topo.get("nodes"), dict):  # format 2
            side.links = side.links or {}
            side.acs = side.acs or {}
            for bdf, n in topo["nodes"].items():
                if not isinstance(n, dict):
                    continue
                side.links[bdf] = (_int(n.get("gen")), _int(n.get("width")))
                idx = n.get("gpu_index")
                side.roles[bdf] = f"GPU{idx}" if isinstance(idx, int) else str(n.get("role") or "")
                if n.get("acs") in ("on", "off"):
                    side.acs[bdf] = n["acs"]
            mode = (topo.get("iommu") or {}).get("mode")
            side.iommu = mode if isinstance(mode, str) else None
    return side


def _check_id(cid: str, rigs: list[str]) -> str:
    """The check's id without its rig's name, so a report of snapshot ``x`` and one of ``x-after`` (or of
    the live host) name the same check alike: ``test_acs[RIG]`` -> ``test_acs[*]``, ``[RIG:target]`` ->
    ``[target]`` (the names of rig-wide and multi-rig test ids, ``plugin``)."""
    if not cid.endswith("]") or "[" not in cid:
        return cid
    head, param = cid[:-1].split("[", 1)
    for name in sorted((n for n in rigs if n), key=len, reverse=True):
        if param == name:
            return f"{head}[*]"
        if param.startswith(f"{name}:"):
            return f"{head}[{param[len(name) + 1 :]}]"
    return cid


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _acs_state(v: int | str) -> str:
    from .pcie import ACS_P2P_BLOCKING

    return v if isinstance(v, str) else ("on" if v & ACS_P2P_BLOCKING else "off")


def compare(a: Side, b: Side) -> list[Change]:
    """Every difference between ``a`` (before) and ``b`` (after), worse first."""
    from .pcie import ACS_BITS, decode_acs, fmt_link

    out: list[Change] = []
    if a.gpus is not None and b.gpus is not None:
        for bdf in sorted(set(a.gpus) - set(b.gpus)):
            out.append(Change(WORSE, "GPU vanished", bdf, a.gpus[bdf] or "present", "absent"))
        for bdf in sorted(set(b.gpus) - set(a.gpus)):
            out.append(Change(CHANGED, "GPU appeared", bdf, "absent", b.gpus[bdf] or "present"))
    if a.links is not None and b.links is not None:
        for bdf in sorted(set(a.links) & set(b.links)):
            (g0, w0), (g1, w1) = a.links[bdf], b.links[bdf]
            where = f"{bdf} {b.roles.get(bdf) or a.roles.get(bdf, '')}".rstrip()
            if g0 and w0 and g1 is None and w1 is None:
                out.append(Change(WORSE, "link", where, fmt_link(g0, w0), "not read", "unreadable or down"))
                continue
            if (g0, w0) == (g1, w1) or g0 is None or w0 is None or g1 is None or w1 is None:
                continue
            drop = [x for x, bad in (("generation", g1 < g0), ("width", w1 < w0)) if bad]
            level = WORSE if drop else BETTER
            note = f"{' and '.join(drop)} dropped" if drop else "trained higher"
            out.append(Change(level, "link", where, fmt_link(g0, w0), fmt_link(g1, w1), note))
    if a.acs is not None and b.acs is not None:
        # A bridge whose ACS became unreadable on side B counts even where side A had no ACS capability.
        unread_b = {k for k, v in b.acs.items() if _acs_state(v).startswith("unreadable")}
        for bdf in sorted(set(a.acs) & set(b.acs) | unread_b & set(a.links or {})):
            v0, v1 = a.acs.get(bdf, "absent"), b.acs[bdf]
            s0, s1 = _acs_state(v0), _acs_state(v1)
            if v0 == v1 or (isinstance(v0, str) != isinstance(v1, str) and s0 == s1):
                continue
            where = f"{bdf} {b.roles.get(bdf) or a.roles.get(bdf, '')}".rstrip()
            before = f"ACSCtl {decode_acs(v0)}" if isinstance(v0, int) else f"ACS {v0}"
            after = f"ACSCtl {decode_acs(v1)}" if isinstance(v1, int) else f"ACS {v1}"
            if s1.startswith("unreadable"):
                level, note = WORSE, "ACS state could not be read on side B: P2P redirection unknown"
            elif s0 == "off" and s1 == "on":
                level, note = WORSE, "P2P now redirected through the root complex"
            elif s0 == "on" and s1 == "off":
                level, note = BETTER, "P2P no longer redirected"
            else:
                level, note = CHANGED, ""
            if isinstance(v0, int) and isinstance(v1, int):
                on = [n for bit, n, _ in ACS_BITS if v1 & bit and not v0 & bit]
                off = [n for bit, n, _ in ACS_BITS if v0 & bit and not v1 & bit]
                flips = ([f"{' '.join(on)} switched on"] if on else []) + (
                    [f"{' '.join(off)} switched off"] if off else []
                )
                note = "; ".join([*flips, note] if note else flips)
            out.append(Change(level, "ACS", where, before, after, note))
    if a.caps is not None and b.caps is not None:
        labels = {k[-12:]: v for k, v in {**a.roles, **b.roles}.items()}
        for bdf in sorted(set(a.caps) & set(b.caps)):
            c0, c1 = a.caps[bdf], b.caps[bdf]
            if c0 != c1:
                where = f"{bdf} {labels.get(bdf[-12:], '')}".rstrip()
                out.append(
                    Change(
                        WORSE,
                        "power cap moved",
                        where,
                        f"{c0 / 1000:g} W",
                        f"{c1 / 1000:g} W",
                        "enforced limit",
                    )
                )
    if a.iommu and b.iommu and "unknown" not in (a.iommu, b.iommu) and a.iommu != b.iommu:
        level = WORSE if b.iommu == "translated" else CHANGED
        out.append(Change(level, "IOMMU mode", "rig", a.iommu, b.iommu))
    if a.figures is not None and b.figures is not None:
        out += _figure_changes(
            a.figures, b.figures, acs_worse=any(c.what == "ACS" and c.level == WORSE for c in out)
        )
    if a.checks is not None and b.checks is not None:
        for cid in sorted(set(a.checks) & set(b.checks)):
            s0, s1 = a.checks[cid], b.checks[cid]
            if s0 == s1:
                continue
            if s0 in _PASSING and s1 not in _PASSING and s1 != "n/a":
                level = WORSE
            elif s0 not in _PASSING and s0 != "n/a" and s1 in _PASSING:
                level = BETTER
            else:
                level = CHANGED
            out.append(Change(level, "check", cid, s0, s1))
    return sorted(out, key=lambda c: _RANK[c.level])


def _figure_changes(f0: dict[str, list[float]], f1: dict[str, list[float]], acs_worse: bool) -> list[Change]:
    """Figures that moved beyond the run-to-run spread; several of one kind (P2P unidirectional over
    12 pairs) as one line with the range, so a rig-wide slowdown reads as one change."""
    moved: dict[tuple[str, str], list[tuple[str, float, float, float, float]]] = {}
    for key in sorted(set(f0) & set(f1)):
        r0, r1 = f0[key], f1[key]
        best0, best1 = max(r0), max(r1)
        spread = max([SPREAD] + [(max(r) - min(r)) / max(r) for r in (r0, r1) if len(r) > 1])
        change = (best1 - best0) / best0
        if abs(change) <= spread:
            continue
        name, what = key.removesuffix(" GB/s").rsplit(" ", 1)
        level = WORSE if change < 0 else BETTER
        moved.setdefault((level, name), []).append((what, best0, best1, change, spread))
    out = []
    for (level, name), items in moved.items():
        spread = max(i[4] for i in items)
        lo, hi = min(i[3] for i in items), max(i[3] for i in items)
        pct = (
            f"{lo * 100:+.0f} %"
            if round(lo * 100) == round(hi * 100)
            else f"{lo * 100:+.0f} to {hi * 100:+.0f} %"
        )
        note = f"{pct}, beyond the {spread * 100:.0f} % run-to-run spread"
        if level == WORSE and acs_worse and name.startswith(("P2P", "NCCL")):
            note += "; follows from the ACS change above"
        if len(items) == 1:
            what, v0, v1 = items[0][:3]
            out.append(Change(level, "figure", f"{name} {what}", f"{v0:g} GB/s", f"{v1:g} GB/s", note))
        else:
            where = f"{name}, {len(items)} of them ({', '.join(i[0] for i in items[:4])}{', ...' if len(items) > 4 else ''})"
            b0, b1 = _span([i[1] for i in items]), _span([i[2] for i in items])
            out.append(Change(level, "figure", where, b0, b1, note))
    return out


def _span(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:g} GB/s" if lo == hi else f"{lo:g}-{hi:g} GB/s"


def run_diff(a_path: Path, b_path: Path) -> int:
    """Print the changes from ``a_path`` to ``b_path``; 1 when something got worse, else 0.
    An unreadable side raises ``RigcheckError``/``ValueError`` (the CLI prints one line, exit 2)."""
    try:
        a, b = read_side(a_path), read_side(b_path)
    except OSError as exc:
        raise RigcheckError(f"diff: {exc.filename or ''}: {exc.strerror or exc}") from None
    changes = compare(a, b)
    print(f"rigcheck diff: A = {a.label}")
    print(f"               B = {b.label}")
    compared = [
        name
        for name, x, y in (
            ("GPUs", a.gpus, b.gpus),
            ("links", a.links, b.links),
            ("ACS", a.acs, b.acs),
            ("power caps", a.caps, b.caps),
            ("IOMMU", a.iommu, b.iommu),
            ("P2P/NCCL figures", a.figures, b.figures),
            ("check statuses", a.checks, b.checks),
        )
        if x is not None and y is not None
    ]
    print(f"compared: {', '.join(compared) or 'nothing both sides record'}")
    for c in changes:
        print(c.line())
    worse = sum(c.level == WORSE for c in changes)
    print(
        f"{len(changes)} change{'s' if len(changes) != 1 else ''}, {worse} worse" if changes else "no changes"
    )
    return 1 if worse else 0


__all__ = ["BETTER", "CHANGED", "SPREAD", "WORSE", "Change", "Side", "compare", "read_side", "run_diff"]
