"""The model-fit gate: will this model, at this context, start under vLLM on the GPUs of its group, and how
many full-length sequences will its KV cache hold?

Pure arithmetic, no server and no GPU: feed it GPU memory from the profile, an option, or NVML
(``rig_gpus``). vLLM's own rules it mirrors (vLLM 0.32 sources unless said):

- at start-up vLLM wants ``gpu_memory_utilization x total`` free on every GPU of the group, and refuses
  to start otherwise (``vllm/v1/worker/gpu_worker.py``, "Free memory on device ... is less than desired
  GPU memory utilization");
- inside that budget go the weights (sharded over the tensor-parallel group), memory outside torch (CUDA
  context, NCCL) and the activation peak of a profiling pass over ``max_num_batched_tokens`` tokens; what
  is left is the KV cache (``determine_available_memory``, logged "Available KV cache memory"). CUDA
  graphs are captured after it and are not subtracted unless VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1;
- vLLM starts when ONE sequence of ``max_model_len`` fits in that KV cache
  (``vllm/v1/core/kv_cache_utils.py`` ``check_enough_kv_cache_memory``: "... larger than the maximum
  number of tokens that can be stored in KV cache"), and logs how many fit at once
  ("GPU KV cache size: N tokens, Maximum concurrency for L tokens per request: X.XXx");
- the tensor-parallel size divides the attention heads, and divides the KV heads (or, when it exceeds
  them, is a multiple of them: KV heads are then replicated, one per GPU;
  ``vllm/model_executor/layers/linear.py`` ``QKVParallelLinear``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from .modeldir import find_model_dir, model_weights, read_local_json
from .settings import GpuMemory

GIB = 2**30
DEFAULT_OVERHEAD_GIB = 1.0  # when the model's shape is unknown: vLLM logs 0.5-1.5 GiB at 7-8B
NON_TORCH_GIB = 0.5  # CUDA context, cuBLAS workspace: memory outside torch's allocator
NCCL_GIB = 0.25  # NCCL and custom all-reduce buffers, tensor-parallel only
CUDA_GRAPHS_GIB = 0.25  # captured after the KV cache is sized: needs room beyond the budget
ACTIVATION_BYTES = 2  # bf16/fp16 activations, also under weight-only quantization
LOGIT_BYTES = 4  # the sampler's logits are float32
V1_FROM = (0, 8)  # vLLM 0.8 made the V1 engine (chunked prefill always on) the default
LONG_CONTEXT = 32768  # vLLM 0.6 turned chunked prefill on by default above this max_model_len

# Bytes per parameter of the weights. 4-bit schemes carry a scale (and zero) per group of 128: ~4.25-4.5 bits.
WEIGHT_BYTES: dict[str, float] = {
    "fp32": 4,
    "float32": 4,
    "bf16": 2,
    "bfloat16": 2,
    "fp16": 2,
    "float16": 2,
    "half": 2,
    "auto": 2,
    "fp8": 1,
    "int8": 1,
    "w8a8": 1,
    "compressed-tensors-8bit": 1,
    "awq": 0.5625,
    "gptq": 0.5625,
    "int4": 0.5625,
    "bitsandbytes": 0.5625,
    "mxfp4": 0.53,
    "nvfp4": 0.5625,
}
KV_BYTES: dict[str, float] = {
    "auto": 0,
    "bf16": 2,
    "bfloat16": 2,
    "fp16": 2,
    "float16": 2,
    "fp32": 4,
    "float32": 4,
    "fp8": 1,
    "fp8_e4m3": 1,
    "fp8_e5m2": 1,
}


@dataclass(frozen=True)
class ModelSpec:
    """A model's size and attention shape.

    Args:
        name: for messages.
        params: parameter count.
        layers, heads, kv_heads, head_dim: attention shape (grouped-query: ``kv_heads`` < ``heads``; KV
            cache per token and layer is 2 x kv_heads x head_dim x bytes).
        dtype: weight dtype or quantization (a key of ``WEIGHT_BYTES``).
        max_position_embeddings: the model's longest context, vLLM's default ``max_model_len``.
        source: where the spec came from (preset or config.json path).
        hidden, intermediate, vocab: the shape the activation peak is estimated from (0: unknown).
        kv_lora_rank, qk_rope_head_dim: MLA (DeepSeek V2/V3/R1): each layer caches one latent of
            ``kv_lora_rank + qk_rope_head_dim`` values per token, the same on every GPU of the group.
        sliding_window, sliding_layers: that many layers keep only the last ``sliding_window`` tokens.
        weights_bytes, weights_source: the checkpoint's real tensor bytes (safetensors), 0 when unread.
        quantized: the checkpoint's ``quantization_config.quant_method`` ("" when none).
    """

    name: str
    params: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    dtype: str = "bf16"
    max_position_embeddings: int | None = None
    source: str = ""
    hidden: int = 0  # 0: unknown (then the runtime overhead is a flat figure)
    intermediate: int = 0
    vocab: int = 0
    kv_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    sliding_window: int = 0
    sliding_layers: int = 0
    weights_bytes: int = 0
    weights_source: str = ""
    quantized: str = ""

    def kv_per_layer_token(self, tp: int, elem: float) -> float:
        """KV cache bytes per token and layer on one GPU of a ``tp`` group."""
        if self.kv_lora_rank:
            return (self.kv_lora_rank + self.qk_rope_head_dim) * elem
        return 2 * max(1, self.kv_heads // tp) * self.head_dim * elem

    def kv_per_sequence(self, context: int, tp: int, elem: float) -> int:
        """KV cache bytes one sequence of ``context`` tokens takes on one GPU (sliding layers capped)."""
        swa = min(context, self.sliding_window) if self.sliding_window else context
        full = self.layers - self.sliding_layers
        return int(self.kv_per_layer_token(tp, elem) * (full * context + self.sliding_layers * swa))

    def attention_text(self) -> str:
        if self.kv_lora_rank:
            shape = (
                f"MLA: {self.layers} layers x ({self.kv_lora_rank} kv_lora_rank + {self.qk_rope_head_dim} "
                "rope dims), one latent per token on every GPU"
            )
        else:
            kind = "grouped-query" if self.kv_heads < self.heads else "multi-head"
            shape = (
                f"{kind}: {self.layers} layers x 2 x {self.kv_heads} KV heads / TP x {self.head_dim} head dim"
            )
        if self.sliding_window:
            shape += f"; {self.sliding_layers} sliding-window layers keep {self.sliding_window} tokens"
        return shape


def _preset(
    name: str,
    *,
    vocab: int,
    hidden: int,
    layers: int,
    heads: int,
    kv: int,
    inter: int,
    tied: bool,
    qkv_bias: bool = False,
    head_dim: int | None = None,
    max_pos: int,
    dtype: str = "bf16",
) -> ModelSpec:
    hd = head_dim or hidden // heads
    return ModelSpec(
        name,
        dense_params(vocab, hidden, layers, heads, kv, hd, inter, tied, qkv_bias),
        layers,
        heads,
        kv,
        hd,
        dtype,
        max_pos,
        f"preset {name}",
        hidden,
        inter,
        vocab,
    )


def dense_params(
    vocab: int,
    hidden: int,
    layers: int,
    heads: int,
    kv_heads: int,
    head_dim: int,
    intermediate: int,
    tied: bool,
    qkv_bias: bool = False,
    experts: int = 1,
) -> int:
    """Parameters of a Llama/Qwen-style decoder (gated MLP of 3 matrices, 2 RMSNorms per layer).

    Example::

        >>> round(dense_params(152064, 3584, 28, 28, 4, 128, 18944, False, True) / 1e9, 2)  # Qwen2-7B
        7.62
    """
    attn = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2
    if qkv_bias:
        attn += heads * head_dim + 2 * kv_heads * head_dim
    mlp = 3 * hidden * intermediate * experts
    per_layer = attn + mlp + 2 * hidden
    embed = vocab * hidden * (1 if tied else 2)
    return embed + layers * per_layer + hidden


# The Qwen2 7B shape (Qwen/Qwen2.5-7B-Instruct config.json), shared by DeepSeek-R1-Distill-Qwen-7B.
_qwen2_7b = partial(
    _preset, vocab=152064, hidden=3584, layers=28, heads=28, kv=4, inter=18944, tied=False, qkv_bias=True
)
PRESETS: dict[str, ModelSpec] = {
    p.name: p
    for p in (
        # deepseek-ai/DeepSeek-R1-Distill-Qwen-7B config.json (Qwen2 architecture); the seed's model.
        _qwen2_7b("deepseek-r1-distill-qwen-7b", max_pos=131072),
        _qwen2_7b("qwen2.5-7b-instruct", max_pos=32768),
        _preset(
            "qwen2.5-32b-instruct",
            vocab=152064,
            hidden=5120,
            layers=64,
            heads=40,
            kv=8,
            inter=27648,
            tied=False,
            qkv_bias=True,
            max_pos=32768,
        ),
        _preset(
            "llama-3.1-8b-instruct",
            vocab=128256,
            hidden=4096,
            layers=32,
            heads=32,
            kv=8,
            inter=14336,
            tied=False,
            max_pos=131072,
        ),
        _preset(
            "llama-3.3-70b-instruct",
            vocab=128256,
            hidden=8192,
            layers=80,
            heads=64,
            kv=8,
            inter=28672,
            tied=False,
            max_pos=131072,
        ),
        _preset(
            "smollm2-135m-instruct",
            vocab=49152,
            hidden=576,
            layers=30,
            heads=9,
            kv=3,
            inter=1536,
            tied=True,
            max_pos=8192,
        ),
    )
}
# Hugging Face ids of the presets, so that [vllm] model = "deepseek-ai/..." finds its preset.
_ALIASES = {
    "deepseek-ai/deepseek-r1-distill-qwen-7b": "deepseek-r1-distill-qwen-7b",
    "qwen/qwen2.5-7b-instruct": "qwen2.5-7b-instruct",
    "qwen/qwen2.5-32b-instruct": "qwen2.5-32b-instruct",
    "meta-llama/llama-3.1-8b-instruct": "llama-3.1-8b-instruct",
    "meta-llama/llama-3.3-70b-instruct": "llama-3.3-70b-instruct",
    "huggingfacetb/smollm2-135m-instruct": "smollm2-135m-instruct",
}


def find_preset(name: str) -> ModelSpec | None:
    """A preset by its name or its Hugging Face id, case-insensitive."""
    key = name.strip().lower()
    return PRESETS.get(key) or PRESETS.get(_ALIASES.get(key, "")) or PRESETS.get(key.rsplit("/", 1)[-1])


def _mla_params(cfg: Mapping[str, Any], hidden: int, layers: int, heads: int, vocab: int) -> int:
    """Parameters of a DeepSeek V2/V3 decoder (MLA attention, MoE after ``first_k_dense_replace`` dense
    layers), from its config.json keys (deepseek-ai/DeepSeek-V3 ``configuration_deepseek.py``)."""
    rope, nope = int(cfg["qk_rope_head_dim"]), int(cfg.get("qk_nope_head_dim") or 128)
    v, kv_rank, q_rank = (
        int(cfg.get("v_head_dim") or 128),
        int(cfg["kv_lora_rank"]),
        int(cfg.get("q_lora_rank") or 0),
    )
    q = hidden * q_rank + q_rank * heads * (nope + rope) if q_rank else hidden * heads * (nope + rope)
    attn = q + hidden * (kv_rank + rope) + kv_rank * heads * (nope + v) + heads * v * hidden
    dense = int(cfg.get("first_k_dense_replace") or 0)
    experts = int(cfg.get("n_routed_experts") or 0) + int(cfg.get("n_shared_experts") or 0)
    moe_mlp = 3 * hidden * int(cfg.get("moe_intermediate_size") or 0) * experts
    dense_mlp = 3 * hidden * int(cfg.get("intermediate_size") or 0)
    mlps = dense * dense_mlp + (layers - dense) * (moe_mlp if experts else dense_mlp)
    tied = bool(cfg.get("tie_word_embeddings", False))
    return vocab * hidden * (1 if tied else 2) + layers * (attn + 2 * hidden) + mlps + hidden


def sliding_layers(cfg: Mapping[str, Any], layers: int) -> tuple[int, int]:
    """``(window, layers that use it)`` from a config.json; ``(0, 0)`` without sliding-window attention.

    ``layer_types`` lists each layer ("sliding_attention"/"full_attention", recent transformers); Gemma 2
    alternates (every other layer), Gemma 3 keeps one global layer in ``sliding_window_pattern`` (6);
    Qwen2 configs carry a window but ``use_sliding_window: false``; Mistral-style configs slide on all.
    """
    window = cfg.get("sliding_window")
    if not isinstance(window, int) or window <= 0 or cfg.get("use_sliding_window") is False:
        return 0, 0
    types = cfg.get("layer_types")
    if isinstance(types, list) and types:
        return window, sum(1 for t in types if "sliding" in str(t))
    model_type = str(cfg.get("model_type", ""))
    if model_type == "gemma2":
        return window, (layers + 1) // 2
    if model_type.startswith("gemma3"):
        pattern = int(cfg.get("sliding_window_pattern") or 6)
        return window, layers - layers // pattern
    if isinstance(cfg.get("max_window_layers"), int) and cfg.get("use_sliding_window"):
        return window, max(0, layers - int(cfg["max_window_layers"]))
    return window, layers


def spec_from_config(config: dict[str, Any], name: str, source: str = "config.json") -> ModelSpec:
    """A ``ModelSpec`` from a Hugging Face ``config.json`` (Llama, Qwen2/3, Mistral, Gemma 2/3, DeepSeek
    V2/V3 with MLA, and alike).

    Raises ``ValueError`` naming the missing key.
    """
    cfg = config.get("text_config", config)  # multimodal wrappers keep the LM's shape here

    if not isinstance(cfg, dict):
        raise ValueError(f"{source}: text_config = {cfg!r} is not a JSON object")

    def bad(key: str, value: object, what: str = "a positive integer") -> ValueError:
        return ValueError(f"{source}: {key} = {value!r} is impossible: the model-fit gate needs {what}")

    def need(*keys: str) -> int:
        for k in keys:
            if k in cfg and cfg[k] is not None:
                return positive(k)
        raise ValueError(f"{source}: no {' or '.join(keys)} (not a decoder-only transformer config?)")

    def positive(key: str, default: int | None = None, *, zero: bool = False) -> int:
        """``cfg[key]``, a positive integer (0 too with ``zero``); ``default`` when absent or null."""
        value = cfg.get(key)
        if value is None and default is not None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if zero else 1):
            raise bad(key, value, "a whole number, 0 or more" if zero else "a positive integer")
        return value

    hidden = need("hidden_size", "d_model", "n_embd")
    layers = need("num_hidden_layers", "n_layer", "num_layers")
    heads = need("num_attention_heads", "n_head")
    vocab = need("vocab_size")
    kv = positive("num_key_value_heads", heads)
    if heads % kv:
        raise bad(
            "num_key_value_heads",
            kv,
            f"a divisor of num_attention_heads ({heads}): grouped-query "
            "attention shares each KV head among the same number of query heads",
        )
    head_dim = positive("head_dim", hidden // heads or 1)
    inter = (
        need("intermediate_size", "ffn_dim")
        if "moe_intermediate_size" not in cfg
        else positive("moe_intermediate_size")
    )
    experts = 1
    for key in ("num_local_experts", "num_experts", "n_routed_experts"):
        if cfg.get(key):
            experts = positive(key)
            break
    for key in (
        "max_position_embeddings",
        "num_experts_per_tok",
        "kv_lora_rank",
        "qk_rope_head_dim",
        "qk_nope_head_dim",
        "v_head_dim",
        "intermediate_size",
        "sliding_window_pattern",
    ):
        if cfg.get(key) is not None:
            positive(key)
    for key in ("q_lora_rank", "first_k_dense_replace", "n_shared_experts", "max_window_layers"):
        if cfg.get(key) is not None:
            positive(key, zero=True)
    if positive("first_k_dense_replace", 0, zero=True) > layers:
        raise bad(
            "first_k_dense_replace", cfg["first_k_dense_replace"], f"at most num_hidden_layers ({layers})"
        )
    mla = isinstance(cfg.get("kv_lora_rank"), int) and isinstance(cfg.get("qk_rope_head_dim"), int)
    if mla:
        params = _mla_params(cfg, hidden, layers, heads, vocab)
        kv, head_dim = 1, int(cfg.get("qk_nope_head_dim", 128)) + int(cfg["qk_rope_head_dim"])
    else:
        params = dense_params(
            vocab,
            hidden,
            layers,
            heads,
            kv,
            head_dim,
            inter,
            bool(cfg.get("tie_word_embeddings", False)),
            bool(cfg.get("attention_bias", cfg.get("model_type") == "qwen2")),
            experts,
        )
    dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or config.get("torch_dtype") or "bf16")
    q = config.get("quantization_config") or {}
    method = ""
    if isinstance(q, dict) and q:
        method = str(q.get("quant_method", "")).lower() or "quantized"
        bits = q.get("bits") or q.get("weight_bits")
        dtype = "int4" if bits == 4 else "int8" if bits == 8 else method
    window, n_sliding = sliding_layers(cfg, layers)
    return ModelSpec(
        name,
        params,
        layers,
        heads,
        kv,
        head_dim,
        dtype.replace("torch.", ""),
        cfg.get("max_position_embeddings"),
        source,
        hidden,
        inter * min(experts, int(cfg.get("num_experts_per_tok") or 1)),  # experts a token passes through
        vocab,
        kv_lora_rank=int(cfg["kv_lora_rank"]) if mla else 0,
        qk_rope_head_dim=int(cfg["qk_rope_head_dim"]) if mla else 0,
        sliding_window=window,
        sliding_layers=n_sliding,
        quantized=method,
    )


def spec_from_dir(folder: Path, name: str, config: Path | None = None) -> ModelSpec:
    """A spec from a local model folder: its ``config.json`` and the real weight bytes of its safetensors
    headers (or the index's total_size), each read through ``modeldir.read_local_bytes`` (lstat before
    open). ``ValueError`` on a corrupt or unreadable file, ``FileNotFoundError`` when config.json is absent."""
    cfg_path = config or folder / "config.json"
    cfg = read_local_json(cfg_path)  # a FIFO or device is refused before it is opened
    if not isinstance(cfg, dict):
        raise ValueError(f"{cfg_path}: not a JSON object")
    spec = spec_from_config(cfg, name, str(cfg_path))
    w = model_weights(folder)
    if w is None:
        return spec
    params = w.elements if (w.elements and not spec.quantized) else spec.params
    return replace(spec, params=params, weights_bytes=w.bytes, weights_source=w.source)


def load_spec(
    model: str | None,
    config_path: str | None = None,
    preset: str | None = None,
    env: Mapping[str, str] | None = None,
) -> ModelSpec:
    """Resolve the model to a spec: an explicit config.json, a preset, a local model folder or its
    snapshot in the local Hugging Face cache (never the network), else a preset matching the model's
    name. ``LookupError`` says what to set when nothing matches."""
    if config_path:
        p = Path(config_path)
        cfg = p / "config.json" if p.is_dir() else p
        return spec_from_dir(cfg.parent, model or cfg.parent.name, cfg)
    if preset:
        spec = find_preset(preset)
        if spec is None:
            raise LookupError(f"no model preset {preset!r}; presets: {', '.join(sorted(PRESETS))}")
        return spec
    if model:
        folder = find_model_dir(model, env)
        if folder is not None:
            return spec_from_dir(folder, model)
        spec = find_preset(model)
        if spec is not None:
            return spec
    raise LookupError(
        f"cannot size model {model!r}: it is neither a local folder, nor in the local Hugging Face cache, "
        f"nor a preset; set [vllm] model_config (a config.json) or model_preset "
        f"(one of {', '.join(sorted(PRESETS))})"
    )


def gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def parse_version(text: str | None) -> tuple[int, int] | None:
    """``(major, minor)`` from a version string such as ``0.6.4.post1`` or ``v0.11``; ``None`` if absent."""
    m = re.search(r"(\d+)\.(\d+)", text or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


@dataclass(frozen=True)
class ProfileBatch:
    """The batch vLLM's start-up profiling pass pushes through the model: ``tokens`` (its
    ``max_num_batched_tokens``), ``seqs`` (``max_num_seqs``), and how they were reached."""

    tokens: int
    seqs: int
    chunked: bool
    basis: str


def _v1_defaults(gpu_total: int, gpu_name: str) -> tuple[int, int, str]:
    # vllm/engine/arg_utils.py get_batch_defaults, usage context OPENAI_API_SERVER.
    if gpu_total >= 160 * GIB:
        return 16384, 1024, ">= 160 GiB GPU"
    if gpu_total >= 70 * GIB and "a100" not in gpu_name.lower():
        return 8192, 1024, ">= 70 GiB GPU, not A100"
    return 2048, 256, "GPU under 70 GiB"


def profile_batch(
    context: int,
    gpu_total: int,
    gpu_name: str = "",
    *,
    version: tuple[int, int] | None = None,
    tokens: int | None = None,
    seqs: int | None = None,
    chunked: bool | None = None,
) -> ProfileBatch:
    """vLLM's profiling batch for this version and these flags.

    V1 (vLLM >= 0.8, ``vllm/engine/arg_utils.py`` ``get_batch_defaults`` and
    ``_set_default_max_num_seqs_and_batched_tokens_args``): chunked prefill on; 2048 tokens / 256
    sequences on GPUs under 70 GiB, 8192 / 1024 from 70 GiB (not A100), 16384 / 1024 from 160 GiB; without
    chunked prefill at least ``max_model_len`` tokens. V0 (vLLM 0.6, ``vllm/config.py`` ``SchedulerConfig``):
    chunked prefill only above 32768 tokens of context, then 512 tokens, else ``max(max_model_len, 2048)``;
    256 sequences. An unknown version takes the larger of the two (the safe side).

    Example::

        >>> profile_batch(20000, 24 * GIB, version=(0, 6)).tokens
        20000
        >>> profile_batch(20000, 24 * GIB, version=(0, 11)).tokens
        2048
    """
    if version is None:
        a = profile_batch(
            context, gpu_total, gpu_name, version=(0, 6), tokens=tokens, seqs=seqs, chunked=chunked
        )
        b = profile_batch(
            context, gpu_total, gpu_name, version=V1_FROM, tokens=tokens, seqs=seqs, chunked=chunked
        )
        worst = a if a.tokens >= b.tokens else b
        return replace(
            worst,
            basis=f"vLLM version unknown ([vllm] expect_version not set): the larger of "
            f"V0 and V1 defaults, {worst.basis}",
        )
    v1 = version >= V1_FROM
    label = f"vLLM {version[0]}.{version[1]}"
    if v1:
        d_tokens, d_seqs, why = _v1_defaults(gpu_total, gpu_name)
        on = True if chunked is None else chunked
    else:
        on = context > LONG_CONTEXT if chunked is None else chunked
        d_tokens, d_seqs, why = (512 if on else 2048), 256, "V0 defaults"
    n = tokens if tokens is not None else (d_tokens if on else max(context, d_tokens))
    basis = f"{label}, {'chunked prefill' if on else 'no chunked prefill'}, " + (
        "--max-num-batched-tokens" if tokens is not None else f"default tokens ({why})"
    )
    return ProfileBatch(n, seqs or d_seqs, on, basis)


@dataclass(frozen=True)
class Overhead:
    """Memory per GPU beside weights and KV cache, in bytes, by what takes it."""

    parts: tuple[tuple[str, int], ...]
    basis: str  # how it was reached

    @property
    def total(self) -> int:
        return sum(b for _, b in self.parts)

    def text(self) -> str:
        if len(self.parts) == 1:
            return f"{gib(self.total)} ({self.basis})"
        inner = " + ".join(f"{name} {b / GIB:.2f}" for name, b in self.parts)
        return f"{gib(self.total)} ({inner}; {self.basis})"


def estimate_overhead(model: ModelSpec, tp: int, batch: ProfileBatch) -> Overhead:
    """vLLM's memory per GPU inside its budget beside weights and KV cache: memory outside torch, the
    activation peak of the profiling pass (the MLP's gate/up output and activation plus the residual
    stream, per token: ``3 x intermediate / TP + 2 x hidden`` bf16 values), the sampler's float32 logits
    for ``min(seqs, tokens)`` sequences. A flat ``DEFAULT_OVERHEAD_GIB`` when the shape is unknown.

    Checked against vllm-project/vllm#10517 (Llama-3.1-8B, 20 000 tokens profiled, RTX 3090): vLLM
    left 3.81 GiB of KV cache, this estimate 3.73 GiB.

    Example::

        >>> b = profile_batch(4096, 10 * GIB, version=(0, 11))
        >>> round(estimate_overhead(PRESETS["deepseek-r1-distill-qwen-7b"], 1, b).total / GIB, 2)
        0.89
    """
    if not (model.hidden and model.intermediate and model.vocab):
        return Overhead((("runtime", int(DEFAULT_OVERHEAD_GIB * GIB)),), "flat: the model's shape is unknown")
    per_token = 3 * model.intermediate // tp + 2 * model.hidden
    seqs = min(batch.seqs, batch.tokens)
    parts = (
        ("CUDA context", int((NON_TORCH_GIB + (NCCL_GIB if tp > 1 else 0)) * GIB)),
        (f"activations for {batch.tokens} tokens", batch.tokens * per_token * ACTIVATION_BYTES),
        (f"logits for {seqs} sequences", seqs * model.vocab * LOGIT_BYTES),
    )
    return Overhead(parts, "estimated from the model's shape and the profiling batch")


@dataclass
class GpuFit:
    """One GPU's arithmetic: every figure in bytes; ``kv`` is the KV cache left after the profiling pass."""

    gpu: GpuMemory
    budget: int
    free: int
    weights: int
    kv: int
    overhead_detail: Overhead
    kv_per_seq: int
    problems: list[str] = field(default_factory=list)

    @property
    def overhead(self) -> int:
        return self.overhead_detail.total

    @property
    def concurrency(self) -> float:
        """Full-length sequences the KV cache holds at once (vLLM's "Maximum concurrency")."""
        return self.kv / self.kv_per_seq if self.kv_per_seq else 0.0

    def line(self) -> str:
        g = self.gpu
        return (
            f"GPU{g.index} ({g.name}): total {gib(g.total_bytes)}, used by others {gib(g.used_bytes)}, "
            f"free {gib(self.free)}; budget {gib(self.budget)} = weights {gib(self.weights)} + runtime "
            f"{self.overhead_detail.text()} + KV cache {gib(self.kv)}"
        )


