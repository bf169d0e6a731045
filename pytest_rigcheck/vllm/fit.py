"""The model-fit gate: will this model, at this context and concurrency, fit the GPUs of its group?

Pure arithmetic, no server and no GPU: feed it GPU memory from the profile, an option, or NVML
(``rig_gpus``). vLLM's own rules it mirrors (vLLM ``vllm/worker/gpu_worker.py``,
``vllm/config/parallel.py``, ``vllm/model_executor/layers/linear.py``):

- at start-up vLLM wants ``gpu_memory_utilization x total`` free on every GPU of the group, and refuses
  to start otherwise ("Free memory on device ... is less than desired GPU memory utilization");
- inside that budget go the weights (sharded over the tensor-parallel group), the runtime overhead
  (CUDA context, activation peak, CUDA graphs) and the KV cache; at least ``max_model_len`` tokens per
  sequence must fit, or it refuses ("larger than the maximum number of tokens that can be stored in KV
  cache");
- the tensor-parallel size divides the attention heads, and divides the KV heads (or, when it exceeds
  them, is a multiple of them: KV heads are then replicated, one per GPU).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

GIB = 2**30
DEFAULT_OVERHEAD_GIB = 1.0  # when the model's shape is unknown: vLLM logs 0.5-1.5 GiB at 7-8B

# Runtime overhead, estimated the way vLLM's start-up profiling meets it (vllm/engine/arg_utils.py
# default max_num_batched_tokens / max_num_seqs for the OpenAI server: 8192 / 1024 on GPUs of 70 GiB or
# more, else 2048 / 256; the profile run pushes that many tokens through the model and samples that many
# sequences; CUDA graphs are captured after it unless --enforce-eager).
NON_TORCH_GIB = 0.5  # CUDA context, cuBLAS workspace
NCCL_GIB = 0.25  # NCCL and custom all-reduce buffers, tensor-parallel only
CUDA_GRAPHS_GIB = 0.25
ACTIVATION_BYTES = 2  # bf16/fp16 activations, also under weight-only quantization

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


class GpuMem(NamedTuple):
    """One GPU as the gate needs it; ``rig_gpus`` entries and ``GpuMemory`` convert to this."""

    index: int  # type: ignore[assignment]  # shadows tuple.index: the name the issue and NVML use
    name: str
    total_bytes: int
    used_bytes: int


@dataclass(frozen=True)
class ModelSpec:
    """A model's size and attention shape.

    Args:
        name: for messages.
        params: parameter count.
        layers, heads, kv_heads, head_dim: attention shape (KV cache per token is
            2 x layers x kv_heads x head_dim x bytes).
        dtype: weight dtype or quantization (a key of ``WEIGHT_BYTES``).
        max_position_embeddings: the model's longest context, vLLM's default ``max_model_len``.
        source: where the spec came from (preset or config.json path).
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


