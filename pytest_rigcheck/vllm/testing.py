"""Fake and faulty OpenAI-compatible servers, for the plugin's tests and for users' own checks.

A small stdlib HTTP server that speaks enough of vLLM's surface (``/health``, ``/version``, ``/v1/models``,
``/v1/chat/completions`` and ``/v1/completions`` with SSE, ``/tokenize``, ``/metrics``) and can misbehave
on purpose: be slow, stream garbage text or broken SSE, die mid-request, never become ready, exit at
start, leave an engine child that ignores SIGTERM, or drop vLLM's extras like llama-cpp-python's server.

In a thread (quick unit tests)::

    with serve_fake(FakeConfig(ttft_s=2.0)) as url:
        ...

As its own process (what the launcher starts; process-group tests)::

    python -m pytest_rigcheck.vllm.testing --port 8000 --mode slow
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SENTENCE = (
    "the sea is calm and blue under a clear sky while small boats drift toward the harbor as gulls circle "
    "above the quiet town and fishermen mend their nets before evening light fades"
)
WORDS = tuple(SENTENCE.split())


@dataclass
class FakeConfig:
    """How the fake server behaves. Defaults: a healthy, fast, vLLM-like server."""

    model: str = "fake/model"
    version: str = "0.0.0-fake"
    max_model_len: int = 2048
    extras: bool = True  # /health, /version, /metrics, /tokenize, usage in streams (vLLM's extras)
    ttft_s: float = 0.0  # added before the first token
    token_s: float = 0.0  # between tokens
    prefill_s_per_token: float = 0.0002  # uncached prompt tokens only (block prefix cache)
    prefix_caching: bool = True
    block_chars: int = 16  # the prefix cache's block, in characters (vLLM: 16 tokens by default)
    busy: int = 0  # other clients' requests /metrics shows running, and as many waiting
    hang: bool = False  # take generation requests and never answer them (a hung engine)
    garbage: bool = False  # valid protocol, degenerate text ("!!!!"), as broken all-reduce produces
    bad_sse: bool = False  # streams that are not valid OpenAI SSE
    die_after: int = 0  # hard-exit the process during the Nth generation request (0: never)
    preempt: bool = False  # /metrics counts a preemption per concurrent request beyond the first
    api_key_env: str | None = None  # require this env var's value as bearer token on /v1
    answer: str = "Paris."
    tool_calls: bool = (
        True  # started with a tool-call parser (vLLM: --enable-auto-tool-choice --tool-call-parser)
    )
    tool_arguments: str = '{"city": "Paris"}'  # what a forced call's arguments come back as
    ignore_tools: bool = False  # answer tool requests in plain text, as servers without tool support do
    log_requests: bool = False  # one line per request on stderr (the command line turns it on)


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    generations: int = 0
    running: int = 0
    success: int = 0
    preemptions: int = 0
    prefix_queries: int = 0
    prefix_hits: int = 0
    blocks: set[str] = field(default_factory=set)


def _tokens_of(text: str) -> int:
    return max(1, len(text.split()))


def _prompt_text(body: dict[str, Any]) -> str:
    if "messages" in body:
        return "\n".join(str(m.get("content", "")) for m in body["messages"] if isinstance(m, dict))
    prompt = body.get("prompt", "")
    return prompt if isinstance(prompt, str) else " ".join(map(str, prompt))


def make_handler(cfg: FakeConfig, state: _State) -> type[BaseHTTPRequestHandler]:
    """The request handler class for one fake server."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's signature
            if cfg.log_requests:
                sys.stderr.write(f"fake-server: {format % args}\n")

        # -- helpers ----------------------------------------------------------------------------
        def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, obj: object) -> None:
            self._send(status, json.dumps(obj).encode())

        def _error(self, status: int, message: str, typ: str = "BadRequestError") -> None:
            self._json(status, {"error": {"message": message, "type": typ, "param": None, "code": status}})

        def _authorized(self) -> bool:
            if not cfg.api_key_env or not self.path.startswith("/v1"):
                return True
            want = os.environ.get(cfg.api_key_env, "")
            if self.headers.get("Authorization", "") == f"Bearer {want}":
                return True
            self._json(401, {"error": "Unauthorized"})
            return False

        # -- GET --------------------------------------------------------------------------------
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if not self._authorized():
                return
            path = self.path.split("?")[0]
            if path == "/v1/models":
                card: dict[str, Any] = {
                    "id": cfg.model,
                    "object": "model",
                    "owned_by": "fake",
                    "root": cfg.model,
                }
                if cfg.extras:
                    card["max_model_len"] = cfg.max_model_len
                self._json(200, {"object": "list", "data": [card]})
            elif path == "/health" and cfg.extras:
                self._send(200, b"")
            elif path == "/version" and cfg.extras:
                self._json(200, {"version": cfg.version})
            elif path == "/metrics" and cfg.extras:
                self._send(200, self._metrics().encode(), "text/plain; version=0.0.4; charset=utf-8")
            else:
                self._json(404, {"detail": "Not Found"})

        def _metrics(self) -> str:
            m = f'model_name="{cfg.model}",engine="0"'
            return "\n".join(
                [
                    "# HELP vllm:num_requests_running Number of requests in model execution batches.",
                    "# TYPE vllm:num_requests_running gauge",
                    f"vllm:num_requests_running{{{m}}} {float(state.running + cfg.busy)}",
                    "# TYPE vllm:num_requests_waiting gauge",
                    f"vllm:num_requests_waiting{{{m}}} {float(cfg.busy)}",
                    "# TYPE vllm:kv_cache_usage_perc gauge",
                    f"vllm:kv_cache_usage_perc{{{m}}} {0.01 * state.running}",
                    "# TYPE vllm:num_preemptions_total counter",
                    f"vllm:num_preemptions_total{{{m}}} {float(state.preemptions)}",
                    "# TYPE vllm:prefix_cache_queries_total counter",
                    f"vllm:prefix_cache_queries_total{{{m}}} {float(state.prefix_queries)}",
                    "# TYPE vllm:prefix_cache_hits_total counter",
                    f"vllm:prefix_cache_hits_total{{{m}}} {float(state.prefix_hits)}",
                    "# TYPE vllm:request_success_total counter",
                    f'vllm:request_success_total{{{m},finished_reason="length"}} {float(state.success)}',
                    "# TYPE vllm:cache_config_info gauge",
                    f'vllm:cache_config_info{{enable_prefix_caching="{cfg.prefix_caching}",'
                    'gpu_memory_utilization="0.9"} 1.0',
                    "",
                ]
            )

        # -- POST -------------------------------------------------------------------------------
        def do_POST(self) -> None:  # noqa: N802
            if not self._authorized():
                return
            length = int(self.headers.get("Content-Length", "0"))
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except json.JSONDecodeError:
                self._error(400, "body is not JSON")
                return
            path = self.path.split("?")[0]
            if path == "/tokenize" and cfg.extras:
                n = _tokens_of(_prompt_text(body))
                self._json(200, {"count": n, "max_model_len": cfg.max_model_len, "tokens": list(range(n))})
            elif path in ("/v1/chat/completions", "/v1/completions"):
                self._generate(path, body)
            else:
                self._json(404, {"detail": "Not Found"})

        def _generate(self, path: str, body: dict[str, Any]) -> None:
            chat = path.endswith("chat/completions")
            prompt = _prompt_text(body)
            n_prompt = _tokens_of(prompt) + (8 if chat else 0)  # a chat template adds a few tokens
            max_tokens = int(body.get("max_tokens") or 16)
            if n_prompt + max_tokens > cfg.max_model_len:
                self._error(
                    400,
                    f"This model's maximum context length is {cfg.max_model_len} tokens. However, "
                    f"you requested {n_prompt + max_tokens} tokens ({n_prompt} in the messages, "
                    f"{max_tokens} in the completion).",
                )
                return
            if cfg.hang:
                time.sleep(3600)  # a hung engine: the request is taken and never answered
                return
            forced = body.get("tool_choice") not in (None, "none", "auto")
            if chat and body.get("tools") and forced and not cfg.ignore_tools:
                self._tool_call(body)
                return
            with state.lock:
                state.generations += 1
                nth = state.generations
                state.running += 1
                if cfg.preempt and state.running > 1:
                    state.preemptions += 1
                uncached = self._prefix_cache(prompt)
            try:
                tokens = self._tokens(prompt, body, max_tokens)
                time.sleep(uncached * cfg.prefill_s_per_token)
                if body.get("stream"):
                    self._stream(chat, tokens, n_prompt, body, die=nth == cfg.die_after)
                else:
                    if nth == cfg.die_after:
                        os._exit(137)  # killed mid-request: no answer at all
                    time.sleep(cfg.ttft_s + cfg.token_s * max(0, len(tokens) - 1))
                    text = "".join(tokens)
                    choice: dict[str, Any] = {
                        "index": 0,
                        "finish_reason": "length" if len(tokens) >= max_tokens else "stop",
                    }
                    if chat:
                        choice["message"] = {"role": "assistant", "content": text}
                    else:
                        choice["text"] = text
                    self._json(
                        200,
                        {
                            "id": "fake-1",
                            "object": "chat.completion" if chat else "text_completion",
                            "model": cfg.model,
                            "choices": [choice],
                            "usage": {
                                "prompt_tokens": n_prompt,
                                "completion_tokens": len(tokens),
                                "total_tokens": n_prompt + len(tokens),
                            },
                        },
                    )
                with state.lock:
                    state.success += 1
            finally:
                with state.lock:
                    state.running -= 1

        def _tool_call(self, body: dict[str, Any]) -> None:
            """A forced tool call, answered as vLLM does; refused as vLLM does without a parser."""
            choice = body.get("tool_choice")
            name = (
                choice["function"]["name"]
                if isinstance(choice, dict)
                else body["tools"][0]["function"]["name"]
            )
            if not cfg.tool_calls:
                self._error(400, f'tool_choice=function "{name}" requires --tool-call-parser to be set')
                return
            call = {
                "id": "chatcmpl-tool-1",
                "type": "function",
                "function": {"name": name, "arguments": cfg.tool_arguments},
            }
            message = {"role": "assistant", "content": "", "tool_calls": [call]}
            self._json(
                200,
                {
                    "id": "fake-tool",
                    "object": "chat.completion",
                    "model": cfg.model,
                    "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
                    "usage": {"prompt_tokens": 40, "completion_tokens": 8, "total_tokens": 48},
                },
            )

        def _prefix_cache(self, prompt: str) -> int:
            """Uncached prompt tokens, with a block cache of ``block_chars`` blocks (leading blocks only)."""
            size = cfg.block_chars
            blocks = [prompt[i : i + size] for i in range(0, len(prompt) - len(prompt) % size, size)]
            keys, h = [], hashlib.sha256()
            for b in blocks:
                h.update(b.encode())
                keys.append(h.hexdigest())
            hit = 0
            if cfg.prefix_caching:
                for k in keys:
                    if k not in state.blocks:
                        break
                    hit += 1
                state.blocks.update(keys)
            state.prefix_queries += _tokens_of(prompt)
            state.prefix_hits += _tokens_of("".join(blocks[:hit])) if hit else 0
            return _tokens_of(prompt[hit * size :])

        def _tokens(self, prompt: str, body: dict[str, Any], max_tokens: int) -> list[str]:
            if cfg.garbage:
                return ["!!!!"] * max_tokens
            min_tokens = int(body.get("min_tokens") or 0)
            tool = [m for m in body.get("messages") or [] if isinstance(m, dict) and m.get("role") == "tool"]
            if tool:  # answer from the tool's result, as a model that reads it would
                try:
                    temp = json.loads(tool[-1].get("content") or "{}").get("temperature_c", "?")
                except (ValueError, AttributeError):
                    temp = "?"
                return [" " + w for w in f"It is {temp} degrees and clear in Paris.".split()][:max_tokens]
            if "capital of france" in prompt.lower() and min_tokens < 2:
                return [" " + w for w in cfg.answer.split()][:max_tokens]
            seed = int(hashlib.sha256(prompt.encode()).hexdigest()[:8], 16)
            n = max(min_tokens, min(max_tokens, 24))
            return [" " + WORDS[(seed + i) % len(WORDS)] for i in range(n)]

        def _stream(
            self, chat: bool, tokens: list[str], n_prompt: int, body: dict[str, Any], die: bool
        ) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()

            def event(obj: object | str) -> None:
                data = obj if isinstance(obj, str) else json.dumps(obj)
                payload = f"data: {data}\n\n".encode()
                self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
                self.wfile.flush()

            def chunk(text: str | None, finish: str | None = None) -> dict[str, Any]:
                if chat:
                    delta = {"role": "assistant", "content": ""} if text is None else {"content": text}
                    c: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
                else:
                    c = {"index": 0, "text": text or "", "finish_reason": finish}
                return {"id": "fake-1", "object": "chat.completion.chunk", "model": cfg.model, "choices": [c]}

            if chat:
                event(chunk(None))  # vLLM's first chat chunk: the role only, no text
            time.sleep(cfg.ttft_s)
            for i, tok in enumerate(tokens):
                if die and i == len(tokens) // 2:
                    os._exit(137)  # killed mid-stream
                if cfg.bad_sse and i == 2:
                    payload = b'data: {"choices": [{"delta": {"content": "x"\n\n'
                    self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n0\r\n\r\n")
                    self.wfile.flush()
                    return
                if i:
                    time.sleep(cfg.token_s)
                last = i == len(tokens) - 1
                event(chunk(tok, "length" if last else None))
            opts = body.get("stream_options") or {}
            if cfg.extras and opts.get("include_usage"):
                event(
                    {
                        "id": "fake-1",
                        "object": "chat.completion.chunk",
                        "model": cfg.model,
                        "choices": [],
                        "usage": {
                            "prompt_tokens": n_prompt,
                            "completion_tokens": len(tokens),
                            "total_tokens": n_prompt + len(tokens),
                        },
                    }
                )
            event("[DONE]")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    return Handler


