"""The soak plugin end to end: settings validated at start (exit 4), late ordering, live storage, the sampler."""

from __future__ import annotations

import os
import sys
import time
from types import SimpleNamespace

import pytest

from pytest_rigcheck.soak import run
from pytest_rigcheck.soak.judge import COL, FIELDS

from ..conftest import SNAPSHOTS

HEALTHY = str(SNAPSHOTS / "rtx3090x2-soak-healthy")


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--rig-soak=ten"], {}, "--rig-soak: invalid value 'ten': seconds or a length such as 600, 90s"),
        ([], {"RIGCHECK_SOAK": "3s"}, "RIGCHECK_SOAK: invalid value '3s': between 10 s and 24 h"),
        (
            ["--rig-model-dir=/nonexistent/model"],
            {},
            "--rig-model-dir: invalid value '/nonexistent/model': a directory, but /nonexistent/model is missing",
        ),
    ],
)
def test_bad_setting_is_one_usage_error(pytester, monkeypatch, args, env, message):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    result = pytester.runpytest_subprocess(f"--rig-snapshot={HEALTHY}", *args, "-p", "no:cacheprovider")
    assert result.ret == 4
    result.stderr.fnmatch_lines([f"*{message}*"])
    assert "Traceback" not in result.stderr.str()


def test_bad_profile_section_is_one_usage_error(pytester):
    pytester.makefile(".toml", rig="[soak]\nmax_clock_drop = 3\n")
    result = pytester.runpytest_subprocess(
        f"--rig-snapshot={HEALTHY}", "--rig-profile=rig.toml", "-p", "no:cacheprovider"
    )
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*'soak.max_clock_drop'*"])


def test_ini_setting_is_read(pytester):
    pytester.makeini("[pytest]\nrig_soak = 90s\n")
    result = pytester.runpytest_subprocess(
        f"--rig-snapshot={HEALTHY}", "-p", "no:cacheprovider", "-k", "soak", "-q"
    )
    assert result.ret == 0  # replayed: the snapshot's samples are judged whatever the setting


def test_soak_and_window_end_run_last(pytester):
    result = pytester.runpytest_subprocess(
        f"--rig-snapshot={HEALTHY}", "-p", "no:cacheprovider", "--collect-only", "-q"
    )
    ids = [line for line in result.stdout.lines if "::" in line]
    tail = [i.split("::")[1].split("[")[0] for i in ids[-4:]]
    assert tail == [
        "test_soak",
        "test_soak",
        "test_link_errors_not_growing",
        "test_link_errors_not_growing",
    ], ids


def test_live_storage_measures_a_model_dir(pytester, tmp_path):
    """A live run on this machine (no GPU needed) measures a temporary model directory."""
    model = tmp_path / "m"
    model.mkdir()
    (model / "model.safetensors").write_bytes(os.urandom(16 << 20))
    pytester.makefile(".toml", rig="[storage]\nmin_read_gbps = 0.01\n")
    result = pytester.runpytest_subprocess(
        "--rig",
        f"--rig-model-dir={model}",
        "--rig-profile=rig.toml",
        "-k",
        "test_model_storage_read",
        "-p",
        "no:cacheprovider",
        "-rA",
        "-q",
    )
    assert result.ret == 0, result.stdout.str()
    result.assert_outcomes(passed=1, deselected=None)


def test_live_soak_off_by_default_skips(pytester):
    result = pytester.runpytest_subprocess("--rig", "-k", "test_soak", "-p", "no:cacheprovider", "-rs", "-q")
    assert "failed" not in result.stdout.str()


