"""The live soak: every GPU busy at once in the load worker (mixed compute and memory traffic), NVML and
the AER counters sampled once a second here in pytest.

The worker is ``p2p/workers/load_worker.py`` in its ``mixed`` mode, started by the same ``Launcher`` and
``procgroup`` as every GPU worker, under the machine-wide ``measure_lock``. Ctrl-C during the soak stops
the load (the sampler tells the worker to stop; the launcher kills its process group) and keeps what was
sampled: the record says ``interrupted``, the verdicts judge the samples taken, and the run goes on
(a second Ctrl-C stops pytest as usual). Reads NVML and sysfs only.
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .judge import AER_KINDS, FIELDS, GpuSamples, SoakRecord, progress_line

if TYPE_CHECKING:
    from ..gpu.nvml import LiveNvml
    from ..p2p.launch import PhaseOutcome, Worker
    from ..tree import PciFunction

INTERVAL_S = 1.0
WARMUP_S = 3.0  # not sampled: clocks and power ramp up in the first seconds of load
TIMEOUT_S = 120.0
HOW = (
    "fp16 matmul mixed with device-memory copies on every GPU at once (load worker, mode mixed); "
    f"NVML and sysfs AER sampled every {INTERVAL_S:.0f} s after a {WARMUP_S:.0f} s warm-up"
)


def aer_now(hops: list[PciFunction]) -> dict[str, list[int] | None]:
    """Each hop's AER totals ``[correctable, nonfatal, fatal]`` now; ``None`` where the kernel keeps none."""
    from ..linkhealth import read_hop

    out: dict[str, list[int] | None] = {}
    for fn in hops:
        r = read_hop(fn)
        out[fn.bdf] = (
            [r.aer[k] for k in AER_KINDS] if all(k in r.aer for k in AER_KINDS) and not r.errors else None
        )
    return out


def row(t: float, nv: dict[str, float | None], aer: dict[str, list[int] | None]) -> list[float | None]:
    """One sample in ``FIELDS`` order; the AER columns sum the hops that have counters."""
    have = [v for v in aer.values() if v is not None]
    sums = [float(sum(v[k] for v in have)) if have else None for k in range(3)]
    values = {**nv, "t_s": round(t, 3), "aer_cor": sums[0], "aer_nonfatal": sums[1], "aer_fatal": sums[2]}
    return [values.get(f) for f in FIELDS]


