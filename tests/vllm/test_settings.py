"""The [vllm] table: validation errors name key, value and what is allowed; launch command rendering."""

from __future__ import annotations

import pytest

from pytest_rigcheck.errors import ProfileError
from pytest_rigcheck.vllm.settings import DEFAULT_LAUNCH, VllmSettings, parse_vllm_table


class TestParse:
    def test_full_table(self):
        """Every documented key is accepted and typed."""
        kw = parse_vllm_table(
            {
                "model": "m",
                "served_model_name": "s",
                "tensor_parallel_size": 2,
                "flags": ["--enable-prefix-caching"],
                "max_model_len": 4096,
                "gpu_memory_utilization": 0.9,
                "min_decode_tokens_per_s": 20,
                "max_ttft_s": 0.5,
                "concurrency": 8,
                "env": {"A": "1", "B": 2},
                "launch": "python -m x --port {port} {flags}",
                "gpus": {"0": {"name": "g", "total_gib": 10, "used_gib": 1}},
            },
            "rig.toml",
        )
        s = VllmSettings(**kw)
        assert s.flags == ("--enable-prefix-caching",)
        assert s.prefix_caching_enabled
        assert s.env == {"A": "1", "B": "2"}
        assert s.min_decode_tokens_per_s == 20.0
        assert s.gpus[0].total_bytes == 10 * 2**30

    @pytest.mark.parametrize(
        ("table", "key", "allowed"),
        [
            ({"modle": "x"}, "vllm.modle", "unknown key"),
            ({"tensor_parallel_size": 0}, "vllm.tensor_parallel_size", "whole number from 1"),
            ({"tensor_parallel_size": True}, "vllm.tensor_parallel_size", "whole number"),
            ({"gpu_memory_utilization": 1.5}, "vllm.gpu_memory_utilization", "from 0.05 to 1"),
            ({"max_ttft_s": "fast"}, "vllm.max_ttft_s", "a number"),
            ({"flags": [1]}, "vllm.flags", "list of strings"),
            ({"model": ""}, "vllm.model", "non-empty string"),
            ({"launch": "vllm serve {modle} --port {port}"}, "vllm.launch", "unknown placeholder {modle}"),
            ({"launch": "vllm serve {model}"}, "vllm.launch", "with {port}"),
            ({"launch": "vllm 'unclosed --port {port}"}, "vllm.launch", "command line"),
            ({"gpus": {"x": {"total_gib": 1, "used_gib": 0}}}, "vllm.gpus.x", "GPU index"),
            ({"gpus": {"0": {"total_gib": 1, "used_gib": 2}}}, "vllm.gpus.0", "used_gib <= total_gib"),
            ({"prefix_caching": "yes"}, "vllm.prefix_caching", "true or false"),
        ],
    )
    def test_rejects(self, table, key, allowed):
        """A bad value raises ProfileError naming the file, the key, the value and what is allowed."""
        with pytest.raises(ProfileError) as info:
            parse_vllm_table(table, "rig.toml")
        assert info.value.key == key
        assert allowed in str(info.value)
        assert "rig.toml" in str(info.value)

    def test_flags_as_string(self):
        """flags may be one string, split like a shell would."""
        assert parse_vllm_table({"flags": "--a 1 --b 'x y'"}, "p")["flags"] == ("--a", "1", "--b", "x y")


class TestLaunch:
    def test_default_template(self):
        """The default is vllm serve MODEL --tensor-parallel-size N, rigcheck's host and port and flags."""
        s = VllmSettings(
            launch=DEFAULT_LAUNCH,
            model="org/m",
            tensor_parallel_size=2,
            flags=("--enable-prefix-caching",),
            gpu_memory_utilization=0.9,
            max_model_len=8192,
        )
        assert s.launch_argv("127.0.0.1", 8123) == [
            "vllm",
            "serve",
            "org/m",
            "--tensor-parallel-size",
            "2",
            "--host",
            "127.0.0.1",
            "--port",
            "8123",
            "--enable-prefix-caching",
            "--max-model-len",
            "8192",
            "--gpu-memory-utilization",
            "0.9",
        ]

    def test_flags_win_over_keys(self):
        """A flag the profile's flags already set is not added again from its key."""
        s = VllmSettings(
            launch="x --port {port} {flags}", max_model_len=4096, flags=("--max-model-len=2048",)
        )
        assert s.launch_argv("h", 1) == ["x", "--port", "1", "--max-model-len=2048"]

    def test_values_with_spaces_stay_one_word(self):
        """Filled values are never split again (no shell)."""
        s = VllmSettings(launch="run --model {model} --port {port}", model="/models/my model")
        assert s.launch_argv("h", 2) == ["run", "--model", "/models/my model", "--port", "2"]

    def test_expected_model_id(self):
        """The id /v1/models should list is the served name, else the model."""
        assert VllmSettings(model="a", served_model_name="b").expected_model_id == "b"
        assert VllmSettings(model="a").expected_model_id == "a"
