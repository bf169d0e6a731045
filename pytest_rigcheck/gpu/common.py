"""Helpers the GPU checks share: the GPU's label, reading fields; the profile's GPU expectations are in ``expect``."""

from __future__ import annotations

from typing import Any

from ..targets import GpuTarget
from ..verdict import Verdict, unreadable
from .expect import NVLINK_KINDS, GpuExpect, expectations, version_key
from .state import NO_PERMISSION, GpuState, Unavailable


def label(t: GpuTarget, gpu: GpuState | Unavailable) -> str:
    """``GPU0 0000:17:00.0 (NVIDIA GeForce RTX 3090)``: NVML's index (nvidia-smi -i) and name where NVML has them."""
    if isinstance(gpu, GpuState):
        return f"GPU{gpu.index} {t.gpu.bdf} ({gpu.name or t.gpu.name})"
    return t.label


def smi_index(t: GpuTarget, gpu: GpuState | Unavailable) -> int:
    return gpu.index if isinstance(gpu, GpuState) else t.index


class Missing(Exception):  # noqa: N818 - control flow inside a check, turned into an unreadable Verdict
    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict


def need(t: GpuTarget, gpu: GpuState | Unavailable, key: str, what: str) -> Any:
    """The value of ``key``, or raise ``Missing`` carrying an unreadable verdict that says what and why."""
    if isinstance(gpu, Unavailable):
        raise Missing(unreadable(f"{t.label}: {what} unknown: {gpu}", fix=[_fix(gpu)]))
    value = gpu.get(key)
    if isinstance(value, Unavailable):
        raise Missing(unreadable(f"{label(t, gpu)}: {what} unreadable: {value}", fix=[_fix(value)]))
    return value


def _fix(u: Unavailable) -> str:
    if u.code == NO_PERMISSION:
        return "run as root (sudo pytest --rig ...), or replay a snapshot captured as root"
    return "read it on the live rig (pytest --rig), or capture again with `rigcheck capture DIR` (pytest-rigcheck[nvml])"


__all__ = ["NVLINK_KINDS", "GpuExpect", "Missing", "expectations", "label", "need", "smi_index", "version_key"]
