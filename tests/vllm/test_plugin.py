"""The suites end to end under pytester: options, skips, usage errors, and every fault server failing
the right checks with clear messages and no process left behind."""

from __future__ import annotations

import sys

import pytest

# Imported here, before any in-process run: pytester restores sys.modules after each run, and a module
# first imported inside a run would come back as a second copy (two SseError classes) in the next one.
from pytest_rigcheck.vllm import checks, client, fitcheck, launcher, metrics, server, sse  # noqa: F401
from pytest_rigcheck.vllm.plugin import API_KEY_ENV_OPTION, GPU_MEMORY_OPTION, LAUNCH_OPTION, URL_OPTION
from pytest_rigcheck.vllm.testing import FakeConfig, serve_fake

from .conftest import E2E, FIT, fake_launch, write_profile

E2E_TESTS = 16


def run(pytester: pytest.Pytester, *args: str):
    return pytester.runpytest("-p", "no:cacheprovider", "-rA", "--rig", *args)


class TestOptions:
    def test_help(self, pytester):
        """--help lists the vLLM options in the rigcheck group and their ini keys."""
        result = pytester.runpytest("--help")
        result.stdout.fnmatch_lines(
            [
                f"*{URL_OPTION}=URL*",
                f"*{API_KEY_ENV_OPTION}=NAME*",
                f"*{LAUNCH_OPTION}=TEMPLATE*",
                f"*{GPU_MEMORY_OPTION}=SPEC*",
                "*rig_vllm_url (string)*",
                "*rig_vllm_gpu_memory (linelist)*",
            ]
        )

    def test_marker_registered(self, pytester):
        """The rig_vllm marker is registered (usable under --strict-markers)."""
        result = pytester.runpytest("--markers")
        result.stdout.fnmatch_lines(["@pytest.mark.rig_vllm:*"])

    def test_not_configured_skips_with_hint(self, pytester):
        """Without a URL or a [vllm] model every e2e check skips, saying how to enable it."""
        result = run(pytester, str(E2E), str(FIT))
        result.assert_outcomes(skipped=E2E_TESTS + 2)
        result.stdout.fnmatch_lines(
            [
                f"*no vLLM server to check: give {URL_OPTION} URL*[[]vllm[]] model*",
                "*model-fit gate: no [[]vllm[]] model*",
            ]
        )

    @pytest.mark.parametrize(
        ("table", "match"),
        [
            ({"tensor_parallel_size": 0}, "*'vllm.tensor_parallel_size'*whole number from 1 to 64*"),
            ({"launch": "vllm serve --port {port} {modle}"}, "*unknown placeholder {modle}*"),
            (
                {"launch": "vllm serve {model} --port {port}"},
                "*uses {model} but [[]vllm[]] model is not set*",
            ),
        ],
    )
    def test_bad_profile_is_usage_error(self, pytester, table, match):
        """A bad [vllm] value stops the run before collection, naming key, value and what is allowed."""
        prof = write_profile(pytester.path / "rig.toml", table)
        result = run(pytester, "--rig-profile", str(prof), str(E2E))
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([match])

    @pytest.mark.parametrize(
        ("table", "line"),
        [
            (
                {"model_preset": "nope"},
                "ERROR: *rig.toml: invalid value 'nope' for 'vllm.model_preset': no such preset; presets: "
                "deepseek-r1-distill-qwen-7b, llama-3.1-8b-instruct, *smollm2-135m-instruct",
            ),
            (
                {"model_preset": "qwen2.5-7b"},
                "ERROR: *'vllm.model_preset': no such preset; did you mean qwen2.5-7b-instruct? presets: *",
            ),
            (
                {"model_preset": "smollm2-135m-instruct", "flags": "--max-num-seqs abc"},
                "ERROR: *rig.toml: invalid value '--max-num-seqs abc' for 'vllm.flags': --max-num-seqs takes a "
                "whole number of sequences, 1 or more",
            ),
            (
                {"model_preset": "smollm2-135m-instruct", "flags": ["--max-num-seq", "64"]},
                "ERROR: *invalid value '--max-num-seq' for 'vllm.flags': not one of vLLM's flags (did you mean "
                "--max-num-seqs?)*",
            ),
            (
                {"model_preset": "smollm2-135m-instruct", "flags": "--gpu-memory-utilization 1.5"},
                "ERROR: *'--gpu-memory-utilization 1.5' for 'vllm.flags': *above 0 and at most 1",
            ),
        ],
    )
    def test_fresh_user_profile_mistakes(self, pytester, table, line):
        """A fresh user's report: a preset that does not exist showed up as UNREADABLE fit checks (exit 1),
        flags = "--max-num-seqs abc" was silently ignored. Both are one usage error at load (exit 4), one
        line naming the file, vllm.<key>, the value and what is allowed; no check runs, no traceback."""
        prof = write_profile(pytester.path / "rig.toml", table)
        result = run(pytester, "--rig-profile", str(prof), str(FIT), str(E2E))
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([line])
        assert len([x for x in result.stderr.lines if x.strip()]) == 1, result.stderr.lines
        assert "Traceback" not in result.stdout.str() + result.stderr.str()

    def test_flag_fills_the_gate(self, pytester):
        """--gpu-memory-utilization given only in flags is what the gate sizes (it used 0.9 instead)."""
        table = {
            "model_preset": "smollm2-135m-instruct",
            "max_model_len": 8192,
            "gpus": {"0": {"total_gib": 8, "used_gib": 0}},
        }
        for flags, said in (("--gpu-memory-utilization 0.5", "0.5"), ("", "0.9")):
            prof = write_profile(pytester.path / "rig.toml", {**table, "flags": flags})
            result = run(pytester, "--rig-profile", str(prof), str(FIT))
            result.stdout.fnmatch_lines([f"*tensor-parallel 1, gpu_memory_utilization {said}: fits;*"])

    def test_xdist_refused(self, pytester):
        """With a server configured, -n N is refused: one server, measured, must not be shared by workers."""
        pytest.importorskip("xdist")
        result = run(pytester, URL_OPTION, "http://127.0.0.1:9", "-n", "2", str(E2E))
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(["*measure one server and must not run in parallel*-n 2*-n0*"])

    def test_bad_url_is_usage_error(self, pytester):
        """A URL that is not http(s) is a usage error naming the option."""
        result = run(pytester, URL_OPTION, "localhost:8000", str(E2E))
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([f"*{URL_OPTION}*not an http(s) URL*"])


