"""The process-group runner: own group, TERM then KILL, reap, nothing left, the registry, and a stopped pytest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pytest_rigcheck import procgroup
from pytest_rigcheck.procgroup import group_members, live_groups, log_tail, start_group, stop_all

# A leader that starts a child in its own group, then sleeps; both may ignore SIGTERM.
FAMILY = textwrap.dedent("""
    import signal, subprocess, sys, time
    ignore = sys.argv[1] == "ignore-term"
    child = [sys.executable, "-c",
             "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN) if %r else None; time.sleep(600)" % ignore]
    subprocess.Popen(child)
    if ignore:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("family up", flush=True)
    time.sleep(600)
""")


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie (it holds nothing; init reaps an orphan a moment later)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2 :].startswith("Z")


def _family(tmp_path: Path, mode: str) -> procgroup.Group:
    script = tmp_path / "family.py"
    script.write_text(FAMILY)
    g = start_group([sys.executable, str(script), mode], log=tmp_path / "family.log", name="family")
    end = time.monotonic() + 20
    while len(g.members()) < 2 and time.monotonic() < end:
        time.sleep(0.05)
    assert len(g.members()) == 2, g.tail()
    return g


class TestGroup:
    def test_own_group_and_clean_stop(self, tmp_path: Path) -> None:
        """The program leads a new process group; SIGTERM ends it and its child, without SIGKILL."""
        g = _family(tmp_path, "plain")
        assert os.getpgid(g.pid) == g.pid != os.getpgid(0)
        assert g in live_groups()
        pids = {p for p, _, _ in g.members()}
        asked: list[frozenset[int]] = []
        report = g.stop(grace_s=10, gpu_released=lambda seen: asked.append(frozenset(seen)) or [])
        assert report.leftover == [] and not report.killed and report.was_running
        assert report.returncode == -signal.SIGTERM
        assert report.pids == pids and asked == [pids]  # the GPU question gets every pid of the group
        assert report.gpu_holders == []
        assert all(_gone(p) for p in pids)
        assert g not in live_groups()
        assert g.stop() is report  # a second stop returns the first report

    def test_sigkill_after_grace(self, tmp_path: Path) -> None:
        """A group that ignores SIGTERM is SIGKILLed after the grace period; nothing is left."""
        g = _family(tmp_path, "ignore-term")
        pids = [p for p, _, _ in g.members()]
        t0 = time.monotonic()
        report = g.stop(grace_s=1.0, reap_s=5)
        assert 1.0 <= time.monotonic() - t0 < 8
        assert report.killed and report.leftover == []
        assert all(_gone(p) for p in pids)

    def test_leader_gone_child_left(self, tmp_path: Path) -> None:
        """A child that outlives its leader is still found by its group and stopped."""
        script = tmp_path / "orphan.py"
        script.write_text(
            "import subprocess, sys; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])"
        )
        g = start_group([sys.executable, str(script)], name="orphan")
        assert g.wait(20) == 0
        end = time.monotonic() + 10
        while not g.members() and time.monotonic() < end:
            time.sleep(0.05)
        (child,) = g.members()
        assert g in live_groups()  # the leader exited, but its group has not
        report = g.stop(grace_s=5)
        assert report.leftover == [] and _gone(child[0])

    def test_missing_program(self, tmp_path: Path) -> None:
        """A program that does not exist raises OSError and registers nothing."""
        before = live_groups()
        with pytest.raises(OSError):
            start_group(["/nonexistent/program"], log=tmp_path / "log")
        assert live_groups() == before

    def test_stop_all(self, tmp_path: Path) -> None:
        """stop_all stops every live group at once, notes why in its log, and is safe to call again."""
        a = start_group(["sleep", "600"], log=tmp_path / "a.log", name="a")
        b = start_group(["sleep", "600"], name="b")
        assert {a, b} <= set(live_groups())
        reports = stop_all("test says stop", grace_s=2)
        assert {r.reason for r in reports} == {"test says stop"}
        assert all(r.leftover == [] for r in reports)
        assert _gone(a.pid) and _gone(b.pid)
        assert live_groups() == [] and stop_all("again") == []
        assert "stopping this process group: test says stop" in (tmp_path / "a.log").read_text()


class TestRun:
    def test_exit_code(self) -> None:
        assert procgroup.run([sys.executable, "-c", "import sys; sys.exit(3)"], 30) == 3

    def test_past_the_deadline_is_stopped(self, tmp_path: Path) -> None:
        """A program still running at the deadline: None, and its group (child included) is gone."""
        script = tmp_path / "s.py"
        script.write_text(
            "import subprocess, sys, time\n"
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
            "time.sleep(600)\n"
        )
        t0 = time.monotonic()
        assert procgroup.run([sys.executable, str(script)], 1.0) is None
        assert time.monotonic() - t0 < 10
        assert not [g for g in live_groups() if str(script) in g.argv]

    def test_worker_interpreter_checks(self) -> None:
        """The P2P plugin's torch probe runs through it: a missing interpreter or torch is one line."""
        from pytest_rigcheck.p2p.session import torch_missing

        assert "cannot run the worker interpreter /nonexistent/python" in str(
            torch_missing("/nonexistent/python")
        )
        has_torch = (
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is None)",
                ],
                check=False,
            ).returncode
            == 0
        )
        assert torch_missing(sys.executable) == (
            None if has_torch else f"PyTorch is not installed for {sys.executable}"
        )


