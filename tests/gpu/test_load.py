"""The GPU load in its worker process: NVML sampled in pytest around the worker's window, under the lock.

No GPU here: the real ``load_worker.py`` runs against a stand-in ``torch`` package put on the worker's
``PYTHONPATH`` only (never imported by pytest), whose matmul can be slow, hang or fail.
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

from pytest_rigcheck.gpu import load
from pytest_rigcheck.gpu.state import NOT_SUPPORTED, LoadReadings, Unavailable
from pytest_rigcheck.p2p import lock
from pytest_rigcheck.p2p.lock import LOCK_NAME, measure_lock

FAKE_TORCH = textwrap.dedent("""
    import os, time
    __version__ = "0.0-fake"
    float16 = "float16"
    MODE = os.environ.get("FAKE_TORCH_MODE", "ok")
    _calls = [0]

    class _Props:
        def __init__(self, i):
            self.pci_domain_id, self.pci_bus_id, self.pci_device_id = 0, 0x17 + i, 0

    class cuda:
        @staticmethod
        def is_available():
            return MODE != "no-cuda"
        @staticmethod
        def device_count():
            return 2
        @staticmethod
        def get_device_properties(i):
            return _Props(i)
        @staticmethod
        def synchronize(i):
            pass

    def randn(*shape, device=None, dtype=None):
        return (shape, device)

    def matmul(a, b):
        _calls[0] += 1
        if _calls[0] <= 2:  # the set-up product on each of the two GPUs, before "ready"
            if MODE == "hang-setup":
                time.sleep(600)
            return a
        if MODE == "hang":
            time.sleep(600)
        if MODE == "error":
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        if MODE == "die":
            os._exit(9)
        time.sleep(0.002)
        return a
""")

BDFS = {"0000:17:00.0": 0, "0000:18:00.0": 1}


class FakeNvml:
    """Samples and replay counters; checks on each sample that the measurement lock is held."""

    def __init__(self, lock_dir: Path) -> None:
        self.lock_dir = lock_dir
        self.replays = 0
        self.lock_held: list[bool] = []

    def replay(self, index: int) -> int:
        self.replays += 1
        return 10 * self.replays

    def sample(self, index: int) -> tuple[int, int, int, int, int]:
        if not self.lock_held:
            try:
                with measure_lock(0.05, self.lock_dir):
                    self.lock_held.append(False)
            except TimeoutError:
                self.lock_held.append(True)
        return (5, 16, 0, 300_000, 1980)


@pytest.fixture
def fake_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in torch on the workers' path, and the lock in this test's own directory."""
    site = tmp_path / "site"
    (site / "torch").mkdir(parents=True)
    (site / "torch" / "__init__.py").write_text(FAKE_TORCH)
    monkeypatch.setenv("PYTHONPATH", str(site))
    (tmp_path / "lock").mkdir()
    monkeypatch.setattr(lock, "lock_dir", lambda: tmp_path / "lock")
    return tmp_path / "lock"


def _measure(lock_dir: Path, gpus: dict[str, int] = BDFS, **kw: object) -> tuple[dict, FakeNvml]:
    nv = FakeNvml(lock_dir)
    kw.setdefault("gpu_released", lambda pids: None)
    out = load.measure_under_load(nv, gpus, 0.5, python=sys.executable, **kw)  # type: ignore[arg-type]
    return out, nv


def _no_worker_left() -> bool:
    from pytest_rigcheck.procgroup import live_groups

    return not [g for g in live_groups() if g.name == "worker load"]


