"""Helpers the GPU checks share: the GPU's label, reading fields, and the profile's GPU expectations."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ProfileError
from ..pcie import normalize_bdf
from ..profile import Profile
from ..targets import GpuTarget
from ..verdict import Verdict, unreadable
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
    nvlink: str | None = None  # [gpu] nvlink: "none" | "bridge" | "nvswitch"; None: not said
    nvlink_device: dict[str, str] = field(default_factory=dict)  # [gpu.nvlink_device] BDF -> the same

    def nvlink_for(self, bdf: str) -> str | None:
        """The NVLink this GPU should have: its ``[gpu.nvlink_device]`` entry, else ``[gpu] nvlink``."""
        return self.nvlink_device.get(bdf, self.nvlink)


NVLINK_KINDS = ("none", "bridge", "nvswitch")


def expectations(profile: Profile) -> GpuExpect:
    """Read ``[power]`` (cap_w, tolerance_w, circuit_w, host_w) and ``[gpu]`` from the profile; bad values raise ProfileError."""
    where = profile.source
    power = profile.raw.get("power", {})
    gpu = profile.raw.get("gpu", {})
    allowed_power = {"cap_w", "tolerance_w", "circuit_w", "host_w"}
    allowed_gpu = {
        "min_driver",
        "min_cuda",
        "max_link_changes",
        "max_replay_growth",
        "max_vram_used_mib",
        "nvlink",
        "nvlink_device",
    }
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

    def nvlink(key: str, v: Any) -> str:
        if v not in NVLINK_KINDS:
            raise ProfileError(where, key, v, f"one of {', '.join(repr(k) for k in NVLINK_KINDS)}")
        return str(v)

    per_device = gpu.get("nvlink_device", {})
    if not isinstance(per_device, dict):
        raise ProfileError(where, "gpu.nvlink_device", per_device, 'a table: "0000:21:00.0" = "bridge"')
    nvlink_device: dict[str, str] = {}
    for k, v in per_device.items():
        try:
            bdf = normalize_bdf(k)
        except ValueError:
            raise ProfileError(where, f"gpu.nvlink_device.{k}", v, "keys are PCI addresses") from None
        nvlink_device[bdf] = nvlink(f"gpu.nvlink_device.{k}", v)

    return GpuExpect(
        where=where,
        nvlink=nvlink("gpu.nvlink", gpu["nvlink"]) if "nvlink" in gpu else None,
        nvlink_device=nvlink_device,
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
