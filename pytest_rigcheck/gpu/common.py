"""Helpers the GPU checks share: the GPU's label, reading fields, and the profile's GPU expectations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ProfileError
from ..profile import Profile
from ..targets import GpuTarget
from ..verdict import Unjudgeable, not_applicable, unreadable
from .state import CORRUPT, NO_PERMISSION, NOT_IN_NVML, NOT_NVIDIA, GpuState, Unavailable

SEEN_CHECK = "test_gpu_seen_by_nvml"  # the check that fails, with the diagnosis, when NVML misses a GPU


def label(t: GpuTarget, gpu: GpuState | Unavailable) -> str:
    """``GPU0 0000:17:00.0 (NVIDIA GeForce RTX 3090)``: NVML's index (nvidia-smi -i) and name where NVML has them."""
    if isinstance(gpu, GpuState):
        return f"GPU{gpu.index} {t.gpu.bdf} ({gpu.name or t.gpu.name})"
    return t.label


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


@dataclass(frozen=True)
class GpuExpect:
    """The profile's ``[power]`` and ``[gpu]`` tables, validated; ``where`` names the profile."""

    where: str
    cap_w: float | None = None
    tolerance_w: float = 5.0
    circuit_w: float | None = None
    host_w: float = 0.0
    min_driver: str | None = None
    min_cuda: str | None = None
    max_link_changes: int = 0
    max_replay_growth: int = 0
    max_vram_used_mib: float = 256.0


def expectations(profile: Profile) -> GpuExpect:
    """Read ``[power]`` (cap_w, tolerance_w, circuit_w, host_w) and ``[gpu]`` from the profile; bad values raise ProfileError."""
    where = profile.source
    power = profile.raw.get("power", {})
    gpu = profile.raw.get("gpu", {})
    allowed_power = {"cap_w", "tolerance_w", "circuit_w", "host_w"}
    allowed_gpu = {"min_driver", "min_cuda", "max_link_changes", "max_replay_growth", "max_vram_used_mib"}
    for table, allowed, name in ((power, allowed_power, "power"), (gpu, allowed_gpu, "gpu")):
        for k in table:
            if k not in allowed:
                raise ProfileError(
                    where,
                    f"{name}.{k}",
                    table[k],
                    f"unknown key; keys of [{name}] are {', '.join(sorted(allowed))}",
                )

    def num(table: dict[str, Any], key: str, default: float | None) -> float | None:
        v = table.get(key, default)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
            raise ProfileError(where, key, v, "a number of watts / a count, 0 or more")
        return float(v)

    def ver(key: str) -> str | None:
        v = gpu.get(key)
        if v is None:
            return None
        if not isinstance(v, str) or not version_key(v):
            raise ProfileError(where, f"gpu.{key}", v, 'a version string such as "550.54.15" or "12.4"')
        return v

    return GpuExpect(
        where=where,
        cap_w=num(power, "cap_w", None),
        tolerance_w=num(power, "tolerance_w", 5.0) or 0.0,
        circuit_w=num(power, "circuit_w", None),
        host_w=num(power, "host_w", 0.0) or 0.0,
        min_driver=ver("min_driver"),
        min_cuda=ver("min_cuda"),
        max_link_changes=int(num(gpu, "max_link_changes", 0) or 0),
        max_replay_growth=int(num(gpu, "max_replay_growth", 0) or 0),
        max_vram_used_mib=num(gpu, "max_vram_used_mib", 256.0) or 0.0,
    )


def version_key(text: str) -> tuple[int, ...]:
    """``"550.54.15"`` -> ``(550, 54, 15)``; ``()`` if not a dotted version."""
    try:
        return tuple(int(p) for p in text.strip().split("."))
    except ValueError:
        return ()