class TestLoadWorker:
    def test_readings_from_the_window(self, fake_torch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Both GPUs loaded; NVML sampled after the warm-up under the lock; torch never in pytest."""
        monkeypatch.setattr(load, "WARMUP_S", 0.3)
        out, nv = _measure(fake_torch)
        assert set(out) == set(BDFS)
        for r in out.values():
            assert isinstance(r, LoadReadings), r
            assert r.link == (5, 16) and r.samples and all(s[0] >= 0.3 for s in r.samples)
            assert r.replay_before is not None and r.replay_after is not None
            assert r.replay_after > r.replay_before and r.window_s == 0.5
        assert nv.lock_held == [True]
        assert "torch" not in sys.modules
        assert _no_worker_left()

    def test_gpu_torch_cannot_see(self, fake_torch: Path) -> None:
        """A GPU the worker's torch does not show (CUDA_VISIBLE_DEVICES) is named; the others are loaded."""
        out, _ = _measure(fake_torch, {"0000:17:00.0": 0, "0000:c1:00.0": 1})
        assert isinstance(out["0000:17:00.0"], LoadReadings)
        assert isinstance(out["0000:c1:00.0"], Unavailable)
        assert "torch has no device at 0000:c1:00.0" in str(out["0000:c1:00.0"])

    def test_no_torch_for_the_worker(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """The worker's interpreter lacks torch: not supported, with the install line."""
        monkeypatch.delenv("PYTHONPATH", raising=False)
        monkeypatch.setattr(lock, "lock_dir", lambda: tmp_path)
        out, _ = _measure(tmp_path)
        assert all(isinstance(r, Unavailable) and r.code == NOT_SUPPORTED for r in out.values())
        assert "torch is not installed" in str(out["0000:17:00.0"])
        assert "pytest-rigcheck[torch]" in str(out["0000:17:00.0"])

    @pytest.mark.parametrize(
        ("mode", "words"),
        [
            ("no-cuda", "torch sees no CUDA device"),
            ("error", "the load failed: RuntimeError: CUDA error: an illegal memory access"),
            ("die", "the load worker exited with code 9 during measure"),
        ],
    )
    def test_failed_load(
        self, fake_torch: Path, monkeypatch: pytest.MonkeyPatch, mode: str, words: str
    ) -> None:
        """A load that cannot run or fails gives every GPU that reason, never readings."""
        monkeypatch.setenv("FAKE_TORCH_MODE", mode)
        out, _ = _measure(fake_torch)
        assert all(isinstance(r, Unavailable) and words in str(r) for r in out.values()), out
        assert _no_worker_left()

    @pytest.mark.parametrize(("mode", "stage"), [("hang-setup", "set-up"), ("hang", "measure")])
    def test_hung_worker_killed(
        self, fake_torch: Path, monkeypatch: pytest.MonkeyPatch, mode: str, stage: str
    ) -> None:
        """A worker hung in set-up or in the load is killed with its group; the GPUs say it hung."""
        monkeypatch.setenv("FAKE_TORCH_MODE", mode)
        asked: list[object] = []
        out, _ = _measure(fake_torch, timeout_s=1.5, gpu_released=lambda pids: asked.append(pids) or [])
        for r in out.values():
            assert isinstance(r, Unavailable)
            assert "the load worker hung: no result" in str(r) and f"into {stage}" in str(r)
            assert "its process group was killed" in str(r) and "STILL ALIVE" not in str(r)
        assert len(asked) == 1  # GPU memory asked about once, with the killed worker's pids
        assert _no_worker_left()

    def test_unsafe_lock_is_no_load(self, fake_torch: Path) -> None:
        """A link planted at the lock path: no load runs, and each GPU says why."""
        (fake_torch / LOCK_NAME).symlink_to(fake_torch / "elsewhere")
        out, _ = _measure(fake_torch)
        assert all("no load could be run: refusing the GPU measurement lock" in str(r) for r in out.values())
        assert not (fake_torch / "elsewhere").exists()

    def test_no_torch_here_needs_no_worker(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without torch in this interpreter and no other named, no worker is started at all."""
        monkeypatch.setattr(load.importlib.util, "find_spec", lambda name: None)
        out = load.measure_under_load(FakeNvml(Path(os.devnull)), BDFS, 0.5)  # type: ignore[arg-type]
        assert all(isinstance(r, Unavailable) and r.code == NOT_SUPPORTED for r in out.values())
