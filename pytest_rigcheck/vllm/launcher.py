"""Start an OpenAI-compatible server in its own process group, wait until it is ready, stop it cleanly.

vLLM starts engine processes beside its API server (``VLLM-CPU.md``: with ``--shutdown-timeout 0`` they
outlived the parent by 1-3 s in the same group), so stopping means the whole process group: SIGTERM,
SIGKILL after a grace period, then a check that no process of the group is left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .client import OpenAIClient, ServerUnreachable


class LaunchError(RuntimeError):
    """The server could not be started, did not become ready, or left processes behind.

    Carries the command, the log path and the log's tail for the message.
    """

    def __init__(
        self, summary: str, argv: Sequence[str], log: Path | None, tail: str = "", fix: str = ""
    ) -> None:
        self.summary = summary
        self.argv = list(argv)
        self.log = log
        self.tail = tail
        self.fix = fix
        super().__init__(self._format())

    def _format(self) -> str:
        import shlex

        lines = [self.summary, f"  command: {shlex.join(self.argv)}"]
        if self.log is not None:
            lines.append(f"  log: {self.log}")
        if self.tail:
            lines.append("  last lines of the log:")
            lines += ["    | " + ln for ln in self.tail.splitlines()]
        if self.fix:
            lines.append(f"  fix: {self.fix}")
        return "\n".join(lines)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the kernel's pick; another process could still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def log_tail(path: Path | None, lines: int = 25, max_chars: int = 4000) -> str:
    """The last lines of a log file, for failure messages (empty when there is none)."""
    if path is None:
        return ""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    out = "\n".join(text.splitlines()[-lines:])
    return out[-max_chars:]


def group_members(pgid: int, proc_root: Path = Path("/proc")) -> list[tuple[int, str, str]]:
    """Processes of process group ``pgid`` that are not zombies: ``(pid, state, comm)``.

    Read from ``/proc/<pid>/stat`` (proc(5): field 3 state, field 5 pgrp; comm may hold spaces and
    parentheses, so split after the last ``)``). Zombies hold no memory and vanish when reaped.
    """
    found = []
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        comm = stat[stat.find("(") + 1 : stat.rfind(")")]
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            found.append((int(entry.name), fields[0], comm))
    return found


@dataclass
class StopReport:
    """How a stop went: what was sent, how long it took, the exit code, what was left."""

    returncode: int | None
    seconds: float
    killed: bool
    leftover: list[tuple[int, str, str]]
    pids: frozenset[int] = frozenset()  # every pid of the group seen before the stop (for the GPU check)


class ServerProcess:
    """A server started by rigcheck, in a new session (so a new process group, ``start_new_session``).

    Args:
        argv: the command, already filled in (``VllmSettings.launch_argv``).
        log: file receiving its stdout and stderr.
        env: extra environment variables.

    Example::

        proc = ServerProcess(["python", "-m", "http.server", "8000"], Path("server.log"))
        proc.start()
        proc.wait_ready(OpenAIClient("http://127.0.0.1:8000"), deadline_s=30)
        proc.stop()
    """

    def __init__(self, argv: Sequence[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.log = log
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.ready_s: float | None = None
        self.stop_report: StopReport | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        """Start it; ``LaunchError`` when the program cannot be run at all."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env}
        with self.log.open("ab") as out:
            try:
                self.proc = subprocess.Popen(
                    self.argv,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,
                )
            except OSError as exc:
                raise LaunchError(
                    f"cannot start the server: {exc.strerror}: {exc.filename or self.argv[0]}",
                    self.argv,
                    self.log,
                    fix="set [vllm] launch (or --rig-vllm-launch) to a command that exists "
                    "on this machine, e.g. 'python -m vllm.entrypoints.openai.api_server "
                    "--model {model} --port {port} {flags}'",
                ) from None
        self.started_at = time.monotonic()

    def exited(self, wait_s: float = 0.0) -> int | None:
        """The exit code if the server has exited (waiting up to ``wait_s`` for it), else ``None``."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout=wait_s) if wait_s else self.proc.poll()
        except subprocess.TimeoutExpired:
            return None

    def wait_ready(
        self,
        client: OpenAIClient,
        deadline_s: float,
        poll_s: float = 0.5,
        on_poll: Callable[[], None] | None = None,
    ) -> float:
        """Poll until the server answers; return seconds since start.

        Ready means ``GET /health`` 200, or, on a server without ``/health`` (404), ``GET /v1/models`` 200.
        An exit before that raises at once with the log tail; so does the deadline.
        """
        assert self.proc is not None
        end = self.started_at + deadline_s
        last = "no answer yet"
        while True:
            code = self.proc.poll()
            if code is not None:
                raise LaunchError(
                    f"server exited with code {code} before it was ready "
                    f"({time.monotonic() - self.started_at:.1f} s after start)",
                    self.argv,
                    self.log,
                    log_tail(self.log),
                    fix="read the log above; a bad flag, a missing model or out of memory shows there",
                )
            try:
                r = client.get("/health", timeout=min(10.0, deadline_s))
                if r.status == 404:
                    r = client.get("/v1/models", timeout=min(10.0, deadline_s))
                if r.status == 200:
                    self.ready_s = time.monotonic() - self.started_at
                    return self.ready_s
                last = f"HTTP {r.status}: {r.error_message()[:100]}"
            except ServerUnreachable as exc:
                last = exc.reason
            if time.monotonic() >= end:
                raise LaunchError(
                    f"server not ready after {deadline_s:g} s (last: {last})",
                    self.argv,
                    self.log,
                    log_tail(self.log),
                    fix="raise [vllm] ready_timeout_s (or --rig-vllm-ready-timeout) if loading is "
                    "just slow; otherwise the log shows where start-up stopped",
                )
            if on_poll:
                on_poll()
            time.sleep(poll_s)

    def stop(self, grace_s: float = 30.0, reap_s: float = 10.0) -> StopReport:
        """SIGTERM the group, SIGKILL it after ``grace_s``, then wait up to ``reap_s`` for the group to be
        empty. Never raises; ``StopReport.leftover`` lists what survived (the caller fails on it)."""
        if self.proc is None:
            return StopReport(None, 0.0, False, [])
        if self.stop_report is not None:
            return self.stop_report
        pgid = self.proc.pid  # start_new_session: the leader's pid is the group id
        pids = frozenset([pgid, *(p for p, _, _ in group_members(pgid))])
        t0 = time.monotonic()
        killed = False
        _killpg(pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):  # escalate below
            self.proc.wait(timeout=grace_s)
        # The leader may be gone while engine workers linger: wait for the group, then SIGKILL it.
        while group_members(pgid) and time.monotonic() - t0 < grace_s:
            time.sleep(0.1)
        if group_members(pgid) or self.proc.poll() is None:
            killed = True
            _killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):  # reported as leftover
            self.proc.wait(timeout=reap_s)
        end = time.monotonic() + reap_s
        left = group_members(pgid)
        while left and time.monotonic() < end:
            time.sleep(0.1)
            left = group_members(pgid)
        self.stop_report = StopReport(self.proc.poll(), time.monotonic() - t0, killed, left, pids)
        return self.stop_report


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # the whole group is gone already
    except PermissionError:
        pass  # a member changed uid (setuid helper): the leftover check reports it
