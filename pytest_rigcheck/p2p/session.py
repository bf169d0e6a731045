"""Per-rig P2P/NCCL figures for the suites: read from the snapshot's ``p2p.json``, or measured live once.

Live, the measurement runs under the machine-wide lock; with pytest-xdist the first worker measures and
the others read its figures (``lock.py``). The outcome, figures or the reason there are none, is kept,
so every check of the rig sees the same figures and a missing dependency is reported once per check.
"""

from __future__ import annotations

import datetime
import importlib.util
import os
from typing import Any

from ..availability import (
    DRIVER_FIX,
    DRIVER_VERSION_FILE,
    TORCH_INSTALL,
    FeatureUnavailable,
    driver_loaded,
    record_missing,
)
from ..errors import RigcheckError, SnapshotError
from ..pcie import other_model as pcie_other_model
from ..rig import Rig
from . import thresholds as th
from .figures import P2P_JSON, check, load, readings
from .targets import groups

TORCH_EXTRA = TORCH_INSTALL
P2P_WHAT = "P2P/NCCL checks"
RECAPTURE_P2P = (
    f"capture again on the rig with `rigcheck capture DIR` after {TORCH_INSTALL}, with the NVIDIA driver "
    "loaded; or run `pytest --rig` there"
)


def torch_missing(python: str | None) -> str | None:
    """Why the workers cannot import torch, or None. Does not import torch here."""
    if python is None:
        return None if importlib.util.find_spec("torch") is not None else "PyTorch is not installed"
    from ..procgroup import run

    try:
        rc = run(
            [python, "-c", "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is None)"], 60
        )
    except OSError as exc:
        return f"cannot run the worker interpreter {python}: {exc.strerror}"
    if rc is None:
        return f"cannot run the worker interpreter {python}: no answer within 60 s"
    return None if rc == 0 else f"PyTorch is not installed for {python}"


def decide(rig: Rig, data: dict[str, Any]) -> tuple[dict[str, list[str]], list[str], list[list[str]]]:
    """Figures whose first reading misses its pass line: (pairs -> figures, GPUs, NCCL groups) to measure again."""
    pairs: dict[str, list[str]] = {}
    host: list[str] = []
    again: list[list[str]] = []
    for key, p in data.get("pairs", {}).items():
        a, _, b = key.partition("->")
        if a not in rig.pcie.functions or b not in rig.pcie.functions:
            continue
        for fig in ("unidir", "bidir"):
            vals, line = readings(p, f"{fig}_gbps"), th.p2p_threshold(rig, a, b, fig, data)
            if vals and line and line.classify(vals[0]) != th.PASS:
                pairs.setdefault(key, []).append(fig)
        ctl = readings(p, "control_latency_us")
        vals, lline = (
            readings(p, "latency_us"),
            th.latency_threshold(rig, ctl[0] if ctl else None, (a, b), data),
        )
        if vals and lline and lline.classify(vals[0]) != th.PASS:
            pairs.setdefault(key, []).append("latency")
    for bdf, g in data.get("gpus", {}).items():
        if bdf not in rig.pcie.functions:
            continue
        for fig in ("h2d", "d2h"):
            vals, line = readings(g, f"{fig}_gbps"), th.host_threshold(rig, bdf, fig, data)
            if vals and line and line.classify(vals[0]) != th.PASS and bdf not in host:
                host.append(bdf)
    for entry in data.get("nccl", {}).get("groups", {}).values():
        vals = readings(entry, "busbw_gbps")
        line = th.busbw_threshold(rig, entry["gpus"], data) if vals else None
        if vals and line and line.classify(vals[0]) != th.PASS:
            again.append(entry["gpus"])
    return pairs, host, again


def named_bdfs(data: dict[str, Any]) -> list[tuple[str, str]]:
    """Every GPU ``p2p.json`` names, with where: ``(bdf, 'pairs["A->B"]')`` for the keys of ``gpus``,
    ``pairs``, ``nccl.groups`` and ``nccl.ipc.pairs``, the ``gpus`` lists of groups and controls, and
    ``hidden``."""
    out: list[tuple[str, str]] = []

    def keys(block: Any, where: str, sep: str | None) -> None:
        for key in block if isinstance(block, dict) else ():
            if key != "export_errors":
                out.extend((b, f'{where}["{key}"]') for b in (key.split(sep) if sep else [key]))

    def members(entry: Any, where: str) -> None:
        gpus = entry.get("gpus") if isinstance(entry, dict) else None
        if isinstance(gpus, list):
            out.extend((b, f"{where}.gpus") for b in gpus if isinstance(b, str))

    nccl: dict[str, Any] = data["nccl"] if isinstance(data.get("nccl"), dict) else {}
    keys(data.get("gpus"), "gpus", None)
    keys(data.get("pairs"), "pairs", "->")
    keys(data.get("hidden"), "hidden", None)
    groups: dict[str, Any] = nccl["groups"] if isinstance(nccl.get("groups"), dict) else {}
    keys(groups, "nccl.groups", "+")
    for key, entry in groups.items():
        members(entry, f'nccl.groups["{key}"]')
        control = entry.get("control") if isinstance(entry, dict) else None
        members(control, f'nccl.groups["{key}"].control')
    members(nccl.get("control"), "nccl.control")
    ipc = nccl.get("ipc")
    keys(ipc.get("pairs") if isinstance(ipc, dict) else None, "nccl.ipc.pairs", "->")
    return out


