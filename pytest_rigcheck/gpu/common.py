"""Helpers the GPU checks share: the GPU's label, reading fields; the profile's GPU expectations are in ``expect``."""

from __future__ import annotations

from typing import Any

from ..rig import Rig
from ..targets import GpuTarget
from ..verdict import Unjudgeable, not_applicable, unreadable
from .expect import NVLINK_KINDS, GpuExpect, expectations, version_key
from .state import CORRUPT, NO_PERMISSION, NOT_IN_NVML, NOT_NVIDIA, GpuState, Unavailable

SEEN_CHECK = "test_gpu_seen_by_nvml"  # the check that fails, with the diagnosis, when NVML misses a GPU


def label(t: GpuTarget, gpu: GpuState | Unavailable) -> str:
    """``GPU0 0000:17:00.0 (NVIDIA GeForce RTX 3090)``: NVML's index (nvidia-smi -i) and name where NVML has them."""
    if isinstance(gpu, GpuState):
        return f"GPU{gpu.index} {t.gpu.bdf} ({gpu.name or t.gpu.name})"
    return t.label


def load_source(rig: Rig) -> str:
    """Where readings under load came from, for messages: the live sampler, or the snapshot's ``nvml.json``."""
    return "NVML sampled live" if rig.is_live else f"nvml.json of {rig.name}"


def smi_index(t: GpuTarget, gpu: GpuState | Unavailable) -> int:
    return gpu.index if isinstance(gpu, GpuState) else t.index


def opened(t: GpuTarget, gpu: GpuState | Unavailable, what: str) -> GpuState:
    """The GPU's NVML state, or raise ``Unjudgeable``: n/a for a display function that is not an NVIDIA GPU,
    UNREADABLE where NVML does not see the GPU (``test_gpu_seen_by_nvml`` says why) or has no state."""
    if isinstance(gpu, GpuState):
        return gpu
    if gpu.code == NOT_NVIDIA:
        raise Unjudgeable(not_applicable(f"{t.label}: {gpu}"))
    if gpu.code == NOT_IN_NVML:
        raise Unjudgeable(
            unreadable(
                f"{t.label}: {what} unknown: NVML does not see this GPU",
                notes=[str(gpu)],
                fix=[f"see {SEEN_CHECK}[{t.gpu.bdf}] for what to look at"],
                target={"bdf": t.gpu.bdf, "gpu_index": t.index},
                cause=f"{SEEN_CHECK}[{t.gpu.bdf}]",
            )
        )
    raise Unjudgeable(unreadable(f"{t.label}: {what} unknown: {gpu}", fix=[_fix(gpu)]))


def need(t: GpuTarget, gpu: GpuState | Unavailable, key: str, what: str) -> Any:
    """The value of ``key``, or raise ``Unjudgeable`` carrying the verdict that says what and why.

    A value recorded with the wrong type, or no GPU could give (a negative wattage), is UNREADABLE as
    corrupt, naming the source and the field (``GpuState.from_json`` and ``LiveNvml`` mark it).
    """
    state = opened(t, gpu, what)
    value = state.get(key)
    if isinstance(value, Unavailable):
        why = "corrupt" if value.code == CORRUPT else "unreadable"
        raise Unjudgeable(
            unreadable(
                f"{label(t, state)}: {what} {why}: {value}",
                fix=[_fix(value)],
                target={"bdf": t.gpu.bdf, "gpu_index": state.index},
            )
        )
    return value


def _fix(u: Unavailable) -> str:
    if u.code == NO_PERMISSION:
        return "run as root (sudo pytest --rig ...), or replay a snapshot captured as root"
    if u.code == CORRUPT:
        return (
            "the recorded value is not a reading NVML gives: capture again with `rigcheck capture DIR`; "
            "live, compare with `nvidia-smi -q`"
        )
    return "read it on the live rig (pytest --rig), or capture again with `rigcheck capture DIR` (pytest-rigcheck[nvml])"


__all__ = [
    "NVLINK_KINDS",
    "SEEN_CHECK",
    "GpuExpect",
    "expectations",
    "label",
    "need",
    "opened",
    "smi_index",
    "version_key",
]
