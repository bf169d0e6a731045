"""Run the P2P and NCCL workers for a rig and assemble what they found in the ``p2p.json`` format.

One measurement starts every worker at once (the P2P worker, one NCCL process per GPU, and the
``NCCL_P2P_DISABLE=1`` control's processes) and lets them measure one phase at a time: P2P, NCCL,
control. A figure whose first reading misses its pass line is measured once more (a second launch for
just those pairs or groups) and the reading is appended: the verdict uses every reading, live and replayed.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..gpu.holders import gpu_holders
from ..procgroup import free_port
from ..progress import Progress, no_progress
from ..runenv.state import selected_env
from .figures import DEFINITIONS, FORMAT, group_key, pair_key
from .launch import Launcher, PhaseOutcome, Worker, python_cmd, worker_env

if TYPE_CHECKING:
    from .joint import LoadPhase

DEFAULT_SIZES = [8 * 4**k for k in range(14)]  # 8 B .. 512 MiB, x4: nccl-tests -b 8 -e 512M -f 4
JUDGED_BYTES = 536870912
SETTINGS = {"elems": 40_000_000, "repeat": 5, "trials": 3, "lat_repeat": 100, "lat_elems": 4}
NCCL_SETTINGS = {"warmup": 5, "iters": 20}
_VIA = re.compile(r"NCCL INFO .*?Channel \d+(?:/\d+)? : \d+\[\w+\] -> \d+\[\w+\] (?:\[\w+\] )?via (\S+)")
_VERSION = re.compile(r"NCCL version (\S+)")


def parse_transports(lines: list[str]) -> dict[str, int]:
    """Count NCCL's channel connections by transport (``P2P/CUMEM``, ``SHM/direct/direct``, ``NET/Socket/0``).

    Example:
        >>> parse_transports(["x NCCL INFO Channel 00/0 : 0[0] -> 1[1] via P2P/CUMEM/read"])
        {'P2P/CUMEM/read': 1}
    """
    out: dict[str, int] = {}
    for line in lines:
        m = _VIA.search(line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0) + 1
    return out


def transport_kinds(transports: dict[str, int]) -> set[str]:
    """``{"P2P", "SHM"}`` from ``parse_transports``' keys."""
    return {k.split("/", 1)[0] for k in transports}


def parse_nccl_version(lines: list[str]) -> str | None:
    for line in lines:
        m = _VERSION.search(line)
        if m:
            return m.group(1)
    return None


def _nccl_workers(
    phase: str,
    ranks: list[str],
    groups: list[list[int]],
    sizes: list[int],
    ipc: bool,
    run_dir: Path,
    timeout_s: float,
    python: str | None,
    env_extra: dict[str, str],
) -> list[Worker]:
    plan = {
        "ranks": ranks,
        "groups": groups,
        "sizes": sizes,
        "ipc": ipc,
        "timeout_s": timeout_s,
        **NCCL_SETTINGS,
    }
    plan_path = run_dir / f"plan.{phase}.json"
    plan_path.write_text(json.dumps(plan))
    port = free_port()
    out = []
    for r in range(len(ranks)):
        env = worker_env(
            {
                "RANK": str(r),
                "WORLD_SIZE": str(len(ranks)),
                "LOCAL_RANK": str(r),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                **env_extra,
            }
        )
        name = f"{phase}.{r}"
        argv = [
            *python_cmd(python, "nccl_worker.py"),
            "--plan",
            str(plan_path),
            "--run-dir",
            str(run_dir),
            "--name",
            name,
            "--phase",
            phase,
        ]
        out.append(Worker(name, phase, argv, env))
    return out


def _p2p_worker(plan: dict[str, Any], run_dir: Path, python: str | None) -> Worker:
    path = run_dir / "plan.p2p.json"
    path.write_text(json.dumps({**SETTINGS, **plan}))
    argv = [
        *python_cmd(python, "p2p_worker.py"),
        "--plan",
        str(path),
        "--run-dir",
        str(run_dir),
        "--name",
        "p2p",
    ]
    return Worker("p2p", "p2p", argv, worker_env({}))


