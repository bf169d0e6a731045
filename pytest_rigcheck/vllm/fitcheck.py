"""The model-fit gate as checks: resolve the model and the GPU group from the settings and the rig,
run ``fit.check_model_fit``, and return ``Verdict``s."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from ..verdict import Status, Verdict, failed, not_applicable, passed, unreadable, warned
from .fit import FitReport, ModelSpec, check_model_fit, load_spec, parse_version
from .settings import GpuMemory, VllmSettings

NO_MODEL = (
    "model-fit gate: no [vllm] model (or model_config / model_preset) in the rig profile: nothing to size"
)


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


def rig_memory_fit(
    s: VllmSettings,
    rig_gpus: int,
    tp_groups: Sequence[Sequence[int]] | None,
    nvml: Callable[[], tuple[Sequence[GpuMemory], str]],
    rig: str = "the rig",
) -> Verdict:
    """The model-fit gate on a rig: each GPU of the served group sized from its own figures, given
    (``[vllm.gpus]`` or ``--rig-vllm-gpu-memory``, already matched to the rig's GPUs) else NVML's.

    The group is the first ``[rig] tp_groups`` group, else GPUs 0 to ``tensor_parallel_size - 1`` (the
    devices vLLM takes without CUDA_VISIBLE_DEVICES) of those the rig has. One GPU's figures are never
    used for another: a GPU of the group with no figures given and none from NVML makes the gate
    UNREADABLE, naming it. On a machine with no GPU on its PCIe bus (``rig_gpus`` 0, planning a fit for
    GPUs not in it) the figures given are the group, taken as given, and the verdict says so.

    Args:
        rig_gpus: how many GPUs the rig shows on its PCIe bus.
        nvml: called only when a GPU of the group has no figures given: NVML's figures and where they
            came from (``"NVML (rig)"``), or ``([], why there are none)``.
        rig: the rig's name, for messages.
    """
    spec = resolve_model(s)
    if isinstance(spec, Verdict):
        return spec
    tp = s.tensor_parallel_size
    given = {g.index: g for g in s.gpus}
    given_src = s.gpus_source or f"[vllm.gpus] or --rig-vllm-gpu-memory ({s.where})"
    if rig_gpus == 0:
        if not given:
            return memory_fit(s, [], "none")
        group = sorted(given)[:tp]
        gpus = ", ".join(f"GPU{i}" for i in sorted(given))
        if len(group) < tp:
            return unreadable(
                f"model-fit gate for {spec.name}: tensor-parallel size {tp} needs the memory of {tp} GPUs; "
                f"{given_src} gives {len(given)} ({gpus}) and {rig} shows no GPU on its PCIe bus for NVML "
                "to read",
                measured=f"figures for {len(given)} GPU(s): {gpus}",
                expected=f"figures for {tp} GPUs (tensor_parallel_size {tp}, [vllm] in {s.where})",
                measured_value=len(given),
                expected_value=tp,
                unit="GPUs",
                fix=[f"give each of the {tp} GPUs' figures in {given_src}, or lower tensor_parallel_size"],
            )
        taken = f"{given_src}, taken as given: {rig} shows no GPU on its PCIe bus to match them to"
        verdict = memory_fit(s, [given[i] for i in group], taken)
        if verdict.status in (Status.PASS, Status.FAIL):  # the figures are the user's, not this machine's
            verdict.summary += f" (GPU memory from {taken})"
        return verdict
    group = list(tp_groups[0]) if tp_groups else list(range(min(tp, rig_gpus)))
    figures: list[GpuMemory] = []
    by_source: dict[str, list[int]] = {}
    read: dict[int, GpuMemory] | None = None
    nvml_src = ""
    missing: list[int] = []
    for i in group:
        if i not in given and read is None:
            got, nvml_src = nvml()
            read = {g.index: g for g in got}
        g = given.get(i) or (read or {}).get(i)
        if g is None:
            missing.append(i)
            continue
        figures.append(g)
        by_source.setdefault(given_src if i in given else nvml_src, []).append(i)
    unused = sorted(set(given) - set(group))
    notes = (
        [f"{given_src} gives GPU{', GPU'.join(map(str, unused))}, not in the group {group}: not used"]
        if unused
        else []
    )
    if missing:
        names = ", ".join(f"GPU{i}" for i in missing)
        return unreadable(
            f"model-fit gate for {spec.name}: no GPU memory figures for {names} of the group {group} on {rig} "
            f"(given: {', '.join(f'GPU{i}' for i in sorted(given)) or 'none'}; NVML: {nvml_src or 'not read'})",
            measured=f"figures for {len(figures)} of the group's {len(group)} GPUs",
            expected=f"figures for every GPU of the group {group}, given or from NVML",
            measured_value=len(figures),
            expected_value=len(group),
            unit="GPUs",
            target={"gpus": [f"GPU{i}" for i in missing]},
            notes=notes,
            fix=[
                f"give --rig-vllm-gpu-memory INDEX:NAME:TOTAL:USED for {names} (or [vllm.gpus] in the "
                "profile), or install pytest-rigcheck[nvml] so NVML reports them"
            ],
        )
    if len(by_source) == 1:
        source = next(iter(by_source))
    else:
        source = ", ".join(f"{src} for {', '.join(f'GPU{i}' for i in ids)}" for src, ids in by_source.items())
    return memory_fit(s, figures, source, tp_groups, notes)


def fit_report(s: VllmSettings, spec: ModelSpec, group: Sequence[GpuMemory]) -> FitReport:
    """``check_model_fit`` with the settings' values and flags. ``ValueError`` on an unknown dtype."""
    return check_model_fit(
        spec,
        group,
        context=s.max_model_len or s.flag("--max-model-len"),
        concurrency=s.fit_concurrency,
        tp=s.tensor_parallel_size,
        gpu_memory_utilization=s.gpu_memory_utilization or s.flag("--gpu-memory-utilization") or 0.9,
        quantization=s.quantization or s.flag("--quantization"),
        kv_cache_dtype=s.kv_cache_dtype or s.flag("--kv-cache-dtype"),
        overhead_bytes=None if s.runtime_overhead_gib is None else int(s.runtime_overhead_gib * 2**30),
        max_num_batched_tokens=s.flag("--max-num-batched-tokens"),
        max_num_seqs=s.flag("--max-num-seqs"),
        chunked_prefill=s.flag("--enable-chunked-prefill"),
        enforce_eager=bool(s.flag("--enforce-eager")),
        version=parse_version(s.expect_version),
    )


def memory_fit(
    s: VllmSettings,
    gpus: Sequence[GpuMemory],
    gpu_source: str,
    tp_groups: Sequence[Sequence[int]] | None = None,
    notes: Sequence[str] = (),
) -> Verdict:
    """vLLM's start rule on each GPU of the group: weights + runtime within ``gpu_memory_utilization``,
    and one sequence of ``max_model_len`` (or ``[vllm] concurrency`` of them) in the KV cache left.
    ``notes`` go on the verdict after the report's own."""
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
    try:
        report = fit_report(s, spec, group_of(gpus, s.tensor_parallel_size, tp_groups))
    except ValueError as exc:
        return unreadable(f"model-fit gate for {spec.name}: {exc}")
    need = (
        "1 (vLLM starts when one fits)"
        if s.fit_concurrency is None
        else f"{s.fit_concurrency} ([vllm] concurrency)"
    )
    body: dict[str, Any] = dict(
        measured=f"{report.max_concurrency or 0:.2f}x sequences of {report.context} tokens; "
        + "; ".join(g.line() for g in report.gpus),
        expected=f"at least {need} full-length sequence(s) in the KV cache on every GPU of the group (GPU "
        f"memory from {gpu_source}; settings from [vllm] in {s.where})",
        measured_value=round(report.max_concurrency or 0, 2),
        expected_value=report.concurrency,
        unit="sequences",
        target={"gpus": [f"GPU{g.gpu.index} ({g.gpu.name})" for g in report.gpus]},
        notes=[report.kv_line(), *report.notes, *notes],
        properties={**report.properties(), "gpu_memory_source": gpu_source},
    )
    if not report.ok:
        return failed(
            report.summary() + "\n  " + "\n  ".join(f"problem: {p}" for p in report.problems),
            fix=report.fixes,
            **body,
        )
    return passed(report.summary(), **body)


# "GPU KV cache size: 32,360 tokens" (V1), "# GPU blocks: 2022" (V0, 16-token blocks), and
# "Maximum concurrency for 20000 tokens per request: 1.56x" (both): vllm/v1/core/kv_cache_utils.py,
# vllm/executor/executor_base.py (0.6).
_KV_TOKENS = re.compile(r"GPU KV cache size:\s*([\d,]+)\s*tokens")
_GPU_BLOCKS = re.compile(r"# GPU blocks:\s*(\d+)")
_CONCURRENCY = re.compile(r"Maximum concurrency for\s*([\d,]+)\s*tokens per request:\s*([\d.]+)x")
DISAGREE = 0.25  # relative difference in KV cache tokens that is flagged


def parse_kv_log(text: str) -> dict[str, float] | None:
    """vLLM's KV cache figures from its start-up log: ``kv_tokens``, ``context``, ``max_concurrency``
    (the last ones logged); ``None`` when the log has none."""
    out: dict[str, float] = {}
    for m in _GPU_BLOCKS.finditer(text):
        out["kv_tokens"] = int(m.group(1)) * 16  # V0's default block size
    for m in _KV_TOKENS.finditer(text):
        out["kv_tokens"] = int(m.group(1).replace(",", ""))
    for m in _CONCURRENCY.finditer(text):
        out["context"], out["max_concurrency"] = int(m.group(1).replace(",", "")), float(m.group(2))
    if "kv_tokens" not in out and "max_concurrency" in out:
        out["kv_tokens"] = out["max_concurrency"] * out["context"]
    return out or None


def compare_with_log(report: FitReport, log_text: str, log_name: str = "the vLLM log") -> Verdict:
    """The gate's KV cache estimate against what the started server logged; WARN past ``DISAGREE``."""
    logged = parse_kv_log(log_text)
    if logged is None or report.kv_tokens is None:
        return not_applicable(f"{log_name} has no KV cache figures (GPU KV cache size / # GPU blocks)")
    est, real = report.kv_tokens, int(logged["kv_tokens"])
    diff = abs(est - real) / max(real, 1)
    props = {"kv_tokens_estimated": est, "kv_tokens_logged": real, "kv_estimate_error": round(diff, 3)}
    body: dict[str, Any] = dict(
        measured=f"{real:,} tokens in the KV cache ({log_name})",
        expected=f"{est:,} tokens, the model-fit estimate, within {DISAGREE:.0%}",
        measured_value=real,
        expected_value=est,
        unit="tokens",
        properties=props,
    )
    text = (
        f"{report.model.name}: vLLM logged a KV cache of {real:,} tokens "
        f"({logged.get('max_concurrency', real / report.context):.2f}x at {report.context}); the model-fit "
        f"gate estimated {est:,} ({report.max_concurrency:.2f}x)"
    )
    if diff > DISAGREE:
        return warned(
            f"{text}: {diff:.0%} apart, so the gate's verdicts for this rig are unreliable",
            fix=[
                "set [vllm] runtime_overhead_gib to what vLLM used beside weights and KV cache (its log: "
                "'Memory profiling takes ...', 'Available KV cache memory'), and [vllm] expect_version"
            ],
            **body,
        )
    return passed(f"{text}: within {DISAGREE:.0%}", **body)


def log_agreement(s: VllmSettings, gpus: Sequence[GpuMemory], log_text: str, log_name: str) -> Verdict:
    """The gate's estimate for the served settings against the KV cache the started server logged."""
    spec = resolve_model(s)
    if isinstance(spec, Verdict):
        return spec
    if not gpus:
        return not_applicable(f"no GPU memory figures to estimate {spec.name}'s KV cache with")
    try:
        report = fit_report(s, spec, group_of(gpus, s.tensor_parallel_size, None))
    except ValueError as exc:
        return unreadable(f"model-fit gate for {spec.name}: {exc}")
    return compare_with_log(report, log_text, log_name)
