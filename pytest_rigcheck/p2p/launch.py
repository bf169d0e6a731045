"""Start worker processes, hand them their turn, and kill them all on a hang.

Every worker runs in its own process group (``start_new_session``), so a hung rank and anything it
started die together (``killpg``). All workers of a measurement start at once, so their imports and
CUDA/NCCL set-up overlap; the measuring itself runs one phase at a time (``go.<phase>`` files), so no
two measurements share the GPUs. A phase that does not finish within its timeout is a hang: its
workers are killed, reaped and checked gone, and the outcome carries the tail of their logs
(``NCCL_DEBUG=INFO``). Stdlib only.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WORKERS = Path(__file__).resolve().parent / "workers"
TAIL_LINES = 25


@dataclass
class Worker:
    """One worker process of a phase."""

    name: str
    phase: str
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None


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

    @property
    def ok(self) -> bool:
        return self.hung is None and self.crashed is None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path | None, lines: int = TAIL_LINES, nccl_only: bool = False) -> list[str]:
    """The last ``lines`` lines of a worker's log (only NCCL's lines with ``nccl_only``)."""
    if path is None or not path.is_file():
        return []
    text = path.read_bytes()[-200_000:].decode("utf-8", "replace").splitlines()
    if nccl_only:
        picked = [t for t in text if "NCCL" in t]
        text = picked or text
    return text[-lines:]


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Launcher:
    """Workers of one measurement, in ``run_dir``; use as a context manager so nothing outlives it.

    Args:
        run_dir: private directory for plans, handshake files, results and logs.
        timeout_s: limit for each phase's set-up and, separately, for its measuring.
    """

    def __init__(self, run_dir: Path, timeout_s: float) -> None:
        self.run_dir = run_dir
        self.timeout_s = timeout_s
        self.workers: list[Worker] = []

    def __enter__(self) -> Launcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill([w for w in self.workers if w.proc is not None])

    def start(self, workers: list[Worker]) -> None:
        for w in workers:
            w.log_path = self.run_dir / f"log.{w.name}.txt"
            with open(w.log_path, "wb") as log:
                w.proc = subprocess.Popen(  # noqa: S603 - our own worker scripts, argv built here
                    w.argv,
                    env=w.env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    cwd=self.run_dir,
                )
            self.workers.append(w)

    def run_phase(self, phase: str) -> PhaseOutcome:
        """Wait until the phase's workers are set up, let them measure, collect their results."""
        t0 = time.monotonic()
        ws = [w for w in self.workers if w.phase == phase]
        out = PhaseOutcome(phase)
        if not self._wait(ws, "ready", out, t0):
            return out
        (self.run_dir / f"go.{phase}").touch()
        t1 = time.monotonic()
        if not self._wait(ws, "result", out, t1):
            return out
        for w in ws:
            path = self.run_dir / f"result.{w.name}.json"
            out.results[w.name] = json.loads(path.read_text(encoding="utf-8"))
            assert w.proc is not None
            try:
                w.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass  # it wrote its result; lingering in NCCL teardown is not a failure. Killed below.
        self.kill(ws)
        out.wall_s = time.monotonic() - t0
        return out

    def _wait(self, ws: list[Worker], what: str, out: PhaseOutcome, since: float) -> bool:
        def done(w: Worker) -> bool:
            name = f"ready.{w.name}" if what == "ready" else f"result.{w.name}.json"
            return (self.run_dir / name).exists()

        while True:
            pending = [w for w in ws if not done(w)]
            if not pending:
                return True
            for w in pending:
                assert w.proc is not None
                rc = w.proc.poll()
                if rc is not None:
                    out.crashed = {
                        "stage": "set-up" if what == "ready" else "measure",
                        "worker": w.name,
                        "code": rc,
                        "tail": tail(w.log_path),
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
                    "tail": tail(pending[0].log_path, nccl_only=True),
                }
                out.hung.update(self.kill(ws, check_gpus=True))
                out.wall_s = waited
                return False
            time.sleep(0.005)

    def kill(self, ws: list[Worker], check_gpus: bool = False) -> dict[str, Any]:
        """SIGKILL each worker's process group, reap it, and say what (if anything) is left alive.

        ``check_gpus`` (after a hang or crash): also ask NVML whether any of them still holds GPU memory
        (``gpu_holders``: a list of lines, empty when none, None without NVML).
        """
        killed, left = [], []
        for w in ws:
            if w.proc is None:
                continue
            pgid = w.proc.pid  # start_new_session: the group id is the worker's pid
            if w.proc.poll() is None or _alive(pgid):
                try:
                    os.killpg(pgid, signal.SIGKILL)
                    killed.append(w.proc.pid)
                except ProcessLookupError:
                    pass
            try:
                w.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            deadline = time.monotonic() + 5
            while _alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.01)  # children of the group exit after their leader
            if w.proc.poll() is None or _alive(pgid):
                left.append(w.proc.pid)
        out: dict[str, Any] = {"killed": killed, "left": left}
        if check_gpus:
            from ..gpu.holders import gpu_holders

            out["gpu_holders"] = gpu_holders([w.proc.pid for w in ws if w.proc is not None])
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