@dataclass
class FitReport:
    """The gate's answer: ``ok``, per-GPU arithmetic, problems, fixes and the figures to record.

    ``concurrency`` is the required number of full-length sequences (1: vLLM's own start rule);
    ``max_concurrency`` how many fit (the smallest over the group), ``kv_tokens`` the KV cache in tokens
    as vLLM logs it (``max_concurrency x context``).
    """

    model: ModelSpec
    context: int
    concurrency: int
    tp: int
    utilization: float
    weight_dtype: str
    kv_bytes_per_token: int  # per GPU, all layers
    gpus: list[GpuFit]
    problems: list[str]
    fixes: list[str]
    max_context_fit: int | None
    batch: ProfileBatch | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def max_concurrency(self) -> float | None:
        return min((g.concurrency for g in self.gpus), default=None)

    @property
    def kv_tokens(self) -> int | None:
        c = self.max_concurrency
        return None if c is None else int(c * self.context)

    def summary(self) -> str:
        m = self.model
        verdict = "fits" if self.ok else "does NOT fit"
        need = (
            "1 (vLLM's start rule)" if self.concurrency == 1 else f"{self.concurrency} ([vllm] concurrency)"
        )
        held = ""
        if self.max_concurrency is not None:
            held = (
                f"; KV cache {self.kv_tokens:,} tokens, maximum concurrency for {self.context:,} tokens per "
                f"request {self.max_concurrency:.2f}x (required {need})"
            )
        return (
            f"{m.name} ({m.params / 1e9:.2f}B params, {self.weight_dtype}) at max_model_len {self.context}, "
            f"tensor-parallel {self.tp}, gpu_memory_utilization {self.utilization:g}: {verdict}{held}"
        )

    def properties(self) -> dict[str, object]:
        props: dict[str, object] = {
            "model": self.model.name,
            "params": self.model.params,
            "context": self.context,
            "concurrency_required": self.concurrency,
            "max_concurrency": None if self.max_concurrency is None else round(self.max_concurrency, 2),
            "kv_cache_tokens": self.kv_tokens,
            "tensor_parallel_size": self.tp,
            "weight_dtype": self.weight_dtype,
            "kv_bytes_per_token_per_gpu": self.kv_bytes_per_token,
            "max_context_fit": self.max_context_fit,
            "profile_batch_tokens": self.batch.tokens if self.batch else None,
        }
        for g in self.gpus:
            props[f"gpu{g.gpu.index}_kv_cache_bytes"] = g.kv
            props[f"gpu{g.gpu.index}_budget_bytes"] = g.budget
            props[f"gpu{g.gpu.index}_free_bytes"] = g.free
        return props

    def kv_line(self) -> str:
        return (
            f"KV cache: {self.kv_bytes_per_token / 1024:.1f} KiB/token per GPU ({self.model.attention_text()}); "
            f"model from {self.model.source}"
            + (f"; weights from {self.model.weights_source}" if self.model.weights_source else "")
        )

    def __str__(self) -> str:
        lines = [self.summary(), *(f"  {g.line()}" for g in self.gpus), f"  {self.kv_line()}"]
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  problem: {p}" for p in self.problems]
        lines += [f"  fix: {f}" for f in self.fixes]
        return "\n".join(lines)


