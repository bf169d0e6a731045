"""Server-sent events as OpenAI-compatible servers stream them (pure parser, no I/O).

Format (WHATWG HTML "server-sent events"): lines ``field: value``; an empty line ends an event; lines
starting with ``:`` are comments (keep-alives); several ``data:`` lines of one event are joined by
``\\n``. OpenAI-style streams send one JSON object per event and ``data: [DONE]`` last.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

DONE = "[DONE]"


class SseError(ValueError):
    """The stream is not valid SSE or not OpenAI-style: names the event number and what was wrong."""


@dataclass(frozen=True)
class SseEvent:
    """One event: its ``data`` (``data:`` lines joined) and ``event`` name (``message`` when unnamed)."""

    data: str
    event: str = "message"


def iter_events(lines: Iterable[str | bytes]) -> Iterator[SseEvent]:
    """Yield events from raw lines (with or without line endings).

    Example::

        >>> list(iter_events(["data: 1", "", ": ping", "data: [DONE]", ""]))
        [SseEvent(data='1', event='message'), SseEvent(data='[DONE]', event='message')]
    """
    data: list[str] = []
    event = "message"
    for raw in lines:
        line = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
        line = line.rstrip("\r\n")
        if not line:
            if data:
                yield SseEvent("\n".join(data), event)
            data, event = [], "message"
            continue
        if line.startswith(":"):
            continue  # comment / keep-alive
        field, sep, value = line.partition(":")
        if not sep:
            value = ""  # a line with no colon is a field name with an empty value (spec)
        elif value.startswith(" "):
            value = value[1:]
        if field == "data":
            data.append(value)
        elif field == "event":
            event = value
        # "id" and "retry" carry nothing an OpenAI stream uses; unknown fields are ignored (spec).
    if data:
        yield SseEvent("\n".join(data), event)


def iter_json_chunks(lines: Iterable[str | bytes]) -> Iterator[dict[str, Any]]:
    """Yield the JSON objects of an OpenAI-style stream; raise ``SseError`` on anything else.

    Stops at ``[DONE]``; a stream that ends without it raises (the server died or cut the stream).

    Example::

        >>> [c["n"] for c in iter_json_chunks(['data: {"n": 1}', "", "data: [DONE]", ""])]
        [1]
    """
    n = 0
    for n, ev in enumerate(iter_events(lines), 1):  # noqa: B007 - n is used after the loop
        if ev.data == DONE:
            return
        try:
            obj = json.loads(ev.data)
        except json.JSONDecodeError as exc:
            raise SseError(f"event {n} is not JSON ({exc.msg}): {ev.data[:80]!r}") from None
        if not isinstance(obj, dict):
            raise SseError(f"event {n} is JSON but not an object: {ev.data[:80]!r}")
        if "error" in obj and "choices" not in obj:
            raise SseError(f"event {n} is an error from the server: {json.dumps(obj['error'])[:200]}")
        yield obj
    raise SseError(f"stream ended after {n} events without 'data: [DONE]' (cut off, or not an OpenAI stream)")


def chunk_text(chunk: dict[str, Any]) -> str:
    """The text a chat or completion chunk adds (``choices[0].delta.content`` or ``choices[0].text``)."""
    choices = chunk.get("choices")
    if not isinstance(choices, list) or not choices:
        return ""
    first = choices[0]
    if not isinstance(first, dict):
        raise SseError(f"choices[0] is not an object: {first!r:.80}")
    delta = first.get("delta")
    if isinstance(delta, dict):
        content = delta.get("content")
        return content if isinstance(content, str) else ""
    text = first.get("text")
    return text if isinstance(text, str) else ""
