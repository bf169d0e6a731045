"""The model-fit gate: parameter counts, KV cache size by attention variant, real weight sizes from
safetensors headers, vLLM's one-sequence start rule and its profiling batch, the log comparison, the seed's
failing case and public case 04."""

from __future__ import annotations

import json
import struct
from dataclasses import replace
from pathlib import Path

import pytest

from pytest_rigcheck.verdict import Status
from pytest_rigcheck.vllm import fitcheck
from pytest_rigcheck.vllm.fit import (
    GIB,
    PRESETS,
    check_model_fit,
    estimate_overhead,
    find_preset,
    load_spec,
    profile_batch,
    spec_from_config,
)
from pytest_rigcheck.vllm.fitcheck import compare_with_log, parse_kv_log
from pytest_rigcheck.vllm.modeldir import find_model_dir, model_weights, read_header
from pytest_rigcheck.vllm.settings import GpuMemory, VllmSettings, parse_vllm

from .conftest import FIT

R1_7B = PRESETS["deepseek-r1-distill-qwen-7b"]
RTX3080_DESKTOP = (0, "NVIDIA GeForce RTX 3080", 10 * GIB, int(1.1 * GIB))  # Xorg + gnome-shell hold ~1 GB
LLAMA_8B = PRESETS["llama-3.1-8b-instruct"]
RTX3090 = (0, "RTX 3090", int(23.58 * GIB), 0)  # vllm-project/vllm#10517: total_gpu_memory=23.58GiB
CASE04 = Path(__file__).parents[1] / "data" / "case04-kv-fit-one-sequence"


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]], nbytes: dict[str, int]) -> int:
    """A real .safetensors file: 8-byte little-endian header length, JSON header, zeroed data. Returns
    the data bytes. ``nbytes`` gives each dtype's element size."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        n = nbytes[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)
    return offset


SIZES = {"BF16": 2, "F16": 2, "F32": 4, "I32": 4, "F8_E4M3": 1}
LLAMA_CFG = {
    "model_type": "llama",
    "hidden_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "intermediate_size": 512,
    "vocab_size": 1000,
    "torch_dtype": "bfloat16",
    "max_position_embeddings": 4096,
}


def model_dir(folder: Path, cfg: dict[str, object], shards: list[dict[str, tuple[str, list[int]]]]) -> int:
    """A model folder: config.json, shards model-0000N-of-M.safetensors and their index. Returns bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg))
    total, weight_map = 0, {}
    for i, tensors in enumerate(shards, 1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        total += write_safetensors(folder / name, tensors, SIZES)
        weight_map.update(dict.fromkeys(tensors, name))
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return total


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
        assert "weights 14.19 GiB" in text and "before any KV cache" in text
        assert "56.0 KiB/token" in text
        assert "lower --gpu-memory-utilization to 0.86" in text  # 8.90 GiB free less 0.25 GiB of CUDA graphs

    def test_seed_case_quantized_weights_fit_kv_does_not(self):
        """With 8-bit weights the weights fit, and one sequence at the model's full context does not."""
        r = check_model_fit(
            R1_7B, [(0, "RTX 3080", 10 * GIB, int(0.9 * GIB))], quantization="fp8", version=(0, 11)
        )
        assert not r.ok
        assert r.context == 131072
        assert any("one sequence of max_model_len 131072 tokens" in p for p in r.problems)
        assert r.max_context_fit is not None and 18000 < r.max_context_fit < 19500  # 1.01 GiB of KV cache
        assert any(f"--max-model-len to {r.max_context_fit // 256 * 256}" in f for f in r.fixes)

    def test_unknown_version_sizes_for_the_larger_batch(self):
        """Without [vllm] expect_version the gate takes vLLM 0.6's unchunked profiling of max_model_len
        tokens where that is larger than V1's 2048: fewer tokens of context fit."""
        gpu = [(0, "RTX 3080", 10 * GIB, int(0.9 * GIB))]
        unknown = check_model_fit(R1_7B, gpu, quantization="fp8")
        v1 = check_model_fit(R1_7B, gpu, quantization="fp8", version=(0, 11))
        assert unknown.max_context_fit is not None and v1.max_context_fit is not None
        assert unknown.max_context_fit < v1.max_context_fit
        assert "expect_version not set" in str(unknown)

    def test_fits_on_a_big_gpu(self):
        """The same model fits an idle 80 GB GPU, 4 sequences of 32k as well."""
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


class TestStartRule:
    """vLLM starts when one sequence of max_model_len fits the KV cache left after its profiling pass
    (vllm/v1/core/kv_cache_utils.py check_enough_kv_cache_memory); ``concurrency`` is stricter, on request."""

    def test_case04_one_sequence_fits(self):
        """Public case 04 (vllm-project/vllm#10517): Llama-3.1-8B on a 3090 at 20 000 tokens started with
        room for 1.56 sequences; the gate says it fits with about as many."""
        r = check_model_fit(LLAMA_8B, [RTX3090], context=20000)
        assert r.ok, str(r)
        assert r.concurrency == 1
        assert r.max_concurrency is not None and 1.45 < r.max_concurrency < 1.65
        assert "maximum concurrency for 20,000 tokens per request 1.53x" in r.summary()
        assert r.properties()["kv_cache_tokens"] == r.kv_tokens

    def test_concurrency_is_a_stricter_requirement(self):
        """[vllm] concurrency = 4 asks for 4 full-length sequences: the same rig then does not fit."""
        r = check_model_fit(LLAMA_8B, [RTX3090], context=20000, concurrency=4)
        assert not r.ok
        assert any(
            "4 sequences of 20000 tokens ([vllm] concurrency)" in p and "1.53x" in p for p in r.problems
        )
        assert check_model_fit(LLAMA_8B, [RTX3090], context=20000, concurrency=1).ok

    def test_no_room_after_the_profiling_peak(self):
        """vLLM 0.6 without chunked prefill profiles max_model_len tokens at once: at 32 768 tokens the
        activation peak (3.1 GiB) leaves 2.5 GiB, less than one sequence's 4 GiB: it must not fit. V1
        profiles 2048 tokens and fits; so does 0.6 with chunked prefill."""
        v0 = check_model_fit(LLAMA_8B, [RTX3090], context=32768, version=(0, 6))
        assert not v0.ok and any("vLLM refuses to start" in p for p in v0.problems)
        assert "activations for 32768 tokens" in str(v0)
        assert check_model_fit(LLAMA_8B, [RTX3090], context=32768, version=(0, 11)).ok
        chunked = check_model_fit(LLAMA_8B, [RTX3090], context=32768, version=(0, 6), chunked_prefill=True)
        assert chunked.ok and chunked.batch is not None and chunked.batch.tokens == 512

    def test_batched_tokens_below_context_without_chunking(self):
        """--max-num-batched-tokens below max_model_len without chunked prefill: vLLM refuses."""
        r = check_model_fit(LLAMA_8B, [RTX3090], context=20000, version=(0, 6), max_num_batched_tokens=8192)
        assert any("smaller than max_model_len 20000" in p for p in r.problems)


class TestProfileBatch:
    @pytest.mark.parametrize(
        ("kw", "tokens", "seqs", "chunked"),
        [
            ({"version": (0, 6)}, 20000, 256, False),  # V0: max(max_model_len, 2048)
            ({"version": (0, 6), "context": 65536}, 512, 256, True),  # V0 long context: chunked, 512
            ({"version": (0, 11)}, 2048, 256, True),  # V1 under 70 GiB
            ({"version": (0, 11), "gpu": 80}, 8192, 1024, True),  # H100
            ({"version": (0, 11), "gpu": 80, "name": "NVIDIA A100-SXM4-80GB"}, 2048, 256, True),
            ({"version": (0, 32), "gpu": 141}, 8192, 1024, True),  # H200
            ({"version": (0, 32), "gpu": 180}, 16384, 1024, True),  # B200
            ({"version": (0, 11), "chunked": False}, 20000, 256, False),
            ({"version": (0, 11), "tokens": 4096, "seqs": 64}, 4096, 64, True),
            ({}, 20000, 256, False),  # unknown version: the larger
        ],
    )
    def test_defaults_and_flags(self, kw, tokens, seqs, chunked):
        """vLLM's profiling batch by version and flags (vllm/engine/arg_utils.py get_batch_defaults)."""
        b = profile_batch(
            kw.get("context", 20000),
            kw.get("gpu", 24) * GIB,
            kw.get("name", ""),
            version=kw.get("version"),
            tokens=kw.get("tokens"),
            seqs=kw.get("seqs"),
            chunked=kw.get("chunked"),
        )
        assert (b.tokens, b.seqs, b.chunked) == (tokens, seqs, chunked)

    @pytest.mark.parametrize(
        ("flags", "want"),
        [
            (["--enable-chunked-prefill"], True),
            (["--no-enable-chunked-prefill"], False),
            (["--enable-chunked-prefill=false"], False),
            ([], None),
        ],
    )
    def test_chunked_prefill_flag(self, flags, want):
        assert VllmSettings(flags=tuple(flags)).flag("--enable-chunked-prefill") is want

    def test_settings_flags_reach_the_gate(self):
        """expect_version, --max-num-batched-tokens and --enforce-eager from the profile size the batch."""
        s = parse_vllm(
            {
                "model": "meta-llama/Llama-3.1-8B-Instruct",
                "max_model_len": 20000,
                "expect_version": "0.6.4.post1",
                "flags": ["--enable-chunked-prefill", "--max-num-batched-tokens", "1024", "--enforce-eager"],
            },
            "rig.toml",
        )
        r = fitcheck.fit_report(s, LLAMA_8B, [GpuMemory(0, "RTX 3090", int(23.58 * GIB), 0)])
        assert r.batch is not None and (r.batch.tokens, r.batch.chunked) == (1024, True)
        assert "vLLM 0.6" in r.batch.basis and not any("CUDA graphs" in n for n in r.notes)


MISTRAL_7B = {
    "model_type": "mistral",
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "intermediate_size": 14336,
    "vocab_size": 32000,
    "sliding_window": 4096,
    "max_position_embeddings": 32768,
}
DEEPSEEK_V2_LITE = {  # deepseek-ai/DeepSeek-V2-Lite config.json
    "model_type": "deepseek_v2",
    "hidden_size": 2048,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
    "num_key_value_heads": 16,
    "intermediate_size": 10944,
    "moe_intermediate_size": 1408,
    "n_routed_experts": 64,
    "n_shared_experts": 2,
    "num_experts_per_tok": 6,
    "first_k_dense_replace": 1,
    "kv_lora_rank": 512,
    "q_lora_rank": None,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "v_head_dim": 128,
    "vocab_size": 102400,
    "max_position_embeddings": 163840,
    "torch_dtype": "bfloat16",
}


class TestAttention:
    def test_grouped_query(self):
        """8 KV heads for 32 query heads: a quarter of multi-head attention's KV cache."""
        gqa = check_model_fit(LLAMA_8B, [RTX3090], context=4096)
        mha = check_model_fit(replace(LLAMA_8B, kv_heads=32), [RTX3090], context=4096)
        assert gqa.kv_bytes_per_token == 32 * 2 * 8 * 128 * 2 == mha.kv_bytes_per_token // 4
        assert "grouped-query" in gqa.kv_line()

    def test_mla_one_latent_per_token(self):
        """DeepSeek MLA caches kv_lora_rank + qk_rope_head_dim values per token and layer, the same on
        every GPU of a tensor-parallel group."""
        spec = spec_from_config(DEEPSEEK_V2_LITE, "deepseek-v2-lite")
        assert (spec.kv_lora_rank, spec.qk_rope_head_dim, spec.kv_heads) == (512, 64, 1)
        assert 15.0e9 < spec.params < 16.5e9  # published: 15.7B
        assert spec.kv_per_sequence(1, 1, 2) == 27 * 576 * 2 == spec.kv_per_sequence(1, 2, 2)
        r = check_model_fit(spec, [(0, "H100", 80 * GIB, 0), (1, "H100", 80 * GIB, 0)], context=32768, tp=2)
        assert r.ok, str(r)
        assert "MLA" in r.kv_line() and r.kv_bytes_per_token == 27 * 576 * 2

    def test_sliding_window_caps_the_cache(self):
        """Mistral-style: every layer keeps only the window, so 32k costs the same KV as 4k."""
        spec = spec_from_config(MISTRAL_7B, "mistral-7b-v0.1")
        assert (spec.sliding_window, spec.sliding_layers) == (4096, 32)
        assert spec.kv_per_sequence(32768, 1, 2) == spec.kv_per_sequence(4096, 1, 2)

    @pytest.mark.parametrize(
        ("extra", "window", "sliding"),
        [
            ({"model_type": "gemma2", "num_hidden_layers": 42}, 4096, 21),  # every other layer
            ({"model_type": "gemma3_text", "num_hidden_layers": 34, "sliding_window_pattern": 6}, 4096, 29),
            ({"layer_types": ["sliding_attention", "full_attention"] * 16}, 4096, 16),
            ({"model_type": "qwen2", "use_sliding_window": False}, 0, 0),
            ({"sliding_window": None}, 0, 0),
        ],
    )
    def test_interleaved_and_off(self, extra, window, sliding):
        """Gemma 2 alternates, Gemma 3 keeps one global layer in 6, layer_types lists them, Qwen2 turns
        its window off; full layers still pay for the whole context."""
        spec = spec_from_config({**MISTRAL_7B, **extra}, "m")
        assert (spec.sliding_window, spec.sliding_layers) == (window, sliding)
        if sliding:
            full = spec.layers - sliding
            per = spec.kv_per_layer_token(1, 2)
            assert spec.kv_per_sequence(32768, 1, 2) == int(per * (full * 32768 + sliding * 4096))


class TestWeights:
    def test_header_read_by_hand(self, tmp_path):
        """The 8-byte length and JSON header of a hand-written file are read back."""
        n = write_safetensors(tmp_path / "a.safetensors", {"w": ("BF16", [4, 8])}, SIZES)
        assert n == 64
        assert read_header(tmp_path / "a.safetensors")["w"]["shape"] == [4, 8]

    @pytest.mark.parametrize(
        "raw",
        [b"\x01\x02", struct.pack("<Q", 10**12) + b"{}", struct.pack("<Q", 4) + b"nope"],
    )
    def test_corrupt_header(self, tmp_path, raw):
        """A short file, an impossible header length or a non-JSON header is corrupt, said as such."""
        (tmp_path / "x.safetensors").write_bytes(raw)
        with pytest.raises(ValueError, match="x.safetensors"):
            read_header(tmp_path / "x.safetensors")

    def test_offsets_disagreeing_with_shape(self, tmp_path):
        raw = json.dumps({"w": {"dtype": "F16", "shape": [4, 4], "data_offsets": [0, 8]}}).encode()
        (tmp_path / "m.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 8)
        with pytest.raises(ValueError, match="corrupt"):
            model_weights(tmp_path)

    def test_gptq_real_sizes(self, tmp_path):
        """A GPTQ 4-bit checkpoint: int32-packed qweight/qzeros, fp16 scales; the gate takes the bytes the
        files hold, not parameters x 2."""
        linear = {
            "layers.0.mlp.up_proj.qweight": ("I32", [256 // 8, 512]),
            "layers.0.mlp.up_proj.qzeros": ("I32", [2, 512 // 8]),
            "layers.0.mlp.up_proj.scales": ("F16", [2, 512]),
            "layers.0.mlp.up_proj.g_idx": ("I32", [256]),
        }
        cfg = {**LLAMA_CFG, "quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 128}}
        total = model_dir(tmp_path / "m", cfg, [{"embed_tokens.weight": ("F16", [1000, 256])}, linear])
        spec = load_spec(str(tmp_path / "m"))
        assert (
            spec.weights_bytes == total == 1000 * 256 * 2 + 32 * 512 * 4 + 2 * 64 * 4 + 2 * 512 * 2 + 256 * 4
        )
        assert spec.quantized == "gptq" and "2 safetensors header(s)" in spec.weights_source
        r = check_model_fit(spec, [(0, "a", 8 * GIB, 0)], context=2048)
        assert r.gpus[0].weights == total and "int4 weights as stored" in r.summary()

    def test_fp8_real_sizes(self, tmp_path):
        """An FP8 checkpoint: one byte per weight plus float32 scales."""
        tensors = {"w": ("F8_E4M3", [512, 256]), "w_scale": ("F32", [1])}
        cfg = {**LLAMA_CFG, "quantization_config": {"quant_method": "fp8"}}
        total = model_dir(tmp_path / "m", cfg, [tensors])
        spec = load_spec(str(tmp_path / "m"))
        assert spec.weights_bytes == total == 512 * 256 + 4 and spec.dtype == "fp8"

    def test_index_total_size_when_shards_are_absent(self, tmp_path):
        """Only config.json and the index on disk: the index's metadata.total_size."""
        model_dir(tmp_path / "m", LLAMA_CFG, [{"w": ("BF16", [8, 8])}])
        (tmp_path / "m" / "model-00001-of-00001.safetensors").unlink()
        w = model_weights(tmp_path / "m")
        assert w is not None and w.bytes == 128 and "total_size" in w.source

    def test_online_quantization_of_a_bf16_checkpoint(self, tmp_path):
        """--quantization fp8 on a bf16 checkpoint: parameters (counted from the headers) x 1 byte."""
        model_dir(tmp_path / "m", LLAMA_CFG, [{"w": ("BF16", [1024, 1024])}])
        spec = load_spec(str(tmp_path / "m"))
        assert spec.params == 1024 * 1024
        r = check_model_fit(spec, [(0, "a", 8 * GIB, 0)], context=2048, quantization="fp8")
        assert r.gpus[0].weights == 1024 * 1024

    def test_hf_cache_model_outside_the_presets(self, tmp_path, monkeypatch):
        """A model in the local Hugging Face cache (refs/main -> snapshots/REV) and in no preset is sized
        from its files, not UNREADABLE; nothing is fetched."""
        hub = tmp_path / "hub"
        repo = hub / "models--acme--tiny-llm"
        total = model_dir(repo / "snapshots" / "abc123", LLAMA_CFG, [{"w": ("BF16", [512, 512])}])
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text("abc123")
        monkeypatch.setenv("HF_HUB_CACHE", str(hub))
        assert find_model_dir("acme/tiny-llm") == repo / "snapshots" / "abc123"
        s = parse_vllm({"model": "acme/tiny-llm", "max_model_len": 2048}, "rig.toml")
        v = fitcheck.memory_fit(s, [GpuMemory(0, "RTX 3060", 12 * GIB, 0)], "test")
        assert v.status == Status.PASS, str(v)
        assert v.properties["kv_cache_tokens"] and f"{total}" not in v.summary
        assert "snapshots/abc123" in str(v)

    def test_unknown_model_is_unreadable(self, tmp_path, monkeypatch):
        """Neither a folder, nor cached, nor a preset: UNREADABLE saying what to set."""
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
        v = fitcheck.memory_fit(
            parse_vllm({"model": "acme/none"}, "rig.toml"), [GpuMemory(0, "a", GIB, 0)], "t"
        )
        assert v.status == Status.UNREADABLE and "Hugging Face cache" in v.summary


class TestOverhead:
    def test_breakdown_from_the_model_shape(self):
        """On a 10 GiB card with V1: 0.5 GiB context + 2048 tokens of activations + 256 fp32 logits rows."""
        o = estimate_overhead(R1_7B, 1, profile_batch(4096, 10 * GIB, version=(0, 11)))
        parts = dict(o.parts)
        assert parts["CUDA context"] == GIB // 2
        assert parts["activations for 2048 tokens"] == 2048 * (3 * 18944 + 2 * 3584) * 2
        assert parts["logits for 256 sequences"] == 256 * 152064 * 4
        assert "CUDA context 0.50 + activations for 2048 tokens 0.24" in o.text()

    def test_big_gpu_tp(self):
        """80 GiB cards get vLLM's larger defaults; TP adds NCCL buffers and splits activations."""
        o = dict(estimate_overhead(R1_7B, 2, profile_batch(4096, 80 * GIB, version=(0, 11))).parts)
        assert "activations for 8192 tokens" in o and "logits for 1024 sequences" in o
        assert o["CUDA context"] == int(0.75 * GIB)

    def test_enforce_eager_drops_the_graphs_note(self):
        eager = check_model_fit(R1_7B, [(0, "H100", 80 * GIB, 0)], context=4096, enforce_eager=True)
        graphs = check_model_fit(R1_7B, [(0, "H100", 80 * GIB, 0)], context=4096)
        assert not any("CUDA graphs" in n for n in eager.notes) and any(
            "CUDA graphs" in n for n in graphs.notes
        )

    def test_unknown_shape_is_flat(self):
        spec = replace(R1_7B, hidden=0)
        o = estimate_overhead(spec, 1, profile_batch(4096, 10 * GIB))
        assert o.total == GIB and "flat" in o.text()

    def test_profile_figure_wins(self):
        """[vllm] runtime_overhead_gib replaces the estimate, and the report says where it came from."""
        r = check_model_fit(R1_7B, [(0, "H100", 80 * GIB, 0)], context=4096, overhead_bytes=3 * GIB)
        assert r.gpus[0].overhead == 3 * GIB and "runtime_overhead_gib" in str(r)

    @pytest.mark.parametrize(
        ("flags", "want"),
        [
            (["--max-num-seqs", "64"], 64),
            (["--max-num-seqs=32"], 32),
            (["--max_num_seqs", "16"], 16),  # vLLM reads underscores as dashes
            (["--max-num-seqs", "8", "--max-num-seqs=8"], 8),
            ([], None),
        ],
    )
    def test_flag_value(self, flags, want):
        assert VllmSettings(flags=tuple(flags)).flag("--max-num-seqs") == want


# vLLM's own lines: V1 (vllm/v1/core/kv_cache_utils.py), V0 0.6 (vllm/executor/gpu_executor.py and
# vllm/worker/worker.py, as in vllm-project/vllm#10517).
V1_LOG = (
    "INFO 11-30 12:00:01 [gpu_worker.py:760] Available KV cache memory: 3.81 GiB\n"
    "INFO 11-30 12:00:01 [kv_cache_utils.py:2328] GPU KV cache size: 31,216 tokens, Maximum concurrency "
    "for 20,000 tokens per request: 1.56x\n"
)
V0_LOG = (
    "INFO 11-20 10:00:00 gpu_executor.py:122] # GPU blocks: 1951, # CPU blocks: 2048\n"
    "INFO 11-20 10:00:00 gpu_executor.py:126] Maximum concurrency for 20000 tokens per request: 1.56x\n"
)


class TestLog:
    @pytest.mark.parametrize("text", [V1_LOG, V0_LOG])
    def test_parse(self, text):
        got = parse_kv_log(text)
        assert got is not None and got["kv_tokens"] == 31216 and got["context"] == 20000
        assert got["max_concurrency"] == 1.56

    def test_parse_nothing(self):
        assert parse_kv_log("INFO starting\n") is None

    def test_agrees_with_case04(self):
        """The gate's 1.53x against the 1.56x vLLM logged for #10517: within 25 %, PASS with both figures."""
        r = check_model_fit(LLAMA_8B, [RTX3090], context=20000)
        v = compare_with_log(r, V0_LOG, "server.log")
        assert v.status == Status.PASS, str(v)
        assert v.measured_value == 31216 and v.expected_value == r.kv_tokens and v.unit == "tokens"

    def test_large_disagreement_is_flagged(self):
        """A KV cache far from the estimate (another version's overhead, a wrong config) is a WARN."""
        r = check_model_fit(LLAMA_8B, [RTX3090], context=20000)
        v = compare_with_log(r, V1_LOG.replace("31,216", "8,000"), "server.log")
        assert v.status == Status.WARN and "8,000 tokens" in v.summary and v.fix
        assert compare_with_log(r, "no figures", "server.log").status == Status.NOT_APPLICABLE

    def test_log_agreement_from_settings(self):
        s = parse_vllm({"model": "meta-llama/Llama-3.1-8B-Instruct", "max_model_len": 20000}, "rig.toml")
        v = fitcheck.log_agreement(s, [GpuMemory(*RTX3090)], V1_LOG, "server.log")
        assert v.status == Status.PASS and v.properties["kv_tokens_logged"] == 31216


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", "-rA", "--rig", *args)


class TestCase04:
    """/work/shared/cases/public/04-kv-fit-one-sequence, copied to tests/data/case04-kv-fit-one-sequence:
    rebuilt from vllm-project/vllm#10517 (vLLM 0.6, RTX 3090, Llama-3.1-8B-Instruct, 20 000 tokens)."""

    def test_replayed_it_fits(self, pytester, tmp_path, monkeypatch):
        """True verdict: fits, saying how many full-length sequences the KV cache holds (about 1.5)."""
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "no-cache"))  # the preset, whatever is cached here
        result = run(
            pytester,
            "--rig-snapshot",
            str(CASE04 / "snapshot"),
            "--rig-profile",
            str(CASE04 / "profile-20k.toml"),
            "--rig-report",
            str(pytester.path / "report.json"),
            "-k",
            "model_fit",
            str(FIT),
        )
        result.assert_outcomes(passed=2)
        result.stdout.fnmatch_lines(
            [
                "*llama-3.1-8b-instruct*max_model_len 20000*fits; KV cache *maximum concurrency for 20,000 "
                "tokens per request 1.5?x*"
            ]
        )
        report = (pytester.path / "report.json").read_text()
        assert "maximum concurrency for 20,000 tokens per request 1.53x" in report

    def test_no_room_after_the_peak_fails(self, pytester, tmp_path, monkeypatch):
        """The same rig at 32 768 tokens on vLLM 0.6 (unchunked profiling of all of them): does NOT fit."""
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "no-cache"))
        prof = (
            (CASE04 / "profile-20k.toml")
            .read_text()
            .replace("max_model_len = 20000", "max_model_len = 32768")
        )
        prof = prof.replace("[vllm]\n", '[vllm]\nexpect_version = "0.6.4"\n')
        (tmp_path / "rig.toml").write_text(prof)
        result = run(
            pytester,
            "--rig-snapshot",
            str(CASE04 / "snapshot"),
            "--rig-profile",
            str(tmp_path / "rig.toml"),
            str(FIT),
        )
        result.assert_outcomes(passed=1, failed=1)
        result.stdout.fnmatch_lines(
            ["*does NOT fit*", "*one sequence of max_model_len 32768 tokens*vLLM refuses*"]
        )


class TestCase04GpuFigures:
    """Case 04's [vllm.gpus] and --rig-vllm-gpu-memory as a fresh user got them wrong (case 04 is a one-GPU
    rig, GPU0 at 0000:01:00.0): each mistake is one usage error (exit 4) before any check, naming the file
    or option, the key, the value and what the rig has; a figure keyed by PCI address is used for its GPU."""

    @staticmethod
    def profile(tmp_path: Path, entries: str) -> Path:
        text = (CASE04 / "profile-20k.toml").read_text()
        line = '"0" = { name = "RTX 3090", total_gib = 23.58, used_gib = 0 }'
        assert line in text
        path = tmp_path / "rig.toml"
        path.write_text(text.replace(line, entries))
        return path

    def replay(self, pytester, tmp_path, profile: Path, *args: str) -> pytest.RunResult:
        return run(
            pytester,
            "--rig-snapshot",
            str(CASE04 / "snapshot"),
            "--rig-profile",
            str(profile),
            *args,
            str(FIT),
        )

    @pytest.mark.parametrize(
        ("entries", "said"),
        [
            (
                '"9" = { name = "RTX 3090", total_gib = 23.58, used_gib = 0 }',
                "*rig.toml: invalid value '9' for 'vllm.gpus': no device on rtx3090x1-llama8b has this PCI "
                "address, GPU index or slot name; its GPUs are 0000:01:00.0 (GPU0)*",
            ),
            (
                '"0" = { name = "RTX 3090", total_gib = 23.58, used_gib = 0 }\n'
                '"1" = { name = "RTX 3090", total_gib = 23.58, used_gib = 0 }',
                "*rig.toml: invalid value '1' for 'vllm.gpus': no device on rtx3090x1-llama8b*"
                "its GPUs are 0000:01:00.0 (GPU0)*",
            ),
            (
                '"0" = { nmae = "RTX 3090", total_gib = 23.58, used_gib = 0 }',
                "*rig.toml: invalid value 'RTX 3090' for 'vllm.gpus.\"0\".nmae': unknown key (did you mean "
                'name?); keys of [[]vllm.gpus."0"[]] are name, total_gib, used_gib*',
            ),
        ],
        ids=["gpu-9-on-a-1-gpu-rig", "gpu-1-on-a-1-gpu-rig", "typo-key"],
    )
    def test_profile_mistake_is_one_usage_error(self, pytester, tmp_path, entries, said):
        result = self.replay(pytester, tmp_path, self.profile(tmp_path, entries))
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([f"ERROR: {said}"])
        assert "passed" not in result.stdout.str() and "Traceback" not in result.stderr.str()

    @pytest.mark.parametrize("via", ["option", "variable"])
    def test_option_for_a_gpu_the_rig_lacks_is_one_usage_error(self, pytester, tmp_path, monkeypatch, via):
        """Was: silently ignored (NVML's figures used instead, 1.68x), exit 0."""
        spec = "9:RTX 3090:24GiB:0GiB"
        args = [f"--rig-vllm-gpu-memory={spec}"] if via == "option" else []
        if via == "variable":
            monkeypatch.setenv("RIGCHECK_VLLM_GPU_MEMORY", spec)
        name = "--rig-vllm-gpu-memory" if via == "option" else "RIGCHECK_VLLM_GPU_MEMORY"
        result = self.replay(pytester, tmp_path, CASE04 / "profile-20k.toml", *args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(
            [
                f"ERROR: {name}: invalid value '{spec}': GPU9 does not exist on rtx3090x1-llama8b: its GPUs "
                "are 0000:01:00.0 (GPU0) (nvidia-smi order)"
            ]
        )

    def test_figures_keyed_by_pci_address(self, pytester, tmp_path, monkeypatch):
        """The GPU's PCI address names it as well as its index: the case's verdict, 1.53x."""
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "no-cache"))
        prof = self.profile(
            tmp_path, '"0000:01:00.0" = { name = "RTX 3090", total_gib = 23.58, used_gib = 0 }'
        )
        result = self.replay(pytester, tmp_path, prof, "-k", "model_fit")
        result.assert_outcomes(passed=2)
        result.stdout.fnmatch_lines(
            ["*fits; KV cache *maximum concurrency for 20,000 tokens per request 1.53x*"]
        )


class TestGroupFigures:
    """``rig_memory_fit``: each GPU of the served group sized from its own figures (given, else NVML); a GPU
    without any is UNREADABLE, named; a machine without GPUs takes the figures as given and says so."""

    S = {"model_preset": "llama-3.1-8b-instruct", "max_model_len": 8192}

    @staticmethod
    def settings(tp: int = 1, **gpus: float):
        table = {**TestGroupFigures.S, "tensor_parallel_size": tp}
        if gpus:
            table["gpus"] = {k.removeprefix("g"): {"total_gib": v, "used_gib": 0} for k, v in gpus.items()}
        return parse_vllm(table, "rig.toml")

    @staticmethod
    def nvml(*totals: float):
        calls: list[int] = []

        def read():
            calls.append(1)
            return [GpuMemory(i, f"NVML{i}", int(t * GIB), 0) for i, t in enumerate(totals)], "NVML (r)"

        return read, calls

    def test_missing_gpu_of_the_group_comes_from_nvml(self):
        """TP 2 with only GPU0 given: GPU1 from NVML, never GPU0's figures twice; both sources said."""
        read, _ = self.nvml(10, 24, 24)
        v = fitcheck.rig_memory_fit(self.settings(2, g0=24), 3, None, read, "r")
        assert [g.split()[0] for g in v.target["gpus"]] == ["GPU0", "GPU1"]
        assert "NVML1" in v.measured and "total 24.00 GiB" in v.measured
        assert "[vllm.gpus] in rig.toml for GPU0, NVML (r) for GPU1" in v.expected

    def test_nvml_not_read_when_every_gpu_is_given(self):
        read, calls = self.nvml(24, 24)
        v = fitcheck.rig_memory_fit(self.settings(2, g0=24, g1=24), 2, None, read, "r")
        assert (
            v.status == Status.PASS and not calls and "GPU memory from [vllm.gpus] in rig.toml" in v.expected
        )

    def test_missing_gpu_without_nvml_is_unreadable_naming_it(self):
        """No NVML figures for GPU1: UNREADABLE naming GPU1 and what was tried, not a pass on GPU0's."""

        def read():
            return [], "none: the GPU plugin (rig_gpus) is not installed"

        v = fitcheck.rig_memory_fit(self.settings(2, g0=24), 2, None, read, "r")
        assert v.status == Status.UNREADABLE
        assert "no GPU memory figures for GPU1 of the group [0, 1] on r (given: GPU0; NVML: none" in v.summary
        assert v.target == {"gpus": ["GPU1"]} and "for GPU1" in v.fix[0]

    def test_figures_for_a_gpu_outside_the_group_are_not_used(self):
        """TP 1 on a 2-GPU rig, only GPU1 given: vLLM serves on GPU0, sized from NVML; GPU1's unused, said."""
        read, _ = self.nvml(10, 24)
        v = fitcheck.rig_memory_fit(self.settings(1, g1=24), 2, None, read, "r")
        assert v.target == {"gpus": ["GPU0 (NVML0)"]}
        assert any("gives GPU1, not in the group [0]: not used" in n for n in v.notes)

    def test_tp_groups_pick_the_gpus(self):
        read, _ = self.nvml(10, 24, 24)
        v = fitcheck.rig_memory_fit(self.settings(2), 3, [[1, 2]], read, "r")
        assert v.target == {"gpus": ["GPU1 (NVML1)", "GPU2 (NVML2)"]}

    def test_no_gpu_on_the_machine_takes_the_figures_as_given(self):
        """Planning a fit on a machine without GPUs: the figures given are the group, and the verdict says
        they were taken as given; too few for the tensor-parallel size is UNREADABLE, not a guess."""
        read, calls = self.nvml()
        v = fitcheck.rig_memory_fit(self.settings(1, g0=24), 0, None, read, "vm")
        assert v.status == Status.PASS and not calls
        assert "taken as given: vm shows no GPU on its PCIe bus" in v.summary
        v = fitcheck.rig_memory_fit(self.settings(2, g0=24), 0, None, read, "vm")
        assert (
            v.status == Status.UNREADABLE and "tensor-parallel size 2 needs the memory of 2 GPUs" in v.summary
        )
        assert "gives 1 (GPU0)" in v.summary


def test_concurrency_key_is_the_gates_requirement_only_when_given():
    """[vllm] concurrency, when given, is the gate's stricter need; unset, the gate asks for one sequence
    (the serving checks keep their own default of 4 parallel requests)."""
    assert parse_vllm({"model": "m"}, "rig.toml").fit_concurrency is None
    s = parse_vllm({"model": "m", "concurrency": 2}, "rig.toml")
    assert (s.fit_concurrency, s.concurrency) == (2, 2)


def test_started_server_log_is_compared(tmp_path):
    """The hook the vLLM plugin runs after starting a server: figures recorded as properties, and a large
    disagreement warned in the run's summary."""
    from pytest_rigcheck.vllm.plugin import _fit_vs_log

    s = parse_vllm(
        {
            "model": "meta-llama/Llama-3.1-8B-Instruct",
            "max_model_len": 20000,
            "gpus": {"0": {"name": "RTX 3090", "total_gib": 23.58, "used_gib": 0}},
        },
        "rig.toml",
    )
    log = tmp_path / "server.log"
    log.write_text(V1_LOG)
    got: dict[str, object] = {}
    _fit_vs_log(s, log, got.__setitem__)
    assert got["vllm_fit_kv_tokens_logged"] == 31216
    log.write_text(V1_LOG.replace("31,216", "8,000"))
    with pytest.warns(UserWarning, match="8,000 tokens"):
        _fit_vs_log(s, log, got.__setitem__)
