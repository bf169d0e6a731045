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


@dataclass(frozen=True)
class Unread:
    """A reading the checks would not judge: corrupt, impossible, or missing (UNREADABLE there), and why.
    ``lost``: a GPU on the PCIe bus that NVML does not report (``gpu.state.NOT_IN_NVML``)."""

    why: str
    lost: bool = False


@dataclass
class Side:
    """The facts of one side, ``None`` where that side does not record them, ``Unread`` where it records
    them but the checks could not judge them (a missing or corrupt ``nvml.json``/``p2p.json``, or one
    reading of it)."""

    label: str
    gpus: dict[str, str] | None = None
    links: dict[str, tuple[int | None, int | None]] | None = None
    roles: dict[str, str] = field(default_factory=dict)
    acs: dict[str, int | str] | None = None  # BDF -> ACS Control value (snapshot) or "on"/"off" (report)
    nvml: dict[str, Unread | None] | Unread | None = None  # GPU BDF -> None where NVML sees it
    caps: dict[str, int | Unread] | None = None  # GPU BDF -> enforced power limit, mW
    iommu: str | None = None
    # "P2P unidirectional GPU0->GPU1 GB/s" -> readings; the unit ends the key (GB/s, or us: lower is better)
    figures: dict[str, list[float] | Unread] | Unread | None = None
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
    side.nvml, side.caps = _nvml(rig)
    side.figures = _figures(rig, {g.bdf: f"GPU{i}" for i, g in enumerate(tree.gpus)})
    return side


def _nvml(rig: Any) -> tuple[dict[str, Unread | None] | Unread, dict[str, int | Unread] | None]:
    """Per GPU of the PCIe tree: None where NVML sees it, else why not; and its power cap (the enforced
    limit, else the requested one, in mW), as the GPU suites read them: ``nvml.json`` through
    ``gpu.nvml.RecordedNvml`` (``GpuState.from_json`` marks impossible readings corrupt) joined to the
    PCIe bus by ``gpu.plugin.GpuSession.gpus`` (a GPU on the bus that NVML does not report is
    ``NOT_IN_NVML``; NVML and PCIe disagreeing is corrupt). A missing or corrupt ``nvml.json`` is
    ``Unread`` as a whole."""
    from .gpu.plugin import GpuSession
    from .gpu.state import F_POWER_ENFORCED, F_POWER_LIMIT, NOT_CAPTURED, NOT_IN_NVML, NOT_NVIDIA, Unavailable

    try:
        states = GpuSession(rig, 0.0).gpus()
    except RigcheckError as exc:
        return Unread(str(exc)), None
    seen: dict[str, Unread | None] = {}
    caps: dict[str, int | Unread] = {}
    for bdf, g in states.items():
        if isinstance(g, Unavailable):
            if g.code != NOT_NVIDIA:  # a BMC's display function: NVML has nothing to say of it
                seen[bdf] = Unread(g.reason, lost=g.code == NOT_IN_NVML)
            continue
        seen[bdf] = None
        cap = g.get(F_POWER_ENFORCED)
        if isinstance(cap, Unavailable) and cap.code == NOT_CAPTURED:
            cap = g.get(F_POWER_LIMIT)
        caps[bdf] = Unread(cap.reason) if isinstance(cap, Unavailable) else int(cap)
    return seen, caps