def _phase_label(
    phase: str, n_gpus: int, pairs: list[tuple[str, str]] | None, groups: list[list[str]]
) -> str:
    """What the status line says a phase is doing."""
    if phase == "p2p":
        n = len(pairs) if pairs is not None else n_gpus * (n_gpus - 1)
        return f"P2P copies, {n} GPU pair{'s' if n != 1 else ''} and host links"
    what = "NCCL all-reduce sweep" if phase == "nccl" else "NCCL control run (P2P off)"
    return f"{what}, {len(groups)} group{'s' if len(groups) != 1 else ''}"


def _run_info(o: PhaseOutcome) -> dict[str, Any]:
    info: dict[str, Any] = {"wall_s": round(o.wall_s, 3), **o.stages}
    # each worker's own clock: torch import, set-up (import, CUDA, NCCL) and measuring, in seconds
    workers = {
        name: {k: r[k] for k in ("import_s", "setup_s", "measure_s") if isinstance(r.get(k), int | float)}
        for name, r in o.results.items()
    }
    if any(workers.values()):
        info["workers"] = workers
    if o.hung:
        info["hung"] = o.hung
    if o.crashed:
        info["crashed"] = o.crashed
    return info


def run(
    gpus: list[str],
    *,
    pairs: list[tuple[str, str]] | None = None,
    host: bool = True,
    modes: list[str] | None = None,
    groups: list[list[str]] | None = None,
    sizes: list[int] | None = None,
    control: bool = True,
    ipc: bool = True,
    p2p: bool = True,
    timeout_s: float = 120.0,
    python: str | None = None,
    keep_dir: Path | None = None,
    log_file: Path | None = None,
    progress: Progress = no_progress,
    load: LoadPhase | None = None,
) -> dict[str, Any]:
    """Measure and return a ``p2p.json`` dict (without origin). ``groups`` default: all ``gpus`` as one.

    ``progress`` (``progress.Progress``) is told which phase runs, for how long, and its deadline.
    ``load``: the GPU load run first, its worker started with the others (``joint.LoadPhase``; its
    readings are left on it, not in the dict).
    """
    t0 = time.monotonic()
    groups = groups if groups is not None else ([gpus] if len(gpus) > 1 else [])
    sizes = sizes or DEFAULT_SIZES
    ranks = sorted({b for g in groups for b in g}, key=gpus.index)
    with tempfile.TemporaryDirectory(prefix="rigcheck-p2p-", dir=keep_dir) as tmp:
        run_dir = Path(tmp)
        workers: list[Worker] = [load.worker(run_dir, python)] if load is not None else []
        if p2p:
            workers.append(
                _p2p_worker(
                    {
                        "pairs": [list(p) for p in pairs] if pairs is not None else None,
                        "gpus": gpus if host else [],
                        "modes": modes,
                    },
                    run_dir,
                    python,
                )
            )
        if groups:
            idx = [[ranks.index(b) for b in g] for g in groups]
            workers += _nccl_workers("nccl", ranks, idx, sizes, ipc, run_dir, timeout_s, python, {})
            if control:
                workers += _nccl_workers(
                    "control",
                    ranks,
                    idx,
                    [JUDGED_BYTES],
                    False,
                    run_dir,
                    timeout_s,
                    python,
                    {"NCCL_P2P_DISABLE": "1"},
                )
        outcomes: dict[str, PhaseOutcome] = {}
        with Launcher(run_dir, timeout_s, gpu_released=gpu_holders, progress=progress) as launcher:
            launcher.start(workers)
            if load is not None:
                outcomes["load"] = load.run(launcher)
            for phase in ("p2p", "nccl", "control"):
                if any(w.phase == phase for w in workers):
                    outcomes[phase] = launcher.run_phase(
                        phase, label=_phase_label(phase, len(gpus), pairs, groups)
                    )
        logs = {
            w.name: (
                w.log_path.read_text("utf-8", "replace").splitlines()
                if w.log_path and w.log_path.is_file()
                else []
            )
            for w in workers
        }
    if log_file is not None:
        with open(log_file, "a", encoding="utf-8") as f:
            for name, lines in logs.items():
                f.write("".join(f"[{name}] {line}\n" for line in lines))
    data: dict[str, Any] = {
        "format": FORMAT,
        "definitions": DEFINITIONS,
        "gpus": {},
        "pairs": {},
        "nccl": {"groups": {}},
        "runs": {k: _run_info(o) for k, o in outcomes.items()},
        "env": selected_env(os.environ),  # the NCCL/CUDA variables the workers ran with
    }
    if "p2p" in outcomes:
        _fold_p2p(data, outcomes["p2p"])
    if "nccl" in outcomes:
        _fold_nccl(data, outcomes["nccl"], groups, ranks, logs, ipc)
    if "control" in outcomes:
        _fold_control(data, outcomes["control"], groups, ranks, logs)
    data["runs"]["total_wall_s"] = round(time.monotonic() - t0, 3)
    return data