def make_server(cfg: FakeConfig, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A bound fake server (not yet serving): ``server.server_address`` has the port."""
    server = ThreadingHTTPServer((host, port), make_handler(cfg, _State()))
    server.daemon_threads = True
    return server


@contextmanager
def serve_fake(cfg: FakeConfig | None = None) -> Iterator[str]:
    """Run a fake server in a thread; yield its base URL.

    Example::

        with serve_fake(FakeConfig(garbage=True)) as url:
            assert url.startswith("http://127.0.0.1:")
    """
    server = make_server(cfg or FakeConfig())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


MODES: dict[str, dict[str, Any]] = {
    "good": {},
    "slow": {"ttft_s": 3.0, "token_s": 0.4},
    "garbage": {"garbage": True},
    "bad-sse": {"bad_sse": True},
    "die": {"die_after": 3},
    "no-extras": {"extras": False},
    "preempt": {"preempt": True},
    "hang": {"hang": True},
    "busy": {"busy": 2},
}


def main(argv: list[str] | None = None) -> None:
    """Command line: serve one fake server in the foreground (what a launch template runs)."""
    ap = argparse.ArgumentParser(
        prog="python -m pytest_rigcheck.vllm.testing", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--mode", choices=[*MODES, "never-ready", "exit-early"], default="good")
    ap.add_argument("--model", default="fake/model")
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--api-key-env", default=None)
    ap.add_argument("--start-delay", type=float, default=0.0, help="seconds before listening (model loading)")
    ap.add_argument(
        "--ttft-s", type=float, default=None, help="delay before the first token (overrides the mode's)"
    )
    ap.add_argument("--token-s", type=float, default=None, help="delay between tokens (overrides the mode's)")
    ap.add_argument(
        "--die-after", type=int, default=None, help="exit mid-request in the Nth generation request"
    )
    ap.add_argument(
        "--spawn-child", action="store_true", help="start an 'engine' child in the same process group"
    )
    ap.add_argument(
        "--child-ignores-term", action="store_true", help="the child ignores SIGTERM (needs SIGKILL)"
    )
    ap.add_argument("--ignore-term", action="store_true", help="this server ignores SIGTERM (needs SIGKILL)")
    args, unknown = ap.parse_known_args(argv)  # vLLM-style flags from a template ({flags}) are ignored
    print(f"fake-server: pid {os.getpid()} mode {args.mode} ignoring {unknown}", flush=True)
    if args.spawn_child:
        code = (
            "import signal, time\n"
            + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if args.child_ignores_term else "")
            + "time.sleep(3600)\n"
        )
        child = subprocess.Popen([sys.executable, "-c", code])
        print(f"fake-server: engine child pid {child.pid}", flush=True)
    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if args.mode == "exit-early":
        print("fake-server: RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB", flush=True)
        sys.exit(1)
    if args.mode == "never-ready":
        print("fake-server: loading model weights...", flush=True)
        while True:
            time.sleep(1)
    time.sleep(args.start_delay)
    known = {f.name for f in fields(FakeConfig)}
    cfg = FakeConfig(
        model=args.model,
        max_model_len=args.max_model_len,
        api_key_env=args.api_key_env,
        log_requests=True,
        **{k: v for k, v in MODES[args.mode].items() if k in known},
    )
    for name in ("ttft_s", "token_s", "die_after"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    server = make_server(cfg, args.host, args.port)
    print(f"fake-server: listening on http://{args.host}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
