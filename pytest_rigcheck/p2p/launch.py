"""Start worker processes, hand them their turn, and kill them all on a hang.

Every worker runs in its own process group (``start_new_session``), so a hung rank and anything it
started die together (``killpg``). All workers of a measurement start at once, so their imports and
CUDA/NCCL set-up overlap; the measuring itself runs one phase at a time (``go.<phase>`` files), so no
two measurements share the GPUs. A phase that does not finish within its timeout is a hang: its
workers are killed, reaped and checked gone, and the outcome carries the tail of their logs
(``NCCL_DEBUG=INFO``). Starting, stopping and reaping go through ``procgroup``. Stdlib only.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..procgroup import GpuReleased, Group, log_tail, start_group, stop_groups
from ..progress import Progress, no_progress

WORKERS = Path(__file__).resolve().parent / "workers"


@dataclass
class Worker:
    """One worker process of a phase."""

    name: str
    phase: str
    argv: list[str]
    env: dict[str, str]
    group: Group | None = None
    log_path: Path | None = None

    @property
    def pid(self) -> int | None:
        """The worker's pid (also its process group id), once started."""
        return self.group.pid if self.group else None


@dataclass
class PhaseOutcome:
    """What one phase gave: each worker's result, or why there is none.

    ``hung``: the phase ran past its timeout (``stage`` set-up or measure); ``crashed``: a worker exited
    with an error before writing its result. Either way every worker of the phase was killed and
    ``left`` lists any process still alive afterwards (it should be empty).
    """

    phase: str
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    hung: dict[str, Any] | None = None
    crashed: dict[str, Any] | None = None
    wall_s: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)  # seconds: set-up wait, measuring, exit wait

    @property
    def ok(self) -> bool:
        return self.hung is None and self.crashed is None