def _fold_p2p(data: dict[str, Any], o: PhaseOutcome) -> None:
    r = o.results.get("p2p")
    if r is None:
        return
    data["software"] = {k: r.get(k) for k in ("torch", "cuda", "cudart")}
    data["settings"] = r.get("settings", {})
    data["runs"]["p2p"].update(
        setup_s=r.get("setup_s"),
        measure_s=r.get("measure_s"),
        notes=r.get("notes", []),
        nvml_error=r.get("nvml_error"),
    )
    for bdf, d in r.get("devices", {}).items():
        g = data["gpus"].setdefault(bdf, {})
        g.update({k: v for k, v in d.items() if k not in ("h2d_gbps", "d2h_gbps")})
        for fig in ("h2d_gbps", "d2h_gbps"):
            if fig in d:
                g[fig] = [d[fig]]
    for key, p in r.get("pairs", {}).items():
        out = {k: v for k, v in p.items() if not k.endswith("_gbps") and k != "latency_us"}
        for fig in ("unidir_gbps", "bidir_gbps", "latency_us"):
            if fig in p:
                out[fig] = [p[fig]]
        for fig in ("control_unidir_gbps", "control_latency_us"):
            if fig in p:
                out[fig] = p[fig]
        data["pairs"][key] = out


def _judged(sweep: list[dict[str, Any]]) -> dict[str, Any] | None:
    sized = [s for s in sweep if s["bytes"] <= JUDGED_BYTES]
    return max(sized, key=lambda s: s["bytes"]) if sized else None


def _sweeps_of(o: PhaseOutcome, ranks: list[str], group: list[str]) -> list[list[dict[str, Any]]]:
    """Every rank's sweep for ``group`` (its members given as BDFs), in rank order."""
    return [
        grp["sweep"]
        for res in o.results.values()
        for grp in res.get("groups", [])
        if [ranks[i] for i in grp["members"]] == group
    ]


def _fold_nccl(
    data: dict[str, Any],
    o: PhaseOutcome,
    groups: list[list[str]],
    ranks: list[str],
    logs: dict[str, list[str]],
    ipc: bool,
) -> None:
    lines = [x for name, ls in logs.items() if name.startswith("nccl.") for x in ls]
    transports = parse_transports(lines)
    version = parse_nccl_version(lines)
    for g in groups:
        key = group_key(g)
        entry: dict[str, Any] = {"gpus": g, "transports": transports, "nccl": version}
        if not o.ok:
            entry.update({"hung": o.hung} if o.hung else {"crashed": o.crashed})
        else:
            per_rank = list(o.results.values())
            sweeps = _sweeps_of(o, ranks, g)
            if sweeps:
                sweep = sweeps[0]
                wrong = [sum(s["wrong"] for s in sw) for sw in sweeps]
                nan = [sum(s["nan"] for s in sw) for sw in sweeps]
                j = _judged(sweep)
                entry.update(
                    {
                        "sweep": sweep,
                        "wrong": sum(wrong),
                        "nan": sum(nan),
                        "checked_ranks": len(sweeps),
                        "judged_bytes": j["bytes"] if j else None,
                        "busbw_gbps": [j["busbw_gbps"]] if j else [],
                    }
                )
                entry["nccl"] = version or (per_rank[0].get("nccl") if per_rank else None)
        data["nccl"]["groups"][key] = entry
    if ipc:
        if not o.ok:
            data["nccl"]["ipc"] = {"error": "the NCCL run that carries the IPC check did not finish"}
        else:
            pairs: dict[str, Any] = {}
            for res in o.results.values():
                for k, v in (res.get("ipc") or {}).items():
                    if k == "export_error":
                        pairs.setdefault("export_errors", []).append(f"{res['bdf']}: {v}")
                    else:
                        pairs[k] = v
            data["nccl"]["ipc"] = {"pairs": pairs}