def _figures(rig: Any, label: dict[str, str]) -> dict[str, list[float] | Unread] | Unread | None:
    """Readings from the snapshot's ``p2p.json`` as the P2P suite reads them (``p2p.session.P2pSession``:
    ``figures.load`` marks each impossible figure ``Corrupt``, a GPU not on this rig makes the file
    unreadable), keyed ``"<figure> <where> <unit>"``: per pair unidir/bidir bandwidth and latency, per GPU
    host links, per NCCL group the all-reduce busbw. A bandwidth above what its path can carry
    (``p2p.checks.above_capacity``, as the checks judge it) is ``Unread`` like a ``Corrupt`` one. None
    where the snapshot has no ``p2p.json`` and needs none (the checks skip); ``Unread`` where it cannot be
    read or the manifest says it was recorded."""
    from .p2p.checks import above_capacity
    from .p2p.figures import Corrupt, readings
    from .p2p.session import P2pSession

    kind, data = P2pSession(rig, 0.0, None, None).outcome()
    if kind == "skip":
        return None
    if kind != "ok":
        return Unread(str(data))
    out: dict[str, list[float] | Unread] = {}

    def add(entry: dict[str, Any], fig: str, name: str, where: str, unit: str, path: Any = None) -> None:
        """``out["<name> <where> <unit>"]``: the readings of ``entry[fig]``, or ``Unread`` where the checks
        would not judge them: corrupt, above what the path can carry (``path`` = (bdfs, figure) of
        ``above_capacity``, for a bandwidth), or on a path whose links cannot be read (``SourceError``,
        UNREADABLE in the checks too)."""
        v, vals, key = entry.get(fig), readings(entry, fig), f"{name} {where} {unit}"
        if isinstance(v, Corrupt):
            out[key] = Unread(v.reason)
            return
        if not vals:
            return
        try:
            over = above_capacity(rig, where, path[0], data, path[1], name, vals) if path else None
        except SourceError as exc:
            out[key] = Unread(f"the path's capacity cannot be read: {exc}")
            return
        out[key] = Unread(f"{over.summary} ({over.expected})") if over is not None else vals

    for pair, entry in data["pairs"].items():
        a, b = pair.split("->", 1) if "->" in pair else (pair, "")
        where = f"{label.get(a, a)}->{label.get(b, b)}"
        add(entry, "unidir_gbps", "P2P unidirectional", where, "GB/s", ((a, b), "unidir"))
        add(entry, "bidir_gbps", "P2P bidirectional", where, "GB/s", ((a, b), "bidir"))
        add(entry, "latency_us", "P2P latency", where, "us")
    for bdf, entry in data["gpus"].items():
        add(entry, "h2d_gbps", "host->device", label.get(bdf, bdf), "GB/s", ((bdf, None), "h2d"))
        add(entry, "d2h_gbps", "device->host", label.get(bdf, bdf), "GB/s", ((bdf, None), "d2h"))
    for key, entry in data["nccl"]["groups"].items():
        add(
            entry,
            "busbw_gbps",
            "NCCL all-reduce busbw",
            "+".join(label.get(b, b) for b in key.split("+")),
            "GB/s",
        )
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
    if a.nvml is not None and b.nvml is not None:
        out += _nvml_changes(a, b)
    if a.caps is not None and b.caps is not None:
        labels = {k[-12:]: v for k, v in {**a.roles, **b.roles}.items()}
        for bdf in sorted(set(a.caps) & set(b.caps)):  # a GPU NVML lost has no cap: said above
            c0, c1 = a.caps[bdf], b.caps[bdf]
            where = f"{bdf} {labels.get(bdf[-12:], '')}".rstrip()
            if isinstance(c0, Unread) or isinstance(c1, Unread):
                out += _unread("power cap", where, c0, c1, lambda c: f"{c / 1000:g} W")
            elif c0 != c1:
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
    if isinstance(a.figures, Unread) or isinstance(b.figures, Unread):
        if a.figures is not None and b.figures is not None:
            out += _unread("P2P/NCCL figures", "p2p.json", a.figures, b.figures, lambda _: "recorded")
    elif a.figures is not None and b.figures is not None:
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


def _unread(what: str, where: str, v0: Any, v1: Any, shown: Any) -> list[Change]:
    """WORSE where side B's reading is ``Unread`` and side A's was not (the checks could judge it on A,
    not on B: UNREADABLE fails), BETTER the other way; nothing where both or neither are. ``shown(v)``
    gives a readable value as text."""
    if isinstance(v1, Unread) and not isinstance(v0, Unread):
        return [Change(WORSE, what, where, shown(v0), "unreadable", v1.why)]
    if isinstance(v0, Unread) and not isinstance(v1, Unread):
        return [Change(BETTER, what, where, "unreadable", shown(v1), "readable again")]
    return []


