"""The GPU load as the first phase of the P2P measurement (issue 8's speed target: one worker start-up).

No GPU here: the real ``load_worker.py`` runs through ``measure.run``'s one ``Launcher`` against the
stand-in torch of ``tests/gpu/test_load.py``; the readings go to the rig's GPU session.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pytest_rigcheck.gpu.plugin import GpuSession
from pytest_rigcheck.gpu.state import LoadReadings
from pytest_rigcheck.p2p import joint, measure

from ..gpu.test_load import BDFS, FakeNvml, fake_torch  # noqa: F401 - the fixture


class _Pcie(SimpleNamespace):
    """The rig's PCIe tree as far as these tests need it: its GPUs, and no sysfs functions to look up."""

    def __contains__(self, bdf: str) -> bool:
        return False


def _rig(gpu: Any, **extras: Any) -> Any:
    return SimpleNamespace(
        is_live=True,
        extras={"gpu": gpu, **extras},
        pcie=_Pcie(gpus=[SimpleNamespace(bdf=b) for b in [*BDFS, "0000:19:00.0"]]),
    )


def test_load_runs_as_the_first_phase(fake_torch: Path) -> None:  # noqa: F811
    """``measure.run`` starts the load worker with the others and runs its phase first; the readings are
    delivered to the GPU session (a GPU NVML lacks says so), and ``link_under_load`` is filled."""
    nv = FakeNvml(fake_torch)
    phase = joint.LoadPhase(nv, dict(BDFS), 0.3)
    data = measure.run(list(BDFS), groups=[], p2p=False, load=phase, python=sys.executable, timeout_s=60)
    assert "load" in data["runs"] and "hung" not in data["runs"]["load"]
    assert phase.readings is not None
    assert all(isinstance(r, LoadReadings) and r.samples for r in phase.readings.values())
    rig = _rig(None)
    gpu = GpuSession(rig, 0.3)
    gpu.gpus = lambda: {}  # type: ignore[method-assign] # no NVML state here: only the readings' own checks
    rig.extras["gpu"] = gpu
    joint.deliver(rig, phase)
    assert gpu._load is not None
    assert set(gpu._load) == {*BDFS, "0000:19:00.0"}
    assert "not among the GPUs NVML sees" in str(gpu._load["0000:19:00.0"])
    assert rig.extras["link_under_load"] == dict.fromkeys(BDFS, (5, 16))


class FakeP2p:
    def __init__(self, rig: Any, readings: dict[str, Any] | None) -> None:
        self.rig, self.readings, self._outcome = rig, readings, None

    def outcome(self) -> tuple[str, Any]:
        if self.readings is not None:
            self.rig.extras["gpu"]._load = self.readings
        self._outcome = ("ok", {})
        return self._outcome


@pytest.mark.parametrize("wanted", [True, False])
def test_gpu_session_asks_p2p_first(wanted: bool) -> None:
    """The GPU session's first load runs the P2P measurement when its figures are wanted in this run."""
    gpu = SimpleNamespace(_load=None)
    rig = _rig(gpu, **({joint.WANTED_KEY: True} if wanted else {}))
    rig.extras["p2p"] = FakeP2p(rig, {"0000:17:00.0": "r"})
    assert joint.want_joint(rig) is wanted
    assert (gpu._load is not None) is wanted


def test_no_joint_when_p2p_gave_no_load() -> None:
    """P2P skipped or failed before measuring: the GPU session loads on its own."""
    gpu = SimpleNamespace(_load=None)
    rig = _rig(gpu, **{joint.WANTED_KEY: True})
    rig.extras["p2p"] = FakeP2p(rig, None)
    assert joint.want_joint(rig) is False
    assert joint.want_joint(rig) is False  # measured once already: not again


def test_no_load_phase_on_replay_or_loaded() -> None:
    """Replayed rigs and GPU sessions that already loaded get no load phase."""
    assert joint.load_phase(SimpleNamespace(is_live=False, extras={})) is None
    assert joint.load_phase(_rig(SimpleNamespace(_load={"x": 1}))) is None
