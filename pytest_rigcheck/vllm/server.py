"""The server under test: a client, the settings, and the process when rigcheck started it.

Measurements several checks share (one streaming run, one concurrent run) are taken once and kept.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..procgroup import free_port, log_tail
from ..progress import Progress, no_progress
from .client import OpenAIClient, Response, ServerUnreachable, StreamResult
from .launcher import LaunchError, ServerProcess
from .settings import VllmSettings


class ServerGone(RuntimeError):
    """The server stopped answering; says whether its process exited, with the log's tail."""


@dataclass
class VllmServer:
    """An OpenAI-compatible server to check.

    Args:
        client: HTTP client bound to its base URL.
        settings: the validated ``[vllm]`` settings and options.
        process: the server's process when rigcheck started it, else ``None``.
    """

    client: OpenAIClient
    settings: VllmSettings
    process: ServerProcess | None = None
    model_id: str | None = None
    _memo: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def base_url(self) -> str:
        return self.client.base_url

    def describe(self) -> str:
        """``model @ url`` (plus ``started by rigcheck, pid N``), for the first words of every message."""
        who = f"{self.model_id or self.settings.expected_model_id or '(model unknown)'} @ {self.base_url}"
        if self.process is not None:
            who += f" (started by rigcheck, pid {self.process.pid})"
        return who

    def gone(self, exc: ServerUnreachable, during: str) -> ServerGone:
        """Turn a failed request into a message saying what happened to the server."""
        lines = [f"{self.describe()}: no answer during {during}: {exc.reason}"]
        if self.process is not None:
            code = self.process.exited(wait_s=2.0)  # a crash closes the socket a moment before the exit
            if code is not None:
                lines[0] += f"; the server process exited with code {code}"
            tail = log_tail(self.process.log, 15)
            if tail:
                lines.append(f"  log {self.process.log} ends:")
                lines += ["    | " + ln for ln in tail]
        lines.append(
            "  fix: check that the server is up (curl its /v1/models); a crash or OOM shows in its log"
        )
        return ServerGone("\n".join(lines))

    def get(self, path: str, during: str) -> Response:
        try:
            return self.client.get(path)
        except ServerUnreachable as exc:
            raise self.gone(exc, during) from None

    def post(self, path: str, payload: dict[str, Any], during: str) -> Response:
        try:
            return self.client.post(path, payload)
        except ServerUnreachable as exc:
            raise self.gone(exc, during) from None

    def stream(self, path: str, payload: dict[str, Any], during: str) -> StreamResult:
        try:
            return self.client.stream(path, payload)
        except ServerUnreachable as exc:
            raise self.gone(exc, during) from None

    def chat_payload(self, content: str, max_tokens: int, **extra: Any) -> dict[str, Any]:
        return {
            "model": self.model_id or self.settings.expected_model_id or "",
            "temperature": 0,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": max_tokens,
            **extra,
        }

    def memo(self, key: str) -> Any:
        return self._memo.get(key)

    def remember(self, key: str, value: Any) -> Any:
        self._memo[key] = value
        return value

    def resolve_model(self) -> None:
        """Learn the served model id from ``/v1/models`` (the first one when the profile names none)."""
        try:
            r = self.client.get("/v1/models")
            ids = (
                [m.get("id") for m in r.json().get("data", []) if isinstance(m, dict)]
                if r.status == 200
                else []
            )
        except (ServerUnreachable, ValueError, AttributeError):
            ids = []  # the identity check reports it properly
        want = self.settings.expected_model_id
        self.model_id = want if want in ids else (ids[0] if ids and not want else want)


def start_server(
    settings: VllmSettings, log_dir: Path, api_key: str | None, progress: Progress = no_progress
) -> VllmServer:
    """Start the server of ``settings.launch`` on 127.0.0.1 and wait until it is ready (``progress``, a
    ``progress.Progress``, is told while it waits).

    Raises ``LaunchError`` (with the log's tail) when it exits early or is not ready in time; the
    process group is stopped before raising.
    """
    host = "127.0.0.1"
    port = settings.port or free_port(host)
    argv = settings.launch_argv(host, port)
    env = dict(settings.env)
    if api_key:
        env["VLLM_API_KEY"] = api_key  # vLLM reads it; never on the command line, where ps would show it
    log = log_dir / f"server-{port}.log"
    proc = ServerProcess(argv, log, env)
    with log.open("a") as f:
        f.write(f"# rigcheck: {shlex.join(argv)}\n# started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    proc.start()
    client = OpenAIClient(f"http://{host}:{port}", api_key, settings.request_timeout_s)
    try:
        proc.wait_ready(client, settings.ready_timeout_s, progress=progress)
    except LaunchError:
        report = proc.stop(settings.stop_grace_s)
        if report.leftover:
            raise LaunchError(
                f"start failed, and {len(report.leftover)} process(es) of its group survived "
                f"SIGKILL: {report.leftover}",
                argv,
                log,
                "\n".join(log_tail(log)),
            ) from None
        raise
    server = VllmServer(client, settings, proc)
    server.resolve_model()
    return server