def _nvml_changes(a: Side, b: Side) -> list[Change]:
    """``nvml.json`` unreadable on one side (one line), or per GPU on both sides' PCIe bus: NVML no longer
    sees it (WORSE "NVML lost GPU": every NVML check of it is UNREADABLE, ``inventory.seen_by_nvml`` fails),
    its entry corrupt, or the other way (BETTER)."""
    if not isinstance(a.nvml, dict) or not isinstance(b.nvml, dict):  # one side's nvml.json unreadable
        return _unread("NVML state", "nvml.json", a.nvml, b.nvml, lambda _: "read")
    out = []
    for bdf in sorted(set(a.nvml) & set(b.nvml)):
        v0, v1 = a.nvml[bdf], b.nvml[bdf]
        where = f"{bdf} {b.roles.get(bdf) or a.roles.get(bdf, '')}".rstrip()
        if v1 is not None and v0 is None:
            what = "NVML lost GPU" if v1.lost else "NVML state"
            after = "not seen by NVML" if v1.lost else "unreadable"
            note = f"{v1.why}; its power cap and every NVML reading of it cannot be judged"
            out.append(Change(WORSE, what, where, "seen by NVML", after, note))
        elif v0 is not None and v1 is None:
            what = "NVML sees GPU again" if v0.lost else "NVML state"
            out.append(Change(BETTER, what, where, "not seen" if v0.lost else "unreadable", "seen by NVML"))
    return out


def _figure_changes(
    f0: dict[str, list[float] | Unread], f1: dict[str, list[float] | Unread], acs_worse: bool
) -> list[Change]:
    """Figures that moved beyond the run-to-run spread; several of one kind (P2P unidirectional over
    12 pairs) as one line with the range, so a rig-wide slowdown reads as one change. A bandwidth is
    better higher, a latency (``us``) lower. A figure side A recorded that side B lacks or holds corrupt
    (``Unread``: what the checks call UNREADABLE) is WORSE, one line each."""
    out: list[Change] = []
    moved: dict[tuple[str, str, str], list[tuple[str, float, float, float, float]]] = {}
    for key in sorted(f0):
        head, unit = key.rsplit(" ", 1)
        name, what = head.rsplit(" ", 1)
        r0, r1 = f0[key], f1.get(key, Unread("not recorded on side B: the checks of it are UNREADABLE"))
        if isinstance(r0, Unread) or isinstance(r1, Unread):
            out += _unread("figure", head, r0, r1, lambda r, u=unit: f"{_best(r, u):g} {u}")
            continue
        best0, best1 = _best(r0, unit), _best(r1, unit)
        spread = max([SPREAD] + [(max(r) - min(r)) / max(r) for r in (r0, r1) if len(r) > 1])
        change = (best1 - best0) / best0
        if abs(change) <= spread:
            continue
        level = WORSE if (change > 0 if unit == "us" else change < 0) else BETTER
        moved.setdefault((level, name, unit), []).append((what, best0, best1, change, spread))
    for (level, name, unit), items in moved.items():
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
            out.append(Change(level, "figure", f"{name} {what}", f"{v0:g} {unit}", f"{v1:g} {unit}", note))
        else:
            where = f"{name}, {len(items)} of them ({', '.join(i[0] for i in items[:4])}{', ...' if len(items) > 4 else ''})"
            b0, b1 = _span([i[1] for i in items], unit), _span([i[2] for i in items], unit)
            out.append(Change(level, "figure", where, b0, b1, note))
    return out


def _best(readings: list[float], unit: str) -> float:
    """The reading that decides, as the checks judge it (``thresholds.judge``: best of the retries): the
    highest bandwidth, the lowest latency."""
    return min(readings) if unit == "us" else max(readings)


def _span(values: list[float], unit: str) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:g} {unit}" if lo == hi else f"{lo:g}-{hi:g} {unit}"


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
            ("NVML", a.nvml, b.nvml),
            ("power caps", a.caps, b.caps),
            ("IOMMU", a.iommu, b.iommu),
            ("P2P/NCCL figures", a.figures, b.figures),
            ("check statuses", a.checks, b.checks),
        )
        if x is not None and y is not None and not (isinstance(x, Unread) and isinstance(y, Unread))
    ]
    print(f"compared: {', '.join(compared) or 'nothing both sides record'}")
    for c in changes:
        print(c.line())
    worse = sum(c.level == WORSE for c in changes)
    print(
        f"{len(changes)} change{'s' if len(changes) != 1 else ''}, {worse} worse" if changes else "no changes"
    )
    return 1 if worse else 0


__all__ = [
    "BETTER",
    "CHANGED",
    "SPREAD",
    "WORSE",
    "Change",
    "Side",
    "Unread",
    "compare",
    "read_side",
    "run_diff",
]
