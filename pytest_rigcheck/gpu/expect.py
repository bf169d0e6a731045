"""The profile's ``[power]`` and ``[gpu]`` sections: parsed when the profile loads, resolved per GPU.

Both take per-device tables keyed like ``[links.device.X]`` (a PCI address, a GPU index in
nvidia-smi's order, or a slot name); a device's own value wins over the section's::

    [power]
    tolerance_w = 5
    [power.device."0000:01:00.0"]   # RTX 5090
    cap_w = 400
    [power.device."0000:03:00.0"]   # RTX 3090 Ti
    cap_w = 290

Power in watts: NVML reports milliwatts and ``nvidia-smi -pl`` takes watts (NVML API reference,
nvmlDeviceGetPowerManagementLimit). Imports nothing heavy: the profile loader calls these parsers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ProfileError
from ..profile import DeviceKey, Profile, check_keys, device_tables, number, whole

if TYPE_CHECKING:
    from ..targets import GpuTarget

MAX_CAP_W = 2000.0  # above any board's limit (B200 1000 W, GB200 1200 W): a bigger number is a typo
# key: (low, high, unit, low excluded, whole number)
_POWER: dict[str, tuple[float, float, str, bool]] = {
    "cap_w": (0.0, MAX_CAP_W, "watts", True),
    "tolerance_w": (0.0, 200.0, "watts", False),
    "circuit_w": (0.0, 100_000.0, "watts", True),
    "host_w": (0.0, 10_000.0, "watts", False),
}
POWER_DEVICE_KEYS = ("cap_w", "tolerance_w")
_GPU_COUNTS: dict[str, tuple[int, int, str]] = {
    "max_link_changes": (0, 100_000, "link changes"),
    "max_replay_growth": (0, 1_000_000_000, "replays"),
}
_GPU_MIB = ("max_vram_used_mib", 0.0, 1_048_576.0, "MiB")  # up to 1 TiB
GPU_VERSION_KEYS = ("min_driver", "min_cuda")
GPU_DEVICE_KEYS = ("max_link_changes", "max_replay_growth", "max_vram_used_mib", "nvlink")
# What links a GPU's NVLinks should reach: none fitted, a bridge to its peer, or NVSwitch (HGX boards).
NVLINK_KINDS = ("none", "bridge", "nvswitch")


@dataclass(frozen=True)
class PowerSection:
    """``[power]``: cap_w and tolerance_w (per GPU, W), circuit_w and host_w (the whole rig, W)."""

    cap_w: float | None = None
    tolerance_w: float = 5.0
    circuit_w: float | None = None
    host_w: float = 0.0
    devices: dict[DeviceKey, dict[str, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class GpuSection:
    """``[gpu]``: version floors for the rig; link-change, replay and memory limits per GPU."""

    min_driver: str | None = None
    min_cuda: str | None = None
    max_link_changes: int = 0
    max_replay_growth: int = 0
    max_vram_used_mib: float = 256.0
    nvlink: str | None = None  # "none" | "bridge" | "nvswitch"; None: the profile does not say
    devices: dict[DeviceKey, dict[str, Any]] = field(default_factory=dict)


def _power_value(where: str, key: str, name: str, value: object) -> float:
    lo, hi, unit, above = _POWER[name]
    return number(where, key, value, lo, hi, unit, above=above)


def _gpu_value(where: str, key: str, name: str, value: object) -> Any:
    if name == "nvlink":
        if value not in NVLINK_KINDS:
            raise ProfileError(where, key, value, f"one of {', '.join(repr(k) for k in NVLINK_KINDS)}")
        return value
    if name in _GPU_COUNTS:
        lo, hi, unit = _GPU_COUNTS[name]
        return whole(where, key, value, lo, hi, unit)
    _, lo_f, hi_f, unit_f = _GPU_MIB
    return number(where, key, value, lo_f, hi_f, unit_f)


def parse_power(table: dict[str, Any], where: str) -> PowerSection:
    """Validate ``[power]`` and its ``[power.device.X]`` tables.

    Example:
        >>> p = parse_power({"cap_w": 350, "device": {"1": {"cap_w": 290}}}, "rig.toml")
        >>> p.cap_w, [(k.text, v) for k, v in p.devices.items()]
        (350.0, [('1', {'cap_w': 290.0})])

    Raises:
        ProfileError: an unknown key, a value that is not a number of watts in range, ``host_w`` not below
            ``circuit_w``.
    """
    check_keys(where, "power", table, [*_POWER, "device"])
    values = {k: _power_value(where, f"power.{k}", k, v) for k, v in table.items() if k != "device"}

    def device(key: str, sub: dict[str, Any]) -> dict[str, float]:
        check_keys(where, key, sub, POWER_DEVICE_KEYS)
        return {k: _power_value(where, f"{key}.{k}", k, v) for k, v in sub.items()}

    circuit, host = values.get("circuit_w"), values.get("host_w", 0.0)
    if circuit is not None and host >= circuit:
        raise ProfileError(
            where,
            "power.host_w",
            table["host_w"],
            f"a wattage below [power] circuit_w = {circuit:g} W (host_w is the draw of everything but the GPUs; "
            "at or above the circuit it leaves the GPUs no budget)",
        )
    devices = device_tables(where, "power", table.get("device", {}), device)
    return PowerSection(**values, devices=devices)


def parse_gpu(table: dict[str, Any], where: str) -> GpuSection:
    """Validate ``[gpu]`` and its ``[gpu.device.X]`` tables.

    Raises:
        ProfileError: an unknown key, a version that is not dotted numbers, a count or size out of range.
    """
    check_keys(where, "gpu", table, [*GPU_VERSION_KEYS, *GPU_DEVICE_KEYS, "device"])
    values: dict[str, Any] = {}
    for k, v in table.items():
        if k in GPU_VERSION_KEYS:
            if not isinstance(v, str) or not version_key(v):
                raise ProfileError(where, f"gpu.{k}", v, 'a version string such as "550.54.15" or "12.4"')
            values[k] = v
        elif k != "device":
            values[k] = _gpu_value(where, f"gpu.{k}", k, v)

    def device(key: str, sub: dict[str, Any]) -> dict[str, Any]:
        check_keys(where, key, sub, GPU_DEVICE_KEYS)
        return {k: _gpu_value(where, f"{key}.{k}", k, v) for k, v in sub.items()}

    devices = device_tables(where, "gpu", table.get("device", {}), device)
    return GpuSection(**values, devices=devices)


@dataclass(frozen=True)
class GpuExpect:
    """The ``[power]`` and ``[gpu]`` values for one GPU (or the rig), each from the table that gave it.

    ``where`` names the profile; ``said(key)`` names the table a value came from, for messages:
    ``[power.device."0000:03:00.0"] cap_w``, ``[power] cap_w``, or ``default [gpu] max_vram_used_mib``.
    """

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
    nvlink: str | None = None
    origin: dict[str, str] = field(default_factory=dict)

    def nvlink_for(self, bdf: str) -> str | None:
        """The NVLink this GPU should have (``[gpu.device.X] nvlink`` over ``[gpu] nvlink``); ``bdf`` is
        accepted for callers that hold rig-wide expectations, whose value is the section's."""
        return self.nvlink

    def said(self, key: str) -> str:
        """Where ``key``'s value came from: ``[power.device."0000:03:00.0"] cap_w``."""
        section = "power" if key in _POWER else "gpu"
        return f"{self.origin.get(key, f'[{section}]')} {key}"