class TestRunningServer:
    def test_good_server_passes(self, pytester):
        """Pointed at a healthy running server, every e2e check passes and the figures are recorded."""
        with serve_fake(FakeConfig(model="org/served")) as url:
            prof = write_profile(
                pytester.path / "rig.toml", {"served_model_name": "org/served", "max_ttft_s": 2}
            )
            result = run(
                pytester,
                URL_OPTION,
                url,
                "--rig-profile",
                str(prof),
                str(E2E),
                "--junitxml",
                str(pytester.path / "junit.xml"),
            )
        result.assert_outcomes(passed=E2E_TESTS)
        xml = (pytester.path / "junit.xml").read_text()
        assert '<property name="vllm_served_model_id" value="org/served"' in xml  # the run's rollout record
        for prop in (
            "served_model_id",
            "vllm_version",
            "ttft_s",
            "decode_tokens_per_s",
            "aggregate_tokens_per_s",
            "kv_cache_usage",
            "prefix_ttft_ratio",
        ):
            assert f'name="{prop}"' in xml

    def test_url_from_environment(self, pytester, monkeypatch):
        """RIGCHECK_VLLM_URL works like --rig-vllm-url."""
        with serve_fake() as url:
            monkeypatch.setenv("RIGCHECK_VLLM_URL", url)
            result = run(pytester, str(E2E), "-k", "served_model")
        result.assert_outcomes(passed=1, deselected=E2E_TESTS - 1)

    def test_server_without_extras(self, pytester):
        """A server without vLLM's extras (as llama-cpp-python's) gets those checks skipped."""
        with serve_fake(FakeConfig(extras=False)) as url:
            prof = write_profile(pytester.path / "rig.toml", {"max_model_len": 2048, "prefix_caching": True})
            result = run(pytester, URL_OPTION, url, "--rig-profile", str(prof), str(E2E))
        result.assert_outcomes(passed=11, skipped=5)
        result.stdout.fnmatch_lines(["SKIPPED*no /health (a vLLM extra*neither passed nor failed*"])

    def test_wrong_model_fails(self, pytester):
        """A server serving another model fails identity with both names and the fix."""
        with serve_fake(FakeConfig(model="org/other")) as url:
            prof = write_profile(pytester.path / "rig.toml", {"model": "org/wanted"})
            result = run(
                pytester, URL_OPTION, url, "--rig-profile", str(prof), str(E2E), "-k", "served_model"
            )
        result.assert_outcomes(failed=1, deselected=E2E_TESTS - 1)
        result.stdout.fnmatch_lines(
            [
                "*org/wanted @ http://127.0.0.1:*serves [[]'org/other'[]], not the profile's 'org/wanted'*",
                "*fix: start vLLM with --served-model-name*",
            ]
        )


