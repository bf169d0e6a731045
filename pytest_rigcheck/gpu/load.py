"""A short load on the live GPUs, sampling NVML while they are busy.

NVIDIA GPUs drop their PCIe link speed and clocks at idle (``nvidia-smi -q`` shows the current PCIe
generation drop at idle; DCGM reads the link only in P-state 0, NVIDIA/DCGM
``nvvs/plugin_src/pcie/PcieMain.cpp``), so link generation, clock event reasons and power are read while a
half-precision matrix multiply keeps every GPU busy. Sampling starts after a warm-up, so the
idle-to-busy retrain is not counted as flapping. The PCIe replay counter is read before and after.

The multiplying runs in a worker process (``p2p/workers/load_worker.py``, started by the same
``Launcher`` and ``procgroup`` as the P2P/NCCL workers, with the same interpreter, under the same
machine-wide measurement lock); the pytest process only samples NVML and never imports torch. A worker
that hangs past ``timeout_s`` is killed with its process group, and the GPUs' readings say so.

Live only; the worker needs torch (``pytest-rigcheck[torch]``). Reads NVML, never sets anything.
"""

from __future__ import annotations

import importlib.util
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..progress import Progress, no_progress
from .state import ERROR, NOT_SUPPORTED, LoadReadings, Unavailable

if TYPE_CHECKING:
    from ..p2p.launch import PhaseOutcome, Worker
    from .nvml import LiveNvml

# Not shorter: on Ampere (except GA100) and newer, nvmlDeviceGetPowerUsage returns the power averaged over
# 1 s (NVML API Reference, nvmlDeviceGetPowerUsage), so samples in the first second still hold idle power.
WARMUP_S = 1.0
INTERVAL_S = 0.05
TIMEOUT_S = 120.0  # for the worker's set-up (torch import, CUDA init), and again for its stop
MATRIX = 8192  # fp16 8192x8192: 128 MiB a matrix, ~1.1 TFLOP a product; fits every card of 8 GB and more
HOW = f"fp16 {MATRIX}x{MATRIX} matmul on every GPU at once, NVML sampled every {INTERVAL_S * 1000:.0f} ms after a {WARMUP_S:.0f} s warm-up"
PHASE = "load"
NAME = "load"

Sample = tuple[float, int | None, int | None, int | None, int | None, int | None]


def measure_under_load(
    nvml: LiveNvml,
    gpus: dict[str, int],
    seconds: float,
    python: str | None = None,
    timeout_s: float = TIMEOUT_S,
    gpu_released: Callable[..., list[str] | None] | None = None,
    progress: Progress = no_progress,
) -> dict[str, LoadReadings | Unavailable]:
    """Load the GPUs ``{bdf: nvml_index}`` for ``seconds`` and sample NVML on each; ``Unavailable`` where it could not.

    Args:
        nvml: the live NVML session that samples.
        gpus: BDF -> NVML index of every GPU to load.
        seconds: the sampled window, after ``WARMUP_S``.
        python: the workers' interpreter (``--rig-p2p-python``; default: this one).
        timeout_s: limit for the worker's set-up, and for its stop after the window.
        gpu_released: asked after a hung or crashed worker is killed (default ``gpu.holders.gpu_holders``).
        progress: the status line (``progress.Progress``), told while the load runs.
    """
    if not gpus:
        return {}
    if python is None and importlib.util.find_spec("torch") is None:  # no worker needed to know that
        why = Unavailable(
            "no load could be run: torch is not installed (pip install 'pytest-rigcheck[torch]')",
            NOT_SUPPORTED,
        )
        return dict.fromkeys(gpus, why)
    from ..p2p.busy import BUSY_CODE, busy_text, check_nvml
    from ..p2p.lock import MeasureLockError, measure_lock
    from .holders import gpu_holders

    try:
        with measure_lock():
            busy = check_nvml(nvml, gpus)
            if busy:  # another process on the GPUs: its use, not the rig's, would be sampled
                return dict.fromkeys(gpus, Unavailable(busy_text(busy, "readings under load"), BUSY_CODE))
            return _run(nvml, gpus, seconds, python, timeout_s, gpu_released or gpu_holders, progress)
    except (MeasureLockError, TimeoutError) as exc:
        return dict.fromkeys(gpus, Unavailable(f"no load could be run: {exc}"))


def _run(
    nvml: LiveNvml,
    gpus: dict[str, int],
    seconds: float,
    python: str | None,
    timeout_s: float,
    gpu_released: Callable[..., list[str] | None],
    progress: Progress = no_progress,
) -> dict[str, LoadReadings | Unavailable]:
    from ..p2p.launch import Launcher

    with tempfile.TemporaryDirectory(prefix="rigcheck-load-") as tmp:
        run_dir = Path(tmp)
        sampler = Sampler(nvml, gpus, seconds, run_dir)
        with Launcher(run_dir, timeout_s, gpu_released=gpu_released, progress=progress) as launcher:
            launcher.start([load_worker(list(gpus), seconds, run_dir, python)])
            n = len(gpus)
            label = f"GPU load on {n} GPU{'s' if n != 1 else ''} ({seconds:g} s window)"
            outcome = launcher.run_phase(PHASE, during=sampler, label=label)
        return sampler.readings(outcome)


