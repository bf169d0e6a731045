"""One function per end-to-end check: takes the ``VllmServer``, returns a ``Verdict``.

A check that needs a vLLM extra the server lacks (``/health``, ``/version``, ``/metrics``, usage in
streams) returns not-applicable with the reason: neither passed nor failed for it. Every failure names
the server and model, what was measured against what was expected (and where that came from), and a fix.
"""

from __future__ import annotations

import json
import re
import statistics
import threading
import time
import uuid
from typing import Any

from ..verdict import Verdict, failed, not_applicable, passed, unreadable
from .client import StreamResult
from .metrics import (
    KV_CACHE_GAUGES,
    PREEMPTIONS,
    PREFIX_HITS,
    REQUEST_SUCCESS,
    RUNNING,
    WAITING,
    Metrics,
    MetricsError,
    parse_prometheus,
)
from .server import ServerGone, VllmServer
from .sse import SseError

CHAT = "/v1/chat/completions"
PARIS_PROMPT = "What is the capital of France? Answer with one word."
FREE_PROMPT = "Write two sentences about the sea."
FILLER = "The quick brown fox jumps over the lazy dog near the old stone bridge by the river. "
NO_EXTRA = (
    "(a vLLM extra; llama-cpp-python and other OpenAI-compatible servers lack it): neither passed nor failed"
)


def _gone(server: VllmServer, exc: Exception) -> Verdict:
    if isinstance(exc, ServerGone):
        # Not asked because the server hung on an earlier request: unreadable, pointing to that failure.
        return unreadable(str(exc)) if exc.repeated else failed(str(exc))
    return failed(f"{server.describe()}: {exc}")


def nonce() -> str:
    """A fresh tag for the START of a prompt: no prefix block of it is in any cache (vLLM's prefix cache
    hashes blocks from the first token on, llama.cpp reuses a slot's longest common prefix), so the
    server computes the whole prompt, as it does for a user's new question.

    Example::

        >>> a, b = nonce(), nonce()
        >>> a != b and a.startswith("[") and len(a) == len(b)
        True
    """
    return f"[{uuid.uuid4().hex[:12]}] "


def _where(server: VllmServer, key: str) -> str:
    return f"[vllm] {key} in {server.settings.where}"


# Used when the profile sets no threshold: loose enough for any healthy rig (a short prompt's first
# token well under a second, decoding faster than people read), tight enough that a stalled server fails.
DEFAULT_MAX_TTFT_S = 2.0
DEFAULT_MIN_DECODE_TOKENS_PER_S = 5.0


def _threshold(server: VllmServer, key: str, default: float) -> tuple[float, str]:
    """The profile's threshold and where it came from, else the built-in default, saying so."""
    value = getattr(server.settings, key)
    if value is not None:
        return float(value), _where(server, key)
    return default, f"built-in default; set [vllm] {key} in the profile for this rig's own figure"


# -- degenerate output ---------------------------------------------------------------------------------

_BANG = re.compile(r"!{4,}")
_CHAR_RUN = re.compile(r"(\S)\1{15,}")
_WORD_RUN = re.compile(r"\b(\w+)(?:\W+\1\b){5,}", re.IGNORECASE)


def degenerate_reason(text: str) -> str | None:
    """Why a generation looks like broken numerics (NaN logits, a bad all-reduce), or ``None``.

    Broken tensor-parallel all-reduce produces garbage at full speed; NaN logits make greedy decoding
    pick token 0, ``!`` in Llama/Qwen vocabularies (silent-NaN write-up: "!!!!!!").

    Example::

        >>> degenerate_reason("Paris."), degenerate_reason("a a a a a a a")
        (None, "the word 'a' repeated 6+ times in a row")
    """
    if not text.strip():
        return "empty output"
    if _BANG.search(text):
        return "a run of '!' (4 or more): token 0 repeated, the signature of NaN logits"
    if (m := _CHAR_RUN.search(text)) is not None:
        return f"the character {m.group(1)!r} repeated 16+ times"
    if (m := _WORD_RUN.search(text)) is not None:
        return f"the word {m.group(1)!r} repeated 6+ times in a row"
    if text.count("\ufffd") >= 3:
        return "replacement characters (invalid UTF-8 token bytes)"
    return None


# -- identity -------------------------------------------------------------------------------------------


def served_model(server: VllmServer) -> Verdict:
    """``/v1/models`` lists the profile's model (served name), with vLLM's ``max_model_len``."""
    s = server.settings
    try:
        r = server.get("/v1/models", "the identity check")
    except ServerGone as exc:
        return _gone(server, exc)
    if r.status != 200:
        hint = " (wrong or missing API key: set --rig-vllm-api-key-env)" if r.status in (401, 403) else ""
        return failed(
            f"{server.describe()}: GET /v1/models answered HTTP {r.status}{hint}: {r.error_message()}",
            fix=["point --rig-vllm-url at the server's base URL (http://host:port)"],
        )
    try:
        cards = [c for c in r.json().get("data", []) if isinstance(c, dict)]
    except (ValueError, AttributeError) as exc:
        return failed(f"{server.describe()}: /v1/models is not an OpenAI model list: {exc}")
    ids = [str(c.get("id")) for c in cards]
    props: dict[str, object] = {"served_model_ids": ",".join(ids)}
    if not cards:
        return failed(f"{server.describe()}: /v1/models lists no model", properties=props)
    want = s.expected_model_id
    card = next((c for c in cards if c.get("id") == want), cards[0] if want is None else None)
    if card is None:
        return failed(
            f"{server.describe()}: serves {ids}, not the profile's {want!r}",
            measured=f"model ids {ids}",
            expected=f"{want!r} ({_where(server, 'served_model_name or model')})",
            fix=["start vLLM with --served-model-name matching the profile, or fix [vllm] served_model_name"],
            properties=props,
        )
    props["served_model_id"] = card.get("id")
    got_len = card.get("max_model_len")
    if isinstance(got_len, int):
        props["served_max_model_len"] = got_len
    notes = []
    if s.max_model_len is not None:
        if got_len is None:
            notes.append("the server does not report max_model_len (not vLLM?): context not compared")
        elif got_len != s.max_model_len:
            return failed(
                f"{server.describe()}: max_model_len {got_len} tokens, expected {s.max_model_len} tokens",
                measured=f"{got_len} tokens (GET /v1/models)",
                expected=f"{s.max_model_len} tokens ({_where(server, 'max_model_len')})",
                fix=[f"start vLLM with --max-model-len {s.max_model_len}, or update the profile"],
                properties=props,
            )
    return passed(
        f"{server.describe()}: serves {card.get('id')!r}, max_model_len {got_len}",
        notes=notes,
        properties=props,
    )