PRESETS: dict[str, ModelSpec] = {
    p.name: p
    for p in (
        # deepseek-ai/DeepSeek-R1-Distill-Qwen-7B config.json (Qwen2 architecture); the seed's model.
        _preset(
            "deepseek-r1-distill-qwen-7b",
            vocab=152064,
            hidden=3584,
            layers=28,
            heads=28,
            kv=4,
            inter=18944,
            tied=False,
            qkv_bias=True,
            max_pos=131072,
        ),
        _preset(
            "qwen2.5-7b-instruct",
            vocab=152064,
            hidden=3584,
            layers=28,
            heads=28,
            kv=4,
            inter=18944,
            tied=False,
            qkv_bias=True,
            max_pos=32768,
        ),
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


def spec_from_config(config: dict[str, Any], name: str, source: str = "config.json") -> ModelSpec:
    """A ``ModelSpec`` from a Hugging Face ``config.json`` (Llama, Qwen2/3, Mistral, Gemma and alike).

    Raises ``ValueError`` naming the missing key.
    """
    cfg = config.get("text_config", config)  # multimodal wrappers keep the LM's shape here

    def need(*keys: str) -> int:
        for k in keys:
            if isinstance(cfg.get(k), int):
                return int(cfg[k])
        raise ValueError(f"{source}: no {' or '.join(keys)} (not a decoder-only transformer config?)")

    hidden = need("hidden_size", "d_model", "n_embd")
    layers = need("num_hidden_layers", "n_layer", "num_layers")
    heads = need("num_attention_heads", "n_head")
    kv = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    inter = (
        need("intermediate_size", "ffn_dim")
        if "moe_intermediate_size" not in cfg
        else int(cfg["moe_intermediate_size"])
    )
    experts = int(cfg.get("num_local_experts") or cfg.get("num_experts") or cfg.get("n_routed_experts") or 1)
    params = dense_params(
        need("vocab_size"),
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
    if isinstance(q, dict) and q:
        method = str(q.get("quant_method", "")).lower()
        bits = q.get("bits") or q.get("weight_bits")
        dtype = "int4" if bits == 4 else "int8" if bits == 8 else method or dtype
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
        need("vocab_size"),
    )


def load_spec(model: str | None, config_path: str | None = None, preset: str | None = None) -> ModelSpec:
    """Resolve the model to a spec: an explicit config.json, a preset, a local model folder, or a preset
    matching the model's name. ``LookupError`` says what to set when nothing matches."""
    if config_path:
        p = Path(config_path)
        if p.is_dir():
            p = p / "config.json"
        return spec_from_config(json.loads(p.read_text(encoding="utf-8")), model or p.parent.name, str(p))
    if preset:
        spec = find_preset(preset)
        if spec is None:
            raise LookupError(f"no model preset {preset!r}; presets: {', '.join(sorted(PRESETS))}")
        return spec
    if model:
        p = Path(model)
        if (p / "config.json").is_file():
            return spec_from_config(
                json.loads((p / "config.json").read_text(encoding="utf-8")), model, str(p / "config.json")
            )
        spec = find_preset(model)
        if spec is not None:
            return spec
    raise LookupError(
        f"cannot size model {model!r}: set [vllm] model_config (a config.json) or model_preset "
        f"(one of {', '.join(sorted(PRESETS))})"
    )


def gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


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


def estimate_overhead(
    model: ModelSpec,
    tp: int,
    gpu_total_bytes: int,
    *,
    max_num_batched_tokens: int | None = None,
    max_num_seqs: int | None = None,
    enforce_eager: bool = False,
) -> Overhead:
    """vLLM's runtime memory per GPU: non-torch memory, the activation peak of its profiling pass, the
    sampler's logits, CUDA graphs. A flat ``DEFAULT_OVERHEAD_GIB`` when the model's shape is unknown.

    Example::

        >>> o = estimate_overhead(PRESETS["deepseek-r1-distill-qwen-7b"], 1, 10 * GIB)
        >>> round(o.total / GIB, 2)
        1.18
    """
    if not (model.hidden and model.intermediate and model.vocab):
        return Overhead((("runtime", int(DEFAULT_OVERHEAD_GIB * GIB)),), "flat: the model's shape is unknown")
    big = gpu_total_bytes >= 70 * GIB
    tokens = max_num_batched_tokens or (8192 if big else 2048)
    seqs = max_num_seqs or (1024 if big else 256)
    per_token = (
        3 * model.intermediate // tp  # gate/up projection and its activation
        + (model.heads + 2 * model.kv_heads) * model.head_dim // tp  # q, k, v
        + 4 * model.hidden  # residual, norm and attention outputs
    )
    parts = [
        ("CUDA context", int((NON_TORCH_GIB + (NCCL_GIB if tp > 1 else 0)) * GIB)),
        (f"activations for {tokens} tokens", tokens * per_token * ACTIVATION_BYTES),
        (f"logits for {seqs} sequences", seqs * model.vocab * 4),
        ("CUDA graphs", 0 if enforce_eager else int(CUDA_GRAPHS_GIB * GIB)),
    ]
    return Overhead(tuple(parts), "estimated from the model's shape and vLLM's defaults")


@dataclass
class GpuFit:
    """One GPU's arithmetic: every figure in bytes."""

    gpu: GpuMem
    budget: int
    free: int
    weights: int
    kv: int
    overhead_detail: Overhead
    problems: list[str] = field(default_factory=list)

    @property
    def overhead(self) -> int:
        return self.overhead_detail.total

    @property
    def need(self) -> int:
        return self.weights + self.kv + self.overhead

    def line(self) -> str:
        g = self.gpu
        return (
            f"GPU{g.index} ({g.name}): total {gib(g.total_bytes)}, used by others {gib(g.used_bytes)}, "
            f"free {gib(self.free)}; budget {gib(self.budget)}; need {gib(self.need)} = weights "
            f"{gib(self.weights)} + KV cache {gib(self.kv)} + runtime overhead {self.overhead_detail.text()}"
        )


@dataclass
class FitReport:
    """The gate's answer: ``ok``, per-GPU arithmetic, problems, fixes and the figures to record."""

    model: ModelSpec
    context: int
    concurrency: int
    tp: int
    utilization: float
    weight_dtype: str
    kv_bytes_per_token: int  # per GPU
    gpus: list[GpuFit]
    problems: list[str]
    fixes: list[str]
    max_context_fit: int | None

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        m = self.model
        verdict = "fits" if self.ok else "does NOT fit"
        return (
            f"{m.name} ({m.params / 1e9:.2f}B params, {self.weight_dtype}) at context {self.context} x "
            f"{self.concurrency} sequences, tensor-parallel {self.tp}, gpu_memory_utilization "
            f"{self.utilization:g}: {verdict}"
        )

    def properties(self) -> dict[str, object]:
        props: dict[str, object] = {
            "model": self.model.name,
            "params": self.model.params,
            "context": self.context,
            "concurrency": self.concurrency,
            "tensor_parallel_size": self.tp,
            "weight_dtype": self.weight_dtype,
            "kv_bytes_per_token_per_gpu": self.kv_bytes_per_token,
            "max_context_fit": self.max_context_fit,
        }
        for g in self.gpus:
            props[f"gpu{g.gpu.index}_need_bytes"] = g.need
            props[f"gpu{g.gpu.index}_budget_bytes"] = g.budget
            props[f"gpu{g.gpu.index}_free_bytes"] = g.free
        return props

    def __str__(self) -> str:
        lines = [self.summary()]
        lines += [f"  {g.line()}" for g in self.gpus]
        lines.append(
            f"  KV cache: {self.kv_bytes_per_token / 1024:.1f} KiB/token per GPU "
            f"({self.model.layers} layers x 2 x {self.model.kv_heads} KV heads / TP x {self.model.head_dim} "
            f"head dim); model from {self.model.source}"
        )
        lines += [f"  problem: {p}" for p in self.problems]
        lines += [f"  fix: {f}" for f in self.fixes]
        return "\n".join(lines)


def check_model_fit(
    model: ModelSpec,
    gpus: Sequence[tuple[int, str, int, int]],
    *,
    context: int | None = None,
    concurrency: int = 1,
    tp: int = 1,
    gpu_memory_utilization: float = 0.9,
    quantization: str | None = None,
    kv_cache_dtype: str | None = None,
    overhead_bytes: int | None = None,
    max_num_batched_tokens: int | None = None,
    max_num_seqs: int | None = None,
    enforce_eager: bool = False,
) -> FitReport:
    """Weights + KV cache + runtime overhead against each GPU of the tensor-parallel group.

    Args:
        model: the model's shape (``load_spec``).
        gpus: ``(index, name, total_bytes, used_bytes)`` for the GPUs of the group, in order; the first
            ``tp`` are used.
        context: tokens per sequence (vLLM's ``max_model_len``; default the model's longest).
        concurrency: sequences that must be in the KV cache at once at full context.
        tp: tensor-parallel size.
        gpu_memory_utilization: vLLM's fraction of each GPU's total memory it may take.
        quantization: weight dtype or scheme, overriding the model's (``fp8``, ``awq``...).
        kv_cache_dtype: ``auto`` (= weight dtype, 2 bytes for quantized weights) or ``fp8``.
        overhead_bytes: runtime overhead per GPU (default: ``estimate_overhead``).
        max_num_batched_tokens, max_num_seqs, enforce_eager: vLLM's options of those names, which size
            the overhead estimate (defaults: vLLM's).

    Example::

        >>> r7b = PRESETS["deepseek-r1-distill-qwen-7b"]
        >>> r = check_model_fit(r7b, [(0, "RTX 3080", 10 * GIB, GIB)], context=16384)
        >>> r.ok, r.gpus[0].weights > r.gpus[0].budget
        (False, True)
    """
    problems: list[str] = []
    fixes: list[str] = []
    context = context or model.max_position_embeddings or 4096
    wdtype = (quantization or model.dtype).lower()
    if wdtype not in WEIGHT_BYTES:
        raise ValueError(
            f"unknown weight dtype/quantization {wdtype!r}; known: {', '.join(sorted(WEIGHT_BYTES))}"
        )
    kvd = (kv_cache_dtype or "auto").lower()
    if kvd not in KV_BYTES:
        raise ValueError(f"unknown kv_cache_dtype {kvd!r}; known: {', '.join(sorted(KV_BYTES))}")
    kv_elem = KV_BYTES[kvd] or (WEIGHT_BYTES[wdtype] if WEIGHT_BYTES[wdtype] >= 2 else 2)

    # Tensor-parallel shape rules (vLLM ModelConfig.verify_with_parallel_config, QKVParallelLinear).
    if model.heads % tp:
        problems.append(f"tensor-parallel size {tp} does not divide the {model.heads} attention heads")
    if model.kv_heads >= tp and model.kv_heads % tp:
        problems.append(f"tensor-parallel size {tp} does not divide the {model.kv_heads} KV heads")
    if model.kv_heads < tp and tp % model.kv_heads:
        problems.append(f"tensor-parallel size {tp} is not a multiple of the {model.kv_heads} KV heads")
    if problems:
        ok_tps = [
            t
            for t in (1, 2, 4, 8, 16)
            if not model.heads % t
            and (model.kv_heads % t == 0 if model.kv_heads >= t else t % model.kv_heads == 0)
        ]
        fixes.append(f"use a tensor-parallel size from {ok_tps} (set [vllm] tensor_parallel_size)")
    group = [GpuMem(*g) for g in gpus][:tp]
    if len(group) < tp:
        problems.append(f"tensor-parallel size {tp} needs {tp} GPUs; {len(group)} given")
        fixes.append("add GPUs to the group or lower tensor_parallel_size")

    kv_heads_per_gpu = max(1, model.kv_heads // tp)
    kv_per_token = int(2 * model.layers * kv_heads_per_gpu * model.head_dim * kv_elem)
    weights = int(model.params * WEIGHT_BYTES[wdtype] / tp)
    kv = kv_per_token * context * concurrency
    fits: list[GpuFit] = []
    max_ctx: int | None = None
    if overhead_bytes is not None:
        detail = Overhead((("runtime", overhead_bytes),), "[vllm] runtime_overhead_gib")
    else:
        detail = estimate_overhead(
            model,
            tp,
            group[0].total_bytes if group else 0,
            max_num_batched_tokens=max_num_batched_tokens,
            max_num_seqs=max_num_seqs,
            enforce_eager=enforce_eager,
        )
    overhead = detail.total
    for g in group:
        budget = int(gpu_memory_utilization * g.total_bytes)
        free = g.total_bytes - g.used_bytes
        fit = GpuFit(g, budget, free, weights, kv, detail)
        fits.append(fit)
        if free < budget:
            fit.problems.append(
                f"GPU{g.index} ({g.name}): free {gib(free)} < gpu_memory_utilization "
                f"{gpu_memory_utilization:g} x total {gib(g.total_bytes)} = {gib(budget)}: "
                "vLLM refuses to start "
                f"({gib(g.used_bytes)} used by "
                f"other processes, e.g. a display)"
            )
            usable = int((free / g.total_bytes) * 100) / 100
            fixes.append(
                f"GPU{g.index}: lower --gpu-memory-utilization to {usable:.2f} or below, or free it "
                f"(move the display to another GPU or the iGPU; stop other CUDA processes)"
            )
        room = min(budget, free) - weights - overhead
        ctx_here = max(0, room // (kv_per_token * concurrency)) if room > 0 else 0
        max_ctx = ctx_here if max_ctx is None else min(max_ctx, ctx_here)
        if weights + overhead > min(budget, free):
            fit.problems.append(
                f"GPU{g.index} ({g.name}): weights {gib(weights)} + overhead {gib(overhead)} "
                f"exceed the budget {gib(min(budget, free))} before any KV cache"
            )
        elif fit.need > budget:
            fit.problems.append(
                f"GPU{g.index} ({g.name}): need {gib(fit.need)} > budget {gib(budget)}: the KV "
                f"cache for {context} tokens x {concurrency} ({gib(kv)}) does not fit the "
                f"{gib(room)} left after weights and overhead"
            )
        problems += fit.problems
    if max_ctx is not None and max_ctx < context and group:
        if max_ctx >= 256:
            fixes.append(
                f"lower --max-model-len to {max_ctx // 256 * 256} (what fits at concurrency {concurrency}), "
                "or lower the concurrency"
            )
        if wdtype in ("bf16", "bfloat16", "fp16", "float16", "auto"):
            fixes.append(
                "use a quantized checkpoint (fp8 halves the weights, AWQ/GPTQ 4-bit quarters them) "
                "and/or --kv-cache-dtype fp8"
            )
        if tp * 2 <= 8:
            fixes.append(f"spread it over more GPUs: tensor-parallel {tp * 2} halves weights and KV per GPU")
    return FitReport(
        model,
        context,
        concurrency,
        tp,
        gpu_memory_utilization,
        wdtype,
        kv_per_token,
        fits,
        problems,
        list(dict.fromkeys(fixes)),
        max_ctx,
    )
