"""The model-fit gate: parameter counts, KV cache size, the TP head rule, and the seed's failing case."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from pytest_rigcheck.vllm.fit import (
    GIB,
    PRESETS,
    check_model_fit,
    estimate_overhead,
    find_preset,
    load_spec,
    spec_from_config,
)
from pytest_rigcheck.vllm.fitcheck import flag_value

R1_7B = PRESETS["deepseek-r1-distill-qwen-7b"]
RTX3080_DESKTOP = (0, "NVIDIA GeForce RTX 3080", 10 * GIB, int(1.1 * GIB))  # Xorg + gnome-shell hold ~1 GB


class TestSpec:
    @pytest.mark.parametrize(
        ("name", "billions"),
        [
            ("deepseek-r1-distill-qwen-7b", 7.62),
            ("llama-3.1-8b-instruct", 8.03),
            ("llama-3.3-70b-instruct", 70.55),
            ("qwen2.5-32b-instruct", 32.76),
            ("smollm2-135m-instruct", 0.13),
        ],
    )
    def test_preset_params(self, name, billions):
        """Presets' parameter counts match the published model sizes."""
        assert round(PRESETS[name].params / 1e9, 2) == billions

    def test_find_preset_by_hf_id(self):
        """A Hugging Face id finds its preset, case-insensitively."""
        assert find_preset("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B") is R1_7B
        assert find_preset("nobody/nothing") is None

    def test_from_config_json(self, tmp_path):
        """A config.json gives the same shape as the preset; quantization_config sets the weight dtype."""
        cfg = {
            "model_type": "qwen2",
            "hidden_size": 3584,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
            "intermediate_size": 18944,
            "vocab_size": 152064,
            "tie_word_embeddings": False,
            "torch_dtype": "bfloat16",
            "max_position_embeddings": 131072,
        }
        (tmp_path / "config.json").write_text(json.dumps(cfg))
        spec = load_spec(str(tmp_path))
        assert (spec.params, spec.kv_heads, spec.head_dim, spec.dtype) == (R1_7B.params, 4, 128, "bfloat16")
        awq = spec_from_config({**cfg, "quantization_config": {"quant_method": "awq", "bits": 4}}, "x")
        assert awq.dtype == "int4"

    def test_config_missing_key(self):
        """A config without the shape keys is refused naming the key."""
        with pytest.raises(ValueError, match="hidden_size"):
            spec_from_config({"vocab_size": 1}, "x")

    def test_unknown_model(self):
        """A model that is neither a folder nor a preset says what to set."""
        with pytest.raises(LookupError, match="model_config"):
            load_spec("someone/unknown-13b")