def version(server: VllmServer) -> Verdict:
    """``/version`` answers, and matches ``[vllm] expect_version`` when set; the version is recorded."""
    try:
        r = server.get("/version", "the version check")
    except ServerGone as exc:
        return _gone(server, exc)
    if r.status == 404:
        return not_applicable(f"{server.describe()}: no /version {NO_EXTRA}")
    try:
        v = r.json().get("version") if r.status == 200 else None
    except (ValueError, AttributeError):
        v = None
    if not isinstance(v, str):
        return failed(
            f"{server.describe()}: /version answered HTTP {r.status} without a version: {r.body[:100]!r}"
        )
    want = server.settings.expect_version
    if want and v != want:
        return failed(
            f"{server.describe()}: vLLM {v}, expected {want}",
            measured=f"{v} (GET /version)",
            expected=f"{want} ({_where(server, 'expect_version')})",
            fix=[f"install vLLM {want} on the rig, or update the profile"],
            properties={"vllm_version": v},
        )
    return passed(f"{server.describe()}: vLLM {v}", properties={"vllm_version": v})


def health(server: VllmServer) -> Verdict:
    """``/health`` is 200 (vLLM answers 503 once its engine died)."""
    try:
        r = server.get("/health", "the health check")
    except ServerGone as exc:
        return _gone(server, exc)
    if r.status == 404:
        return not_applicable(f"{server.describe()}: no /health {NO_EXTRA}")
    if r.status != 200:
        return failed(
            f"{server.describe()}: /health answered HTTP {r.status}: {r.error_message()}",
            measured=f"HTTP {r.status}",
            expected="HTTP 200",
            fix=["the engine is dead or unhealthy: read the server log, restart the server"],
        )
    return passed(f"{server.describe()}: /health 200")


# -- correctness ---------------------------------------------------------------------------------------


def _chat_text(server: VllmServer, content: str, max_tokens: int, during: str) -> tuple[int, str, str]:
    r = server.post(CHAT, server.chat_payload(content, max_tokens, seed=0), during)
    if r.status != 200:
        return r.status, "", r.error_message()
    try:
        msg = r.json()["choices"][0]["message"]
        return 200, str(msg.get("content") or ""), ""
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return 200, "", f"not a chat completion: {r.body[:150]!r}"


def correctness(server: VllmServer) -> Verdict:
    """At temperature 0, "the capital of France?" answers Paris, twice the same."""
    answers = []
    try:
        for i in (1, 2):
            status, text, err = _chat_text(server, PARIS_PROMPT, 16, f"correctness request {i}")
            if status != 200 or err:
                return failed(
                    f"{server.describe()}: chat completion {i} failed: HTTP {status}: {err}",
                    fix=["read the server log; check the model id and chat template"],
                )
            answers.append(text)
    except ServerGone as exc:
        return _gone(server, exc)
    props = {"answer_1": answers[0][:200], "answer_2": answers[1][:200]}
    if "paris" not in answers[0].lower():
        bad = degenerate_reason(answers[0])
        return failed(
            f"{server.describe()}: asked the capital of France at temperature 0, got {answers[0][:120]!r}",
            measured=repr(answers[0][:200]),
            expected="an answer containing 'Paris'",
            notes=[f"degenerate output: {bad}"] if bad else [],
            fix=[
                "garbage at full speed points at broken tensor-parallel all-reduce (run the P2P and "
                "NCCL suites; try NCCL_P2P_DISABLE=1); otherwise check the model and its chat template"
            ],
            properties=props,
        )
    if answers[0] != answers[1]:
        return failed(
            f"{server.describe()}: the same request at temperature 0 answered differently",
            measured=f"{answers[0][:100]!r} then {answers[1][:100]!r}",
            expected="identical answers",
            fix=[
                "non-determinism at temperature 0 with one request in flight points at numerics "
                "(all-reduce, kernels): run the P2P/NCCL suites"
            ],
            properties=props,
        )
    return passed(f"{server.describe()}: answered {answers[0].strip()[:60]!r} twice", properties=props)


def not_degenerate(server: VllmServer) -> Verdict:
    """A free-form answer is not degenerate: not empty, no ``!!!!``, no single token repeated."""
    try:
        status, text, err = _chat_text(server, FREE_PROMPT, 48, "the degenerate-output check")
    except ServerGone as exc:
        return _gone(server, exc)
    if status != 200 or err:
        return failed(f"{server.describe()}: chat completion failed: HTTP {status}: {err}")
    reason = degenerate_reason(text)
    if reason:
        return failed(
            f"{server.describe()}: degenerate output ({reason})",
            measured=repr(text[:200]),
            expected="ordinary text",
            fix=[
                "garbage text at full speed is what broken P2P/all-reduce looks like: run the P2P and "
                "NCCL suites, retry with NCCL_P2P_DISABLE=1 or --disable-custom-all-reduce"
            ],
            properties={"output": text[:200]},
        )
    return passed(
        f"{server.describe()}: output looks like text ({len(text)} chars)", properties={"output": text[:200]}
    )


# -- streaming -----------------------------------------------------------------------------------------


IDLE_WAIT_S = 3.0