class FakeNvml:
    """NVML stand-in with ``LiveNvml.readings``' interface: fixed readings (no fan: a passive card);
    raises KeyboardInterrupt at sample ``stop_at`` (Ctrl-C). ``LiveNvml.readings`` itself is tested
    against a fake pynvml in tests/gpu/test_units.py."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.n = 0
        self.stop_at = stop_at

    def readings(self, index: int) -> dict[str, float | None]:
        self.n += 1
        if self.stop_at is not None and self.n >= self.stop_at:
            raise KeyboardInterrupt
        return {
            "sm_mhz": 1980,
            "mem_mhz": 2619,
            "temp_c": 61,
            "mem_temp_c": 70,
            "power_mw": 690_000,
            "reasons": 0x4,
            "fan_pct": None,
            "replay": 0,
            "gen": 5,
            "width": 16,
        }


@pytest.mark.parametrize("stop_at", [None, 4])
def test_sampler_keeps_samples_and_stops_the_load(tmp_path, monkeypatch, stop_at):
    """Every second: all fields; Ctrl-C ends sampling, keeps what was sampled, tells the worker to stop."""
    monkeypatch.setattr(run, "WARMUP_S", 0.0)
    monkeypatch.setattr(run, "INTERVAL_S", 0.01)
    s = run.SoakSampler(
        FakeNvml(stop_at), {"0000:00:06.0": 0}, {"0000:00:06.0": []}, {"0000:00:06.0": "GPU0"}, 0.08, tmp_path
    )
    lines: list[str] = []
    s.progress = lambda what, t, total, detail="": lines.append(f"{what} {t:.0f}/{total:.0f} s  {detail}")
    s([])
    rows = s.samples["0000:00:06.0"]
    assert (tmp_path / "stop.load").exists()
    assert all(len(r) == len(FIELDS) for r in rows) and rows
    r = rows[0]
    assert (
        r[COL["sm_mhz"]],
        r[COL["mem_temp_c"]],
        r[COL["power_mw"]],
        r[COL["reasons"]],
        r[COL["fan_pct"]],
    ) == (1980, 70, 690_000, 4, None)
    if stop_at:
        assert len(rows) == stop_at - 1 and s.stopped.startswith("interrupted")
    else:
        assert s.stopped == "completed" and lines[0].startswith("soak 0/0 s  GPU0 1980 MHz 61 C 690 W")


class FakeTerminal:
    def __init__(self, tty: bool) -> None:
        self.isatty = lambda: tty
        self.lines: list[tuple[str, str]] = []
        self._tw = SimpleNamespace(fullwidth=80)

    def rewrite(self, line, erase=False):
        self.lines.append(("rewrite", line))

    def write_line(self, line):
        self.lines.append(("line", line))

    def write(self, text):
        self.lines.append(("write", text))

    def ensure_newline(self):
        pass


def _session(verbosity: int, tty: bool):
    from pytest_rigcheck.soak.plugin import SoakSession

    tr = FakeTerminal(tty)
    plugins = {"terminalreporter": tr, "capturemanager": None}
    config = SimpleNamespace(
        pluginmanager=SimpleNamespace(get_plugin=plugins.get), get_verbosity=lambda: verbosity
    )
    return SoakSession(None, config), tr  # type: ignore[arg-type]


def test_progress_quiet_under_q():
    s, _ = _session(-1, True)
    assert s._progress() is None


def test_progress_rewrites_on_a_terminal_and_throttles_in_a_log():
    s, tr = _session(0, True)
    show = s._progress()
    show("soak", 1, 60, detail="GPU0 1980 MHz 40 C 690 W")
    time.sleep(0.3)
    show("soak", 2, 60, detail="GPU0 1980 MHz 41 C 690 W")
    show.note("soak done: completed")
    assert [k for k, _ in tr.lines] == ["write", "rewrite", "rewrite", "rewrite", "line"]
    assert tr.lines[1][1] == "rigcheck: soak, 1 s (deadline 60 s)  GPU0 1980 MHz 40 C 690 W"
    s, tr = _session(0, False)
    show = s._progress()
    for i in range(5):
        show("soak", i, 60, detail=f"GPU0 {i} C")
    show.note("soak done: completed")
    assert tr.lines == [
        ("line", "rigcheck: soak, 0 s (deadline 60 s)  GPU0 0 C"),
        ("line", "rigcheck: soak done: completed"),
    ]


MIXED_TORCH = """
class _Buffer:
    copies = 0

    def copy_(self, other):
        _Buffer.copies += 1
        return self


def empty(*shape, device=None, dtype=None):
    return _Buffer()
