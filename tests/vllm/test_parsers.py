"""Pure parsers: server-sent events, Prometheus text, degenerate-output detection, sizes."""

from __future__ import annotations

import math

import pytest

from pytest_rigcheck.vllm.checks import degenerate_reason
from pytest_rigcheck.vllm.metrics import MetricsError, parse_labels, parse_prometheus
from pytest_rigcheck.vllm.settings import parse_gpu_option, parse_size
from pytest_rigcheck.vllm.sse import SseError, SseEvent, chunk_text, iter_events, iter_json_chunks


class TestSse:
    @pytest.mark.parametrize(
        ("lines", "events"),
        [
            (["data: a", ""], [SseEvent("a")]),
            (["data: a", "data: b", ""], [SseEvent("a\nb")]),
            ([": keep-alive", "", "data: x", ""], [SseEvent("x")]),
            (["event: ping", "data: 1", ""], [SseEvent("1", "ping")]),
            (["data:no-space", ""], [SseEvent("no-space")]),
            (["data: a\r\n", "\r\n"], [SseEvent("a")]),
            ([b"data: bytes\n", b"\n"], [SseEvent("bytes")]),
            (["data: tail-without-blank"], [SseEvent("tail-without-blank")]),
            (["id: 7", "retry: 10", ""], []),
        ],
    )
    def test_events(self, lines, events):
        """Events are split on blank lines, comments skipped, data lines joined."""
        assert list(iter_events(lines)) == events

    def test_json_chunks_stop_at_done(self):
        """JSON objects are yielded until [DONE]; what follows is not read."""
        lines = ['data: {"a": 1}', "", "data: [DONE]", "", "data: garbage", ""]
        assert list(iter_json_chunks(lines)) == [{"a": 1}]

    @pytest.mark.parametrize(
        ("lines", "match"),
        [
            (["data: {not json", ""], "event 1 is not JSON"),
            (["data: [1, 2]", ""], "not an object"),
            (['data: {"a": 1}', ""], "without 'data: \\[DONE\\]'"),
            (['data: {"error": {"message": "boom"}}', ""], "error from the server"),
        ],
    )
    def test_json_chunks_reject(self, lines, match):
        """Broken streams raise SseError naming the event and the fault."""
        with pytest.raises(SseError, match=match):
            list(iter_json_chunks(lines))

    @pytest.mark.parametrize(
        ("chunk", "text"),
        [
            ({"choices": [{"delta": {"role": "assistant"}}]}, ""),
            ({"choices": [{"delta": {"content": "Hi"}}]}, "Hi"),
            ({"choices": [{"text": " Paris"}]}, " Paris"),
            ({"choices": [], "usage": {"completion_tokens": 3}}, ""),
            ({"choices": [{"delta": {"content": None}}]}, ""),
        ],
    )
    def test_chunk_text(self, chunk, text):
        """Text comes from delta.content (chat) or text (completions); role-only chunks carry none."""
        assert chunk_text(chunk) == text


VLLM_METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 2.0
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{engine="0",model_name="m"} 0.25
# TYPE vllm:num_preemptions_total counter
vllm:num_preemptions_total{engine="0",model_name="m"} 0.0
vllm:num_preemptions_total{engine="1",model_name="m"} 3.0
vllm:cache_config_info{enable_prefix_caching="True",gpu_memory_utilization="0.9",path="a\\\\b \\"q\\""} 1.0
vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="m"} 5.0
process_start_time_seconds 1.7e9 1700000000000
"""


class TestPrometheus:
    def test_vllm_sample(self):
        """vLLM's /metrics parses; totals sum over label sets; either KV gauge name is found."""
        m = parse_prometheus(VLLM_METRICS)
        assert m.is_vllm
        assert m.total("vllm:num_preemptions_total") == 3.0
        assert m.first_of(("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")) == (
            "vllm:gpu_cache_usage_perc",
            0.25,
        )
        assert m.types["vllm:num_requests_running"] == "gauge"
        assert m.labels_of("vllm:cache_config_info")["path"] == 'a\\b "q"'
        assert m.samples["vllm:time_to_first_token_seconds_bucket"][0].labels["le"] == "+Inf"
        assert m.total("process_start_time_seconds") == 1.7e9
        assert m.total("absent") is None

    @pytest.mark.parametrize(
        ("value", "expected"), [("+Inf", math.inf), ("-Inf", -math.inf), ("1e3", 1000.0)]
    )
    def test_special_values(self, value, expected):
        """+Inf, -Inf and exponents are numbers."""
        assert parse_prometheus(f"x {value}\n").total("x") == expected

    @pytest.mark.parametrize(
        ("text", "match"),
        [
            ("", "no samples"),
            ("<html>nope</html>", "line 1"),
            ("x{a=1} 1", "bad label"),
            ("x abc", "not a number"),
            ("# only comments\n", "no samples"),
        ],
    )
    def test_rejects(self, text, match):
        """Anything else raises MetricsError naming the line."""
        with pytest.raises(MetricsError, match=match):
            parse_prometheus(text)

    def test_labels(self):
        """Label values keep commas and escaped quotes."""
        assert parse_labels('a="x,y",b="\\"z\\""') == {"a": "x,y", "b": '"z"'}


class TestDegenerate:
    @pytest.mark.parametrize(
        "text",
        [
            "",
            "   \n",
            "!!!!",
            "Sure!!!!!!!!",
            "的" * 20,
            "the the the the the the the",
            "\ufffd\ufffd\ufffd x",
        ],
    )
    def test_degenerate(self, text):
        """Empty output, '!!!!' runs, single characters or words repeated are degenerate."""
        assert degenerate_reason(text)

    @pytest.mark.parametrize(
        "text",
        [
            "Paris.",
            "The capital of France is Paris!",
            "The sea is calm. The sea is blue. The sea is wide.",
            "Wow!!! Really?",
            "---- a table ----",
            "ok ok ok",
        ],
    )
    def test_ordinary(self, text):
        """Ordinary text, even a repetitive small model's, is not degenerate."""
        assert degenerate_reason(text) is None


class TestSizes:
    @pytest.mark.parametrize(
        ("text", "size"),
        [
            ("10GiB", 10 * 2**30),
            ("9216MiB", 9216 * 2**20),
            ("10GB", 10**10),
            ("1.5", int(1.5 * 2**30)),
            ("512 mib", 2**29),
        ],
    )
    def test_parse_size(self, text, size):
        """Sizes accept binary and decimal units; a bare number is GiB."""
        assert parse_size(text) == size

    @pytest.mark.parametrize("text", ["", "ten", "10 parsecs", "-1GiB"])
    def test_parse_size_rejects(self, text):
        """Anything else is refused with the accepted forms."""
        with pytest.raises(ValueError, match="10GiB"):
            parse_size(text)

    def test_gpu_option(self):
        """INDEX:NAME:TOTAL:USED gives one GPU's memory."""
        g = parse_gpu_option("1:RTX 3060:12GiB:0")
        assert (g.index, g.name, g.total_bytes, g.used_bytes) == (1, "RTX 3060", 12 * 2**30, 0)

    @pytest.mark.parametrize("text", ["0:x:10GiB", "a:x:1:1", "0:x:1GiB:2GiB"])
    def test_gpu_option_rejects(self, text):
        """Wrong field counts, indices, or used above total are refused."""
        with pytest.raises(ValueError, match="INDEX:NAME|at most"):
            parse_gpu_option(text)