def _fold_control(
    data: dict[str, Any],
    o: PhaseOutcome,
    groups: list[list[str]],
    ranks: list[str],
    logs: dict[str, list[str]],
) -> None:
    """The NCCL_P2P_DISABLE=1 run, per group under ``["nccl"]["groups"][key]["control"]``; the
    all-GPU group's is also ``["nccl"]["control"]`` (the form of the first p2p.json files)."""
    lines = [x for name, ls in logs.items() if name.startswith("control.") for x in ls]
    transports = parse_transports(lines)
    for g in groups:
        entry: dict[str, Any] = {"gpus": g, "env": {"NCCL_P2P_DISABLE": "1"}, "transports": transports}
        if not o.ok:
            entry.update({"hung": o.hung} if o.hung else {"crashed": o.crashed})
        else:
            j = _judged(next(iter(_sweeps_of(o, ranks, g)), []))
            entry.update(
                {
                    "judged_bytes": j["bytes"] if j else None,
                    "busbw_gbps": j["busbw_gbps"] if j else None,
                    "wrong": j["wrong"] if j else None,
                }
            )
        data["nccl"]["groups"].setdefault(group_key(g), {"gpus": g})["control"] = entry
        if len(g) == len(ranks):
            data["nccl"]["control"] = entry


def retry(
    data: dict[str, Any],
    gpus: list[str],
    failing_pairs: dict[str, list[str]],
    failing_host: list[str],
    failing_groups: list[list[str]],
    timeout_s: float,
    python: str | None,
    progress: Progress = no_progress,
) -> None:
    """Measure again what missed its pass line and append the readings (``data`` is changed in place)."""
    pairs = [(src, dst) for src, dst in (k.split("->") for k in failing_pairs)]
    modes = sorted({m for ms in failing_pairs.values() for m in ms})
    if not pairs and not failing_host and not failing_groups:
        return
    again = run(
        gpus,
        pairs=pairs,
        host=bool(failing_host),
        modes=modes or ["unidir"],
        groups=failing_groups,
        sizes=[JUDGED_BYTES],
        control=False,
        ipc=False,
        p2p=bool(pairs or failing_host),
        timeout_s=timeout_s,
        python=python,
        progress=lambda what, el, dl: progress(f"retry: {what}", el, dl),
    )
    for key, p in again["pairs"].items():
        for fig in ("unidir_gbps", "bidir_gbps", "latency_us"):
            if fig in p and key in data["pairs"]:
                data["pairs"][key].setdefault(fig, []).extend(p[fig])
    for bdf in failing_host:
        for fig in ("h2d_gbps", "d2h_gbps"):
            got = again["gpus"].get(bdf, {}).get(fig)
            if got:
                data["gpus"].setdefault(bdf, {}).setdefault(fig, []).extend(got)
    for key, g in again["nccl"]["groups"].items():
        if key in data["nccl"]["groups"] and g.get("busbw_gbps"):
            data["nccl"]["groups"][key].setdefault("busbw_gbps", []).extend(g["busbw_gbps"])
    data["runs"]["retry"] = again["runs"]


def measure(
    gpus: list[str],
    groups: list[list[str]],
    decide: Callable[[dict[str, Any]], tuple[dict[str, list[str]], list[str], list[list[str]]]],
    timeout_s: float,
    python: str | None,
    progress: Progress = no_progress,
    load: LoadPhase | None = None,
) -> dict[str, Any]:
    """Everything once (the GPU load first, when ``load`` is given), then a retry of what ``decide`` names
    (figures that missed their pass line)."""
    data = run(gpus, groups=groups, timeout_s=timeout_s, python=python, progress=progress, load=load)
    failing_pairs, failing_host, failing_groups = decide(data)
    retry(data, gpus, failing_pairs, failing_host, failing_groups, timeout_s, python, progress)
    return data


__all__ = ["DEFAULT_SIZES", "JUDGED_BYTES", "measure", "pair_key", "parse_transports", "retry", "run"]
