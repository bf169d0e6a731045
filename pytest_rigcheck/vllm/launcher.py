"""Start an OpenAI-compatible server in its own process group, wait until it is ready, stop it cleanly.

vLLM starts engine processes beside its API server (``VLLM-CPU.md``: with ``--shutdown-timeout 0`` they
outlived the parent by 1-3 s in the same group), so stopping means the whole process group: SIGTERM,
SIGKILL after a grace period, then a check that no process of the group is left (``procgroup``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..procgroup import GpuReleased, Group, StopReport, log_tail, start_group
from ..progress import Progress, no_progress
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
        self.group: Group | None = None
        self.ready_s: float | None = None

    @property
    def pid(self) -> int | None:
        return self.group.pid if self.group else None

    @property
    def started_at(self) -> float:
        return self.group.started_at if self.group else 0.0

    @property
    def stop_report(self) -> StopReport | None:
        return self.group.stop_report if self.group else None

    def start(self) -> None:
        """Start it; ``LaunchError`` when the program cannot be run at all."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env}
        try:
            self.group = start_group(self.argv, log=self.log, append=True, env=env, name="vLLM server")
        except OSError as exc:
            raise LaunchError(
                f"cannot start the server: {exc.strerror}: {exc.filename or self.argv[0]}",
                self.argv,
                self.log,
                fix="set [vllm] launch (or --rig-vllm-launch) to a command that exists "
                "on this machine, e.g. 'python -m vllm.entrypoints.openai.api_server "
                "--model {model} --port {port} {flags}'",
            ) from None

    def exited(self, wait_s: float = 0.0) -> int | None:
        """The exit code if the server has exited (waiting up to ``wait_s`` for it), else ``None``."""
        if self.group is None:
            return None
        return self.group.wait(wait_s) if wait_s else self.group.poll()

    def wait_ready(
        self,
        client: OpenAIClient,
        deadline_s: float,
        poll_s: float = 0.5,
        on_poll: Callable[[], None] | None = None,
        progress: Progress = no_progress,
    ) -> float:
        """Poll until the server answers; return seconds since start.

        Ready means ``GET /health`` 200, or, on a server without ``/health`` (404), ``GET /v1/models`` 200.
        An exit before that raises at once with the log tail; so does the deadline. ``progress``
        (``progress.Progress``) is told at each poll: seconds since start, and the deadline.
        """
        assert self.group is not None
        end = self.started_at + deadline_s
        last = "no answer yet"
        while True:
            progress(
                "vLLM start-up and readiness (GET /health)", time.monotonic() - self.started_at, deadline_s
            )
            code = self.group.poll()
            if code is not None:
                raise LaunchError(
                    f"server exited with code {code} before it was ready "
                    f"({time.monotonic() - self.started_at:.1f} s after start)",
                    self.argv,
                    self.log,
                    "\n".join(log_tail(self.log)),
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
                    "\n".join(log_tail(self.log)),
                    fix="raise [vllm] ready_timeout_s (or --rig-vllm-ready-timeout) if loading is "
                    "just slow; otherwise the log shows where start-up stopped",
                )
            if on_poll:
                on_poll()
            time.sleep(poll_s)

    def stop(
        self, grace_s: float = 30.0, reap_s: float = 10.0, gpu_released: GpuReleased | None = None
    ) -> StopReport:
        """SIGTERM the group, SIGKILL it after ``grace_s``, then wait up to ``reap_s`` for the group to be
        empty (``procgroup.Group.stop``). Never raises; ``StopReport.leftover`` lists what survived and
        ``gpu_holders`` what ``gpu_released`` found still on a GPU (the caller fails on either)."""
        if self.group is None:
            return StopReport(None, 0.0, False, [])
        return self.group.stop(grace_s, reap_s, gpu_released)