def busy_with_others(server: VllmServer) -> Verdict | None:
    """UNREADABLE when ``/metrics`` shows requests in flight that are not rigcheck's, else ``None``.

    Read before a timed request, when none of ours is in flight; polled for up to ``IDLE_WAIT_S`` since
    the gauges (``vllm:num_requests_running`` / ``_waiting``) are updated once per engine step and may
    still count our previous request. No ``/metrics`` (llama.cpp): ``None``, the server cannot tell us.
    """
    end = time.monotonic() + IDLE_WAIT_S
    while True:
        m = read_metrics(server, "the idle check before timing")
        if not isinstance(m, Metrics):
            return None  # no vLLM metrics, or a broken /metrics (the metrics check reports that)
        running, waiting = m.total(RUNNING) or 0.0, m.total(WAITING) or 0.0
        if running + waiting <= 0:
            return None
        if time.monotonic() >= end:
            break
        time.sleep(0.5)
    return unreadable(
        f"{server.describe()}: the server is busy with other clients ({running:g} requests running, "
        f"{waiting:g} waiting, in its /metrics, none of them rigcheck's): a timing now measures their "
        "load, not this rig",
        measured=f"{RUNNING} {running:g}, {WAITING} {waiting:g} (for {IDLE_WAIT_S:g} s before the request)",
        expected="0 and 0: no other client's request in flight",
        measured_value=running + waiting,
        expected_value=0,
        unit="requests",
        fix=[
            "time the server when no other client uses it (stop the load or the router in front of it), "
            "or give rigcheck a server of its own"
        ],
    )


def measure_stream(server: VllmServer) -> StreamResult | Verdict:
    """One streamed chat completion of exactly ``decode_tokens`` tokens on a prompt no cache has seen,
    after a warm-up on a different prompt, with the server idle before it; kept for the checks.

    Also kept: ``busy_with_others``'s verdict (``memo("stream_busy")``) and the time to first token of the
    same prompt sent again (``memo("stream_cached_ttft")``: what a cache makes of it, for the report).
    """
    cached = server.memo("stream")
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    n = server.settings.decode_tokens
    warm = server.chat_payload(nonce() + FREE_PROMPT, 4, stream_options={"include_usage": True})
    payload = server.chat_payload(
        nonce() + FREE_PROMPT, n, min_tokens=n, stream_options={"include_usage": True}
    )
    result: StreamResult | Verdict
    try:
        # The warm-up (another prompt, not measured) loads kernels and the sampler once. The measured
        # prompt starts with its own nonce: a warm-up identical to it, or the prefix cache, made the
        # first token of vLLM-CPU read 12-26 ms where an unseen prompt takes 150 ms.
        server.stream(CHAT, warm, "the warm-up streaming request")
        server.remember("stream_busy", busy_with_others(server))
        result = server.stream(CHAT, payload, "the measured streaming request")
        try:
            again = server.stream(
                CHAT, {**payload, "max_tokens": 2, "min_tokens": 2}, "the same prompt again (cached)"
            )
            server.remember("stream_cached_ttft", again.ttft_s)
        except (ServerGone, SseError):
            pass  # only a figure for the report; the measured request decides
    except ServerGone as exc:
        result = _gone(server, exc)
    except SseError as exc:
        result = failed(
            f"{server.describe()}: the event stream is broken: {exc}",
            expected="OpenAI server-sent events: 'data: {json}' events, 'data: [DONE]' last",
            fix=["a proxy in between may buffer or rewrite the stream; otherwise read the server log"],
        )
    return server.remember("stream", result)  # type: ignore[no-any-return]


def _stream_ok(server: VllmServer) -> StreamResult | Verdict:
    """The kept stream, or a failure when it broke or was refused (never "not applicable" then)."""
    r = measure_stream(server)
    if isinstance(r, Verdict):
        return r
    if r.status != 200:
        hint = " (wrong or missing API key: set --rig-vllm-api-key-env)" if r.status in (401, 403) else ""
        return failed(
            f"{server.describe()}: the streaming request answered HTTP {r.status}{hint}: {r.text[:200]}"
        )
    return r


def streaming(server: VllmServer) -> Verdict:
    """The stream parses as SSE, carries text, ends with ``[DONE]``, and has the requested length."""
    r = measure_stream(server)
    if isinstance(r, Verdict):
        return r
    n = server.settings.decode_tokens
    props: dict[str, object] = {
        "stream_chunks": r.chunks,
        "stream_text_chunks": r.text_chunks,
        "completion_tokens": r.completion_tokens,
        "tokens_counted_from": r.tokens_counted_from,
    }
    if r.status != 200:
        return failed(
            f"{server.describe()}: streaming request answered HTTP {r.status}: {r.text[:200]}",
            properties=props,
        )
    if not r.text_chunks:
        return failed(
            f"{server.describe()}: the stream carried no text ({r.chunks} chunks)", properties=props
        )
    if r.completion_tokens != n:
        return failed(
            f"{server.describe()}: asked for exactly {n} tokens (min_tokens = max_tokens), got "
            f"{r.completion_tokens} (counted from {r.tokens_counted_from})",
            measured=f"{r.completion_tokens} tokens",
            expected=f"{n} tokens",
            fix=[
                "a server that ignores min_tokens cannot be timed at a fixed length; vLLM and "
                "llama-cpp-python honour it"
            ],
            properties=props,
        )
    return passed(f"{server.describe()}: {r.chunks} SSE chunks, {n} tokens", properties=props)


def ttft(server: VllmServer) -> Verdict:
    """Time to the first chunk with text, against ``[vllm] max_ttft_s``."""
    r = _stream_ok(server)
    if isinstance(r, Verdict):
        return r
    if (busy := server.memo("stream_busy")) is not None:
        return busy  # type: ignore[no-any-return]
    if r.ttft_s is None:
        return failed(f"{server.describe()}: no chunk with text, so no time to first token (HTTP {r.status})")
    props: dict[str, object] = {"ttft_s": round(r.ttft_s, 4)}
    cached = server.memo("stream_cached_ttft")
    if cached is not None:
        props["ttft_cached_s"] = round(cached, 4)
    limit, source = _threshold(server, "max_ttft_s", DEFAULT_MAX_TTFT_S)
    props["max_ttft_s"] = limit
    figures = {"measured_value": round(r.ttft_s, 4), "expected_value": limit, "unit": "s"}
    if r.ttft_s > limit:
        return failed(
            f"{server.describe()}: time to first token {r.ttft_s:.3f} s > {limit:g} s",
            measured=f"{r.ttft_s:.3f} s (first SSE chunk with text; a short prompt no cache has seen; the "
            "server idle, one request in flight)",
            expected=f"at most {limit:g} s ({source})",
            fix=["check GPU clocks and PCIe links (run the rig suites), or --enforce-eager left on"],
            properties=props,
            **figures,
        )
    again = f"; the same prompt again {cached * 1000:.0f} ms" if cached is not None else ""
    return passed(
        f"{server.describe()}: time to first token {r.ttft_s * 1000:.0f} ms on an unseen prompt{again} "
        f"(at most {limit:g} s: {source})",
        properties=props,
        **figures,
    )