def bad_pair_key(data: dict[str, Any], where: str) -> str | None:
    """Why a pair key of ``pairs`` or ``nccl.ipc.pairs`` cannot be a measured pair, or None: a pair is two
    different GPUs, ``"SRC->DST"``; one from a GPU to itself (``"X->X"``) or with another count of ends
    is no measurement any run writes (``measure`` pairs ``permutations(gpus, 2)``): the file is corrupt."""
    nccl = data.get("nccl")
    ipc = nccl.get("ipc") if isinstance(nccl, dict) else None
    for block, name in (
        (data.get("pairs"), "pairs"),
        (ipc.get("pairs") if isinstance(ipc, dict) else None, "nccl.ipc.pairs"),
    ):
        for key in block if isinstance(block, dict) else ():
            if key == "export_errors":
                continue
            ends = key.split("->")
            if len(ends) != 2 or ends[0] == ends[1]:
                why = "a GPU paired with itself" if len(set(ends)) == 1 else "not two GPUs joined by '->'"
                return (
                    f'{where} {name}["{key}"] is {why}: a pair is two different GPUs (SRC->DST); corrupt, so no '
                    "P2P/NCCL figure of it is judged"
                )
    return None


def foreign_gpu(rig: Rig, data: dict[str, Any], where: str) -> str | None:
    """Why ``data`` cannot be this rig's figures: the first GPU it names that is not a GPU on the rig's
    PCIe bus (figures from another machine, or corrupt), or None."""
    ours = {g.bdf for g in rig.pcie.gpus}
    for bdf, at in named_bdfs(data):
        if bdf not in ours:
            on_bus = "is not a GPU" if bdf in rig.pcie.functions else "is not on this rig's PCIe bus"
            return (
                f"{where} names {bdf} ({at}), which {on_bus} (GPUs here: {', '.join(sorted(ours)) or 'none'}): "
                f"figures from another machine, or corrupt; no P2P/NCCL figure of it is judged"
            )
    return other_model(rig, data, where)


def other_model(rig: Rig, data: dict[str, Any], where: str) -> str | None:
    """Why ``data`` cannot be this rig's figures: a GPU whose recorded ``name`` is another model than the one
    its PCI vendor/device id says it is here (``pcie.other_model``: judged only where both are known and
    clearly differ), or None."""
    gpus = data.get("gpus")
    for bdf, entry in gpus.items() if isinstance(gpus, dict) else ():
        name = entry.get("name") if isinstance(entry, dict) else None
        fn = rig.pcie.functions.get(bdf)
        other = (
            pcie_other_model(fn.vendor, fn.device, name) if fn is not None and isinstance(name, str) else None
        )
        if other and fn is not None:
            return (
                f'{where} gpus["{bdf}"].name is {name!r} ({other}), but {bdf} here is '
                f"{fn.name} (PCI id {fn.ids}, sysfs): figures from another machine, or corrupt; no P2P/NCCL "
                "figure of it is judged"
            )
    return None


def recorded_figures(rig: Rig) -> dict[str, Any] | None:
    """The rig's P2P/NCCL figures if they have been obtained in this run (for diagnoses), else None."""
    from .plugin import EXTRAS_KEY

    s = rig.extras.get(EXTRAS_KEY)
    outcome = s._outcome if isinstance(s, P2pSession) else None
    return outcome[1] if outcome and outcome[0] == "ok" and isinstance(outcome[1], dict) else None