class SoakSampler:
    """``Launcher.run_phase("load", during=sampler)``: samples every GPU every ``INTERVAL_S`` for ``seconds``.

    ``progress`` (``progress.Progress``) is told every sample: ``("soak", seconds, total, detail=...)`` with
    each GPU's latest readings as the detail (the plugin's status line writes it). Ctrl-C ends
    the sampling early; the worker is told to stop either way.
    """

    def __init__(
        self,
        nvml: LiveNvml,
        gpus: dict[str, int],
        hops: dict[str, list[PciFunction]],
        labels: dict[str, str],
        seconds: float,
        run_dir: Path,
        progress: Callable[..., None] | None = None,
    ) -> None:
        self.nvml, self.gpus, self.hops, self.labels = nvml, gpus, hops, labels
        self.seconds, self.run_dir, self.progress = seconds, run_dir, progress
        self.samples: dict[str, list[list[float | None]]] = {b: [] for b in gpus}
        self.aer_start: dict[str, dict[str, list[int] | None]] = {}
        self.aer_end: dict[str, dict[str, list[int] | None]] = {}
        self.stopped = "completed"

    def _ended(self, workers: list[Worker]) -> bool:
        return (self.run_dir / "result.load.json").exists() or any(
            w.group is not None and w.group.poll() is not None for w in workers
        )

    def __call__(self, workers: list[Worker]) -> None:
        t0 = time.monotonic()
        try:
            while time.monotonic() - t0 < WARMUP_S and not self._ended(workers):
                time.sleep(0.1)
            self.aer_start = {b: aer_now(self.hops[b]) for b in self.gpus}
            start = time.monotonic()
            nxt = start
            while time.monotonic() - start < self.seconds:
                if self._ended(workers):
                    self.stopped = f"the load ended after {time.monotonic() - start:.0f} s"
                    break
                t = time.monotonic() - start
                latest: dict[str, list[float | None]] = {}
                for bdf, i in self.gpus.items():
                    r = row(t, self.nvml.readings(i), aer_now(self.hops[bdf]))
                    self.samples[bdf].append(r)
                    latest[self.labels.get(bdf, bdf)] = r
                if self.progress is not None:
                    self.progress(
                        "soak", t, self.seconds, detail=progress_line(t, self.seconds, latest, False)
                    )
                nxt += INTERVAL_S
                time.sleep(max(0.0, nxt - time.monotonic()))
        except KeyboardInterrupt:
            self.stopped = f"interrupted after {time.monotonic() - t0:.0f} s (Ctrl-C)"
        finally:
            (self.run_dir / "stop.load").touch()
            self.aer_end = {b: aer_now(self.hops[b]) for b in self.gpus}

    def record(self, outcome: PhaseOutcome, names: dict[str, str]) -> SoakRecord:
        from ..gpu.load import _failure

        rec = SoakRecord(self.seconds, INTERVAL_S, HOW, self.stopped)
        failure = _failure(outcome)
        result: dict[str, Any] = outcome.results.get("load", {})
        loaded = result.get("loaded") or {}
        for bdf, i in self.gpus.items():
            g = GpuSamples(bdf, i, names.get(bdf, ""), self.samples[bdf])
            for hop, a in self.aer_start.get(bdf, {}).items():
                b = self.aer_end.get(bdf, {}).get(hop)
                if a is not None and b is not None:
                    g.aer_hops[hop] = {"start": a, "end": b}
            if failure is not None:
                g.unavailable = str(failure)
            elif "unavailable" in result:
                g.unavailable = str(result["unavailable"])
            elif bdf not in loaded:
                g.unavailable = str(
                    (result.get("missing") or {}).get(bdf) or f"no load could be run on {bdf}"
                )
            elif result.get("error"):
                g.unavailable = f"the load failed: {result['error']}"
            rec.gpus[bdf] = g
        return rec


def run_soak(
    nvml: LiveNvml,
    gpus: dict[str, int],
    hops: dict[str, list[PciFunction]],
    labels: dict[str, str],
    seconds: float,
    python: str | None = None,
    progress: Callable[..., None] | None = None,
    timeout_s: float = TIMEOUT_S,
) -> SoakRecord:
    """Soak the GPUs ``{bdf: nvml_index}`` for ``seconds`` and return every GPU's samples.

    Never raises for a load that cannot run: the GPUs' entries say why (``GpuSamples.unavailable``).
    """
    from ..gpu.holders import gpu_holders
    from ..gpu.load import load_worker
    from ..p2p.launch import Launcher
    from ..p2p.lock import MeasureLockError, measure_lock

    names = {b: labels.get(b, b) for b in gpus}

    def nothing(why: str) -> SoakRecord:
        return SoakRecord(
            seconds,
            INTERVAL_S,
            HOW,
            "not run",
            {b: GpuSamples(b, i, names[b], unavailable=why) for b, i in gpus.items()},
        )

    if python is None and importlib.util.find_spec("torch") is None:
        return nothing("torch is not installed (pip install 'pytest-rigcheck[torch]')")
    try:
        with measure_lock(), tempfile.TemporaryDirectory(prefix="rigcheck-soak-") as tmp:
            run_dir = Path(tmp)
            sampler = SoakSampler(nvml, gpus, hops, labels, seconds, run_dir, progress)
            with Launcher(run_dir, timeout_s, gpu_released=gpu_holders) as launcher:
                launcher.start([load_worker(list(gpus), seconds + WARMUP_S, run_dir, python, mode="mixed")])
                outcome = launcher.run_phase("load", during=sampler)
            return sampler.record(outcome, names)
    except (MeasureLockError, TimeoutError) as exc:
        return nothing(f"the soak could not start: {exc}")
