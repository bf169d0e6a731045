"""The write path of vLLM's custom all-reduce: a peer's kernel stores into this GPU's buffer through the
CUDA IPC mapping, and the owner reads back exactly what was written.

vLLM's custom all-reduce (``vllm/csrc/custom_all_reduce.cuh``, one-shot and two-shot kernels) has every
rank's SMs load and store peers' buffers opened with ``cudaIpcOpenMemHandle``. A consumer rig on a
patched P2P driver passed copy-engine round trips and NCCL and then produced garbage there (issue 9.9),
so the copy and the kernel read are not enough: ``nccl_worker.py`` writes with ``_kernel_write.py`` and
records ``nccl.ipc.pairs["WRITER->OWNER"].kernel_write`` = ``{"ok", "mismatches", "bytes"}`` or
``{"ok": false|null, "error"}`` (null: not run: figures recorded by a rigcheck that needed Triton for it,
on a Python without Triton).
"""

from __future__ import annotations

from typing import Any

from ..verdict import Verdict, failed, passed, unreadable
from . import checks as c
from .figures import group_key, value
from .targets import RouteTarget

FIX_VLLM = (
    "until fixed, start vLLM with --disable-custom-all-reduce (NCCL's all-reduce does not use this path)"
)


def kernel_write(t: RouteTarget, data: dict[str, Any]) -> Verdict:
    """SRC's kernel writes a pattern into DST's buffer through the IPC mapping; DST finds it intact."""
    what = f"{t.label}: custom all-reduce write path (SRC's kernel storing into DST's buffer over CUDA IPC)"
    hidden = c._hidden(t.rig, what, [t.src.bdf, t.dst.bdf], data)
    if hidden is not None:
        return hidden
    group = (data.get("nccl", {}).get("groups", {}) or {}).get(
        group_key([g.bdf for g in t.rig.pcie.gpus])
    ) or {}
    failure = c._run_failure(t.rig, f"{what}, in the NCCL run", group, [t.src.bdf, t.dst.bdf], True)
    if failure is not None:
        return failure
    pair_entry = data.get("pairs", {}).get(t.id)
    skip = c._not_required(t, pair_entry) if pair_entry else None
    if skip is not None:
        return skip
    block = data.get("nccl", {}).get("ipc") or {}
    entry = (block.get("pairs") or {}).get(t.id)
    kw = entry.get("kernel_write") if isinstance(entry, dict) else None
    if not isinstance(kw, dict):
        why = block.get("error") or f"not recorded ({c._where(data)})"
        return unreadable(
            f"{what}: {why}",
            fix=["measure live (pytest --rig) or capture again with this version (`rigcheck capture DIR`)"],
        )
    for field in ("ok", "mismatches"):
        value(kw, field, what)
    nbytes = kw.get("bytes") or (entry or {}).get("bytes") or 0
    props: dict[str, object] = {
        "kernel_write_ok": "not run" if kw.get("ok") is None else bool(kw.get("ok")),
        "mismatches": kw.get("mismatches", "n/a"),
        "bytes": nbytes,
    }
    if kw.get("ok") is None:
        return unreadable(
            f"{what}: {kw.get('error') or 'not run'}",
            fix=[
                "measure again on the rig (pytest --rig; this rigcheck needs only PyTorch for it), or "
                "capture it there again with `rigcheck capture DIR`"
            ],
            properties=props,
        )
    if kw.get("ok"):
        return passed(
            f"{t.label}: {int(nbytes) >> 20} MiB stored by a kernel on {t.src.bdf} into {t.dst.bdf}'s buffer "
            "through cudaIpcOpenMemHandle read back intact by its owner",
            measured="every int32 as written",
            expected="every int32 equal to the writer's pattern",
            properties=props,
        )
    got = kw.get("error") or f"{kw.get('mismatches')} of {int(nbytes) // 4} int32 wrong"
    return failed(
        f"{t.label}: custom all-reduce write path broken: a kernel on {t.src.bdf} storing into {t.dst.bdf}'s "
        f"buffer through CUDA IPC: {got}",
        measured=got,
        expected="every int32 equal to the writer's pattern, after a barrier (vLLM's custom all-reduce "
        "writes peers' buffers this way; a wrong write is wrong output from vLLM with TP>1)",
        path=c._paths(t.rig, [t.src.bdf, t.dst.bdf]),
        fix=[FIX_VLLM, *c.fixes(t.rig, [t.src.bdf, t.dst.bdf], True)],
        properties=props,
    )