def _shape_problems(model: ModelSpec, tp: int) -> tuple[list[str], list[str]]:
    """The tensor-parallel rules (vLLM ``ModelConfig.verify_with_parallel_config``, ``QKVParallelLinear``)."""
    problems = []
    if model.heads % tp:
        problems.append(f"tensor-parallel size {tp} does not divide the {model.heads} attention heads")
    if model.kv_heads >= tp and model.kv_heads % tp:
        problems.append(f"tensor-parallel size {tp} does not divide the {model.kv_heads} KV heads")
    if model.kv_heads < tp and tp % model.kv_heads:
        problems.append(f"tensor-parallel size {tp} is not a multiple of the {model.kv_heads} KV heads")
    if not problems:
        return [], []
    ok_tps = [
        t
        for t in (1, 2, 4, 8, 16)
        if not model.heads % t
        and (model.kv_heads % t == 0 if model.kv_heads >= t else t % model.kv_heads == 0)
    ]
    return problems, [f"use a tensor-parallel size from {ok_tps} (set [vllm] tensor_parallel_size)"]


def _weights(model: ModelSpec, quantization: str | None, tp: int) -> tuple[int, str, float]:
    """``(bytes per GPU, label, KV bytes per element under kv_cache_dtype auto)``.

    The checkpoint's safetensors bytes when read, unless ``quantization`` asks vLLM to quantize an
    unquantized checkpoint at load (e.g. ``fp8``): then parameters x that scheme's bytes.
    """
    q = (quantization or "").lower()
    if q and q not in WEIGHT_BYTES:
        raise ValueError(f"unknown weight dtype/quantization {q!r}; known: {', '.join(sorted(WEIGHT_BYTES))}")
    wdtype = q or model.dtype.lower()
    per = WEIGHT_BYTES.get(wdtype)
    kv_elem = per if per is not None and per >= 2 else 2
    if model.weights_bytes and not (q and not model.quantized):
        return model.weights_bytes // tp, f"{model.dtype} weights as stored", kv_elem
    if per is None:
        raise ValueError(
            f"unknown weight dtype/quantization {wdtype!r}; known: {', '.join(sorted(WEIGHT_BYTES))}"
        )
    return int(model.params * per / tp), wdtype, kv_elem