def decode_rate(server: VllmServer) -> Verdict:
    """Decode tokens/s of one stream of fixed length, against ``[vllm] min_decode_tokens_per_s``."""
    r = _stream_ok(server)
    if isinstance(r, Verdict):
        return r
    if (busy := server.memo("stream_busy")) is not None:
        return busy  # type: ignore[no-any-return]
    rate = r.decode_tokens_per_s
    if rate is None:
        return failed(
            f"{server.describe()}: cannot time decoding: {r.completion_tokens} tokens, "
            f"{r.text_chunks} text chunks (HTTP {r.status})"
        )
    props = {"decode_tokens_per_s": round(rate, 2), "decode_tokens": r.completion_tokens}
    floor, source = _threshold(server, "min_decode_tokens_per_s", DEFAULT_MIN_DECODE_TOKENS_PER_S)
    props["min_decode_tokens_per_s"] = floor
    if rate < floor:
        return failed(
            f"{server.describe()}: decode {rate:.1f} tokens/s < {floor:g} tokens/s",
            measured=f"{rate:.1f} tokens/s ({r.completion_tokens} tokens, one stream, after the first token)",
            expected=f"at least {floor:g} tokens/s ({source})",
            fix=[
                "slow decode on a multi-GPU rig is often P2P off or a downtrained link: run the "
                "PCIe and P2P suites; check power caps and clocks"
            ],
            properties=props,
            measured_value=round(rate, 2),
            expected_value=floor,
            unit="tokens/s",
        )
    return passed(
        f"{server.describe()}: decode {rate:.1f} tokens/s (at least {floor:g}: {source})",
        properties=props,
        measured_value=round(rate, 2),
        expected_value=floor,
        unit="tokens/s",
    )


def usage_in_stream(server: VllmServer) -> Verdict:
    """With ``stream_options.include_usage`` the stream ends with a usage chunk (a vLLM extra)."""
    r = _stream_ok(server)
    if isinstance(r, Verdict):
        return r
    if r.usage is None:
        return not_applicable(f"{server.describe()}: no usage chunk in streams {NO_EXTRA}")
    return passed(f"{server.describe()}: usage chunk {r.usage}", properties={"stream_usage": str(r.usage)})


# -- metrics -------------------------------------------------------------------------------------------


def read_metrics(server: VllmServer, during: str) -> Metrics | Verdict | None:
    """``/metrics`` parsed; ``None`` when the server has none or no ``vllm:`` metrics."""
    r = server.get("/metrics", during)
    if r.status == 404:
        return None
    if r.status != 200:
        return failed(f"{server.describe()}: /metrics answered HTTP {r.status}")
    try:
        m = parse_prometheus(r.body.decode("utf-8", errors="replace"))
    except MetricsError as exc:
        return failed(
            f"{server.describe()}: /metrics is not Prometheus text: {exc}",
            fix=["something in front of the server rewrites /metrics, or it is not vLLM's"],
        )
    return m if m.is_vllm else None


def metrics(server: VllmServer) -> Verdict:
    """``/metrics`` parses; the KV cache gauge (either name) and the request gauges are there."""
    try:
        m = read_metrics(server, "the metrics check")
    except ServerGone as exc:
        return _gone(server, exc)
    if m is None:
        return not_applicable(f"{server.describe()}: no /metrics with vllm: metrics {NO_EXTRA}")
    if isinstance(m, Verdict):
        return m
    props: dict[str, object] = {}
    kv = m.first_of(KV_CACHE_GAUGES)
    missing = [] if kv else [" or ".join(KV_CACHE_GAUGES)]
    if kv:
        props["kv_cache_usage"] = kv[1]
        props["kv_cache_gauge"] = kv[0]
    for name in (RUNNING, WAITING):
        v = m.total(name)
        if v is None:
            missing.append(name)
        else:
            props[name.split(":")[1]] = v
    if (v := m.total(REQUEST_SUCCESS)) is not None:
        props["request_success_total"] = v
    info = m.labels_of("vllm:cache_config_info")
    for key in (
        "gpu_memory_utilization",
        "kv_cache_size_tokens",
        "kv_cache_max_concurrency",
        "num_gpu_blocks",
    ):
        if key in info:
            props[key] = info[key]
    if missing:
        return failed(
            f"{server.describe()}: /metrics lacks {', '.join(missing)}",
            measured=f"{len(m.samples)} metric names",
            expected=", ".join(missing),
            fix=["a vLLM release that renamed these: report it to pytest-rigcheck"],
            properties=props,
        )
    return passed(
        f"{server.describe()}: /metrics KV cache {kv[1] if kv else '?'}, "
        f"running {props.get('num_requests_running')}",
        properties=props,
    )


# -- concurrency ---------------------------------------------------------------------------------------


def measure_concurrency(server: VllmServer) -> dict[str, Any] | Verdict:
    """``concurrency`` parallel chat completions of ``decode_tokens`` tokens each, with /metrics before and
    after when the server has it. Kept for the checks that read it."""
    cached = server.memo("concurrency")
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    s = server.settings
    n, tokens = s.concurrency, s.decode_tokens
    try:
        before = read_metrics(server, "the concurrency check (metrics before)")
    except ServerGone as exc:
        return server.remember("concurrency", _gone(server, exc))  # type: ignore[no-any-return]
    results: list[tuple[int, int, str]] = [(0, 0, "not run")] * n

    def one(i: int) -> None:
        payload = server.chat_payload(f"{FREE_PROMPT} Variation {i}.", tokens, min_tokens=tokens)
        try:
            r = server.client.post(CHAT, payload)
            got = r.json().get("usage", {}).get("completion_tokens", 0) if r.status == 200 else 0
            results[i] = (r.status, int(got or 0), "" if r.status == 200 else r.error_message())
        except (OSError, ValueError, AttributeError) as exc:  # ServerUnreachable is an OSError
            results[i] = (0, 0, str(exc))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    try:
        after = read_metrics(server, "the concurrency check (metrics after)")
    except ServerGone as exc:
        after = _gone(server, exc)
    out = {"n": n, "tokens": tokens, "results": results, "wall_s": wall, "before": before, "after": after}
    return server.remember("concurrency", out)  # type: ignore[no-any-return]