class Launcher:
    """Workers of one measurement, in ``run_dir``; use as a context manager so nothing outlives it.

    Args:
        run_dir: private directory for plans, handshake files, results and logs.
        timeout_s: limit for each phase's set-up and, separately, for its measuring.
        gpu_released: asked after a hang or crash with every pid of the killed workers (see
            ``procgroup.GpuReleased``; the caller passes ``gpu.holders.gpu_holders``). None: not asked.
        grace_s: SIGTERM to SIGKILL, when workers are stopped.
        progress: told while each phase runs (``progress.Progress``: what, seconds since the phase began,
            its deadline); default: nothing.
    """

    def __init__(
        self,
        run_dir: Path,
        timeout_s: float,
        gpu_released: GpuReleased | None = None,
        grace_s: float = 1.0,
        progress: Progress = no_progress,
    ) -> None:
        self.run_dir = run_dir
        self.timeout_s = timeout_s
        self.gpu_released = gpu_released
        self.grace_s = grace_s
        self.progress = progress
        self._label, self._t0 = "", 0.0
        self._step_at, self._step_text = -1e9, ""
        self.workers: list[Worker] = []

    def __enter__(self) -> Launcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill(self.workers)

    def start(self, workers: list[Worker]) -> None:
        """Start every worker now, each in its own process group, its output in ``log.<name>.txt``."""
        for w in workers:
            w.log_path = self.run_dir / f"log.{w.name}.txt"
            w.group = start_group(
                w.argv, log=w.log_path, env=w.env, cwd=self.run_dir, name=f"worker {w.name}"
            )
            self.workers.append(w)

    def run_phase(
        self, phase: str, during: Callable[[list[Worker]], None] | None = None, label: str | None = None
    ) -> PhaseOutcome:
        """Wait until the phase's workers are set up, let them measure, collect their results.

        ``during``, if given, runs right after the go signal (the GPU load's NVML sampling), with the
        phase's workers; the phase's timeout for the measuring starts after it returns. ``label`` names
        the phase in the status line (default: ``phase``).
        """
        t0 = time.monotonic()
        ws = [w for w in self.workers if w.phase == phase]
        out = PhaseOutcome(phase)
        self._label, self._t0 = label or phase, t0
        self._step_at, self._step_text = -1e9, ""
        if not self._wait(ws, "ready", out, t0):
            return out
        t_go = time.monotonic()
        (self.run_dir / f"go.{phase}").touch()
        if during is not None:
            during(ws)
        t1 = time.monotonic()
        if not self._wait(ws, "result", out, t1):
            return out
        t_result = time.monotonic()
        for w in ws:
            path = self.run_dir / f"result.{w.name}.json"
            out.results[w.name] = json.loads(path.read_text(encoding="utf-8"))
            assert w.group is not None
            # It wrote its result; lingering in NCCL teardown is not a failure. Stopped below.
            w.group.wait(10)
        self.kill(ws)
        out.wall_s = time.monotonic() - t0
        out.stages = {
            "setup_wait_s": round(t_go - t0, 3),
            "measure_s": round(t_result - t_go, 3),
            "exit_wait_s": round(time.monotonic() - t_result, 3),
        }
        return out

    def _step(self, ws: list[Worker]) -> str:
        """The workers' ``step.<name>`` files (what each measures now), read at most every half second."""
        now = time.monotonic()
        if now - self._step_at < 0.5:
            return self._step_text
        self._step_at = now
        steps = []
        for w in ws:
            try:
                steps.append((self.run_dir / f"step.{w.name}").read_text(encoding="utf-8").strip())
            except OSError:
                continue
        self._step_text = "; ".join(s for s in steps if s)[:200]
        return self._step_text

    def _wait(self, ws: list[Worker], what: str, out: PhaseOutcome, since: float) -> bool:
        def done(w: Worker) -> bool:
            name = f"ready.{w.name}" if what == "ready" else f"result.{w.name}.json"
            return (self.run_dir / name).exists()

        label, t0 = self._label or what, self._t0 or since
        while True:
            # Elapsed from the phase's start; the deadline is this stage's (set-up, then measuring).
            now = time.monotonic()
            deadline = round(since - t0 + self.timeout_s)
            step = self._step(ws) if what == "result" else ""
            if step:  # the pair or host link a worker measures now (its step.<name> file)
                self.progress(label, now - t0, deadline, detail=step)
            else:
                self.progress(label, now - t0, deadline)
            pending = [w for w in ws if not done(w)]
            if not pending:
                return True
            for w in pending:
                assert w.group is not None
                rc = w.group.poll()
                if rc is not None and not done(w):  # it may have written its file just before exiting
                    out.crashed = {
                        "stage": "set-up" if what == "ready" else "measure",
                        "worker": w.name,
                        "code": rc,
                        "tail": log_tail(w.log_path),
                    }
                    out.crashed.update(self.kill(ws, check_gpus=True))
                    out.wall_s = time.monotonic() - since
                    return False
            waited = time.monotonic() - since
            if waited > self.timeout_s:
                out.hung = {
                    "stage": "set-up" if what == "ready" else "measure",
                    "after_s": round(waited, 1),
                    "timeout_s": self.timeout_s,
                    "waiting_for": [w.name for w in pending],
                    "tail": log_tail(pending[0].log_path, contains="NCCL"),
                }
                out.hung.update(self.kill(ws, check_gpus=True))
                out.wall_s = waited
                return False
            time.sleep(0.005)

    def kill(self, ws: list[Worker], check_gpus: bool = False) -> dict[str, Any]:
        """Stop each worker's process group (SIGTERM, SIGKILL after ``grace_s``), reap it, and say what
        was still running (``killed``, pids) and what is left alive (``left``, pids; should be empty).

        ``check_gpus`` (after a hang or crash): also ask ``gpu_released`` whether any of them still holds
        GPU memory (``gpu_holders``: a list of lines, empty when none, None without NVML or not asked).
        """
        groups = [w.group for w in ws if w.group is not None]
        reports = stop_groups(groups, self.grace_s, 10.0, self.gpu_released if check_gpus else None)
        out: dict[str, Any] = {
            "killed": [g.pid for g, r in zip(groups, reports, strict=True) if r.was_running],
            "left": [g.pid for g, r in zip(groups, reports, strict=True) if r.leftover],
        }
        if check_gpus:
            out["gpu_holders"] = reports[0].gpu_holders if reports else None
        return out


def python_cmd(python: str | None, script: str) -> list[str]:
    """``[python, workers/script]``; ``python`` defaults to this interpreter."""
    return [python or sys.executable, str(WORKERS / script)]


def worker_env(extra: dict[str, str]) -> dict[str, str]:
    """The caller's environment plus what every worker needs.

    CUDA_DEVICE_ORDER=PCI_BUS_ID makes CUDA's device order the PCI order NVML and sysfs use; NCCL_DEBUG=INFO
    (unless already set) is what a hang report shows.
    """
    env = dict(os.environ)
    env.setdefault("NCCL_DEBUG", "INFO")
    env.update({"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    env.update(extra)
    return env
