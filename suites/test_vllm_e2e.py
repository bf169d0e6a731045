"""End to end against a served model: identity, correctness, streaming, concurrency, context, caching,
metrics, the tool-call round trip.

Needs a server: ``--rig-vllm-url URL`` (a running one), or ``[vllm] model`` / ``launch`` in the rig profile
(rigcheck starts it, checks it, stops it). Without either, every test here is skipped with that hint.
Checks of vLLM extras (``/health``, ``/version``, ``/metrics``, usage in streams) skip on servers without
them.
"""

from __future__ import annotations

import pytest

from pytest_rigcheck.vllm import checks

pytestmark = [pytest.mark.rig_vllm, pytest.mark.rig_live]


def test_served_model(rig_vllm_server, rig_check, record_testsuite_property):
    verdict = rig_check(checks.served_model(rig_vllm_server))
    # The rollout record: what was served, for the whole run's results.
    record_testsuite_property("vllm_served_model_id", verdict.properties.get("served_model_id"))
    assert verdict.ok, str(verdict)


def test_version(rig_vllm_server, rig_check, record_testsuite_property):
    verdict = rig_check(checks.version(rig_vllm_server))
    record_testsuite_property("vllm_version", verdict.properties.get("vllm_version"))
    assert verdict.ok, str(verdict)


def test_health(rig_vllm_server, rig_check):
    verdict = rig_check(checks.health(rig_vllm_server))
    assert verdict.ok, str(verdict)


def test_correct_answer(rig_vllm_server, rig_check):
    verdict = rig_check(checks.correctness(rig_vllm_server))
    assert verdict.ok, str(verdict)


def test_output_not_degenerate(rig_vllm_server, rig_check):
    verdict = rig_check(checks.not_degenerate(rig_vllm_server))
    assert verdict.ok, str(verdict)


def test_streaming(rig_vllm_server, rig_check):
    verdict = rig_check(checks.streaming(rig_vllm_server))
    assert verdict.ok, str(verdict)


def test_time_to_first_token(rig_vllm_server, rig_check):
    verdict = rig_check(checks.ttft(rig_vllm_server))
    assert verdict.ok, str(verdict)


def test_decode_rate(rig_vllm_server, rig_check):
    verdict = rig_check(checks.decode_rate(rig_vllm_server))
    assert verdict.ok, str(verdict)


def test_usage_in_stream(rig_vllm_server, rig_check):
    verdict = rig_check(checks.usage_in_stream(rig_vllm_server))
    assert verdict.ok, str(verdict)


def test_concurrency(rig_vllm_server, rig_check):
    verdict = rig_check(checks.concurrency(rig_vllm_server))
    assert verdict.ok, str(verdict)


def test_no_preemptions(rig_vllm_server, rig_check):
    verdict = rig_check(checks.no_preemptions(rig_vllm_server))
    assert verdict.ok, str(verdict)


def test_long_context(rig_vllm_server, rig_check):
    verdict = rig_check(checks.long_context(rig_vllm_server))
    assert verdict.ok, str(verdict)


def test_over_context_rejected(rig_vllm_server, rig_check):
    verdict = rig_check(checks.over_context(rig_vllm_server))
    assert verdict.ok, str(verdict)


def test_prefix_caching(rig_vllm_server, rig_check):
    verdict = rig_check(checks.prefix_caching(rig_vllm_server))
    assert verdict.ok, str(verdict)


def test_metrics(rig_vllm_server, rig_check):
    verdict = rig_check(checks.metrics(rig_vllm_server))
    assert verdict.ok, str(verdict)


def test_tool_call_round_trip(rig_vllm_server, rig_check):
    verdict = rig_check(checks.tool_call(rig_vllm_server))
    assert verdict.ok, str(verdict)
