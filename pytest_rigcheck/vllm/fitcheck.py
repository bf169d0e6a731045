"""The model-fit gate as checks: resolve the model and the GPU group from the settings and the rig,
run ``fit.check_model_fit``, and return ``Verdict``s."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..verdict import Verdict, failed, not_applicable, passed, unreadable
from .fit import ModelSpec, check_model_fit, load_spec
from .settings import GpuMemory, VllmSettings

NO_MODEL = (
    "model-fit gate: no [vllm] model (or model_config / model_preset) in the rig profile: nothing to size"
)


def flag_value(flags: Sequence[str], name: str) -> str | None:
    """The value of ``--name VALUE`` or ``--name=VALUE`` in a vLLM command line, the last one winning."""
    found = None
    for i, f in enumerate(flags):
        if f == name and i + 1 < len(flags):
            found = flags[i + 1]
        elif f.startswith(name + "="):
            found = f.split("=", 1)[1]
    return found


def _int_flag(flags: Sequence[str], name: str) -> int | None:
    value = flag_value(flags, name)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None  # vLLM itself will refuse it; the gate keeps vLLM's default


def resolve_model(s: VllmSettings) -> ModelSpec | Verdict:
    """The model's spec, not-applicable without a model, unreadable when it cannot be sized."""
    if not (s.model or s.model_config or s.model_preset):
        return not_applicable(NO_MODEL)
    try:
        return load_spec(s.model, s.model_config, s.model_preset)
    except (LookupError, OSError, ValueError) as exc:
        return unreadable(
            f"model-fit gate: {exc}",
            fix=["set [vllm] model_config to the model's config.json, or model_preset"],
        )


def tp_shape(s: VllmSettings) -> Verdict:
    """The tensor-parallel size divides the model's attention and KV heads (no GPU figures needed)."""
    spec = resolve_model(s)
    if isinstance(spec, Verdict):
        return spec
    report = check_model_fit(spec, [], tp=s.tensor_parallel_size, context=s.max_model_len or 1)
    shape = [p for p in report.problems if "heads" in p]
    props = {
        "model": spec.name,
        "heads": spec.heads,
        "kv_heads": spec.kv_heads,
        "tensor_parallel_size": report.tp,
    }
    if shape:
        return failed(
            f"{spec.name}: " + "; ".join(shape),
            measured=f"{spec.heads} attention heads, {spec.kv_heads} KV heads (from {spec.source})",
            expected=f"divisible by tensor_parallel_size {report.tp} ([vllm] in {s.where})",
            fix=[f for f in report.fixes if "tensor-parallel size from" in f],
            properties=props,
        )
    return passed(
        f"{spec.name}: tensor-parallel {report.tp} divides {spec.heads} attention "
        f"and {spec.kv_heads} KV heads",
        properties=props,
    )


def group_of(
    gpus: Sequence[GpuMemory], tp: int, tp_groups: Sequence[Sequence[int]] | None
) -> list[GpuMemory]:
    """The GPUs of the served group: the first ``rig.tp_groups`` entry, else the first ``tp`` by index."""
    by_index = {g.index: g for g in gpus}
    if tp_groups:
        return [by_index[i] for i in tp_groups[0] if i in by_index]
    return sorted(gpus, key=lambda g: g.index)[:tp]


def memory_fit(
    s: VllmSettings,
    gpus: Sequence[GpuMemory],
    gpu_source: str,
    tp_groups: Sequence[Sequence[int]] | None = None,
) -> Verdict:
    """Weights + KV cache + overhead against each GPU of the group at ``gpu_memory_utilization``."""
    spec = resolve_model(s)
    if isinstance(spec, Verdict):
        return spec
    if not gpus:
        return unreadable(
            f"model-fit gate for {spec.name}: no GPU memory figures",
            fix=[
                "give --rig-vllm-gpu-memory INDEX:NAME:TOTAL:USED per GPU, or [vllm.gpus] in the "
                "profile, or install pytest-rigcheck[nvml] so NVML reports them"
            ],
        )
    group = group_of(gpus, s.tensor_parallel_size, tp_groups)
    try:
        report = check_model_fit(
            spec,
            [tuple(g.__dict__.values()) for g in group],
            context=s.max_model_len,
            concurrency=s.concurrency,
            tp=s.tensor_parallel_size,
            gpu_memory_utilization=s.gpu_memory_utilization or 0.9,
            quantization=s.quantization,
            kv_cache_dtype=s.kv_cache_dtype,
            overhead_bytes=None if s.runtime_overhead_gib is None else int(s.runtime_overhead_gib * 2**30),
            max_num_batched_tokens=_int_flag(s.flags, "--max-num-batched-tokens"),
            max_num_seqs=_int_flag(s.flags, "--max-num-seqs"),
            enforce_eager="--enforce-eager" in s.flags,
        )
    except ValueError as exc:
        return unreadable(f"model-fit gate for {spec.name}: {exc}")
    props: dict[str, Any] = {**report.properties(), "gpu_memory_source": gpu_source}
    lines = str(report).splitlines()
    body = dict(
        measured="; ".join(g.line() for g in report.gpus),
        expected=f"need <= budget on every GPU of the group (GPU memory from {gpu_source}; settings from "
        f"[vllm] in {s.where})",
        notes=[ln.strip() for ln in lines[1:] if ln.strip().startswith("KV cache")],
        properties=props,
    )
    if not report.ok:
        return failed(
            report.summary() + "\n  " + "\n  ".join(f"problem: {p}" for p in report.problems),
            fix=report.fixes,
            **body,
        )
    return passed(report.summary(), **body)