class TestGate:
    def test_seed_case_fails_with_numbers(self):
        """The seed's model on a 10 GB RTX 3080 driving a display does not fit; it says why in GiB."""
        r = check_model_fit(R1_7B, [RTX3080_DESKTOP], context=16384, gpu_memory_utilization=0.9)
        assert not r.ok
        text = str(r)
        assert "free 8.90 GiB < gpu_memory_utilization 0.9 x total 10.00 GiB = 9.00 GiB" in text
        assert "weights 14.19 GiB" in text
        assert "KV cache 0.88 GiB" in text
        assert "56.0 KiB/token" in text
        assert "lower --gpu-memory-utilization to 0.89" in text

    def test_seed_case_quantized_weights_fit_kv_does_not(self):
        """With 8-bit weights the weights fit, and the KV cache at the model's full context does not."""
        r = check_model_fit(R1_7B, [(0, "RTX 3080", 10 * GIB, int(0.9 * GIB))], quantization="fp8")
        assert not r.ok
        assert r.context == 131072
        assert any("KV cache for 131072 tokens" in p for p in r.problems)
        assert r.max_context_fit is not None
        assert 13000 < r.max_context_fit < 14000  # 1.18 GiB of runtime overhead leave 0.73 GiB for KV
        assert any("--max-model-len to 13312" in f for f in r.fixes)

    def test_fits_on_a_big_gpu(self):
        """The same model fits an idle 80 GB GPU."""
        r = check_model_fit(R1_7B, [(0, "H100", 80 * GIB, 0)], context=32768, concurrency=4)
        assert r.ok, str(r)

    def test_tensor_parallel_shards(self):
        """TP 2 halves weights and KV cache per GPU, and checks every GPU of the group."""
        one = check_model_fit(R1_7B, [(0, "a", 24 * GIB, 0)], context=8192)
        two = check_model_fit(R1_7B, [(0, "a", 24 * GIB, 0), (1, "b", 12 * GIB, 0)], context=8192, tp=2)
        assert two.gpus[0].weights == one.gpus[0].weights // 2
        assert two.kv_bytes_per_token == one.kv_bytes_per_token // 2
        assert len(two.gpus) == 2

    @pytest.mark.parametrize(("tp", "ok"), [(1, True), (2, True), (4, True), (3, False), (8, False)])
    def test_tp_head_rule(self, tp, ok):
        """TP must divide the 28 attention heads and the 4 KV heads (or be a multiple of them)."""
        gpus = [(i, "H100", 80 * GIB, 0) for i in range(tp)]
        r = check_model_fit(R1_7B, gpus, context=4096, tp=tp)
        assert r.ok is ok, str(r)

    def test_smollm2_tp2_refused(self):
        """SmolLM2-135M's 9 heads cannot be split over 2 GPUs (why the CPU tests pad its heads)."""
        r = check_model_fit(PRESETS["smollm2-135m-instruct"], [(0, "a", GIB, 0), (1, "b", GIB, 0)], tp=2)
        assert any("9 attention heads" in p for p in r.problems)

    def test_too_few_gpus(self):
        """A group smaller than the TP size is a problem."""
        r = check_model_fit(R1_7B, [(0, "a", 80 * GIB, 0)], tp=2, context=4096)
        assert any("needs 2 GPUs; 1 given" in p for p in r.problems)

    def test_unknown_dtype(self):
        """An unknown quantization is refused with the known ones."""
        with pytest.raises(ValueError, match="awq"):
            check_model_fit(R1_7B, [RTX3080_DESKTOP], quantization="q3_k_s")


class TestOverhead:
    def test_breakdown_from_the_model_shape(self):
        """On a 10 GiB card: 0.5 GiB context + 2048 tokens of activations + 256 sequences of fp32 logits + graphs."""
        o = estimate_overhead(R1_7B, 1, 10 * GIB)
        parts = dict(o.parts)
        assert parts["CUDA context"] == GIB // 2
        assert parts["activations for 2048 tokens"] == 2048 * (3 * 18944 + 36 * 128 + 4 * 3584) * 2
        assert parts["logits for 256 sequences"] == 256 * 152064 * 4
        assert parts["CUDA graphs"] == GIB // 4
        assert "CUDA context 0.50 + activations for 2048 tokens 0.29" in o.text()

    def test_big_gpu_tp_and_eager(self):
        """80 GiB cards get vLLM's larger defaults; TP adds NCCL buffers and splits activations; eager has no graphs."""
        o = dict(estimate_overhead(R1_7B, 2, 80 * GIB, enforce_eager=True).parts)
        assert "activations for 8192 tokens" in o and "logits for 1024 sequences" in o
        assert o["CUDA context"] == int(0.75 * GIB) and o["CUDA graphs"] == 0

    def test_unknown_shape_is_flat(self):
        spec = replace(R1_7B, hidden=0)
        o = estimate_overhead(spec, 1, 10 * GIB)
        assert o.total == GIB and "flat" in o.text()

    def test_profile_figure_wins(self):
        """[vllm] runtime_overhead_gib replaces the estimate, and the report says where it came from."""
        r = check_model_fit(R1_7B, [(0, "H100", 80 * GIB, 0)], context=4096, overhead_bytes=3 * GIB)
        assert r.gpus[0].overhead == 3 * GIB and "runtime_overhead_gib" in str(r)

    @pytest.mark.parametrize(
        ("flags", "want"),
        [
            (["--max-num-seqs", "64"], "64"),
            (["--max-num-seqs=32"], "32"),
            (["--max-num-seqs", "8", "--max-num-seqs=16"], "16"),
            (["--max-num-seqs"], None),
            ([], None),
        ],
    )
    def test_flag_value(self, flags, want):
        assert flag_value(flags, "--max-num-seqs") == want
