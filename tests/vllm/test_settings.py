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
            ({"gpus": {" ": {"total_gib": 1, "used_gib": 0}}}, 'vllm.gpus." "', "GPU index"),
            ({"gpus": {"0": {"total_gib": 1, "used_gib": 2}}}, 'vllm.gpus."0"', "used_gib <= total_gib"),
            (
                {"gpus": {"0": {"nmae": "RTX 3090", "total_gib": 23.58, "used_gib": 0}}},
                'vllm.gpus."0".nmae',
                'unknown key (did you mean name?); keys of [vllm.gpus."0"] are name, total_gib, used_gib',
            ),
            ({"gpus": {"0": {"total_gib": 8}}}, 'vllm.gpus."0"', "total_gib and used_gib"),
            (
                {"gpus": {"0": {"name": 3090, "total_gib": 8, "used_gib": 0}}},
                'vllm.gpus."0".name',
                "a string",
            ),
            (
                {"gpus": {"0": {"total_gib": 8, "used_gib": 0}, "00": {"total_gib": 8, "used_gib": 0}}},
                'vllm.gpus."00"',
                'same GPU as "0"',
            ),
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

    def test_flags_in_vllm_spellings_win_over_keys(self):
        """--max_model_len is vLLM's --max-model-len: the key is not added a second time."""
        s = VllmSettings(
            launch="x --port {port} {flags}", max_model_len=4096, flags=("--max_model_len", "4096")
        )
        assert s.launch_argv("h", 1) == ["x", "--port", "1", "--max_model_len", "4096"]

    def test_values_with_spaces_stay_one_word(self):
        """Filled values are never split again (no shell)."""
        s = VllmSettings(launch="run --model {model} --port {port}", model="/models/my model")
        assert s.launch_argv("h", 2) == ["run", "--model", "/models/my model", "--port", "2"]

    def test_expected_model_id(self):
        """The id /v1/models should list is the served name, else the model."""
        assert VllmSettings(model="a", served_model_name="b").expected_model_id == "b"
        assert VllmSettings(model="a").expected_model_id == "a"


class TestPlaceGpus:
    """[vllm.gpus] / --rig-vllm-gpu-memory figures matched to the rig's GPUs (``place_gpus``): a key the rig
    does not have is refused, listing its GPUs; never one GPU's figures for another."""

    RIG = [("0000:21:00.0", None), ("0000:4b:00.0", "PCIE3")]

    @staticmethod
    def table(**entries: float) -> tuple:
        from pytest_rigcheck.vllm.settings import gpu_tables

        return gpu_tables({k: {"total_gib": v, "used_gib": 0} for k, v in entries.items()}, "rig.toml")

    def test_index_address_and_slot_name_gpus_of_the_rig(self):
        """An index keeps its GPU; a PCI address or slot name gets the index of the GPU it names."""
        from pytest_rigcheck.vllm.settings import place_gpus

        given = self.table(**{"4b:00.0": 8, "0": 10})
        placed = place_gpus(given, self.RIG, "rig.toml", "vllm.gpus", "r")
        assert [(g.index, g.total_bytes) for g in placed] == [(0, 10 * 2**30), (1, 8 * 2**30)]
        placed = place_gpus(self.table(pcie3=8), self.RIG, "rig.toml", "vllm.gpus", "r")
        assert [g.index for g in placed] == [1]

    @pytest.mark.parametrize(
        ("key", "said"),
        [
            ("9", "GPU9 does not exist on r"),
            ("0000:99:00.0", "no GPU has this PCI address on r"),
            ("PCIE7", "no GPU is in this slot on r"),
        ],
    )
    def test_a_gpu_the_rig_does_not_have(self, key, said):
        """The error names the key and lists the rig's GPUs, with index and slot."""
        from pytest_rigcheck.vllm.settings import place_gpus

        with pytest.raises(ProfileError) as info:
            place_gpus(self.table(**{key: 8}), self.RIG, "rig.toml", "vllm.gpus", "r")
        assert info.value.value == key and said in str(info.value)
        assert "its GPUs are 0000:21:00.0 (GPU0), 0000:4b:00.0 (GPU1, slot PCIE3)" in str(info.value)

    def test_two_keys_for_one_gpu(self):
        """An index and the address of the same GPU: keep one."""
        from pytest_rigcheck.vllm.settings import place_gpus

        with pytest.raises(ProfileError, match='names GPU1, as "1" does: keep one'):
            place_gpus(self.table(**{"1": 8, "0000:4b:00.0": 8}), self.RIG, "rig.toml", "vllm.gpus", "r")

    def test_no_gpu_on_the_rig_takes_indices_as_given(self):
        """Planning a fit on a machine without GPUs: index keys are taken as given; an address or slot
        names nothing there and is refused, saying to key by index."""
        from pytest_rigcheck.vllm.settings import place_gpus

        assert [g.index for g in place_gpus(self.table(**{"3": 8}), [], "rig.toml", "vllm.gpus", "r")] == [3]
        with pytest.raises(ProfileError, match="key the figures by GPU index"):
            place_gpus(self.table(**{"0000:21:00.0": 8}), [], "rig.toml", "vllm.gpus", "r")

    def test_option_keys_are_the_specs_as_written(self):
        """--rig-vllm-gpu-memory's figures carry the spec, so its error names the value given."""
        from pytest_rigcheck.vllm.settings import parse_gpu_options, place_gpus

        given = parse_gpu_options(["9:RTX 3090:24GiB:0GiB"])
        with pytest.raises(ProfileError) as info:
            place_gpus(given, self.RIG, "--rig-vllm-gpu-memory", "--rig-vllm-gpu-memory", "r")
        assert info.value.value == "9:RTX 3090:24GiB:0GiB" and "GPU9 does not exist" in info.value.allowed