def load_worker(
    bdfs: list[str], seconds: float, run_dir: Path, python: str | None, mode: str = "matmul"
) -> Worker:
    """The load worker for ``bdfs``, its plan written to ``run_dir``; ``mode`` ``matmul`` (compute) or
    ``mixed`` (compute and device-memory copies, for the soak).

    Also the seam for sharing start-up with the P2P measurement (wired in ``p2p/joint.py``):
    ``p2p.measure.run`` adds this worker to the list it hands ``Launcher.start``, so its torch import and
    CUDA set-up overlap the P2P/NCCL workers', runs ``launcher.run_phase("load", during=Sampler(...))``
    before its "p2p" phase, under the one ``measure_lock`` it already holds, and gives
    ``Sampler.readings(outcome)`` to the rig's GPU session. Same run directory, handshake and timeouts.
    """
    from ..p2p.launch import Worker, python_cmd, worker_env

    plan = run_dir / f"plan.{PHASE}.json"
    plan.write_text(
        json.dumps({"gpus": bdfs, "matrix": MATRIX, "max_s": WARMUP_S + seconds + 60, "mode": mode})
    )
    argv = [
        *python_cmd(python, "load_worker.py"),
        "--plan",
        str(plan),
        "--run-dir",
        str(run_dir),
        "--name",
        NAME,
    ]
    return Worker(NAME, PHASE, argv, worker_env({}))


class Sampler:
    """Samples NVML on every GPU while the load runs: ``Launcher.run_phase(PHASE, during=sampler)``.

    Called right after the worker was told to go: reads the replay counters, waits ``WARMUP_S``,
    samples every ``INTERVAL_S`` for ``seconds``, then tells the worker to stop (``stop.load``). Stops
    early when the worker ends on its own (a failed load) or exits.
    """

    def __init__(self, nvml: LiveNvml, gpus: dict[str, int], seconds: float, run_dir: Path) -> None:
        self.nvml = nvml
        self.gpus = gpus
        self.seconds = seconds
        self.run_dir = run_dir
        self.samples: dict[str, list[Sample]] = {b: [] for b in gpus}
        self.replay_before: dict[str, int | None] = {}

    def _ended(self, workers: list[Worker]) -> bool:
        return (self.run_dir / f"result.{NAME}.json").exists() or any(
            w.group is not None and w.group.poll() is not None for w in workers
        )

    def __call__(self, workers: list[Worker]) -> None:
        self.replay_before = {b: self.nvml.replay(i) for b, i in self.gpus.items()}
        t0 = time.monotonic()
        try:
            while time.monotonic() - t0 < WARMUP_S and not self._ended(workers):
                time.sleep(INTERVAL_S)
            while time.monotonic() - t0 < WARMUP_S + self.seconds and not self._ended(workers):
                t = round(time.monotonic() - t0, 3)
                for bdf, i in self.gpus.items():
                    self.samples[bdf].append((t, *self.nvml.sample(i)))
                time.sleep(INTERVAL_S)
        finally:
            (self.run_dir / f"stop.{PHASE}").touch()

    def readings(self, outcome: PhaseOutcome) -> dict[str, LoadReadings | Unavailable]:
        """Each GPU's readings, or why there are none, from the phase's outcome."""
        failed = _failure(outcome)
        if failed is not None:
            return dict.fromkeys(self.gpus, failed)
        result: dict[str, Any] = outcome.results.get(NAME, {})
        if "unavailable" in result:
            code = NOT_SUPPORTED if result.get("code") == NOT_SUPPORTED else ERROR
            return dict.fromkeys(self.gpus, Unavailable(str(result["unavailable"]), code))
        out: dict[str, LoadReadings | Unavailable] = {}
        loaded = result.get("loaded") or {}
        for bdf, i in self.gpus.items():
            if bdf not in loaded:
                why = (result.get("missing") or {}).get(bdf) or f"no load could be run on {bdf}"
                out[bdf] = Unavailable(str(why))
            elif result.get("error"):
                out[bdf] = Unavailable(f"the load failed: {result['error']}")
            else:
                out[bdf] = LoadReadings(
                    tuple(self.samples[bdf]),
                    how=HOW,
                    window_s=self.seconds,
                    replay_before=self.replay_before.get(bdf),
                    replay_after=self.nvml.replay(i),
                )
        return out


def _failure(outcome: PhaseOutcome) -> Unavailable | None:
    """Why a hung or crashed load gave no readings (its process group was killed), or None."""
    info = outcome.hung or outcome.crashed
    if info is None:
        return None
    if outcome.hung:
        what = f"the load worker hung: no result {info.get('after_s')} s into {info.get('stage')} (timeout {info.get('timeout_s')} s)"
    else:
        what = f"the load worker exited with code {info.get('code')} during {info.get('stage')}"
    left = info.get("left") or []
    what += (
        f"; its process group was killed, STILL ALIVE: {left}" if left else "; its process group was killed"
    )
    if info.get("gpu_holders"):
        what += f"; STILL HOLDING GPU memory: {'; '.join(info['gpu_holders'])}"
    tail = [line for line in info.get("tail") or [] if line.strip()]
    if tail:
        what += f"; its log ends: {tail[-1].strip()}"
    return Unavailable(what)


__all__ = ["HOW", "MATRIX", "Sampler", "load_worker", "measure_under_load"]