class P2pSession:
    """One rig's P2P and NCCL figures, obtained on first use.

    Args:
        rig: the rig.
        timeout_s: limit for each phase of a live measurement (set-up, then measuring).
        python: interpreter for the workers (default: this one).
        testrunuid: pytest-xdist's id of the run, so workers share one measurement.
    """

    def __init__(self, rig: Rig, timeout_s: float, python: str | None, testrunuid: str | None) -> None:
        self.rig = rig
        self.timeout_s = timeout_s
        self.python = python
        self.testrunuid = testrunuid
        self._outcome: tuple[str, Any] | None = None
        self.busy_data: dict[str, Any] | None = None  # p2p.json of a busy rig: its record, no figures
        self.progress: Any = None  # the run's status line (progress.StatusLine), set by p2p_session

    def outcome(self) -> tuple[str, Any]:
        """``("ok", figures)``, ``("skip", reason)`` or ``("error", RigcheckError)``, computed once."""
        if self._outcome is None:
            try:
                self._outcome = self._obtain()
            except RigcheckError as exc:
                self._outcome = ("error", exc)
        return self._outcome

    def figures(self) -> dict[str, Any]:
        """The figures; raises ``FeatureUnavailable`` (no torch, no driver) or ``RigcheckError`` (corrupt
        ``p2p.json``), which ``availability.provide`` settles; ``Skipped`` where a snapshot has none."""
        import pytest

        kind, value = self.outcome()
        if kind == "error":
            raise value
        if kind == "skip":
            pytest.skip(value)
        return value  # type: ignore[no-any-return]

    def _obtain(self) -> tuple[str, Any]:
        rig = self.rig
        if not rig.is_live:
            try:
                where = f"snapshot {rig.name}"
                return self._busy_or_ok(load(rig.source, where), f"{where} {P2P_JSON}")
            except KeyError:
                why = record_missing(rig, "p2p")
                if why:  # the checks apply and there are no figures: UNREADABLE, never a green skip
                    raise SnapshotError(
                        f"{rig.name}: no P2P/NCCL figures: {why}; fix: {RECAPTURE_P2P}"
                    ) from None
                return (
                    "skip",
                    f"{rig.name}: this snapshot has no {P2P_JSON}; P2P and NCCL figures are measured on the "
                    "rig itself (pytest --rig) or recorded by `rigcheck capture` there",
                )
            # A refused (linked out, not a regular file), corrupt or malformed p2p.json raises SnapshotError:
            # outcome() keeps it, and availability.provide fails each check as UNREADABLE.
        missing = torch_missing(self.python)
        if not driver_loaded(rig):
            raise FeatureUnavailable(
                P2P_WHAT,
                f"NVIDIA driver not loaded (/{DRIVER_VERSION_FILE} missing)"
                + (f"; {missing}" if missing else ""),
                DRIVER_FIX + (f"; and {TORCH_INSTALL}" if missing else ""),
            )
        if missing:
            raise FeatureUnavailable(
                P2P_WHAT,
                f"{missing}",
                f"{TORCH_INSTALL}, or point --rig-p2p-python at an interpreter that has it",
            )
        from .lock import MeasureLockError

        try:
            figures = self._measure()
        except (MeasureLockError, TimeoutError) as exc:  # the lock: unsafe, or held by another run too long
            raise RigcheckError(f"no measurement taken: {exc}") from None
        where = f"figures {P2P_JSON} measured live on {rig.name}"
        return self._busy_or_ok(check(figures, where), where)

    def _busy_or_ok(self, data: dict[str, Any], where: str) -> tuple[str, Any]:
        """``("ok", data)``; raises ``RigcheckError`` (every P2P/NCCL check UNREADABLE) when ``data`` names a
        GPU this rig does not have (``foreign_gpu``: ``where`` names the file), or records a busy rig,
        keeping it in ``busy_data`` for capture."""
        from .busy import busy_text, recorded

        foreign = bad_pair_key(data, where) or foreign_gpu(self.rig, data, where)
        if foreign:
            raise SnapshotError(foreign)

        lines = recorded(data)
        if lines:
            self.busy_data = data
            raise RigcheckError(busy_text(lines, "P2P and NCCL figures"))
        return ("ok", data)

    def _measure(self) -> dict[str, Any]:
        from ..runenv.state import hidden_gpus
        from . import measure
        from .lock import measure_lock, read_shared, shared_result_path, write_shared

        # GPUs a CUDA process here cannot see (CUDA_VISIBLE_DEVICES, the container's device list) are left
        # out of the run and recorded, so their checks say why instead of a worker dying on a missing GPU.
        hidden = hidden_gpus(self.rig)
        gpus = [g.bdf for g in self.rig.pcie.gpus if g.bdf not in hidden]
        nccl_groups = [g.bdfs for g in groups(self.rig) if not g.problem and not set(g.bdfs) & set(hidden)]
        shared = shared_result_path(self.testrunuid, self.rig.name)
        with measure_lock():
            data = read_shared(shared)
            if data is None:
                from .busy import live_record, nothing_measured
                from .joint import deliver, load_phase

                busy = live_record(self.rig, gpus)  # before any worker starts
                if busy.get("lines"):
                    data = nothing_measured(busy)  # a busy rig: its record, and no figures
                else:
                    kw = {"progress": self.progress} if self.progress is not None else {}
                    phase = load_phase(self.rig)
                    data = measure.measure(
                        gpus,
                        nccl_groups,
                        lambda d: decide(self.rig, d),
                        self.timeout_s,
                        self.python,
                        load=phase,
                        **kw,
                    )
                    data["busy"] = busy
                    deliver(self.rig, phase)
                if self.progress is not None:
                    self.progress.close()
                data["hidden"] = hidden
                when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
                data["origin"] = f"measured live on {self.rig.name} ({when}, pid {os.getpid()})"
                write_shared(shared, data)
        return data