class TestPresetAndFlags:
    """[vllm] model_preset and the flags the model-fit gate reads are checked when the profile loads: a
    wrong one is one ProfileError naming vllm.<key>, the value and what vLLM (or rigcheck) accepts, not an
    UNREADABLE gate or a flag silently ignored (a fresh user's report: model_preset = "nope", flags =
    "--max-num-seqs abc")."""

    @pytest.mark.parametrize(
        ("table", "key", "value", "allowed"),
        [
            ({"model_preset": "nope"}, "vllm.model_preset", "nope", "no such preset; presets: deepseek-r1"),
            (
                {"model_preset": "llama-3.1-8b"},
                "vllm.model_preset",
                "llama-3.1-8b",
                "did you mean llama-3.1-8b-instruct?",
            ),
            (
                {"model_config": "m/config.json", "model_preset": "qwen2.5-7b-instruct"},
                "vllm.model_preset",
                "qwen2.5-7b-instruct",
                "model_config ('m/config.json') is set too",
            ),
            ({"kv_cache_dtype": "fp16"}, "vllm.kv_cache_dtype", "fp16", "one of auto, bfloat16, fp8"),
            (
                {"flags": "--max-num-seqs abc"},
                "vllm.flags",
                "--max-num-seqs abc",
                "a whole number of sequences",
            ),
            ({"flags": "--max-num-seqs 0"}, "vllm.flags", "--max-num-seqs 0", "1 or more"),
            ({"flags": ["--max-num-seqs"]}, "vllm.flags", "--max-num-seqs", "--max-num-seqs needs a value"),
            (
                {"flags": "--max-num-seqs --enforce-eager"},
                "vllm.flags",
                "--max-num-seqs",
                "needs a value",
            ),
            (
                {"flags": "--gpu-memory-utilization 1.2"},
                "vllm.flags",
                "--gpu-memory-utilization 1.2",
                "above 0 and at most 1",
            ),
            ({"flags": "--gpu-memory-utilization=0"}, "vllm.flags", "--gpu-memory-utilization=0", "above 0"),
            ({"flags": "-tp two"}, "vllm.flags", "-tp two", "--tensor-parallel-size takes a whole number"),
            ({"flags": "--max-model-len 1.5K"}, "vllm.flags", "--max-model-len 1.5K", "32K = 32768"),
            ({"flags": "--max-num-batched-tokens x"}, "vllm.flags", "--max-num-batched-tokens x", "tokens"),
            ({"flags": "--kv-cache-dtype fp16"}, "vllm.flags", "--kv-cache-dtype fp16", "one of auto"),
            ({"flags": "--enforce-eager=maybe"}, "vllm.flags", "--enforce-eager=maybe", "no value"),
            (
                {"flags": "--max-num-seq 64"},
                "vllm.flags",
                "--max-num-seq",
                "(did you mean --max-num-seqs?)",
            ),
            (
                {"flags": "--gpu_memory_utilisation 0.8"},
                "vllm.flags",
                "--gpu_memory_utilisation",
                "did you mean",
            ),
            (
                {"flags": "--max-num-seqs 8 --max_num_seqs=16"},
                "vllm.flags",
                "--max_num_seqs=16",
                "contradicts '--max-num-seqs 8' given before it",
            ),
            (
                {"flags": "--enable-chunked-prefill --no-enable-chunked-prefill"},
                "vllm.flags",
                "--no-enable-chunked-prefill",
                "contradicts '--enable-chunked-prefill'",
            ),
            (
                {"flags": "--max-model-len 4096", "max_model_len": 8192},
                "vllm.flags",
                "--max-model-len 4096",
                "contradicts vllm.max_model_len = 8192",
            ),
            (
                {"flags": "-tp 2", "tensor_parallel_size": 4},
                "vllm.flags",
                "--tensor-parallel-size 2",
                "contradicts vllm.tensor_parallel_size = 4",
            ),
            (
                {"flags": "--no-enable-prefix-caching", "prefix_caching": True},
                "vllm.flags",
                "--no-enable-prefix-caching",
                "contradicts vllm.prefix_caching = True",
            ),
            (
                {"flags": "--kv-cache-dtype fp8", "kv_cache_dtype": "auto"},
                "vllm.flags",
                "--kv-cache-dtype fp8",
                "contradicts vllm.kv_cache_dtype = 'auto'",
            ),
            (
                {"flags": "--max-num-seqs 64 --max-num-batched-tokens 32"},
                "vllm.flags",
                "--max-num-batched-tokens 32",
                "at least --max-num-seqs (64)",
            ),
            (
                {"flags": "--no-enable-chunked-prefill --max-num-batched-tokens 2048", "max_model_len": 4096},
                "vllm.flags",
                "--max-num-batched-tokens 2048",
                "at least max_model_len (4096) without chunked prefill",
            ),
            ({"flags": "--port 8000"}, "vllm.flags", "--port 8000", "already passes --port {port}"),
            (
                {"decode_tokens": 64, "max_model_len": 64},
                "vllm.decode_tokens",
                64,
                "fewer than max_model_len",
            ),
            (
                {"concurrency": 16, "flags": "--max-num-seqs 8"},
                "vllm.concurrency",
                16,
                "at most --max-num-seqs (8) in flags",
            ),
            (
                {"launch": "serve --port {port}", "flags": "--enforce-eager"},
                "vllm.flags",
                "--enforce-eager",
                "vllm.launch has none",
            ),
            ({"expect_version": "latest"}, "vllm.expect_version", "latest", "e.g. 0.6.4.post1"),
            ({"expect_version": "v0.6.4"}, "vllm.expect_version", "v0.6.4", "as GET /version answers it"),
            ({"env": {"VLLM_USE_V1": True}}, "vllm.env", {"VLLM_USE_V1": True}, "strings or numbers"),
        ],
    )
    def test_rejects(self, table, key, value, allowed):
        with pytest.raises(ProfileError) as info:
            parse_vllm_table(table, "rig.toml")
        assert (info.value.key, info.value.value) == (key, value)
        assert allowed in str(info.value) and "rig.toml" in str(info.value)

    @pytest.mark.parametrize(
        "preset", ["smollm2-135m-instruct", "Qwen2.5-7B-Instruct", "meta-llama/Llama-3.1-8B-Instruct"]
    )
    def test_presets_by_name_or_id(self, preset):
        assert parse_vllm_table({"model_preset": preset}, "p")["model_preset"] == preset

    def test_flags_vllm_accepts(self):
        """vLLM's spellings read as vLLM reads them; flags rigcheck does not read pass through, values
        that start with a dash included; a flag repeated with the same value is fine."""
        kw = parse_vllm_table(
            {
                "flags": "--max_num_seqs=8 --max-num-seqs 8 -tp 2 --max-model-len 32k -q awq "
                "--enable-chunked-prefill=false --gpu-memory-utilization 1 --seed -1 --data-parallel-size 2 "
                "--ports x --enable-prefix-caching"
            },
            "p",
        )
        s = VllmSettings(**kw)
        assert (s.flag("--max-num-seqs"), s.flag("--enable-chunked-prefill"), s.flag("--seed")) == (
            8,
            False,
            None,
        )
        assert s.prefix_caching_enabled is True
        # the keys the flags say, so the gate sizes what vLLM is started with
        assert (s.tensor_parallel_size, s.max_model_len, s.gpu_memory_utilization, s.quantization) == (
            2,
            32000,
            1.0,
            "awq",
        )

    @pytest.mark.parametrize("version", ["0.6.4.post1", "0.11.0rc1", "0.10.1+cu128", "0.32.0"])
    def test_versions(self, version):
        assert parse_vllm_table({"expect_version": version}, "p")["expect_version"] == version

    def test_human_readable_lengths(self):
        """vLLM's human_readable_int: lower-case suffixes are powers of 1000, upper-case of 1024."""
        for text, n in (("25.6k", 25600), ("32K", 32768), ("1m", 1_000_000), ("4096", 4096)):
            assert parse_vllm_table({"flags": ["--max-model-len", text]}, "p")["max_model_len"] == n

    def test_port_flag_with_a_fixed_port_template(self):
        """--port in flags is fine when the launch template does not pass {port}."""
        kw = parse_vllm_table(
            {"launch": "serve --port 9000 {flags}", "port": 9000, "flags": "--port 9000"}, "p"
        )
        assert kw["flags"] == ("--port", "9000")


def test_flags_with_an_unbalanced_quote_are_a_profile_error() -> None:
    """Fresh-user finding: `flags = "--max-model-len '4096"` ended in 52 INTERNALERROR lines
    (shlex's "No closing quotation"); it is one profile error naming vllm.flags."""
    from pytest_rigcheck.errors import ProfileError
    from pytest_rigcheck.vllm.settings import parse_vllm_table

    with pytest.raises(ProfileError, match="flags.*No closing quotation"):
        parse_vllm_table(
            {"model": "meta-llama/Llama-3.1-8B-Instruct", "flags": "--max-model-len '4096"}, "q.toml"
        )
