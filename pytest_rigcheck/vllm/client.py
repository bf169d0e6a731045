"""A small stdlib HTTP client for OpenAI-compatible servers: JSON requests and timed SSE streams.

The API key is sent as ``Authorization: Bearer`` and never appears in an error message or a ``repr``.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .sse import SseError, chunk_text, iter_json_chunks


class ServerUnreachable(ConnectionError):
    """No HTTP answer at all (refused, reset, timed out): names the URL and the reason."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"{url}: {reason}")

    @property
    def timed_out(self) -> bool:
        """The server took the request and did not answer in time (hung), as opposed to refused or gone."""
        return self.reason.startswith("timed out")


@dataclass(frozen=True)
class Response:
    """One HTTP answer: status, lower-cased headers, body."""

    status: int
    headers: dict[str, str]
    body: bytes
    elapsed_s: float

    def json(self) -> Any:
        """The body as JSON; ``ValueError`` naming what came instead."""
        try:
            return json.loads(self.body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ValueError(f"HTTP {self.status} body is not JSON: {self.body[:120]!r}") from None

    def error_message(self) -> str:
        """The OpenAI-style ``error.message`` if present, else the start of the body."""
        try:
            err = json.loads(self.body).get("error")
            if isinstance(err, dict) and err.get("message"):
                return str(err["message"])[:300]
            if isinstance(err, str):
                return err[:300]
        except (ValueError, AttributeError):
            pass  # not JSON: show raw text below
        return self.body[:300].decode("utf-8", errors="replace")


@dataclass
class StreamResult:
    """A timed streaming completion.

    ``ttft_s`` is measured to the first chunk that carries text (vLLM's first chat chunk carries only
    the role); ``decode_tokens_per_s`` uses the tokens after the first over the time after it.
    """

    status: int
    ttft_s: float | None = None
    elapsed_s: float = 0.0
    text: str = ""
    chunks: int = 0
    text_chunks: int = 0
    last_text_s: float | None = None
    usage: dict[str, Any] | None = None
    finish_reason: str | None = None
    chunk_times: list[float] = field(default_factory=list, repr=False)

    @property
    def completion_tokens(self) -> int:
        """Tokens generated: the usage chunk's count when the server sends one, else text chunks."""
        if self.usage and isinstance(self.usage.get("completion_tokens"), int):
            return int(self.usage["completion_tokens"])
        return self.text_chunks

    @property
    def tokens_counted_from(self) -> str:
        return (
            "usage" if self.usage and isinstance(self.usage.get("completion_tokens"), int) else "text chunks"
        )

    def error_message(self) -> str:
        """A refused stream's OpenAI-style ``error.message`` (its body is kept in ``text``)."""
        return Response(self.status, {}, self.text.encode(), self.elapsed_s).error_message()

    @property
    def decode_tokens_per_s(self) -> float | None:
        if self.ttft_s is None or self.last_text_s is None or self.completion_tokens < 2:
            return None
        span = self.last_text_s - self.ttft_s
        return (self.completion_tokens - 1) / span if span > 0 else None


class OpenAIClient:
    """HTTP/1.1 client for one server; one connection per request, so threads may share it.

    Args:
        base_url: ``http://127.0.0.1:8000`` (a trailing ``/v1`` is accepted and dropped).
        api_key: sent as a bearer token; never printed.
        timeout_s: the per-request deadline: socket timeout for connect and for each read, and for a
            stream also the whole answer's time (a server that trickles is as hung as a silent one).

    Example::

        >>> c = OpenAIClient("http://127.0.0.1:8000/v1", api_key="secret")
        >>> c.base_url, "secret" in repr(c)
        ('http://127.0.0.1:8000', False)
    """

    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 30.0) -> None:
        url = base_url.rstrip("/")
        if url.endswith("/v1"):
            url = url[:-3]
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{base_url!r} is not an http(s) URL such as http://127.0.0.1:8000")
        self.base_url = url
        self._parts = parts
        self._api_key = api_key
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"OpenAIClient({self.base_url!r}, api_key={'***' if self._api_key else None})"

    def _conn(self, timeout: float | None) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._parts.scheme == "https" else http.client.HTTPConnection
        return cls(self._parts.hostname or "", self._parts.port, timeout=timeout or self.timeout_s)

    def _headers(self, body: bool) -> dict[str, str]:
        h = {"Accept": "application/json, text/event-stream"}
        if body:
            h["Content-Type"] = "application/json"
        if self._api_key:
            h["Authorization"] = f"Bearer {self._api_key}"
        return h

    def request(
        self, method: str, path: str, payload: dict[str, Any] | None = None, timeout: float | None = None
    ) -> Response:
        """Send one request and read the whole answer; ``ServerUnreachable`` when there is none."""
        url = self.base_url + path
        body = json.dumps(payload).encode() if payload is not None else None
        t0 = time.perf_counter()
        conn = self._conn(timeout)
        try:
            conn.request(method, self._parts.path + path, body=body, headers=self._headers(body is not None))
            resp = conn.getresponse()
            data = resp.read()
            headers = {k.lower(): v for k, v in resp.getheaders()}
            return Response(resp.status, headers, data, time.perf_counter() - t0)
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, timeout, bad status line
            raise ServerUnreachable(url, _reason(exc)) from None
        finally:
            conn.close()

    def get(self, path: str, timeout: float | None = None) -> Response:
        return self.request("GET", path, timeout=timeout)

    def post(self, path: str, payload: dict[str, Any], timeout: float | None = None) -> Response:
        return self.request("POST", path, payload, timeout=timeout)

    def stream(self, path: str, payload: dict[str, Any], timeout: float | None = None) -> StreamResult:
        """POST with ``"stream": true`` and time the chunks. A non-200 answer returns its status with no
        chunks (read ``error`` from ``text``); a broken stream raises ``SseError``; no answer raises
        ``ServerUnreachable``."""
        url = self.base_url + path
        body = json.dumps({**payload, "stream": True}).encode()
        conn = self._conn(timeout)
        deadline = timeout or self.timeout_s
        t0 = time.perf_counter()
        try:
            conn.request("POST", self._parts.path + path, body=body, headers=self._headers(True))
            resp = conn.getresponse()
            if resp.status != 200:
                return StreamResult(
                    resp.status,
                    text=resp.read().decode("utf-8", errors="replace")[:500],
                    elapsed_s=time.perf_counter() - t0,
                )
            ctype = resp.getheader("content-type", "")
            if "text/event-stream" not in ctype:
                raise SseError(f"content-type is {ctype!r}, not text/event-stream")
            out = StreamResult(200)
            for chunk in iter_json_chunks(_lines(resp)):
                now = time.perf_counter() - t0
                if now > deadline:
                    raise ServerUnreachable(
                        url, f"timed out: the stream was not complete after {deadline:g} s (request deadline)"
                    )
                out.chunks += 1
                out.chunk_times.append(now)
                text = chunk_text(chunk)
                if text:
                    out.text_chunks += 1
                    out.text += text
                    out.last_text_s = now
                    if out.ttft_s is None:
                        out.ttft_s = now
                choices = chunk.get("choices") or []
                if choices and isinstance(choices[0], dict) and choices[0].get("finish_reason"):
                    out.finish_reason = str(choices[0]["finish_reason"])
                if isinstance(chunk.get("usage"), dict):
                    out.usage = chunk["usage"]
            out.elapsed_s = time.perf_counter() - t0
            return out
        except (OSError, http.client.HTTPException) as exc:
            raise ServerUnreachable(url, _reason(exc)) from None
        finally:
            conn.close()


def _lines(resp: http.client.HTTPResponse) -> Iterator[bytes]:
    while True:
        line = resp.readline()
        if not line:
            return
        yield line


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (nothing listening)"
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out: no answer within the request deadline"
    if isinstance(exc, http.client.IncompleteRead):
        return f"connection closed mid-answer ({len(exc.partial)} bytes read)"
    if isinstance(exc, http.client.RemoteDisconnected | ConnectionResetError | BrokenPipeError):
        return "connection closed by the server without an answer"
    return f"{type(exc).__name__}: {exc}"