def _largest(lo: int, hi: int, fits: Any) -> int:
    """The largest n in [lo, hi] with ``fits(n)`` (monotone), ``lo - 1`` when none."""
    best = lo - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if fits(mid):
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return best


def check_model_fit(
    model: ModelSpec,
    gpus: Sequence[tuple[int, str, int, int]],
    *,
    context: int | None = None,
    concurrency: int | None = None,
    tp: int = 1,
    gpu_memory_utilization: float = 0.9,
    quantization: str | None = None,
    kv_cache_dtype: str | None = None,
    overhead_bytes: int | None = None,
    max_num_batched_tokens: int | None = None,
    max_num_seqs: int | None = None,
    chunked_prefill: bool | None = None,
    enforce_eager: bool = False,
    version: tuple[int, int] | None = None,
) -> FitReport:
    """Will vLLM start, and how many full-length sequences will its KV cache hold, on each GPU of the group.

    Args:
        model: the model's shape (``load_spec``).
        gpus: ``(index, name, total_bytes, used_bytes)`` for the GPUs of the group, in order; the first
            ``tp`` are used.
        context: vLLM's ``max_model_len`` (default the model's longest).
        concurrency: full-length sequences that must fit at once; ``None``: 1, vLLM's own start rule.
        tp: tensor-parallel size.
        gpu_memory_utilization: vLLM's fraction of each GPU's total memory it may take.
        quantization: vLLM's ``--quantization`` (sizes an unquantized checkpoint quantized at load).
        kv_cache_dtype: ``auto`` (the model's dtype, 2 bytes for quantized weights) or ``fp8``.
        overhead_bytes: runtime overhead per GPU (default: ``estimate_overhead``).
        max_num_batched_tokens, max_num_seqs, chunked_prefill, enforce_eager, version: vLLM's flags and
            version, which size its profiling batch (``profile_batch``).

    Example::

        >>> r7b = PRESETS["deepseek-r1-distill-qwen-7b"]
        >>> r = check_model_fit(r7b, [(0, "RTX 3080", 10 * GIB, GIB)], context=16384)
        >>> r.ok, r.gpus[0].weights > r.gpus[0].budget
        (False, True)
    """
    context = context or model.max_position_embeddings or 4096
    need = concurrency or 1
    kvd = (kv_cache_dtype or "auto").lower()
    if kvd not in KV_BYTES:
        raise ValueError(f"unknown kv_cache_dtype {kvd!r}; known: {', '.join(sorted(KV_BYTES))}")
    weights, wlabel, auto_elem = _weights(model, quantization, tp)
    kv_elem = KV_BYTES[kvd] or auto_elem
    problems, fixes = _shape_problems(model, tp)
    group = [GpuMemory(*g) for g in gpus][:tp]
    if len(group) < tp:
        problems.append(f"tensor-parallel size {tp} needs {tp} GPUs; {len(group)} given")
        fixes.append("add GPUs to the group or lower tensor_parallel_size")
    run = _Sizing(
        model, tp, need, gpu_memory_utilization, weights, kv_elem, group, overhead_bytes,
        dict(tokens=max_num_batched_tokens, seqs=max_num_seqs, chunked=chunked_prefill, version=version),
    )  # fmt: skip
    batch = run.batch(context)
    if max_num_batched_tokens is not None and not batch.chunked and max_num_batched_tokens < context:
        problems.append(
            f"--max-num-batched-tokens {max_num_batched_tokens} is smaller than max_model_len {context} "
            "without chunked prefill: vLLM refuses to start (vllm/config/scheduler.py verify_max_model_len)"
        )
        fixes.append(f"raise --max-num-batched-tokens to {context} or enable chunked prefill")
    graphs = 0 if enforce_eager else int(CUDA_GRAPHS_GIB * GIB)
    fits = [run.judge(g, context, graphs, fixes) for g in group]
    problems += [p for f in fits for p in f.problems]
    max_ctx = max(_largest(16, context, run.room), 0) if group else None
    if fits and any("KV cache" in p or "before any KV" in p for p in problems):
        fixes += _kv_fixes(max_ctx, need, wlabel, tp)
    notes = (
        []
        if overhead_bytes is not None
        else [f"profiling batch: {batch.tokens} tokens, {batch.seqs} sequences ({batch.basis})"]
    )
    if graphs:
        notes.append(
            f"CUDA graphs (~{gib(graphs)}) are captured after the KV cache is sized, outside the budget "
            "(not with --enforce-eager)"
        )
    kv_token = int(model.kv_per_sequence(1, tp, kv_elem))
    return FitReport(
        model, context, need, tp, gpu_memory_utilization, wlabel, kv_token, fits, problems,
        list(dict.fromkeys(fixes)), max_ctx, batch, notes,
    )  # fmt: skip