class TestReading:
    def test_group_members_from_proc(self, tmp_path: Path) -> None:
        """proc(5) stat: comm with spaces and parentheses; zombies and other groups are left out."""
        for pid, comm, state, pgrp in [
            (10, "VLLM::Engine (x) y", "S", 10),
            (11, "python3", "Z", 10),
            (12, "python3", "D", 10),
            (13, "other", "S", 99),
        ]:
            (tmp_path / str(pid)).mkdir()
            (tmp_path / str(pid) / "stat").write_text(f"{pid} ({comm}) {state} 1 {pgrp} {pgrp} 0 -1 0\n")
        (tmp_path / "self").mkdir()
        assert sorted(group_members(10, tmp_path)) == [(10, "S", "VLLM::Engine (x) y"), (12, "D", "python3")]

    def test_log_tail(self, tmp_path: Path) -> None:
        """The last lines; with ``contains`` only those lines unless none match; nothing for no log."""
        log = tmp_path / "l"
        log.write_text("\n".join(f"line {i}" + (" NCCL" if i % 10 == 0 else "") for i in range(100)))
        assert log_tail(log, 3) == ["line 97", "line 98", "line 99"]
        assert log_tail(log, 2, contains="NCCL") == ["line 80 NCCL", "line 90 NCCL"]
        assert log_tail(log, 1, contains="absent") == ["line 99"]
        assert log_tail(tmp_path / "missing") == [] and log_tail(None) == []
        log.write_text("a\n" + "x" * 5000 + "\n" + "b" * 10)
        assert log_tail(log, max_chars=100) == ["b" * 10]  # a long line does not flood the message
        log.write_text("x" * 5000)
        assert log_tail(log, max_chars=100) == ["x" * 100]


STARTS_SLEEP = textwrap.dedent("""
    import os, time
    from pathlib import Path
    from pytest_rigcheck.procgroup import start_group

    def test_starts_a_server():
        g = start_group(["sleep", "600"], name="stand-in for a vLLM server")
        Path(os.environ["SLEEP_PID_FILE"]).write_text(str(g.pid))
        time.sleep(600)
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stopping_pytest_stops_what_it_started(tmp_path: Path, sig: signal.Signals) -> None:
    """A pytest stopped by SIGTERM (a CI job's timeout) or SIGINT takes what it started down with it.

    Real processes: pytest runs a test that starts ``sleep 600`` in its own group and waits; the signal
    goes to pytest only, and the sleep must be gone within seconds.
    """
    (tmp_path / "test_starts.py").write_text(STARTS_SLEEP)
    pid_file = tmp_path / "sleep.pid"
    env = {**os.environ, "SLEEP_PID_FILE": str(pid_file)}
    pytest_proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_starts.py"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # the signal below reaches pytest alone, not a terminal's whole group
    )
    sleep_pid = None
    try:
        end = time.monotonic() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert pytest_proc.poll() is None, pytest_proc.communicate()[0].decode()
            assert time.monotonic() < end, "the inner test did not start its process"
            time.sleep(0.05)
        sleep_pid = int(pid_file.read_text())
        assert not _gone(sleep_pid)
        t0 = time.monotonic()
        pytest_proc.send_signal(sig)
        pytest_proc.wait(timeout=20)
        end = t0 + 10
        while not _gone(sleep_pid) and time.monotonic() < end:
            time.sleep(0.05)
        assert _gone(sleep_pid), f"sleep {sleep_pid} outlived pytest stopped by {sig.name}"
        assert time.monotonic() - t0 < 10
    finally:
        if pytest_proc.poll() is None:
            os.killpg(pytest_proc.pid, signal.SIGKILL)
            pytest_proc.wait()
        if sleep_pid is not None and not _gone(sleep_pid):
            os.killpg(sleep_pid, signal.SIGKILL)
