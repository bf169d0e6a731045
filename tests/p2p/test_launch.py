"""The launcher: phases in turn, results collected, a hung or crashed worker killed with its whole process group."""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import pytest

from pytest_rigcheck.p2p.launch import Launcher, Worker, worker_env

FAKE = textwrap.dedent("""
    import os, sys, time, json, subprocess
    run_dir, name, phase, mode = sys.argv[1:5]
    parent = os.getppid()
    if mode == "child-sleeps":
        # a grandchild in the same process group: it must die with the worker
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        open(os.path.join(run_dir, "child." + name), "w").write(str(child.pid))
    print("NCCL INFO Channel 00/0 : 0[0] -> 1[1] via P2P/CUMEM/read", flush=True)
    open(os.path.join(run_dir, "ready." + name), "w").write(str(os.getpid()))
    if mode == "hang-setup":
        time.sleep(600)
    while not os.path.exists(os.path.join(run_dir, "go." + phase)):
        time.sleep(0.005)
    if mode in ("hang", "child-sleeps"):
        print("NCCL INFO waiting for peer", flush=True)
        time.sleep(600)
    if mode == "crash":
        sys.exit(7)
    out = os.path.join(run_dir, "result." + name + ".json")
    with open(out + ".tmp", "w") as f:  # atomic, as the real workers write (_proto.py)
        json.dump({"name": name}, f)
    os.replace(out + ".tmp", out)
""")


def _workers(tmp_path: Path, phase: str, modes: list[str]) -> list[Worker]:
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE)
    return [
        Worker(
            f"{phase}.{i}",
            phase,
            [sys.executable, str(script), str(tmp_path), f"{phase}.{i}", phase, m],
            worker_env({}),
        )
        for i, m in enumerate(modes)
    ]


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie (it holds nothing; init reaps an orphan a moment later)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2 :].startswith("Z")


class TestLauncher:
    def test_phases_return_results(self, tmp_path: Path) -> None:
        """Every worker of a phase reports, and the phase is ok."""
        with Launcher(tmp_path, timeout_s=20) as la:
            la.start(_workers(tmp_path, "a", ["ok", "ok"]) + _workers(tmp_path, "b", ["ok"]))
            a, b = la.run_phase("a"), la.run_phase("b")
        assert a.ok and b.ok
        assert set(a.results) == {"a.0", "a.1"} and set(b.results) == {"b.0"}

    def test_hang_kills_every_rank_and_its_children(self, tmp_path: Path) -> None:
        """A rank that never finishes is a hang: all ranks and their children are killed, none left."""
        t0 = time.monotonic()
        with Launcher(tmp_path, timeout_s=1.5, gpu_released=lambda pids: None) as la:
            ws = _workers(tmp_path, "nccl", ["ok", "child-sleeps", "hang"])
            la.start(ws)
            out = la.run_phase("nccl")
        assert time.monotonic() - t0 < 15
        assert out.hung is not None and not out.ok
        assert out.hung["stage"] == "measure"
        assert set(out.hung["waiting_for"]) == {"nccl.1", "nccl.2"}
        assert out.hung["left"] == []
        assert "gpu_holders" in out.hung  # None here: no NVML on this machine
        assert any("NCCL INFO" in line for line in out.hung["tail"])
        child = int((tmp_path / "child.nccl.1").read_text())
        assert all(_gone(p) for p in [child, *(w.pid for w in ws if w.pid)])

    def test_setup_hang(self, tmp_path: Path) -> None:
        """A worker that never gets ready (NCCL init stuck) is a hang in set-up."""
        with Launcher(tmp_path, timeout_s=1.0) as la:
            ws = _workers(tmp_path, "nccl", ["hang-setup"])
            la.start(ws)
            (tmp_path / "ready.nccl.0").unlink(missing_ok=True)
            out = la.run_phase("nccl")
        assert out.hung is not None and out.hung["left"] == []
        assert all(_gone(w.pid) for w in ws if w.pid)

    def test_crash_stops_the_phase_early(self, tmp_path: Path) -> None:
        """A rank that exits with an error ends the phase at once; the others are killed."""
        t0 = time.monotonic()
        with Launcher(tmp_path, timeout_s=30) as la:
            ws = _workers(tmp_path, "nccl", ["crash", "hang"])
            la.start(ws)
            out = la.run_phase("nccl")
        assert time.monotonic() - t0 < 15
        assert out.crashed is not None and out.crashed["code"] == 7 and out.crashed["left"] == []
        assert all(_gone(w.pid) for w in ws if w.pid)


@pytest.mark.parametrize("extra", [{}, {"NCCL_DEBUG": "WARN"}])
def test_worker_env(monkeypatch: pytest.MonkeyPatch, extra: dict[str, str]) -> None:
    """Workers see CUDA in PCI order and NCCL_DEBUG=INFO unless the caller chose a level."""
    for k, v in extra.items():
        monkeypatch.setenv(k, v)
    env = worker_env({"X": "1"})
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID" and env["X"] == "1"
    assert env["NCCL_DEBUG"] == extra.get("NCCL_DEBUG", "INFO")


def test_finish_keeps_c_stdio_output(tmp_path: Path) -> None:
    """A worker exits with ``finish`` right after its result (no interpreter or NCCL teardown), yet what C
    code printed into its block-buffered log (NCCL's INFO lines, the transports the checks read) is kept."""
    import subprocess

    from pytest_rigcheck.p2p.launch import WORKERS

    code = (
        f"import sys; sys.path.insert(0, {str(WORKERS)!r}); import ctypes; from _proto import finish; "
        "ctypes.CDLL(None).printf(b'x NCCL INFO Channel 00/0 : 0[0] -> 1[1] via P2P/CUMEM/read\\n'); "
        "print('python line'); finish(0)"
    )
    log = tmp_path / "log.txt"
    with open(log, "w") as f:
        rc = subprocess.run(
            [sys.executable, "-c", code], stdout=f, stderr=subprocess.STDOUT, check=False
        ).returncode
    assert rc == 0
    text = log.read_text()
    assert "via P2P/CUMEM/read" in text and "python line" in text
