"""NVML state as plain data: what a check reads, and what ``nvml.json`` holds.

One ``GpuState`` per GPU, keyed by field name (the ``F_*`` constants). A field that could not be read
holds an ``Unavailable`` that says why (not supported, no permission, not captured), so a check that
needs it reports it as unreadable instead of passing. The same shape is written to and read from a
snapshot's ``nvml.json``, which is how every GPU check replays without a GPU.

``nvml.json`` (format 1)::

    {"format": 1, "origin": "...", "driver": "580.159.04", "cuda": 13000, "nvml": "13.580.159.04",
     "gpus": [{"index": 0, "bdf": "0000:17:00.0", "name": "NVIDIA GeForce RTX 3090", ...,
               "power_limit_mw": 350000, "ecc_mode": {"unavailable": "not supported", "code": "not_supported"},
               "load": {"samples": [[t_s, gen, width, reasons, power_mw, sm_mhz], ...], ...}}]}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FORMAT = 1
NVML_JSON = "nvml.json"

# Codes of an unavailable reading.
NOT_SUPPORTED = "not_supported"
NO_PERMISSION = "no_permission"
NOT_CAPTURED = "not_captured"
ERROR = "error"

# Per-GPU fields (NVML call in the comment; units in the name).
F_INDEX = "index"  # NVML index = nvidia-smi -i N
F_BDF = "bdf"  # nvmlDeviceGetPciInfo().busId, normalized to sysfs spelling
F_NAME = "name"  # nvmlDeviceGetName
F_UUID = "uuid"
F_VBIOS = "vbios"  # nvmlDeviceGetVbiosVersion
F_MEM_TOTAL = "memory_total_b"  # nvmlDeviceGetMemoryInfo(v2).total
F_MEM_USED = "memory_used_b"  # v2 .used: excludes the driver's reservation
F_MEM_RESERVED = "memory_reserved_b"  # v2 .reserved
F_POWER_LIMIT = "power_limit_mw"  # nvmlDeviceGetPowerManagementLimit
F_POWER_ENFORCED = "enforced_limit_mw"  # nvmlDeviceGetEnforcedPowerLimit
F_POWER_DEFAULT = "default_limit_mw"  # nvmlDeviceGetPowerManagementDefaultLimit
F_POWER_CONSTRAINTS = "limit_constraints_mw"  # nvmlDeviceGetPowerManagementLimitConstraints: [min, max]
F_POWER_USAGE = "power_usage_mw"
F_PERSISTENCE = "persistence_mode"  # 1 enabled
F_DISPLAY_ACTIVE = "display_active"  # nvmlDeviceGetDisplayActive: 1 when a display is initialized on the GPU
F_PCIE_MAX_GEN = "pcie_max_gen"  # nvmlDeviceGetMaxPcieLinkGeneration: lesser of device and system
F_PCIE_MAX_WIDTH = "pcie_max_width"
F_PCIE_GEN = "pcie_gen"  # current, at the time of reading (idle)
F_PCIE_WIDTH = "pcie_width"
F_PCIE_REPLAY = "pcie_replay"  # nvmlDeviceGetPcieReplayCounter
F_CLOCK_REASONS = "clocks_event_reasons"  # idle reading
F_PSTATE = "pstate"
F_ECC_MODE = "ecc_mode"  # [current, pending]
F_ECC_UNCORR_VOLATILE = "ecc_uncorrected_volatile"
F_ECC_UNCORR_AGGREGATE = "ecc_uncorrected_aggregate"
F_RETIRED_PENDING = "retired_pages_pending"  # pre-Ampere page retirement
F_REMAPPED_ROWS = "remapped_rows"  # Ampere+: [correctable, uncorrectable, pending, failure]
F_NVLINK = "nvlink_states"  # {"0": 1, ...}; {} = the GPU has no NVLink
F_PROCESSES = "processes"  # [{"pid", "name", "used_b", "kind"}]
F_RECOVERY_ACTION = (
    "gpu_recovery_action"  # nvmlDeviceGetFieldValues(NVML_FI_DEV_GET_GPU_RECOVERY_ACTION): 0 None
)
# {"0": {"type": "gpu"|"switch"|"ibmnpu"|"unknown", "bdf": "0000:4b:00.0", "p2p": 1}, ...} per link of F_NVLINK:
# nvmlDeviceGetNvLinkRemoteDeviceType, nvmlDeviceGetNvLinkRemotePciInfo_v2, nvmlDeviceGetNvLinkCapability(P2P);
# a key is left out where NVML did not give it.
F_NVLINK_REMOTE = "nvlink_remote"
F_BAR1_TOTAL = "bar1_total_b"  # nvmlDeviceGetBAR1MemoryInfo().bar1Total
F_LOAD = "load"  # readings under load, see LoadReadings

GPU_FIELDS = (
    F_NAME,
    F_UUID,
    F_VBIOS,
    F_MEM_TOTAL,
    F_MEM_USED,
    F_MEM_RESERVED,
    F_POWER_LIMIT,
    F_POWER_ENFORCED,
    F_POWER_DEFAULT,
    F_POWER_CONSTRAINTS,
    F_POWER_USAGE,
    F_PERSISTENCE,
    F_DISPLAY_ACTIVE,
    F_PCIE_MAX_GEN,
    F_PCIE_MAX_WIDTH,
    F_PCIE_GEN,
    F_PCIE_WIDTH,
    F_PCIE_REPLAY,
    F_CLOCK_REASONS,
    F_PSTATE,
    F_ECC_MODE,
    F_ECC_UNCORR_VOLATILE,
    F_ECC_UNCORR_AGGREGATE,
    F_RETIRED_PENDING,
    F_REMAPPED_ROWS,
    F_NVLINK,
    F_PROCESSES,
    F_RECOVERY_ACTION,
    F_NVLINK_REMOTE,
    F_BAR1_TOTAL,
)


@dataclass(frozen=True)
class Unavailable:
    """A reading that is not there, and why. Never a pass."""

    reason: str
    code: str = ERROR

    def __str__(self) -> str:
        return self.reason

    def to_json(self) -> dict[str, str]:
        return {"unavailable": self.reason, "code": self.code}


def from_json_value(value: Any) -> Any:
    if isinstance(value, dict) and set(value) <= {"unavailable", "code"} and "unavailable" in value:
        return Unavailable(str(value["unavailable"]), str(value.get("code", ERROR)))
    return value


def to_json_value(value: Any) -> Any:
    return value.to_json() if isinstance(value, Unavailable) else value


@dataclass(frozen=True)
class LoadReadings:
    """NVML sampled while the GPU was busy: link, clock event reasons, power, and the replay counter around it.

    ``samples`` are ``(t_s, gen, width, reasons, power_mw, sm_mhz)`` taken after the warm-up, so the link
    has left its idle speed; a value NVML would not give is ``None``.
    """

    samples: tuple[tuple[float, int | None, int | None, int | None, int | None, int | None], ...]
    how: str = ""
    window_s: float = 0.0
    replay_before: int | None = None
    replay_after: int | None = None

    @property
    def link(self) -> tuple[int, int] | None:
        """The lowest (gen, width) seen under load: the conservative reading."""
        gens = [s[1] for s in self.samples if s[1]]
        widths = [s[2] for s in self.samples if s[2]]
        if not gens or not widths:
            return None
        return min(gens), min(widths)

    @property
    def reasons(self) -> int | None:
        """Every clock event reason bit seen in any sample (OR)."""
        seen = [s[3] for s in self.samples if s[3] is not None]
        if not seen:
            return None
        out = 0
        for r in seen:
            out |= r
        return out

    def link_changes(self) -> int:
        """How often (gen, width) changed from one sample to the next."""
        pairs = [(s[1], s[2]) for s in self.samples if s[1] and s[2]]
        return sum(1 for a, b in zip(pairs, pairs[1:], strict=False) if a != b)

    @property
    def max_power_w(self) -> float | None:
        p = [s[4] for s in self.samples if s[4] is not None]
        return max(p) / 1000 if p else None

    @property
    def max_sm_mhz(self) -> int | None:
        c = [s[5] for s in self.samples if s[5] is not None]
        return max(c) if c else None

    def to_json(self) -> dict[str, Any]:
        return {
            "samples": [list(s) for s in self.samples],
            "how": self.how,
            "window_s": self.window_s,
            "replay_before": self.replay_before,
            "replay_after": self.replay_after,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoadReadings:
        samples = tuple(tuple(s) for s in data.get("samples", []))
        return cls(
            samples=samples,
            how=str(data.get("how", "")),
            window_s=float(data.get("window_s", 0.0)),
            replay_before=data.get("replay_before"),
            replay_after=data.get("replay_after"),
        )


@dataclass
class GpuState:
    """One GPU as NVML reported it. ``get`` returns the value or an ``Unavailable``."""

    bdf: str
    index: int
    values: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str) -> Any:
        if key not in self.values:
            return Unavailable(f"{key} was not recorded", NOT_CAPTURED)
        return self.values[key]

    @property
    def name(self) -> str | None:
        v = self.values.get(F_NAME)
        return v if isinstance(v, str) else None

    def load(self) -> LoadReadings | Unavailable:
        v = self.get(F_LOAD)
        if isinstance(v, LoadReadings | Unavailable):
            return v
        if isinstance(v, dict):
            return LoadReadings.from_json(v)
        return Unavailable("no readings under load were recorded", NOT_CAPTURED)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {F_INDEX: self.index, F_BDF: self.bdf}
        for k, v in self.values.items():
            out[k] = v.to_json() if isinstance(v, LoadReadings) else to_json_value(v)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GpuState:
        from ..pcie import normalize_bdf

        values = {k: from_json_value(v) for k, v in data.items() if k not in (F_INDEX, F_BDF)}
        return cls(normalize_bdf(str(data[F_BDF])), int(data[F_INDEX]), values)


@dataclass
class SystemState:
    """Driver-wide readings: versions, and where the state came from."""

    origin: str
    driver: str | Unavailable
    cuda: int | Unavailable  # nvmlSystemGetCudaDriverVersion: 12040 = 12.4
    nvml: str | Unavailable
    gpus: list[GpuState]
    raw: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "origin": self.origin,
            "driver": to_json_value(self.driver),
            "cuda": to_json_value(self.cuda),
            "nvml": to_json_value(self.nvml),
            "gpus": [g.to_json() for g in self.gpus],
            **{
                k: v
                for k, v in self.raw.items()
                if k not in ("format", "origin", "driver", "cuda", "nvml", "gpus")
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str) -> SystemState:
        if data.get("format") != FORMAT:
            raise ValueError(
                f"{where}: nvml.json format {data.get('format')!r} (this version reads {FORMAT})"
            )
        gpus = data.get("gpus")
        if not isinstance(gpus, list):
            raise ValueError(f"{where}: 'gpus' must be a list")
        try:
            states = [GpuState.from_json(g) for g in gpus]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{where}: bad GPU entry: {exc}") from None
        return cls(
            origin=str(data.get("origin", where)),
            driver=from_json_value(data.get("driver")),
            cuda=from_json_value(data.get("cuda")),
            nvml=from_json_value(data.get("nvml")),
            gpus=states,
            raw=data,
        )


def cuda_text(version: int) -> str:
    """``12040`` -> ``12.4`` (NVML encodes major*1000 + minor*10)."""
    return f"{version // 1000}.{version % 1000 // 10}"


def mib(b: int) -> str:
    return f"{b / (1 << 20):.0f} MiB"
