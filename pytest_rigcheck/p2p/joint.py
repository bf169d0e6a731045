"""The GPU load as the first phase of the P2P/NCCL measurement, so the two share their worker start-up.

The seam ``gpu.load.load_worker`` describes: the load worker joins the list ``measure.run`` hands
``Launcher.start``, so its torch import and CUDA set-up overlap the P2P/NCCL workers'; a ``"load"`` phase
runs before ``"p2p"`` with the NVML ``Sampler`` as its ``during``, under the one ``measure_lock`` the P2P
session already holds; the readings go to the rig's GPU session (``gpu.plugin.GpuSession``), which then
loads nothing of its own. Same run directory, handshake, timeouts and process runner (``procgroup``).

Live, when the P2P figures are wanted in this run (a collected test uses ``rig_p2p``/``rig_nccl``): the
GPU session's first ``load()`` asks the P2P session to measure (``want_joint``), and the P2P session
asks here for the load phase (``load_phase``). Anywhere else (replay, P2P not collected, no torch,
pytest-xdist readers of a shared result) the GPU load runs alone, as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

if TYPE_CHECKING:
    from ..gpu.state import LoadReadings, Unavailable
    from ..rig import Rig
    from .launch import Launcher, PhaseOutcome, Worker

WANTED_KEY = "p2p_wanted"  # rig.extras: P2P figures are needed in this run (set at collection)


class _GpuSession(Protocol):
    """What this module uses of ``gpu.plugin.GpuSession`` (``rig.extras["gpu"]``)."""

    nvml: Any
    seconds: float
    _load: dict[str, LoadReadings | Unavailable] | None

    def load(self) -> dict[str, LoadReadings | Unavailable]: ...


class _P2pSession(Protocol):
    """What this module uses of ``p2p.session.P2pSession`` (``rig.extras["p2p"]``)."""

    _outcome: tuple[str, Any] | None

    def outcome(self) -> tuple[str, Any]: ...


def _gpu_session(rig: Rig) -> _GpuSession | None:
    return cast("_GpuSession | None", rig.extras.get("gpu"))


class LoadPhase:
    """The load worker and its sampler for one ``measure.run``; ``readings`` once the phase has run."""

    def __init__(self, nvml: Any, gpus: dict[str, int], seconds: float) -> None:
        self.nvml = nvml
        self.gpus = gpus
        self.seconds = seconds
        self.sampler: Any = None
        self.readings: dict[str, LoadReadings | Unavailable] | None = None

    def worker(self, run_dir: Path, python: str | None) -> Worker:
        from ..gpu.load import Sampler, load_worker

        self.sampler = Sampler(self.nvml, self.gpus, self.seconds, run_dir)
        return load_worker(list(self.gpus), self.seconds, run_dir, python)

    def run(self, launcher: Launcher) -> PhaseOutcome:
        from ..gpu.load import PHASE

        n = len(self.gpus)
        label = f"GPU load on {n} GPU{'s' if n != 1 else ''} ({self.seconds:g} s window)"
        outcome = launcher.run_phase(PHASE, during=self.sampler, label=label)
        self.readings = self.sampler.readings(outcome)
        return outcome


def load_phase(rig: Rig) -> LoadPhase | None:
    """A load phase for the P2P measurement of ``rig``, when its GPU session (live NVML) has not loaded yet."""
    if not rig.is_live:
        return None
    gpu = _gpu_session(rig)
    if gpu is None or getattr(gpu, "_load", None) is not None:
        return None
    try:
        nvml = gpu.nvml
        index = {g.bdf: g.index for g in nvml.system().gpus}
    except Exception:  # noqa: BLE001 - no NVML here: the GPU session reports that on its own
        return None
    gpus = {fn.bdf: index[fn.bdf] for fn in rig.pcie.gpus if fn.bdf in index}
    if not gpus or not hasattr(nvml, "sample"):
        return None
    return LoadPhase(nvml, gpus, float(gpu.seconds))


def deliver(rig: Rig, phase: LoadPhase | None) -> None:
    """Give the load phase's readings to the rig's GPU session (every PCIe GPU: those NVML lacks say so)."""
    if phase is None or phase.readings is None:
        return
    from ..gpu.state import Unavailable

    gpu = _gpu_session(rig)
    if gpu is None or getattr(gpu, "_load", None) is not None:
        return
    out: dict[str, LoadReadings | Unavailable] = {
        fn.bdf: phase.readings.get(fn.bdf) or Unavailable(f"{fn.bdf} is not among the GPUs NVML sees")
        for fn in rig.pcie.gpus
    }
    gpu._load = out
    gpu.load()  # checks the readings (GpuSession._check_load) and gives the PCIe link suite its links


def want_joint(rig: Rig) -> bool:
    """Run the P2P measurement now, with the load in it (called by the GPU session's first ``load()``).

    True when it ran and delivered the readings; False when the GPU session should load on its own.
    """
    if not rig.is_live or not rig.extras.get(WANTED_KEY):
        return False
    p2p = cast("_P2pSession | None", rig.extras.get("p2p"))
    if p2p is None or getattr(p2p, "_outcome", None) is not None:
        return False
    p2p.outcome()
    gpu = _gpu_session(rig)
    return gpu is not None and getattr(gpu, "_load", None) is not None


__all__ = ["WANTED_KEY", "LoadPhase", "deliver", "load_phase", "want_joint"]