def launched(pytester, mode: str, tag: str, *extra: str, **table: object):
    prof = write_profile(
        pytester.path / "rig.toml",
        {
            "model": "fault/model",
            "launch": fake_launch(mode, "--model", "fault/model", *extra, tag=tag),
            "decode_tokens": 8,
            "concurrency": 2,
            **table,
        },
    )
    return run(pytester, "--rig-profile", str(prof), str(E2E), "--junitxml", str(pytester.path / "junit.xml"))


class TestLaunchedFaultServers:
    def test_good_launch_and_clean_stop(self, pytester, tag):
        """A started server is checked, then stopped with its engine child; ready and stop times recorded."""
        result = launched(pytester, "good", tag, "--spawn-child", "--child-ignores-term", stop_grace_s=1.0)
        result.assert_outcomes(passed=E2E_TESTS)
        xml = (pytester.path / "junit.xml").read_text()
        assert 'name="vllm_ready_s"' in xml
        assert 'name="vllm_stop_s"' in xml

    def test_killed_mid_test(self, pytester, tag):
        """A server dying mid-request fails that check and the ones after, naming its exit code and log."""
        result = launched(pytester, "die", tag)
        result.assert_outcomes(passed=4, failed=E2E_TESTS - 4)
        result.stdout.fnmatch_lines(
            [
                "*no answer during the degenerate-output check*exited with code 137*",
                "*no answer during the metrics check: connection refused*exited with code 137*",
            ]
        )
        assert "log " in result.stdout.str()
        assert "fake-server: pid" in result.stdout.str()

    def test_never_ready(self, pytester, tag):
        """A server never ready errors every check once, at the deadline, with its log; it is stopped."""
        result = launched(pytester, "never-ready", tag, ready_timeout_s=3.0)
        result.assert_outcomes(errors=E2E_TESTS)
        result.stdout.fnmatch_lines(
            [
                "*server not ready after 3 s (last: connection refused*",
                "*| fake-server: loading model weights...*",
                "*fix: raise [[]vllm[]] ready_timeout_s*",
            ]
        )
        assert result.duration < 30  # started once, not once per test
        # The readiness wait's status line: one line for the phase in a log (issue 10 #4).
        waits = [x for x in result.stdout.lines if x.startswith("rigcheck: vLLM start-up and readiness")]
        assert waits == ["rigcheck: vLLM start-up and readiness (GET /health), 0 s (deadline 3 s)"], waits

    def test_exit_at_start(self, pytester, tag):
        """A server that exits during start-up fails at once with the tail of its log."""
        result = launched(pytester, "exit-early", tag)
        result.assert_outcomes(errors=E2E_TESTS)
        result.stdout.fnmatch_lines(["*exited with code 1 before it was ready*", "*| *CUDA out of memory*"])

    def test_exit_at_start_reported_once(self, pytester, tag):
        """A failed start is reported once with its log; every other check says so in one line pointing
        to that report (issue 9 item 7), not the log tail sixteen times."""
        result = launched(pytester, "exit-early", tag)
        result.assert_outcomes(errors=E2E_TESTS)
        out = result.stdout.str()
        assert out.count("CUDA out of memory") == 1, out
        result.stdout.fnmatch_lines(
            ["*UNREADABLE: the vLLM server did not start; see *test_served_model*: *exited with code 1*"]
        )

    def test_hung_server(self, pytester, tag):
        """A server that takes generation requests and never answers is found at the per-request deadline
        ([vllm] request_timeout_s), said while waiting; the checks after it are unreadable at once, pointing
        to the first, instead of each waiting out its own deadline (it took 601 s to a first verdict)."""
        result = launched(pytester, "hang", tag, request_timeout_s=3.0)
        result.assert_outcomes(passed=3, failed=E2E_TESTS - 3)  # identity, version, health answer
        result.stdout.fnmatch_lines(
            [
                "rigcheck: vLLM: waiting for correctness request 1, * s (deadline 3 s)",
                "*no answer during correctness request 1: timed out* (3 s, [[]vllm[]] request_timeout_s*",
                "*UNREADABLE, not a pass: *not asked for *it gave no answer within the 3 s request deadline "
                "during correctness request 1*",
            ]
        )
        assert result.duration < 60

    def test_busy_server(self, pytester, tag):
        """A server whose /metrics shows other clients' requests running and waiting: time to first token
        and decode rate are unreadable, saying so, and nothing is blamed on clocks or PCIe."""
        result = launched(pytester, "busy", tag)
        result.assert_outcomes(passed=E2E_TESTS - 2, failed=2)
        result.stdout.fnmatch_lines(
            ["*UNREADABLE, not a pass: *busy with other clients (2 requests running, 2 waiting*"]
        )
        assert "clocks" not in result.stdout.str()

    def test_garbage(self, pytester, tag):
        """A server streaming '!!!!' at full speed fails correctness, the degenerate-output check and the
        tool round trip's answer, and nothing else."""
        result = launched(pytester, "garbage", tag)
        result.assert_outcomes(passed=E2E_TESTS - 3, failed=3)
        result.stdout.fnmatch_lines(
            [
                "*asked the capital of France at temperature 0, got '!!!!!!!!*",
                "*degenerate output (a run of *NaN logits)*",
                "*the answer after the tool's result is degenerate*",
            ]
        )

    def test_broken_stream(self, pytester, tag):
        """A server whose event stream is broken fails the streaming checks, naming the bad event."""
        result = launched(pytester, "bad-sse", tag, prefix_caching=False)
        result.assert_outcomes(passed=E2E_TESTS - 5, failed=4, skipped=1)
        result.stdout.fnmatch_lines(["*event stream is broken: event * is not JSON*"])

    def test_slow(self, pytester, tag):
        """A slow server fails time to first token, decode rate and aggregate rate against the profile."""
        result = launched(
            pytester,
            "good",
            tag,
            "--ttft-s",
            "0.5",
            "--token-s",
            "0.1",
            "--max-model-len",
            "512",
            max_ttft_s=0.25,
            min_decode_tokens_per_s=20.0,
            min_aggregate_tokens_per_s=50.0,
            prefix_caching=False,
            max_model_len=512,
        )
        result.assert_outcomes(passed=E2E_TESTS - 4, failed=3, skipped=1)
        result.stdout.fnmatch_lines(
            [
                "*time to first token 0.5* s > 0.25 s*",
                "*decode * tokens/s < 20 tokens/s*",
                "*aggregate * tokens/s over 2 parallel requests < 50*",
            ]
        )

    def test_api_key_never_printed(self, pytester, tag, monkeypatch):
        """The API key reaches a started server through its environment, never its argv or the output."""
        secret = "topsecret-4711"
        monkeypatch.setenv("MY_KEY", secret)
        result = launched(
            pytester, "good", tag, "--api-key-env", "VLLM_API_KEY", "-v", **{}
        )  # the fake reads VLLM_API_KEY, as vLLM does
        result.assert_outcomes(
            failed=E2E_TESTS - 3, passed=3
        )  # without the option: 401 on /v1 (not /health, /version, /metrics)
        result = run(
            pytester,
            "--rig-profile",
            str(pytester.path / "rig.toml"),
            str(E2E),
            API_KEY_ENV_OPTION,
            "MY_KEY",
            "--junitxml",
            str(pytester.path / "junit.xml"),
            "-v",
        )
        result.assert_outcomes(passed=E2E_TESTS)
        out = result.stdout.str() + result.stderr.str() + (pytester.path / "junit.xml").read_text()
        assert secret not in out