def expectations(profile: Profile, gpu: GpuTarget | None = None) -> GpuExpect:
    """``[power]`` and ``[gpu]`` for ``gpu`` (its ``[power.device.X]`` / ``[gpu.device.X]`` table over the
    section's values), or the rig-wide values when ``gpu`` is None.

    The profile was validated when it loaded, so this raises nothing for a loaded profile.
    """
    power: PowerSection = profile.section("power")
    gpus: GpuSection = profile.section("gpu")
    values: dict[str, Any] = {
        "cap_w": power.cap_w,
        "tolerance_w": power.tolerance_w,
        "circuit_w": power.circuit_w,
        "host_w": power.host_w,
        "min_driver": gpus.min_driver,
        "min_cuda": gpus.min_cuda,
        "max_link_changes": gpus.max_link_changes,
        "max_replay_growth": gpus.max_replay_growth,
        "max_vram_used_mib": gpus.max_vram_used_mib,
        "nvlink": gpus.nvlink,
    }
    origin: dict[str, str] = {}
    if gpu is not None:
        for section, tables in (("power", power.devices), ("gpu", gpus.devices)):
            for key, over in tables.items():
                if key.matches(gpu.gpu.bdf, gpu.index, gpu.gpu.slot):
                    for k, v in over.items():
                        values[k] = int(v) if k in _GPU_COUNTS else v  # nvlink stays a string
                        origin[k] = key.table(section)
    return GpuExpect(where=profile.source, origin=origin, **values)


def version_key(text: str) -> tuple[int, ...]:
    """``"550.54.15"`` -> ``(550, 54, 15)``; ``()`` if not a dotted version."""
    try:
        return tuple(int(p) for p in text.strip().split("."))
    except ValueError:
        return ()
