"""Starting and stopping a server: own process group, readiness deadline, early exit, SIGKILL escalation."""

from __future__ import annotations

import os
import shlex
import time

import pytest

from pytest_rigcheck.procgroup import free_port, group_members, log_tail
from pytest_rigcheck.vllm.client import OpenAIClient
from pytest_rigcheck.vllm.launcher import LaunchError, ServerProcess

from .conftest import fake_launch, processes_with


def _proc(tmp_path, mode, tag, *extra):
    port = free_port()
    argv = [w.replace("{port}", str(port)) for w in shlex.split(fake_launch(mode, *extra, tag=tag))]
    return ServerProcess(argv, tmp_path / "server.log"), OpenAIClient(f"http://127.0.0.1:{port}", timeout_s=5)


class TestServerProcess:
    def test_ready_then_clean_stop(self, tmp_path, tag):
        """A good server becomes ready, runs in its own process group, and stops on SIGTERM."""
        proc, client = _proc(tmp_path, "good", tag, "--spawn-child")
        proc.start()
        try:
            assert proc.wait_ready(client, 30) < 30
            assert os.getpgid(proc.pid) == proc.pid != os.getpgid(0)
            time.sleep(0.3)  # let the engine child start
            assert len(group_members(proc.pid)) == 2
        finally:
            report = proc.stop(grace_s=10)
        assert report.leftover == []
        assert report.killed is False
        assert report.returncode == 0

    def test_sigkill_after_grace(self, tmp_path, tag):
        """An engine child that ignores SIGTERM is SIGKILLed after the grace period; nothing is left."""
        proc, client = _proc(tmp_path, "good", tag, "--spawn-child", "--child-ignores-term", "--ignore-term")
        proc.start()
        proc.wait_ready(client, 30)
        time.sleep(0.3)
        t0 = time.monotonic()
        report = proc.stop(grace_s=1.0)
        assert report.killed
        assert report.leftover == []
        assert 1.0 <= time.monotonic() - t0 < 8
        assert not processes_with(tag)

    def test_early_exit_fails_at_once_with_log_tail(self, tmp_path, tag):
        """A server that exits during start-up fails at once, quoting its log."""
        proc, client = _proc(tmp_path, "exit-early", tag)
        proc.start()
        t0 = time.monotonic()
        with pytest.raises(LaunchError) as info:
            proc.wait_ready(client, 60)
        assert time.monotonic() - t0 < 15
        msg = str(info.value)
        assert "exited with code 1 before it was ready" in msg
        assert "CUDA out of memory" in msg
        assert "command:" in msg
        assert str(tmp_path / "server.log") in msg
        proc.stop(1)

    def test_never_ready_hits_deadline(self, tmp_path, tag):
        """A server that never answers fails at the deadline with the last error and its log."""
        proc, client = _proc(tmp_path, "never-ready", tag)
        proc.start()
        try:
            with pytest.raises(LaunchError) as info:
                proc.wait_ready(client, 2.0, poll_s=0.2)
            msg = str(info.value)
            assert "not ready after 2 s" in msg
            assert "connection refused" in msg
            assert "loading model weights" in msg
        finally:
            report = proc.stop(grace_s=5)
        assert report.leftover == []

    def test_missing_program(self, tmp_path):
        """A launch command that does not exist says so and how to fix the template."""
        proc = ServerProcess(["/nonexistent/vllm", "serve"], tmp_path / "log")
        with pytest.raises(LaunchError, match="cannot start the server.*nonexistent"):
            proc.start()

    def test_log_tail(self, tmp_path):
        """The tail is the last lines of the log; a missing log gives nothing."""
        log = tmp_path / "l"
        log.write_text("\n".join(f"line {i}" for i in range(100)))
        assert log_tail(log, 3) == ["line 97", "line 98", "line 99"]
        assert log_tail(tmp_path / "missing") == []


class FakeGpu:
    def __init__(self, index, name, processes):
        self.index, self.name, self._p = index, name, processes

    def get(self, key):
        return self._p if key == "processes" else None


class FakeNvml:
    """Stands in for LiveNvml: ``system()`` lists GPUs with their processes."""

    def __init__(self, gpus):
        self._gpus = gpus

    def system(self):
        return type("S", (), {"gpus": self._gpus})()

    def close(self):
        pass


class TestGpuMemoryReleased:
    def test_holders_named(self):
        """A pid of the stopped group still on a GPU is reported with the GPU and the memory it holds."""
        from pytest_rigcheck.gpu.holders import gpu_holders

        gpus = [
            FakeGpu(0, "H100", [{"pid": 42, "name": "VLLM::EngineCore", "used_b": 70 * 2**30}, {"pid": 7}])
        ]
        left = gpu_holders({42, 43}, lambda: FakeNvml(gpus), wait_s=0)
        assert left == ["GPU0 (H100): pid 42 (VLLM::EngineCore) holds 71680 MiB"]

    def test_released(self):
        """No pid of the group on any GPU: nothing reported."""
        from pytest_rigcheck.gpu.holders import gpu_holders

        assert gpu_holders({42}, lambda: FakeNvml([FakeGpu(0, "H100", [{"pid": 7}])]), wait_s=0) == []

    def test_no_nvml_is_none(self):
        """Without NVML (CPU machine) the answer is None: neither released nor held."""
        from pytest_rigcheck.errors import RigcheckError
        from pytest_rigcheck.gpu.holders import gpu_holders

        def unavailable():
            raise RigcheckError("no NVIDIA driver")

        assert gpu_holders({1}, unavailable) is None

    def test_stop_report_lists_group_pids(self, tmp_path, tag):
        """The stop report keeps every pid of the group seen before the stop, engine children included."""
        proc, client = _proc(tmp_path, "good", tag, "--spawn-child")
        proc.start()
        proc.wait_ready(client, 30)
        time.sleep(0.3)
        report = proc.stop(5)
        assert proc.pid in report.pids
        assert len(report.pids) == 2


def test_readiness_wait_tells_progress(tmp_path, tag):
    """vLLM start-up and readiness: the status line is told at each poll, with the ready deadline (issue 10 #4)."""
    proc, client = _proc(tmp_path, "good", tag)
    seen = []
    proc.start()
    try:
        proc.wait_ready(client, 30, progress=lambda what, el, dl: seen.append((what, el, dl)))
    finally:
        proc.stop(grace_s=10)
    assert seen and {w for w, _, _ in seen} == {"vLLM start-up and readiness (GET /health)"}
    assert all(dl == 30 and el >= 0 for _, el, dl in seen)