class TestModelFitSuite:
    SEED = {
        "model": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
        "gpu_memory_utilization": 0.9,
        "max_model_len": 16384,
    }

    def test_seed_case_on_snapshot(self, pytester, snapshots_dir):
        """The seed's RTX 3080 driving a display, replayed: the gate fails with the figures from NVML."""
        prof = write_profile(pytester.path / "rig.toml", self.SEED)
        result = run(
            pytester,
            "--rig-snapshot",
            str(snapshots_dir / "rtx3080-3070-3060-mixed"),
            "--rig-profile",
            str(prof),
            str(FIT),
        )
        result.assert_outcomes(passed=1, failed=1)
        result.stdout.fnmatch_lines(
            [
                "*deepseek-r1-distill-qwen-7b (7.62B params, bf16) at max_model_len 16384*does NOT fit*",
                "*problem: GPU0 (NVIDIA GeForce RTX 3080): free 8.67 GiB < gpu_memory_utilization 0.9 x "
                "total 10.00 GiB*",
                "*weights 14.19 GiB*",
                "*GPU memory from NVML (rtx3080-3070-3060-mixed)*",
            ]
        )

    def test_figures_for_part_of_the_group(self, pytester, snapshots_dir):
        """TP 2 on the 3-GPU snapshot with only GPU0 given: GPU1 is sized from NVML's figures (its 8 GiB
        RTX 3070), never GPU0's; without NVML the gate is UNREADABLE naming GPU1."""
        prof = write_profile(
            pytester.path / "rig.toml",
            {
                **self.SEED,
                "max_model_len": 8192,
                "tensor_parallel_size": 2,
                "gpus": {"0": {"name": "RTX 3080", "total_gib": 10, "used_gib": 0}},
            },
        )
        args = ("--rig-snapshot", str(snapshots_dir / "rtx3080-3070-3060-mixed"), "--rig-profile", str(prof))
        result = run(pytester, *args, str(FIT))
        result.assert_outcomes(passed=1, failed=1)
        result.stdout.fnmatch_lines(
            [
                "*GPU1 (NVIDIA GeForce RTX 3070): total 8.00 GiB*",
                "*GPU memory from [[]vllm.gpus[]] in profile *rig.toml for GPU0, NVML (rtx3080-3070-3060-mixed) "
                "for GPU1*",
            ]
        )
        result = run(pytester, *args, str(FIT), "-p", "no:rigcheck-gpu")
        result.assert_outcomes(passed=1, failed=1)
        result.stdout.fnmatch_lines(
            [
                "*UNREADABLE, not a pass: *no GPU memory figures for GPU1 of the group [[]0, 1[]]*(given: GPU0;*"
            ]
        )

    def test_option_gives_gpu_memory(self, pytester):
        """--rig-vllm-gpu-memory feeds the gate without NVML; a fitting model passes."""
        prof = write_profile(
            pytester.path / "rig.toml", {**self.SEED, "quantization": "awq", "max_model_len": 8192}
        )
        result = run(
            pytester, "--rig-profile", str(prof), str(FIT), GPU_MEMORY_OPTION, "0:RTX 3080:10GiB:0.3GiB"
        )
        result.assert_outcomes(passed=2)

    def test_tp_not_dividing_heads(self, pytester):
        """A tensor-parallel size that does not divide the heads fails, with the sizes that would."""
        prof = write_profile(
            pytester.path / "rig.toml",
            {
                "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
                "tensor_parallel_size": 2,
                "gpus": {"0": {"total_gib": 8, "used_gib": 0}, "1": {"total_gib": 8, "used_gib": 0}},
            },
        )
        result = run(pytester, "--rig-profile", str(prof), str(FIT))
        result.assert_outcomes(failed=2)
        result.stdout.fnmatch_lines(
            [
                "*tensor-parallel size 2 does not divide the 9 attention heads*",
                "*fix: use a tensor-parallel size from [[]1[]]*",
            ]
        )

    def test_no_gpu_figures_is_not_a_pass(self, pytester):
        """With a model but no GPU memory figures the gate fails as unreadable, saying where to get them."""
        prof = write_profile(pytester.path / "rig.toml", self.SEED)
        result = run(pytester, "--rig-profile", str(prof), str(FIT), "-p", "no:rigcheck-gpu")
        assert "passed=2" not in str(result.parseoutcomes())
        result.stdout.fnmatch_lines(
            [
                "*UNREADABLE, not a pass: *no GPU memory figures*",
                "*fix: give --rig-vllm-gpu-memory INDEX:NAME:TOTAL:USED*",
            ]
        )


def test_plugin_import_is_cheap():
    """Importing the plugin module pulls in no HTTP, launcher or heavy module."""
    import subprocess

    code = (
        "import sys; import pytest_rigcheck.vllm.plugin; "
        "bad = [m for m in ('http.client', 'torch', 'vllm', 'pytest_rigcheck.vllm.client', "
        "'pytest_rigcheck.vllm.launcher', 'pytest_rigcheck.vllm.fit') if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