def concurrency(server: VllmServer) -> Verdict:
    """N parallel requests all succeed with their full length; aggregate tokens/s against the profile."""
    run = measure_concurrency(server)
    if isinstance(run, Verdict):
        return run
    n, tokens, results, wall = run["n"], run["tokens"], run["results"], run["wall_s"]
    bad = [(i, r) for i, r in enumerate(results) if r[0] != 200 or r[1] != tokens]
    total = sum(r[1] for r in results)
    rate = total / wall if wall > 0 else 0.0
    props = {
        "concurrency": n,
        "aggregate_tokens_per_s": round(rate, 2),
        "concurrency_wall_s": round(wall, 3),
        "concurrency_failed": len(bad),
    }
    if bad:
        i, (status, got, err) = bad[0]
        if status == 0 and server.process is not None and server.process.exited() is not None:
            err += f"; the server process exited with code {server.process.exited()}"
        return failed(
            f"{server.describe()}: {len(bad)} of {n} parallel requests failed; first: request {i}: "
            + (f"HTTP {status}: {err}" if status else f"no answer: {err}")
            + (f" ({got} of {tokens} tokens)" if status == 200 else ""),
            measured=f"{n - len(bad)} of {n} complete",
            expected=f"all {n} complete with {tokens} tokens",
            fix=[
                "read the server log for OOM or engine errors; lower [vllm] concurrency only if the "
                "rig was never meant to serve that many"
            ],
            properties=props,
        )
    floor = server.settings.min_aggregate_tokens_per_s
    if floor is not None and rate < floor:
        return failed(
            f"{server.describe()}: aggregate {rate:.1f} tokens/s over {n} parallel requests < {floor:g}",
            measured=f"{rate:.1f} tokens/s ({total} tokens in {wall:.2f} s)",
            expected=f"at least {floor:g} tokens/s ({_where(server, 'min_aggregate_tokens_per_s')})",
            fix=["check P2P, links and clocks (rig suites); --max-num-seqs; preemptions in /metrics"],
            properties=props,
        )
    return passed(
        f"{server.describe()}: {n} parallel requests, aggregate {rate:.1f} tokens/s", properties=props
    )


def no_preemptions(server: VllmServer) -> Verdict:
    """``vllm:num_preemptions_total`` did not grow during the concurrent run (KV cache held them all)."""
    run = measure_concurrency(server)
    if isinstance(run, Verdict):
        return run
    before, after = run["before"], run["after"]
    for m in (before, after):
        if isinstance(m, Verdict):
            return m
    n_bad = sum(1 for r in run["results"] if r[0] != 200)
    if n_bad and before is not None:
        return unreadable(
            f"{server.describe()}: {n_bad} of {run['n']} parallel requests failed (see test_concurrency): "
            "preemptions under load cannot be judged"
        )
    if before is None or after is None or PREEMPTIONS not in before or PREEMPTIONS not in after:
        return not_applicable(f"{server.describe()}: no {PREEMPTIONS} in /metrics {NO_EXTRA}")
    delta = (after.total(PREEMPTIONS) or 0) - (before.total(PREEMPTIONS) or 0)
    props = {"preemptions": delta}
    if delta > 0:
        return failed(
            f"{server.describe()}: {delta:g} preemptions during {run['n']} parallel requests",
            measured=f"{PREEMPTIONS} +{delta:g}",
            expected="+0",
            fix=[
                "the KV cache is too small for this concurrency: raise --gpu-memory-utilization, "
                "lower --max-num-seqs or --max-model-len (run the model-fit gate)"
            ],
            properties=props,
        )
    return passed(
        f"{server.describe()}: no preemptions during {run['n']} parallel requests", properties=props
    )


# -- long context ---------------------------------------------------------------------------------------


def _max_len(server: VllmServer) -> tuple[int | None, str]:
    """The context length: the server's (vLLM's /v1/models), else the profile's. ``ServerGone`` propagates:
    a dead server must fail the context checks, not make them "not applicable"."""
    r = server.get("/v1/models", "the context-length lookup")
    if r.status in (401, 403):
        raise ServerGone(
            f"{server.describe()}: GET /v1/models answered HTTP {r.status} (wrong or missing API key: "
            "set --rig-vllm-api-key-env): context length unknown"
        )
    try:
        for c in r.json().get("data", []) if r.status == 200 else []:
            if (
                isinstance(c, dict)
                and c.get("id") == server.model_id
                and isinstance(c.get("max_model_len"), int)
            ):
                return int(c["max_model_len"]), "GET /v1/models"
    except (ValueError, AttributeError):
        pass  # not a model list: the identity check reports it; fall back on the profile
    if server.settings.max_model_len:
        return server.settings.max_model_len, _where(server, "max_model_len")
    return None, ""


def _context_limit(server: VllmServer) -> tuple[int, str] | Verdict:
    """The context length and where it came from, or the verdict when it is unknown or the server is gone."""
    try:
        limit, src = _max_len(server)
    except ServerGone as exc:
        return _gone(server, exc)
    if limit is None:
        return not_applicable(
            f"{server.describe()}: context length unknown: the server does not report "
            "max_model_len and the profile sets no [vllm] max_model_len"
        )
    return limit, src


def _cannot_count(server: VllmServer) -> Verdict:
    return failed(
        f"{server.describe()}: cannot count prompt tokens: no /tokenize, and usage.prompt_tokens in answers is "
        "missing or does not grow with the prompt",
        fix=["serve with vLLM (it has /tokenize), or a server that reports usage.prompt_tokens"],
    )


