"""A rig that is not idle (issue 9.6): other processes on the GPUs make the load and P2P/NCCL measurements
UNREADABLE, naming the process, its GPU and its use; the decision replays from p2p.json and nvml.json.

Seed: 2x H200 with a compute loop on one GPU during the run: all-reduce busbw fell from 312 to 141 GB/s
and every P2P and NCCL check passed.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_rigcheck.gpu import load
from pytest_rigcheck.gpu.state import Unavailable
from pytest_rigcheck.p2p import busy
from pytest_rigcheck.p2p.busy import Usage

from ..conftest import REPO, SNAPSHOTS

H200 = "NVIDIA H200"
LOOP = {"pid": 4242, "name": "python3", "used_b": 3 * 2**30, "kind": "compute"}
XORG = {"pid": 1500, "name": "Xorg", "used_b": 40 * 2**20, "kind": "graphics"}


class TestDecision:
    def test_foreign_compute_process_is_named(self) -> None:
        """A compute process not ours: its pid, name, memory, the GPU and its utilization."""
        lines = busy.foreign(
            [Usage("0000:00:06.0", 0, H200, [LOOP], 99, 40), Usage("0000:00:07.0", 1, H200, [], 0, 0)],
            own=[1],
        )
        assert lines == [
            "GPU0 0000:00:06.0 (NVIDIA H200): pid 4242 (python3) computing, holds 3072 MiB; GPU utilization 99 %"
        ]

    def test_our_workers_and_a_quiet_display_are_idle(self) -> None:
        """Our own worker's pid is ignored; a display server at low utilization is not other work."""
        usage = [Usage("0000:00:06.0", 0, H200, [LOOP, XORG], 3, 1)]
        assert busy.foreign(usage, own=[4242]) == []

    def test_hot_gpu_names_graphics_and_unlisted_work(self) -> None:
        """Utilization with nothing listed: work NVML cannot list (another container) is said."""
        hot = busy.foreign([Usage("0000:00:06.0", 0, H200, [], 85, 10)], own=[])
        assert hot and "a process NVML does not list" in hot[0] and "85 %" in hot[0]
        gfx = busy.foreign([Usage("0000:00:06.0", 0, H200, [XORG], 70, 10)], own=[])
        assert gfx and "pid 1500 (Xorg) drawing (graphics)" in gfx[0]

    def test_recheck_lets_a_finished_phase_cool_down(self) -> None:
        """Utilization alone is read again; the lower reading counts (our own last phase's tail)."""

        class Nv:
            def __init__(self) -> None:
                self.reads = [([], 60, 5), ([], 0, 0)]

            def usage(self, index: int) -> tuple[list[dict[str, Any]], int, int]:
                return self.reads.pop(0)

        lines, _ = busy.check(Nv(), {"0000:00:06.0": 0}, own=[], recheck_s=0.0)
        assert lines and "does not list" in lines[0]  # no recheck: the first reading stands
        lines, record = busy.check(Nv(), {"0000:00:06.0": 0}, own=[], recheck_s=0.01)
        assert lines == [] and record["lines"] == []

    def test_process_named_from_proc_comm(self) -> None:
        """The live Source's /proc/PID/comm names the process (NVML's name is a fallback)."""

        class Nv:
            def usage(self, index: int) -> tuple[list[dict[str, Any]], int, int]:
                return [{"pid": 77, "name": "?", "used_b": 2**30, "kind": "compute"}], 100, 50

        lines, record = busy.check(
            Nv(), {"0000:00:06.0": 0}, {"0000:00:06.0": H200}, lambda pid: "burn", own=[]
        )
        assert "pid 77 (burn) computing" in lines[0]
        assert record["gpus"][0]["processes"][0]["name"] == "burn"
        assert busy.recorded({"busy": record}) == lines


class BusyNvml:
    """The load's NVML with a foreign compute loop on GPU 0; sampling must never start."""

    def usage(self, index: int) -> tuple[list[dict[str, Any]], int, int]:
        return ([LOOP], 100, 30) if index == 0 else ([], 0, 0)

    def system(self) -> Any:
        raise RuntimeError("no names here")

    def sample(self, index: int) -> tuple[int, ...]:
        raise AssertionError("sampled on a busy rig")

    def replay(self, index: int) -> int:
        raise AssertionError("sampled on a busy rig")


def test_busy_rig_gets_no_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU load is not run on a busy rig: every GPU's readings say why (code ``busy``)."""
    from pytest_rigcheck.p2p import lock

    monkeypatch.setattr(lock, "lock_dir", lambda: tmp_path)
    gpus = {"0000:17:00.0": 0, "0000:18:00.0": 1}
    out = load.measure_under_load(BusyNvml(), gpus, 0.5, python=sys.executable)  # type: ignore[arg-type]
    for r in out.values():
        assert isinstance(r, Unavailable) and r.code == busy.BUSY_CODE
        assert "pid 4242 (python3) computing" in r.reason and "GPU0 0000:17:00.0" in r.reason


SUITES = [str(REPO / "suites" / f) for f in ("test_p2p_bandwidth.py", "test_nccl_allreduce.py")]


def _copy(tmp_path: Path, base: str) -> Path:
    dest = tmp_path / base
    shutil.copytree(SNAPSHOTS / base, dest, symlinks=True)
    return dest


def test_busy_p2p_json_replays_unreadable(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """A p2p.json whose record says the rig was busy: every P2P/NCCL check UNREADABLE, naming the process."""
    snap = _copy(tmp_path, "rtxpro6000x4-switch")
    bdf = "0000:03:00.0"
    usage = Usage(bdf, 0, "NVIDIA RTX PRO 6000", [LOOP], 98, 20)
    record = {"checked": "modelled", "gpus": [usage.to_json()], "lines": busy.foreign([usage], own=[])}
    (snap / "p2p.json").write_text(json.dumps(busy.nothing_measured(record)))
    result = pytester.runpytest_subprocess(
        f"--rig-snapshot={snap}", *SUITES, "-rfE", "-p", "no:cacheprovider"
    )
    out = result.stdout.str()
    assert result.ret == 1, out
    assert not re.search(r"^PASSED", out, re.M)
    assert "the rig is not idle" in out and "pid 4242 (python3) computing" in out and bdf in out
    assert "--query-compute-apps" in out


def test_busy_load_in_nvml_json_replays_unreadable(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """nvml.json readings under load refused as busy (what capture records then) replay UNREADABLE, named."""
    snap = _copy(tmp_path, "rtxpro6000x4-switch")
    data = json.loads((snap / "nvml.json").read_text())
    why = busy.busy_text(
        busy.foreign([Usage("0000:03:00.0", 0, None, [LOOP], 98, 2)], own=[]), "readings under load"
    )
    for g in data["gpus"]:
        g["load"] = Unavailable(why, busy.BUSY_CODE).to_json()
    (snap / "nvml.json").write_text(json.dumps(data))
    result = pytester.runpytest_subprocess(
        f"--rig-snapshot={snap}", str(REPO / "suites" / "test_clocks.py"), "-rfE", "-p", "no:cacheprovider"
    )
    out = result.stdout.str()
    assert result.ret == 1, out
    assert "the rig is not idle" in out and "pid 4242 (python3)" in out
