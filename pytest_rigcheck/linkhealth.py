"""Link health on every hop from a root port to a GPU: ASPM, AER error counters, link changes over a window.

Facts and their public sources:

- ASPM Control is Link Control (PCI Express capability + 0x10) bits 1:0: ``01`` L0s entry enabled,
  ``10`` L1 entry enabled, ``11`` both (PCI Express Base Specification 4.0+, 7.5.3.7 "Link Control
  Register"). A link that enters L0s/L1 takes microseconds to wake (L1 exit latency, LnkCap bits 17:15),
  which P2P and NCCL traffic between GPUs pay on every idle gap.
- The kernel's policy is the bracketed word of ``/sys/module/pcie_aspm/parameters/policy``
  (``[default] performance powersave powersupersave``; ``default`` keeps what the firmware set).
  ``pcie_aspm=off`` on the kernel command line leaves every link as the BIOS left it and stops the
  kernel enabling ASPM (Documentation/admin-guide/kernel-parameters.txt, "pcie_aspm=").
- The kernel counts AER errors per device in ``aer_dev_correctable``, ``aer_dev_nonfatal`` and
  ``aer_dev_fatal``: one ``NAME count`` line per error bit and a ``TOTAL_ERR_COR`` /
  ``TOTAL_ERR_NONFATAL`` / ``TOTAL_ERR_FATAL`` line (Documentation/ABI/testing/sysfs-bus-pci-devices-aer_stats).
  Correctable errors (bad TLPs/DLLPs, receiver errors, replay rollovers) are what a marginal riser or
  slot shows first; they grow under load.

Everything is read through the rig's ``Source``; the judging functions are pure over the readings.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigSpaceError, SourceError
from .pcie import (
    CAP_ID_PCIE,
    PortType,
    _find_cap,
    fmt_link,
    link_pair_problem,
    link_reading_problem,
    no_pcie_cap_why,
)
from .rig import Rig
from .targets import GpuTarget
from .tree import PciFunction
from .verdict import Verdict, failed, not_applicable, passed, physical, unreadable, warned

ASPM_POLICY = "sys/module/pcie_aspm/parameters/policy"
LINKHEALTH_JSON = "linkhealth.json"  # a snapshot's second reading, at the end of its window
MIN_WINDOW_S = 1.0  # a run between the two readings takes seconds at least
AER_FILES = {"correctable": "aer_dev_correctable", "nonfatal": "aer_dev_nonfatal", "fatal": "aer_dev_fatal"}
AER_TOTALS = {"correctable": "TOTAL_ERR_COR", "nonfatal": "TOTAL_ERR_NONFATAL", "fatal": "TOTAL_ERR_FATAL"}
LNKCTL = 0x10  # Link Control, offset in the PCI Express capability (PCIe Base Spec 7.5.3.7)
ASPM_L0S, ASPM_L1 = 0x1, 0x2

ASPM_FIX = [
    "boot with `pcie_aspm=off` (add it to GRUB_CMDLINE_LINUX in /etc/default/grub, `sudo update-grub`, reboot)",
    "or disable ASPM in the BIOS (PCIe 'ASPM Support' / 'Native ASPM' = Disabled) for the GPU slots",
]
RISER_FIX = (
    "reseat or replace the riser/cable on the link {link}; check the slot and its power; if errors still grow, "
    "force that slot one PCIe generation lower in the BIOS until the part is replaced"
)


# -- parsers (pure) -----------------------------------------------------------------------------------


def parse_aspm_policy(text: str) -> str:
    """The selected policy, the bracketed word: ``"[default] performance"`` -> ``"default"``.

    Raises ``ValueError`` when no single word is bracketed (not the kernel's format).
    """
    chosen = [w[1:-1] for w in text.split() if w.startswith("[") and w.endswith("]") and len(w) > 2]
    if len(chosen) != 1:
        raise ValueError(f"no single [selected] policy in {text.strip()!r}")
    return chosen[0]


def aspm_control(bdf: str, config: bytes) -> int | None:
    """ASPM Control bits (Link Control bits 1:0) from raw config space; ``None`` without a PCI Express
    capability in what was read (64-byte, header-only config). Raises ``ConfigSpaceError`` on a corrupt list."""
    if len(config) <= 64 or not config[0x06] & 0x10:
        return None
    pcie = _find_cap(bdf, config, CAP_ID_PCIE)
    if pcie is None or pcie + LNKCTL + 2 > len(config):
        return None
    return int.from_bytes(config[pcie + LNKCTL : pcie + LNKCTL + 2], "little") & 0x3


def aspm_text(bits: int) -> str:
    """``L0s L1`` / ``L1`` / ``L0s`` / ``disabled``, as lspci prints ``LnkCtl: ASPM ...``."""
    names = [n for b, n in ((ASPM_L0S, "L0s"), (ASPM_L1, "L1")) if bits & b]
    return " ".join(names) if names else "disabled"


def parse_aer(text: str, kind: str) -> int:
    """The total of one ``aer_dev_*`` file (``TOTAL_ERR_COR 3`` -> 3).

    Args:
        kind: ``correctable``, ``nonfatal`` or ``fatal`` (which TOTAL line to take).

    Raises ``ValueError`` when a line is not ``NAME count`` with a non-negative count, or the total is absent.
    """
    want = AER_TOTALS[kind]
    counts: dict[str, int] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise ValueError(f"line {line.strip()!r} is not 'NAME count'")
        if parts[0] in counts:
            raise ValueError(f"{parts[0]} appears twice ({counts[parts[0]]}, then {parts[1]})")
        counts[parts[0]] = int(parts[1])
    total = counts.pop(want, None)
    if total is None:
        raise ValueError(f"no {want} line")
    # each error adds 1 to the total and to the counter of every bit it sets (drivers/pci/pcie/aer.c
    # pci_dev_aer_stats_incr): no bit's counter can be above the total
    over = next(((name, n) for name, n in counts.items() if n > total), None)
    if over is not None:
        raise ValueError(f"{over[0]} {over[1]} is above {want} {total}: the counters contradict each other")
    return total


# -- readings --------------------------------------------------------------------------------------


@dataclass
class HopReading:
    """One function's AER totals and link at one moment. ``aer`` lacks a kind whose file is absent;
    ``errors`` says which files could not be read or parsed."""

    bdf: str
    aer: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    gen: int | None = None
    width: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"aer": dict(self.aer), "gen": self.gen, "width": self.width}

    @classmethod
    def from_json(cls, bdf: str, data: Any) -> HopReading:
        """From ``linkhealth.json``; raises ``ValueError`` on a shape or count that cannot be real."""
        if not isinstance(data, dict) or not isinstance(data.get("aer", {}), dict):
            raise ValueError(f"{bdf}: not an object with 'aer'")
        aer: dict[str, int] = {}
        for kind, n in data.get("aer", {}).items():
            if kind not in AER_FILES or isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ValueError(f"{bdf}: aer {kind!r} = {n!r} is not a count")
            aer[kind] = n
        gen, width = data.get("gen"), data.get("width")
        for name, v in (("gen", gen), ("width", width)):
            if (problem := link_reading_problem(name, v)) is not None:
                raise ValueError(f"{bdf}: {problem}")
        return cls(bdf, aer, [], gen, width)


def hops(rig: Rig, gpu_bdf: str) -> list[PciFunction]:
    """The functions on the way to a GPU: its root port, switch ports, the GPU itself (root first)."""
    return [*rig.pcie.ancestors(gpu_bdf), rig.pcie[gpu_bdf]]


def link_max(rig: Rig, bdf: str) -> tuple[int | None, int | None, tuple[str, str]]:
    """The most the link above ``bdf`` can train to, with where each figure came from: the lesser of its own
    sysfs ``max_link_speed``/``max_link_width`` and those of the port above it (a link trains at most to what
    both ends advertise in Link Capabilities, PCI Express Base Specification 7.5.3.6). (None, None, names)
    where sysfs has no link for it."""
    ends = [rig.pcie[b] for b in (bdf,) if b in rig.pcie]
    ends += [rig.pcie[p] for f in ends if (p := f.parent) is not None and p in rig.pcie]
    found: list[list[tuple[int, str]]] = [[], []]
    for fn in ends:
        sl = fn.sysfs_link
        if sl is None:
            continue
        for i, (v, attr) in enumerate(((sl.max_gen, "max_link_speed"), (sl.max_width, "max_link_width"))):
            if isinstance(v, int) and v > 0:
                found[i].append((v, f"{fn.bdf} {attr}"))
    picked = [
        min(f) if f else (None, f"{bdf} {a}")
        for f, a in zip(found, ("max_link_speed", "max_link_width"), strict=True)
    ]
    return picked[0][0], picked[1][0], (picked[0][1], picked[1][1])


def read_hop(fn: PciFunction) -> HopReading:
    """AER totals (from sysfs) and the current link (sysfs, config space) of one function, now."""
    r = HopReading(fn.bdf)
    for kind, name in AER_FILES.items():
        rel = f"{fn.base}/{name}"
        try:
            r.aer[kind] = parse_aer(fn.source.read_text(rel), kind)
        except KeyError:
            continue
        except (SourceError, ValueError) as exc:
            r.errors.append(f"{rel}: {exc}")
    missing = [name for kind, name in AER_FILES.items() if kind not in r.aer] if r.aer else []
    if missing and not r.errors:
        # the kernel creates the three files together, for a function with an AER capability
        # (drivers/pci/pcie/aer.c aer_stats_attrs): some without the others is an incomplete record
        r.errors.append(f"{fn.base}: {', '.join(missing)} missing beside the other AER counters")
    if fn.config_corrupt:
        # the counters sit beside a config record that contradicts itself (or the sysfs that shows this
        # function): the capture of this function is not to be trusted
        r.errors.append(f"{fn.base}/config: {fn.config_corrupt}")
    link = fn.sysfs_link
    if link is not None:
        r.gen, r.width = link.cur_gen, link.cur_width
    return r


def read_window_point(rig: Rig) -> dict[str, HopReading]:
    """Every hop to every GPU of the rig, read now (the start or the end of a window)."""
    out: dict[str, HopReading] = {}
    for gpu in rig.pcie.gpus:
        for fn in hops(rig, gpu.bdf):
            if fn.bdf not in out:
                out[fn.bdf] = read_hop(fn)
    return out


START_KEY = "linkhealth_start"  # rig.extras: the WindowStart taken when the session starts


@dataclass(frozen=True)
class WindowStart:
    """The window's first reading: ``time.monotonic()`` seconds when taken, and ``{bdf: HopReading}``."""

    t0: float
    hops: dict[str, HopReading]


def start_reading(rig: Rig) -> WindowStart:
    """The window's first reading, taken on the first call (live: at collection; a snapshot: its sysfs files)."""
    kept = rig.extras.get(START_KEY)
    if not isinstance(kept, WindowStart):
        kept = WindowStart(time.monotonic(), read_window_point(rig))
        rig.extras[START_KEY] = kept
    return kept


def end_reading(rig: Rig) -> tuple[float | None, dict[str, HopReading]] | str | Verdict:
    """The window's last reading: live, read now; a snapshot, its ``linkhealth.json``.

    Returns ``(window seconds, readings)``, a reason string when the snapshot holds a single reading,
    or an UNREADABLE verdict when its ``linkhealth.json`` is corrupt.
    """
    if rig.is_live:
        return time.monotonic() - start_reading(rig).t0, read_window_point(rig)
    try:
        data = rig.source.read_json(LINKHEALTH_JSON)
    except KeyError:
        return (
            f"snapshot {rig.name} holds one reading of the AER counters (no {LINKHEALTH_JSON}): "
            "growth over a window needs two"
        )
    except SourceError as exc:
        return unreadable(f"{rig.name}: {exc}", fix=["capture the rig again (sudo rigcheck capture DIR)"])
    try:
        if not isinstance(data, dict) or not isinstance(data.get("end"), dict):
            raise ValueError("no 'end' object")
        window = physical(data.get("window_s"), lo=MIN_WINDOW_S)
        if window is None:  # missing, NaN, 0 or a blink: no window over which "nothing grew" means anything
            raise ValueError(
                f"window_s = {data.get('window_s')!r} is not the seconds between the two readings "
                f"(at least {MIN_WINDOW_S:g})"
            )
        end = {bdf: HopReading.from_json(bdf, v) for bdf, v in data["end"].items()}
        for bdf, r in end.items():
            sl = rig.pcie[bdf].sysfs_link if bdf in rig.pcie else None
            if sl is None:
                continue
            names = (f"{bdf} max_link_speed", f"{bdf} max_link_width")
            # a hop's own maximum: which link a port's reading is of depends on its type, so not its partner's
            if (why := link_pair_problem(r.gen, r.width, sl.max_gen, sl.max_width, names)) is not None:
                raise ValueError(f"end[{bdf}]: {why}")
    except ValueError as exc:
        return unreadable(
            f"{rig.name}: {LINKHEALTH_JSON} is corrupt: {exc}",
            fix=["capture the rig again (sudo rigcheck capture DIR)"],
        )
    return (float(window) if window is not None else None), end


# -- checks ----------------------------------------------------------------------------------------


def _hop_name(rig: Rig, fn: PciFunction) -> str:
    return rig.pcie.gpu_label(fn) if fn.is_gpu else f"{fn.bdf} {fn.role}"


def _link_name(rig: Rig, fn: PciFunction, gpu: str | None = None) -> str:
    """The physical link a function's errors point at: ``0000:00:01.1 -> 0000:21:00.0``.

    A port's AER counts are its receivers' errors: a root or switch downstream port receives on the link
    below it, an endpoint or switch upstream port on the link above it.
    """
    below = fn.port_type in (PortType.ROOT_PORT, PortType.DOWNSTREAM)
    kids = [c for c in fn.children if c in rig.pcie]
    if gpu is not None and gpu in rig.pcie:
        on_path = {f.bdf for f in hops(rig, gpu)}
        kids = [c for c in kids if c in on_path] or kids
    if below and kids:
        return f"{fn.bdf} -> {kids[0]}"
    if fn.parent and fn.parent in rig.pcie:
        return f"{fn.parent} -> {fn.bdf}"
    return f"{fn.bdf} (on root bus {fn.host_bridge})"


def aspm(t: GpuTarget) -> Verdict:
    """ASPM L0s/L1 off on every hop to the GPU (Link Control bits 1:0); WARN with the fix where on."""
    rig = t.rig
    path = [rig.pcie.path_text(t.gpu.bdf)]
    policy_text = rig.source.read_optional(ASPM_POLICY)
    policy = None
    notes: list[str] = []
    if policy_text is not None:
        try:
            policy = parse_aspm_policy(policy_text)
        except ValueError as exc:
            notes.append(f"{ASPM_POLICY}: {exc}")
    else:
        notes.append(
            f"{ASPM_POLICY} absent: the kernel has no ASPM driver (CONFIG_PCIEASPM off) or pcie_aspm=off"
        )
    on: list[str] = []
    seen: dict[str, str] = {}
    for fn in hops(rig, t.gpu.bdf):
        if fn.config_corrupt:
            return unreadable(
                f"{t.label}: ASPM state of {fn.describe()} unknown: {fn.config_corrupt}",
                measured=fn.config_corrupt,
                path=path,
                fix=[rig.config_fix(fn)],
            )
        try:
            raw = rig.source.read_bytes(f"{fn.base}/config", 4096)
            bits = aspm_control(fn.bdf, raw)
        except (KeyError, SourceError, ConfigSpaceError) as exc:
            return unreadable(
                f"{t.label}: ASPM state of {fn.bdf} unknown: config space not readable ({exc})",
                path=path,
                fix=[rig.config_fix(fn)],
            )
        if bits is None:
            if len(raw) <= 64:
                why = f"config space read only to {len(raw)} bytes (the header): Link Control is past it"
            elif _find_cap(fn.bdf, raw, CAP_ID_PCIE) is None:
                why = f"no PCI Express capability (which holds Link Control) in its config space: {no_pcie_cap_why(fn.bdf, raw)}"
            else:
                why = f"Link Control is past the config space read ({len(raw)} bytes)"
            return unreadable(
                f"{t.label}: ASPM state of {fn.bdf} unknown: {why}",
                measured=why,
                path=path,
                fix=[rig.config_fix(fn)],
            )
        seen[fn.bdf] = aspm_text(bits)
        if bits:
            on.append(f"{_hop_name(rig, fn)}: ASPM {aspm_text(bits)} enabled")
    common: dict[str, Any] = dict(
        measured_value=dict(seen),
        expected_value="disabled",
        path=path,
        properties={"aspm_policy": policy or "", "aspm": dict(seen)},
    )
    pol = f"kernel policy [{policy}]" if policy else "kernel policy unknown"
    if on:
        return warned(
            f"{t.label}: ASPM enabled on the path ({'; '.join(on)}); {pol}",
            measured="; ".join(on),
            expected="ASPM disabled (LnkCtl ASPM Control = 00) on every hop to a GPU (PCIe Base Spec 7.5.3.7)",
            notes=[
                *notes,
                "L0s/L1 exit costs microseconds on every idle gap of P2P/NCCL traffic; "
                f"`sudo lspci -vvv -s {t.gpu.bdf} | grep LnkCtl` shows it",
            ],
            fix=list(ASPM_FIX),
            **common,
        )
    return passed(f"{t.label}: ASPM disabled on all {len(seen)} hop(s); {pol}", notes=notes, **common)


def aer_counters(t: GpuTarget) -> Verdict:
    """No fatal or non-fatal AER error on any hop since boot; correctable ones since boot are a WARN
    (their growth during the run is ``aer_growth``'s to judge)."""
    rig = t.rig
    path = [rig.pcie.path_text(t.gpu.bdf)]
    start = _start(rig)
    bad: list[str] = []
    soft: list[str] = []
    counted: dict[str, dict[str, int]] = {}
    chain = hops(rig, t.gpu.bdf)
    for fn in chain:
        r = start.get(fn.bdf) or read_hop(fn)
        if r.errors:
            return unreadable(
                f"{t.label}: AER counters of {fn.bdf} unreadable: {'; '.join(r.errors)}",
                path=path,
                fix=["run as root, or capture the rig again (sudo rigcheck capture DIR)"],
            )
        if not r.aer:
            continue
        counted[fn.bdf] = dict(r.aer)
        for kind in ("fatal", "nonfatal"):
            if r.aer.get(kind):
                bad.append(f"{_hop_name(rig, fn)}: {r.aer[kind]} {kind} ({_link_name(rig, fn, t.gpu.bdf)})")
        if r.aer.get("correctable"):
            soft.append(
                f"{_hop_name(rig, fn)}: {r.aer['correctable']} correctable ({_link_name(rig, fn, t.gpu.bdf)})"
            )
    if not counted:
        return not_applicable(
            f"{t.label}: the kernel keeps no AER counters for the {len(chain)} hop(s) to this GPU "
            "(no aer_dev_* files: kernel without CONFIG_PCIEAER, or AER handled by firmware); "
            "the GPU's own PCIe replay counter is judged under load"
        )
    where = ", ".join(f.bdf for f in chain if f.bdf not in counted)
    common: dict[str, Any] = dict(
        measured_value=counted,
        expected_value=0,
        path=path,
        notes=[f"no AER counters on {where}"] if where else [],
        properties={"aer": counted},
    )
    if bad:
        link = bad[0].rsplit("(", 1)[1].rstrip(")")
        return failed(
            f"{t.label}: uncorrectable PCIe errors on the path: {'; '.join(bad)}",
            measured="; ".join(bad),
            expected="0 fatal and 0 non-fatal AER errors since boot (sysfs aer_dev_fatal / aer_dev_nonfatal)",
            fix=[RISER_FIX.format(link=link), "`sudo dmesg | grep -i aer` shows each error with its device"],
            **common,
        )
    if soft:
        return warned(
            f"{t.label}: correctable PCIe errors since boot: {'; '.join(soft)}",
            measured="; ".join(soft),
            expected="0; growth during this run is judged by test_link_errors_not_growing",
            fix=["if they grow under load: " + RISER_FIX.format(link=soft[0].rsplit("(", 1)[1].rstrip(")"))],
            **common,
        )
    return passed(f"{t.label}: no AER errors on {len(counted)} hop(s) since boot", **common)


def _start(rig: Rig) -> dict[str, HopReading]:
    return start_reading(rig).hops


def aer_kept(rig: Rig, gpu_bdf: str) -> list[str]:
    """The hops to a GPU (``hops``) whose AER counters the kernel keeps, by the window's first reading: a
    function without an AER capability has no ``aer_dev_*`` files, so no counters a later reading must hold."""
    start = _start(rig)
    return [fn.bdf for fn in hops(rig, gpu_bdf) if (r := start.get(fn.bdf)) is not None and r.aer]


def aer_lost_text(label: str, lost: list[str], where: str) -> str:
    """The one wording for hops whose AER counters were read at the start and are missing from ``where``."""
    return (
        f"{label}: AER counters of {', '.join(lost)} were read at the start but {where} has none for them: "
        "cannot tell whether they grew"
    )


def aer_growth(t: GpuTarget) -> Verdict:
    """No AER counter on the path grows between the session's start and end, and no link narrows.

    Live: the first reading is taken when the session is collected, the last when this check runs (it
    runs after every other check, soak included). A snapshot: its sysfs files, then ``linkhealth.json``.
    Link speed changes are reported, not judged: GPUs lower their link speed at idle on purpose.
    """
    rig = t.rig
    path = [rig.pcie.path_text(t.gpu.bdf)]
    start = _start(rig)
    got = end_reading(rig)
    if isinstance(got, Verdict):
        return got
    if isinstance(got, str):
        return not_applicable(f"{t.label}: {got}")
    window, end = got
    win = f"{window:.0f} s" if window is not None else "the captured window"
    grew: list[str] = []
    narrowed: list[str] = []
    speed: list[str] = []
    counted = 0
    deltas: dict[str, dict[str, int]] = {}
    lost: list[str] = []  # hops with AER counters at the start and no end reading
    for fn in hops(rig, t.gpu.bdf):
        a, b = start.get(fn.bdf), end.get(fn.bdf)
        if a is not None and a.aer and (b is None or not any(k in b.aer for k in a.aer)):
            lost.append(fn.bdf)
            continue
        if a is None or b is None:
            continue
        if a.errors or b.errors:
            return unreadable(
                f"{t.label}: AER counters of {fn.bdf} unreadable: {'; '.join(a.errors + b.errors)}",
                path=path,
                fix=["run as root, or capture the rig again (sudo rigcheck capture DIR)"],
            )
        for kind in AER_FILES:
            if kind in a.aer and kind in b.aer:
                counted += 1
                d = b.aer[kind] - a.aer[kind]
                if d < 0:
                    # AER counters only rise (Documentation/PCI/pcieaer-howto.rst) until the device is reset
                    return unreadable(
                        f"{t.label}: {_hop_name(rig, fn)} {kind} went backwards {a.aer[kind]} -> {b.aer[kind]} "
                        f"({LINKHEALTH_JSON} end vs start): corrupt reading, or the device was reset",
                        path=path,
                        fix=["capture the rig again (sudo rigcheck capture DIR)"],
                    )
                deltas.setdefault(fn.bdf, {})[kind] = d
                if d > 0:
                    grew.append(f"{_hop_name(rig, fn)}: {kind} {a.aer[kind]} -> {b.aer[kind]} (+{d})")
        if a.width and b.width and b.width < a.width:
            narrowed.append(f"{_hop_name(rig, fn)}: width x{a.width} -> x{b.width}")
        if a.gen and b.gen and a.gen != b.gen:
            speed.append(f"{fn.bdf}: {fmt_link(a.gen, a.width)} -> {fmt_link(b.gen, b.width)}")
    if lost:
        # the counters exist (the start read them): the end reading is what is missing, not AER support
        return unreadable(
            aer_lost_text(t.label, lost, f"the end reading ({'live' if rig.is_live else LINKHEALTH_JSON})"),
            path=path,
            fix=[
                "run the checks again on the rig (pytest --rig), or capture it again (sudo rigcheck capture DIR)"
            ],
        )
    if not counted and not narrowed:
        return not_applicable(
            f"{t.label}: no AER counters on the path to this GPU to compare over {win} "
            "(kernel without CONFIG_PCIEAER, or AER handled by firmware)"
        )
    props: dict[str, object] = {"aer_growth": deltas, "window_s": window}
    notes = [f"link speed changed (idle power saving is normal): {'; '.join(speed)}"] if speed else []
    if grew or narrowed:
        first = next(f for f in hops(rig, t.gpu.bdf) if any(f.bdf in g for g in grew + narrowed))
        what = grew + narrowed
        return failed(
            f"{t.label}: link errors grew over {win}: {'; '.join(what)}",
            measured="; ".join(what),
            expected="no AER counter growth and no width change on any hop during the run "
            "(sysfs aer_dev_*, current_link_width)",
            measured_value=deltas,
            expected_value=0,
            unit="errors",
            path=path,
            notes=notes,
            fix=[RISER_FIX.format(link=_link_name(rig, first, t.gpu.bdf))],
            properties=props,
        )
    return passed(
        f"{t.label}: no AER counter grew over {win} ({counted} counters on the path)",
        measured_value=deltas,
        expected_value=0,
        unit="errors",
        path=path,
        notes=notes,
        properties=props,
    )


__all__ = [
    "ASPM_POLICY",
    "HopReading",
    "aer_counters",
    "aer_growth",
    "aspm",
    "aspm_control",
    "aspm_text",
    "parse_aer",
    "parse_aspm_policy",
    "read_window_point",
    "start_reading",
]