"""


def test_run_soak_end_to_end_with_the_worker(tmp_path, monkeypatch):
    """The real load worker in mixed mode (a stand-in torch on its path only), sampled under the lock."""
    from pytest_rigcheck.p2p import lock
    from pytest_rigcheck.soak.judge import SoakExpect, judge

    from ..gpu.test_load import FAKE_TORCH

    site = tmp_path / "site"
    (site / "torch").mkdir(parents=True)
    (site / "torch" / "__init__.py").write_text(FAKE_TORCH + MIXED_TORCH)
    monkeypatch.setenv("PYTHONPATH", str(site))
    (tmp_path / "lock").mkdir()
    monkeypatch.setattr(lock, "lock_dir", lambda: tmp_path / "lock")
    monkeypatch.setattr(run, "WARMUP_S", 0.1)
    monkeypatch.setattr(run, "INTERVAL_S", 0.05)
    nv = FakeNvml()
    gpus = {"0000:17:00.0": 0, "0000:18:00.0": 1}
    rec = run.run_soak(
        nv, gpus, dict.fromkeys(gpus, []), {b: f"GPU{i}" for b, i in gpus.items()}, 0.6, python=sys.executable
    )
    assert rec.stopped == "completed"
    for bdf in gpus:
        g = rec.gpus[bdf]
        assert g.unavailable is None and len(g.samples) >= 8
        assert judge(rec, bdf, bdf, SoakExpect()).status == "pass"
    assert "torch" not in sys.modules


def test_run_soak_without_torch_says_so(monkeypatch):
    monkeypatch.setattr(run.importlib.util, "find_spec", lambda name: None)
    rec = run.run_soak(FakeNvml(), {"0000:17:00.0": 0}, {"0000:17:00.0": []}, {}, 30)
    assert "torch is not installed" in (rec.gpus["0000:17:00.0"].unavailable or "")


def test_live_soak_without_nvml_on_nvidia_rig_is_unreadable(monkeypatch):
    """No NVML on a live rig whose bus shows an NVIDIA GPU: the soak is UNREADABLE, not skipped
    (the one cannot-measure-here policy, ``availability.decision``); with no NVIDIA GPU it stays a skip."""
    from pytest_rigcheck.gpu import plugin as gpu_plugin
    from pytest_rigcheck.gpu.nvml import NvmlUnavailable
    from pytest_rigcheck.soak import plugin as soak_plugin
    from pytest_rigcheck.verdict import Status, Verdict

    class NoNvml:
        @property
        def nvml(self):
            raise NvmlUnavailable("NVML bindings not installed", "pip install 'pytest-rigcheck[nvml]'")

    monkeypatch.setattr(soak_plugin, "settings", lambda config: SimpleNamespace(soak_s=60))
    monkeypatch.setattr(gpu_plugin, "gpu_session", lambda rig, config: NoNvml())
    for vendor, unreadable in ((0x10DE, True), (0x1A03, False)):
        fn = SimpleNamespace(bdf="0000:05:00.0", vendor=vendor, driver=None)
        pcie = SimpleNamespace(gpus=[fn], functions={fn.bdf: fn})
        rig = SimpleNamespace(name="live", is_live=True, pcie=pcie)
        got = soak_plugin.SoakSession(rig, None)._live()  # type: ignore[arg-type]
        if unreadable:
            assert isinstance(got, Verdict) and got.status == Status.UNREADABLE, got
            assert "pip install" in got.summary
        else:
            assert isinstance(got, str) and "skipped: no NVIDIA GPU" in got, got


def test_soak_hop_missing_from_aer_hops_is_unreadable(pytester, tmp_path):
    """FRESH4 finding 4: rtx3090x2-soak-healthy with the root port 0000:00:01.1 deleted from GPU
    0000:21:00.0's `aer_hops` in soak.json passed test_soak silently, though the soak fails on any AER
    counter on the path growing. The root port keeps AER counters (its aer_dev_* files): UNREADABLE naming
    it, as a hop missing from linkhealth.json is."""
    import json
    import shutil

    snap = tmp_path / "s"
    shutil.copytree(HEALTHY, snap, symlinks=True)
    data = json.loads((snap / "soak.json").read_text())
    del data["gpus"]["0000:21:00.0"]["aer_hops"]["0000:00:01.1"]
    (snap / "soak.json").write_text(json.dumps(data))
    result = pytester.runpytest_subprocess(
        f"--rig-snapshot={snap}", "-k", "test_soak", "-rf", "-p", "no:cacheprovider", "--tb=short"
    )
    out = result.stdout.str()
    assert result.ret == 1, out
    assert "FAILED" in out and "test_soak[0000:21:00.0]" in out and "UNREADABLE" in out, out
    assert "AER counters of 0000:00:01.1 were read at the start but the soak record" in out, out
    assert "Traceback" not in out