class Refused(Exception):  # noqa: N818 - the server's answer, not a programming error
    """The server refused a request with an error of its own (HTTP status and its message)."""

    def __init__(self, status: int, message: str, during: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.during = during


# The context length in the server's own refusal: vLLM ("This model's maximum context length is 512
# tokens"), llama-cpp-python ("exceed context window of 512"), llama.cpp server ("n_ctx: 512", "the
# available context size (512 tokens)").
_CONTEXT_IN_ERROR = re.compile(
    r"(?:maximum context length is|context window of|context size \(|n_ctx\W{0,3}|context length of)\s*(\d+)",
    re.IGNORECASE,
)


def context_in_error(message: str) -> int | None:
    """The context length a server's refusal states, or ``None``.

    Example::

        >>> context_in_error("This model's maximum context length is 512 tokens. However, you requested 2000")
        512
        >>> context_in_error("Requested tokens (2019) exceed context window of 512"), context_in_error("bad")
        (512, None)
    """
    m = _CONTEXT_IN_ERROR.search(message)
    return int(m.group(1)) if m else None


def _refusal(server: VllmServer, exc: Refused, limit: int, src: str, n: int | None = None) -> Verdict:
    """A refusal judged by its own words: a stated context below ``limit`` is a context finding."""
    what = f"a {n}-token prompt" if n else "a prompt"
    ctx = context_in_error(exc.message)
    if ctx is not None and ctx < limit:
        return failed(
            f"{server.describe()}: the server's context is {ctx} tokens, not the {limit} of {src}: it "
            f"refused {what} during {exc.during} with HTTP {exc.status}: {exc.message[:200]}",
            measured=f"{ctx} tokens (the server's own error message)",
            expected=f"{limit} tokens ({src})",
            measured_value=ctx,
            expected_value=limit,
            unit="tokens",
            fix=[
                f"start the server with a {limit}-token context (vLLM --max-model-len {limit}, llama.cpp "
                f"--n_ctx {limit}), or set [vllm] max_model_len = {ctx} in the profile"
            ],
        )
    return failed(
        f"{server.describe()}: {what} (context {limit}, {src}) was refused during {exc.during}: "
        f"HTTP {exc.status}: {exc.message[:200]}",
        measured=f"HTTP {exc.status}",
        expected="HTTP 200",
        fix=[
            "read the server's message above and its log; a KV cache that cannot hold one full-length "
            "sequence needs a lower --max-model-len or a higher --gpu-memory-utilization (model-fit gate)"
        ],
    )


def _prompt_tokens(server: VllmServer, content: str) -> int | None:
    """Tokens of a one-message chat prompt: from /tokenize (vLLM), else from a 1-token completion's usage.

    Raises:
        Refused: the completion was refused (its status and message: the cause, e.g. a context smaller
            than the prompt); ``None`` only when the server answered without a count.
    """
    r = server.post(
        "/tokenize",
        {"model": server.model_id, "messages": [{"role": "user", "content": content}]},
        "long-context calibration",
    )
    if r.status == 200:
        try:
            return int(r.json()["count"])
        except (ValueError, KeyError, TypeError):
            pass  # fall back on usage below
    r = server.post(CHAT, server.chat_payload(content, 1), "long-context calibration")
    if r.status != 200:
        raise Refused(r.status, r.error_message(), "long-context calibration (counting prompt tokens)")
    try:
        return int(r.json()["usage"]["prompt_tokens"])
    except (ValueError, KeyError, TypeError):
        return None


def _filler_for(server: VllmServer, target: int, exact: bool = True) -> tuple[int, int] | None:
    """How many ``FILLER`` repeats after a ``nonce()`` make a prompt of about ``target`` tokens, and its
    count: calibrated on two sizes, then (``exact``) corrected once and counted. Without ``/tokenize`` a
    prompt over the context cannot be counted (the server refuses it), so over-context prompts are
    extrapolated (``exact=False``). Every prompt sent starts with its own nonce, so calibrating (which
    on a server without /tokenize runs the prompts) leaves nothing in a cache for the measured request."""
    a = _prompt_tokens(server, nonce() + FILLER * 4)
    b = _prompt_tokens(server, nonce() + FILLER * 24)
    if a is None or b is None or b <= a:
        return None
    per, base = (b - a) / 20, a - 4 * (b - a) / 20
    reps = max(1, int((target - base) / per))
    if not exact:
        return reps, int(base + per * reps)
    got = _prompt_tokens(server, nonce() + FILLER * reps)
    if got is None:
        return None
    reps = max(1, reps + int((target - got) / per))
    got = _prompt_tokens(server, nonce() + FILLER * reps)
    return (reps, got) if got is not None else None


def long_context(server: VllmServer) -> Verdict:
    """A prompt filling the context (less 8 tokens of answer and a 2 % margin), which no cache has seen,
    completes; its prefill (time to first token) is recorded beside the short prompt's."""
    known = _context_limit(server)
    if isinstance(known, Verdict):
        return known
    limit, src = known
    n: int | None = None
    try:
        built = _filler_for(server, int(limit * 0.98) - 8)
        if built is None:
            return _cannot_count(server)
        reps, n = built
        if n + 8 > limit:
            reps, n = max(1, int(reps * 0.95)), int(n * 0.95)
        # A fresh nonce first: a cached copy of this prompt read 0.1 s where its prefill took 7.75 s.
        payload = server.chat_payload(nonce() + FILLER * reps, 8)
        try:
            r = server.stream(CHAT, payload, "the long-context request")
        except SseError:  # the streaming checks report a broken stream; time the whole answer instead
            whole = server.post(CHAT, payload, "the long-context request (not streamed)")
            body = "" if whole.status == 200 else whole.body.decode("utf-8", "replace")[:500]
            r = StreamResult(whole.status, elapsed_s=whole.elapsed_s, text=body)
    except Refused as exc:
        return _refusal(server, exc, limit, src, n)
    except ServerGone as exc:
        return _gone(server, exc)
    props: dict[str, object] = {
        "max_model_len": limit,
        "long_prompt_tokens": n,
        "long_context_s": round(r.elapsed_s, 3),
    }
    if r.status != 200:
        refused = Refused(r.status, r.error_message(), "the long-context request")
        verdict = _refusal(server, refused, limit, src, n)
        verdict.properties.update(props)
        return verdict
    if r.ttft_s is None:
        return passed(
            f"{server.describe()}: {n}-token prompt of a {limit}-token context ({src}) completed in "
            f"{r.elapsed_s:.1f} s (not streamed: prefill not timed apart)",
            properties=props,
        )
    props["long_prefill_s"] = round(r.ttft_s, 3)
    short = server.memo("stream")
    vs = (
        f" (short prompt: {short.ttft_s:.3f} s)"
        if isinstance(short, StreamResult) and short.ttft_s is not None
        else ""
    )
    return passed(
        f"{server.describe()}: {n}-token prompt of a {limit}-token context ({src}) completed in "
        f"{r.elapsed_s:.1f} s; prefill (first token) {r.ttft_s:.2f} s{vs}",
        properties=props,
        measured_value=round(r.ttft_s, 3),
        unit="s",
    )


def over_context(server: VllmServer) -> Verdict:
    """A prompt over the context gets a clean HTTP 400 with an error message, and the server stays up."""
    known = _context_limit(server)
    if isinstance(known, Verdict):
        return known
    limit, src = known
    try:
        # 10 % over, so that an extrapolated count (no /tokenize) is over for sure.
        built = _filler_for(server, int(limit * 1.1) + 64, exact=False)
        if built is None:
            return _cannot_count(server)
        reps, n = built
        r = server.post(CHAT, server.chat_payload(nonce() + FILLER * reps, 8), "the over-context request")
        after = server.get("/v1/models", "the check that the server survived the over-context request")
    except Refused as exc:
        return _refusal(server, exc, limit, src)
    except ServerGone as exc:
        return _gone(server, exc)
    props = {"over_prompt_tokens": n, "over_context_status": r.status}
    if r.status == 200:
        try:
            counted = int(r.json()["usage"]["prompt_tokens"])
        except (ValueError, KeyError, TypeError):
            counted = None
        if counted is not None and counted <= limit:  # our estimate was wrong, not the server
            return unreadable(
                f"{server.describe()}: the over-context prompt came out at {counted} tokens, not over "
                f"the {limit}-token context: cannot test the rejection"
            )
    if r.status != 400:
        return failed(
            f"{server.describe()}: a {n}-token prompt over the {limit}-token context answered "
            f"HTTP {r.status}: {r.error_message()[:150]}",
            measured=f"HTTP {r.status}",
            expected="HTTP 400 with an error message",
            fix=[
                "a 5xx or a 200 here means requests over the context are not rejected cleanly: "
                "upgrade the server"
            ],
            properties=props,
        )
    if after.status != 200:
        return failed(
            f"{server.describe()}: after the over-context request /v1/models answers HTTP {after.status}"
        )
    return passed(
        f"{server.describe()}: {n}-token prompt rejected with HTTP 400 ({r.error_message()[:80]})",
        properties=props,
    )


# -- prefix caching -----------------------------------------------------------------------------------


def prefix_caching(server: VllmServer) -> Verdict:
    """With prefix caching on, a second request sharing a long prefix reaches its first token sooner."""
    s = server.settings
    enabled = s.prefix_caching_enabled
    try:
        m = read_metrics(server, "the prefix-caching check")
    except ServerGone as exc:
        return _gone(server, exc)
    if enabled is None and isinstance(m, Metrics):
        flag = m.labels_of("vllm:cache_config_info").get("enable_prefix_caching")
        enabled = flag == "True" if flag is not None else None
    if not enabled:
        return not_applicable(
            f"{server.describe()}: prefix caching is not enabled in the profile "
            "(add --enable-prefix-caching to [vllm] flags, or prefix_caching = true, to check it)"
        )
    try:
        limit, _ = _max_len(server)
    except ServerGone as exc:
        return _gone(server, exc)
    tokens = min(1500, int((limit or 2048) * 0.5))
    ratios, colds, warms = [], [], []
    hits_before = m.total(PREFIX_HITS) if isinstance(m, Metrics) else None
    try:
        for trial in range(3):
            # A fresh nonce first, so that nothing of this prefix is cached before the cold request.
            prefix = f"[{uuid.uuid4().hex}] " + FILLER * max(1, tokens // 20)
            cold = server.stream(
                CHAT,
                server.chat_payload(prefix + "\nQuestion one: what is it about?", 2),
                f"prefix-caching trial {trial + 1} (cold)",
            )
            warm = server.stream(
                CHAT,
                server.chat_payload(prefix + "\nQuestion two: how long is it?", 2),
                f"prefix-caching trial {trial + 1} (warm)",
            )
            if cold.ttft_s is None or warm.ttft_s is None:
                return failed(
                    f"{server.describe()}: prefix-caching streams carried no text "
                    f"(HTTP {cold.status}/{warm.status}: {cold.text[:100]}{warm.text[:100]})"
                )
            colds.append(cold.ttft_s)
            warms.append(warm.ttft_s)
            ratios.append(warm.ttft_s / cold.ttft_s)
        after = read_metrics(server, "the prefix-caching check")
    except ServerGone as exc:
        return _gone(server, exc)
    except SseError as exc:
        return failed(f"{server.describe()}: the event stream is broken: {exc}")
    ratio = statistics.median(ratios)
    props: dict[str, object] = {
        "prefix_cold_ttft_s": round(statistics.median(colds), 4),
        "prefix_warm_ttft_s": round(statistics.median(warms), 4),
        "prefix_ttft_ratio": round(ratio, 3),
    }
    if hits_before is not None and isinstance(after, Metrics) and after.total(PREFIX_HITS) is not None:
        props["prefix_cache_hit_tokens"] = (after.total(PREFIX_HITS) or 0) - hits_before
    limit_ratio = s.max_prefix_cached_ttft_ratio
    if ratio > limit_ratio:
        return failed(
            f"{server.describe()}: a request sharing a ~{tokens}-token prefix was not faster: time to "
            f"first token {statistics.median(warms) * 1000:.0f} ms vs {statistics.median(colds) * 1000:.0f} "
            f"ms cold (ratio {ratio:.2f} > {limit_ratio:g})",
            measured=f"median warm/cold ratio {ratio:.2f} over 3 pairs",
            expected=f"at most {limit_ratio:g} ({_where(server, 'max_prefix_cached_ttft_ratio')} or default)",
            fix=["start vLLM with --enable-prefix-caching; check vllm:prefix_cache_hits_total"],
            properties=props,
        )
    return passed(
        f"{server.describe()}: shared-prefix time to first token {statistics.median(warms) * 1000:.0f} ms "
        f"vs {statistics.median(colds) * 1000:.0f} ms cold",
        properties=props,
    )


# -- tool calls ----------------------------------------------------------------------------------------

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TOOL_PROMPT = "What is the weather in Paris right now? Use the get_weather tool."
TOOL_RESULT = {"city": "Paris", "temperature_c": 21, "sky": "clear"}


def _tool_call_of(r: Any) -> tuple[dict[str, Any] | None, str]:
    """The first tool call of a chat completion, or why there is none."""
    try:
        msg = r.json()["choices"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None, f"not a chat completion: {r.body[:150]!r}"
    calls = msg.get("tool_calls") if isinstance(msg, dict) else None
    if not calls or not isinstance(calls, list) or not isinstance(calls[0], dict):
        return None, f"no tool_calls in the answer; content {str(msg.get('content'))[:120]!r}"
    return calls[0], ""


def _arguments_problem(call: dict[str, Any]) -> tuple[Any, str]:
    """The call's parsed arguments, and what is wrong with them against the tool's schema ('' if nothing)."""
    fn = call.get("function") or {}
    if fn.get("name") != "get_weather":
        return None, f"called {fn.get('name')!r}, not 'get_weather'"
    try:
        args = json.loads(fn.get("arguments") or "")
    except (TypeError, ValueError):
        return None, f"arguments are not JSON: {fn.get('arguments')!r:.120}"
    if not isinstance(args, dict) or not isinstance(args.get("city"), str):
        return (
            args,
            f"arguments {fn.get('arguments')!r:.120} do not match the schema (an object with a string 'city')",
        )
    return args, ""


def tool_call(server: VllmServer) -> Verdict:
    """The tool-call round trip homelab verify scripts run: a forced call to a tool, its result sent back,
    and an answer that uses it (``[vllm] tool_calls``: true requires it, false skips it)."""
    want = server.settings.tool_calls
    if want is False:
        return not_applicable(f"{server.describe()}: [vllm] tool_calls = false in {server.settings.where}")
    first = server.chat_payload(
        TOOL_PROMPT,
        64,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    try:
        r = server.post(CHAT, first, "the tool-call request")
        if r.status == 400 and "tool" in r.error_message().lower() and want is None:
            return not_applicable(
                f"{server.describe()}: the server does not take tool calls ({r.error_message()[:160]}); vLLM "
                "needs --enable-auto-tool-choice --tool-call-parser NAME; set [vllm] tool_calls = true to require it"
            )
        if r.status != 200:
            return failed(
                f"{server.describe()}: the tool-call request answered HTTP {r.status}: {r.error_message()[:200]}",
                expected=f"HTTP 200 with a call to get_weather ({_where(server, 'tool_calls')})"
                if want
                else "HTTP 200 with a call to get_weather",
                fix=[
                    "start vLLM with --enable-auto-tool-choice --tool-call-parser NAME (the model's parser)"
                ],
            )
        call, why = _tool_call_of(r)
        if call is None and want is None and why.startswith("no tool_calls"):
            return not_applicable(
                f"{server.describe()}: the server ignored tool_choice and answered in text ({why}): it does not "
                "do tool calls; set [vllm] tool_calls = true to require them"
            )
        if call is None:
            return failed(
                f"{server.describe()}: asked to call get_weather (tool_choice names it), got {why}",
                fix=["check --tool-call-parser matches the model's chat template"],
            )
        args, problem = _arguments_problem(call)
        props: dict[str, object] = {
            "tool_call_arguments": str((call.get("function") or {}).get("arguments"))[:200]
        }
        messages = [
            {"role": "user", "content": TOOL_PROMPT},
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {
                "role": "tool",
                "tool_call_id": str(call.get("id", "call-0")),
                "content": json.dumps(TOOL_RESULT),
            },
        ]
        second = server.chat_payload("", 48, tools=[WEATHER_TOOL], tool_choice="none", seed=0)
        second["messages"] = messages
        r2 = server.post(CHAT, second, "the tool-result request")
    except ServerGone as exc:
        return _gone(server, exc)
    if problem:
        return failed(
            f"{server.describe()}: tool call to get_weather came back malformed: {problem}",
            measured=str(props["tool_call_arguments"]),
            expected='arguments like {"city": "Paris"} (JSON matching the tool\'s parameters)',
            fix=[
                "check --tool-call-parser matches the model; structured outputs must be enforced by the "
                "server (its logs say which backend)"
            ],
            properties=props,
        )
    if r2.status != 200:
        return failed(
            f"{server.describe()}: sending the tool's result back answered HTTP {r2.status}: "
            f"{r2.error_message()[:200]}",
            fix=["check the model's chat template renders tool messages"],
            properties=props,
        )
    try:
        answer = str(r2.json()["choices"][0]["message"].get("content") or "")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        answer = ""
    props["tool_answer"] = answer[:200]
    bad = degenerate_reason(answer)
    if bad or "21" not in answer:
        return failed(
            f"{server.describe()}: the answer after the tool's result "
            + (f"is degenerate ({bad})" if bad else "does not use it (no '21' from temperature_c = 21)"),
            measured=repr(answer[:200]),
            expected="an answer that reports the tool's temperature, 21",
            fix=[
                "check the chat template renders tool results; garbage here is the all-reduce signature too"
            ],
            properties=props,
        )
    return passed(
        f"{server.describe()}: called get_weather({json.dumps(args)}), then answered with its result: "
        f"{answer.strip()[:80]!r}",
        properties=props,
    )


ALL_CHECKS: dict[str, Any] = {
    "served_model": served_model,
    "version": version,
    "health": health,
    "correctness": correctness,
    "not_degenerate": not_degenerate,
    "streaming": streaming,
    "ttft": ttft,
    "decode_rate": decode_rate,
    "usage_in_stream": usage_in_stream,
    "metrics": metrics,
    "concurrency": concurrency,
    "no_preemptions": no_preemptions,
    "long_context": long_context,
    "over_context": over_context,
    "prefix_caching": prefix_caching,
    "tool_call": tool_call,
}