@dataclass(frozen=True)
class _Sizing:
    """The fixed inputs of one gate run, and the arithmetic that depends on the context."""

    model: ModelSpec
    tp: int
    need: int
    utilization: float
    weights: int
    kv_elem: float
    group: list[GpuMemory]
    overhead_bytes: int | None
    flags: dict[str, Any]

    def batch(self, ctx: int) -> ProfileBatch:
        first = self.group[0] if self.group else GpuMemory(0, "", 0, 0)
        return profile_batch(ctx, first.total_bytes, first.name, **self.flags)

    def overhead(self, ctx: int) -> Overhead:
        if self.overhead_bytes is not None:
            return Overhead((("runtime", self.overhead_bytes),), "[vllm] runtime_overhead_gib")
        return estimate_overhead(self.model, self.tp, self.batch(ctx))

    def room(self, ctx: int) -> bool:
        """Whether ``need`` sequences of ``ctx`` tokens fit on every GPU (the profiling batch follows ctx)."""
        left = (
            min(int(self.utilization * g.total_bytes) for g in self.group)
            - self.weights
            - self.overhead(ctx).total
        )
        return left >= self.need * self.model.kv_per_sequence(ctx, self.tp, self.kv_elem)

    def judge(self, g: GpuMemory, context: int, graphs: int, fixes: list[str]) -> GpuFit:
        """One GPU against vLLM's start rules; the fix for a GPU short of free memory goes to ``fixes``."""
        detail, need = self.overhead(context), self.need
        budget, free = int(self.utilization * g.total_bytes), g.total_bytes - g.used_bytes
        kv_seq = self.model.kv_per_sequence(context, self.tp, self.kv_elem)
        fit = GpuFit(
            g, budget, free, self.weights, max(0, budget - self.weights - detail.total), detail, kv_seq
        )
        name = f"GPU{g.index} ({g.name})"
        if free < budget:
            fit.problems.append(
                f"{name}: free {gib(free)} < gpu_memory_utilization {self.utilization:g} x total "
                f"{gib(g.total_bytes)} = {gib(budget)}: vLLM refuses to start ({gib(g.used_bytes)} used by "
                "other processes, e.g. a display)"
            )
            usable = int(((free - graphs) / g.total_bytes) * 100) / 100
            fixes.append(
                f"GPU{g.index}: lower --gpu-memory-utilization to {usable:.2f} or below (leaves room for CUDA "
                "graphs), or free it (move the display to another GPU or the iGPU; stop other CUDA processes)"
            )
        if self.weights + detail.total > budget:
            fit.problems.append(
                f"{name}: weights {gib(self.weights)} + runtime {gib(detail.total)} exceed the budget "
                f"{gib(budget)} before any KV cache"
            )
        elif fit.concurrency < need:
            what = (
                f"one sequence of max_model_len {context} tokens needs {gib(kv_seq)} of KV cache"
                if need == 1
                else f"{need} sequences of {context} tokens ([vllm] concurrency) need {gib(need * kv_seq)}"
            )
            tail = " (vLLM refuses to start)" if need == 1 else ""
            fit.problems.append(
                f"{name}: {what}; {gib(fit.kv)} of KV cache is left after weights and the profiling pass, "
                f"{fit.concurrency:.2f}x{tail}"
            )
        return fit


def _kv_fixes(max_ctx: int | None, need: int, wlabel: str, tp: int) -> list[str]:
    fixes = []
    if max_ctx is not None and max_ctx >= 256:
        what = "what fits" if need == 1 else f"what fits {need} sequences"
        fixes.append(f"lower --max-model-len to {max_ctx // 256 * 256} ({what})")
    if wlabel in ("bf16", "bfloat16", "fp16", "float16", "auto") or "16 weights" in wlabel:
        fixes.append(
            "use a quantized checkpoint (fp8 halves the weights, AWQ/GPTQ 4-bit quarters them) "
            "and/or --kv-cache-dtype fp8"
        )
    if tp * 2 <= 8:
        fixes.append(f"spread it over more GPUs: tensor-parallel {tp * 2} halves weights and KV per GPU")
    return fixes
