"""NVML behind a Protocol: ``LiveNvml`` (the only ``import pynvml``, lazily) and ``RecordedNvml`` (``nvml.json``).

Errors are translated the way psutil's ``wrap_exceptions`` translates OSError:

- ``NVMLError_NotSupported`` on a reading: recorded as ``Unavailable(code=not_supported)``; the check
  needing it reports it unreadable (never a pass).
- ``NVMLError_NoPermission``: ``NvmlPermissionError`` for the whole session, or an ``Unavailable`` with
  code ``no_permission`` on a single reading, with "run as root" in it.
- no ``pynvml``, ``DriverNotLoaded``, ``LibraryNotFound``: ``NvmlUnavailable`` (a
  ``FeatureUnavailable``): on a live rig whose PCIe bus shows NVIDIA GPUs every GPU check fails as
  UNREADABLE with the fix; where there is no NVIDIA GPU they skip with that one reason
  (``pytest_rigcheck.availability``).

Error names and calls as in the NVML API reference (docs.nvidia.com/deploy/nvml-api: ``nvmlInit_v2``,
``nvmlDeviceGetCount_v2``, ``nvmlDeviceGetHandleByIndex_v2``, "Return values" of each).

Only ``nvmlDeviceGet*``/``nvmlSystemGet*`` are ever called: the plugin is read-only.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from ..availability import DRIVER_FIX, NVML_INSTALL, FeatureUnavailable
from ..errors import RigcheckError
from ..pcie import normalize_bdf
from .state import (
    ERROR,
    F_BAR1_TOTAL,
    F_CLOCK_REASONS,
    F_DISPLAY_ACTIVE,
    F_ECC_MODE,
    F_ECC_UNCORR_AGGREGATE,
    F_ECC_UNCORR_VOLATILE,
    F_MEM_RESERVED,
    F_MEM_TOTAL,
    F_MEM_USED,
    F_NAME,
    F_NVLINK,
    F_NVLINK_REMOTE,
    F_PCIE_GEN,
    F_PCIE_MAX_GEN,
    F_PCIE_MAX_WIDTH,
    F_PCIE_REPLAY,
    F_PCIE_WIDTH,
    F_PERSISTENCE,
    F_POWER_CONSTRAINTS,
    F_POWER_DEFAULT,
    F_POWER_ENFORCED,
    F_POWER_LIMIT,
    F_POWER_USAGE,
    F_PROCESSES,
    F_PSTATE,
    F_RECOVERY_ACTION,
    F_REMAPPED_ROWS,
    F_RETIRED_PENDING,
    F_UUID,
    F_VBIOS,
    MAX_NVLINKS,
    NO_PERMISSION,
    NOT_CAPTURED,
    NOT_SUPPORTED,
    NVML_JSON,
    GpuState,
    LoadReadings,
    SystemState,
    Unavailable,
    checked,
    checked_system,
)

INSTALL_HINT = NVML_INSTALL
ROOT_HINT = "run as root (sudo pytest --rig ...)"
NVML_WHAT = "GPU checks"
DRIVER_INSTALL = (
    "install the NVIDIA driver (distribution packages or the .run installer), then check `nvidia-smi`"
)
INIT_FIX = "check `nvidia-smi` and `sudo dmesg | grep -iE 'NVRM|RmInitAdapter|fallen off the bus'`"


class NvmlUnavailable(FeatureUnavailable):
    """NVML cannot be used on this machine (no bindings, no driver, no library, no GPU).

    UNREADABLE on a live rig with NVIDIA GPUs on its bus, a skip elsewhere (``availability``).
    """

    def __init__(self, reason: str, fix: str) -> None:
        super().__init__(NVML_WHAT, reason, fix)


class NvmlPermissionError(RigcheckError):
    """NVML refused a read for lack of permission."""


class Nvml(Protocol):
    """Where GPU state comes from: the live driver or a snapshot's ``nvml.json``."""

    origin: str

    def system(self) -> SystemState:
        """Versions and every GPU's state, read once."""
        ...

    def under_load(
        self, bdfs: Iterable[str], seconds: float, python: str | None = None, progress: Any = None
    ) -> dict[str, LoadReadings | Unavailable]:
        """Readings taken while the GPUs are busy (live: runs a short load in a worker process, with the
        interpreter ``python``, default this one; recorded: what was captured)."""
        ...

    def close(self) -> None: ...


# -- recorded -------------------------------------------------------------------------------------


class RecordedNvml:
    """NVML state recorded in a snapshot (``nvml.json``)."""

    def __init__(self, state: SystemState) -> None:
        self._state = state
        self.origin = state.origin

    @classmethod
    def open(cls, snapshot_root: Path, name: str) -> RecordedNvml:
        """Read ``nvml.json`` of a snapshot; a missing or corrupt one raises ``RigcheckError`` with the path."""
        from ..errors import SourceError
        from ..source import Source

        path = snapshot_root / NVML_JSON
        try:
            data = Source(snapshot_root).read_json(NVML_JSON)
        except KeyError:
            raise RigcheckError(
                f"snapshot {name}: no {NVML_JSON}: NVML state was not captured "
                "(capture again with `rigcheck capture DIR` on the rig, with pytest-rigcheck[nvml])"
            ) from None
        except SourceError as exc:
            raise RigcheckError(f"snapshot {name}: {exc}") from None
        try:
            state = SystemState.from_json(data, str(path))
        except ValueError as exc:
            raise RigcheckError(f"{path}: corrupt: {exc}") from None
        if not state.origin:
            state.origin = f"{NVML_JSON} of snapshot {name}"
        return cls(state)

    def system(self) -> SystemState:
        return self._state

    def under_load(
        self, bdfs: Iterable[str], seconds: float, python: str | None = None, progress: Any = None
    ) -> dict[str, LoadReadings | Unavailable]:
        by_bdf = {g.bdf: g for g in self._state.gpus}
        out: dict[str, LoadReadings | Unavailable] = {}
        for bdf in bdfs:
            g = by_bdf.get(bdf)
            out[bdf] = g.load() if g else Unavailable(f"{bdf} is not in {NVML_JSON}", NOT_CAPTURED)
        return out

    def close(self) -> None:
        pass


# -- live -----------------------------------------------------------------------------------------


def _pynvml() -> Any:
    try:
        import pynvml
    except ImportError:
        raise NvmlUnavailable("NVML bindings (pynvml) not installed", INSTALL_HINT) from None
    return pynvml


class LiveNvml:
    """The live driver through ``pynvml``. Opened once per session; read-only."""

    def __init__(self) -> None:
        self.origin = "NVML (live)"
        self._nv = _pynvml()
        nv = self._nv
        try:
            nv.nvmlInit()
        except nv.NVMLError_LibraryNotFound:
            raise NvmlUnavailable(
                "NVML library libnvidia-ml.so.1 not found: no NVIDIA driver installed", DRIVER_INSTALL
            ) from None
        except nv.NVMLError_DriverNotLoaded:
            raise NvmlUnavailable(
                "NVIDIA driver not loaded (NVML_ERROR_DRIVER_NOT_LOADED)", DRIVER_FIX
            ) from None
        except nv.NVMLError_NoPermission:
            raise NvmlPermissionError(
                f"NVML refused to initialize: insufficient permissions; {ROOT_HINT}"
            ) from None
        except nv.NVMLError as exc:
            raise NvmlUnavailable(f"NVML failed to initialize: {exc}", INIT_FIX) from None
        try:
            count = int(nv.nvmlDeviceGetCount())
        except nv.NVMLError as exc:
            nv.nvmlShutdown()
            raise NvmlUnavailable(f"NVML cannot count GPUs: {exc}", INIT_FIX) from None
        # count == 0 is a reading, not an error: where the PCIe bus shows NVIDIA GPUs, the cross-check
        # (inventory.seen_by_nvml) fails each of them with what to look at.
        # A GPU the driver counts but cannot open (fallen off the bus, RmInitAdapter failed) has no handle:
        # it is recorded as unopened, and the PCIe cross-check names it, instead of a traceback here.
        self._handles: dict[int, Any] = {}
        self._unopened: list[dict[str, Any]] = []
        for i in range(count):
            try:
                self._handles[i] = nv.nvmlDeviceGetHandleByIndex(i)
            except nv.NVMLError as exc:
                self._unopened.append({"index": i, "error": f"nvmlDeviceGetHandleByIndex: {exc}"})
        self._state: SystemState | None = None

    # A reading: the value, or an Unavailable that says why.
    def _read(self, fn: Callable[[], Any]) -> Any:
        nv = self._nv
        try:
            return fn()
        except nv.NVMLError_NotSupported:
            return Unavailable("not supported on this GPU/driver (NVML_ERROR_NOT_SUPPORTED)", NOT_SUPPORTED)
        except nv.NVMLError_NoPermission:
            return Unavailable(f"insufficient permissions; {ROOT_HINT}", NO_PERMISSION)
        except nv.NVMLError_FunctionNotFound:
            return Unavailable(
                "this driver's NVML lacks the call (NVML_ERROR_FUNCTION_NOT_FOUND)", NOT_SUPPORTED
            )
        except nv.NVMLError as exc:
            return Unavailable(f"NVML error: {exc}", ERROR)
        except ctypes.ArgumentError as exc:
            # pynvml's binding and the library disagree on a call's arguments (seen for nvmlDeviceGetP2PStatus
            # READ in the h200x2 capture): the reading is missing, not a pass.
            return Unavailable(f"pynvml call failed: ArgumentError: {exc}", ERROR)

    def system(self) -> SystemState:
        if self._state is None:
            nv = self._nv
            gpus = []
            for i, h in self._handles.items():
                try:
                    gpus.append(self._gpu(i, h))
                except nv.NVMLError as exc:  # no PCI identity: the GPU cannot be matched to the bus
                    self._unopened.append({"index": i, "error": f"nvmlDeviceGetPciInfo: {exc}"})
            versions = checked_system(
                {
                    "driver": self._read(lambda: _text(nv.nvmlSystemGetDriverVersion())),
                    "cuda": self._read(lambda: int(nv.nvmlSystemGetCudaDriverVersion())),
                    "nvml": self._read(lambda: _text(nv.nvmlSystemGetNVMLVersion())),
                },
                self.origin,
            )
            self._state = SystemState(
                origin=self.origin,
                driver=versions["driver"],
                cuda=versions["cuda"],
                nvml=versions["nvml"],
                gpus=gpus,
                unopened=list(self._unopened),
            )
        return self._state

    def _gpu(self, index: int, h: Any) -> GpuState:
        nv, r = self._nv, self._read
        pci = nv.nvmlDeviceGetPciInfo(h)
        bdf = normalize_bdf(_text(pci.busId))
        v: dict[str, Any] = {
            F_NAME: r(lambda: _text(nv.nvmlDeviceGetName(h))),
            F_UUID: r(lambda: _text(nv.nvmlDeviceGetUUID(h))),
            F_VBIOS: r(lambda: _text(nv.nvmlDeviceGetVbiosVersion(h))),
            F_POWER_LIMIT: r(lambda: int(nv.nvmlDeviceGetPowerManagementLimit(h))),
            F_POWER_ENFORCED: r(lambda: int(nv.nvmlDeviceGetEnforcedPowerLimit(h))),
            F_POWER_DEFAULT: r(lambda: int(nv.nvmlDeviceGetPowerManagementDefaultLimit(h))),
            F_POWER_CONSTRAINTS: r(
                lambda: [int(x) for x in nv.nvmlDeviceGetPowerManagementLimitConstraints(h)]
            ),
            F_POWER_USAGE: r(lambda: int(nv.nvmlDeviceGetPowerUsage(h))),
            F_PERSISTENCE: r(lambda: int(nv.nvmlDeviceGetPersistenceMode(h))),
            F_DISPLAY_ACTIVE: r(lambda: int(nv.nvmlDeviceGetDisplayActive(h))),
            F_PCIE_MAX_GEN: r(lambda: int(nv.nvmlDeviceGetMaxPcieLinkGeneration(h))),
            F_PCIE_MAX_WIDTH: r(lambda: int(nv.nvmlDeviceGetMaxPcieLinkWidth(h))),
            F_PCIE_GEN: r(lambda: int(nv.nvmlDeviceGetCurrPcieLinkGeneration(h))),
            F_PCIE_WIDTH: r(lambda: int(nv.nvmlDeviceGetCurrPcieLinkWidth(h))),
            F_PCIE_REPLAY: r(lambda: int(nv.nvmlDeviceGetPcieReplayCounter(h))),
            F_CLOCK_REASONS: r(lambda: int(self._reasons(h))),
            F_PSTATE: r(lambda: int(nv.nvmlDeviceGetPerformanceState(h))),
            F_ECC_MODE: r(lambda: [int(x) for x in nv.nvmlDeviceGetEccMode(h)]),
            F_ECC_UNCORR_VOLATILE: r(
                lambda: int(
                    nv.nvmlDeviceGetTotalEccErrors(
                        h, nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nv.NVML_VOLATILE_ECC
                    )
                )
            ),
            F_ECC_UNCORR_AGGREGATE: r(
                lambda: int(
                    nv.nvmlDeviceGetTotalEccErrors(
                        h, nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nv.NVML_AGGREGATE_ECC
                    )
                )
            ),
            F_RETIRED_PENDING: r(lambda: int(nv.nvmlDeviceGetRetiredPagesPendingStatus(h))),
            F_REMAPPED_ROWS: r(lambda: [int(x) for x in nv.nvmlDeviceGetRemappedRows(h)]),
            F_NVLINK: self._nvlink(h),
            F_PROCESSES: r(lambda: self._processes(h)),
            F_RECOVERY_ACTION: r(lambda: self._recovery_action(h)),
            F_BAR1_TOTAL: r(lambda: self._bar1_total(h)),
        }
        states = v[F_NVLINK]
        if isinstance(states, dict) and states:
            v[F_NVLINK_REMOTE] = self._nvlink_remote(h, [int(k) for k in states])
        mem = r(lambda: nv.nvmlDeviceGetMemoryInfo(h, version=nv.nvmlMemory_v2))
        if isinstance(mem, Unavailable):  # older drivers: v1 counts the driver's reservation as used
            mem1 = r(lambda: nv.nvmlDeviceGetMemoryInfo(h))
            v[F_MEM_TOTAL] = mem1 if isinstance(mem1, Unavailable) else int(mem1.total)
            v[F_MEM_USED] = Unavailable(
                f"memory info v2 (used without the driver's reservation): {mem}", mem.code
            )
            v[F_MEM_RESERVED] = v[F_MEM_USED]
        else:
            v[F_MEM_TOTAL], v[F_MEM_USED], v[F_MEM_RESERVED] = (
                int(mem.total),
                int(mem.used),
                int(mem.reserved),
            )
        return GpuState(bdf, index, checked(v, f"{self.origin} GPU{index} ({bdf})"))

    def _reasons(self, h: Any) -> int:
        nv = self._nv
        fn = (
            getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None)
            or nv.nvmlDeviceGetCurrentClocksThrottleReasons
        )
        return int(fn(h))

    def _nvlink(self, h: Any) -> dict[str, int] | Unavailable:
        nv = self._nv
        states: dict[str, int] = {}
        for link in range(int(getattr(nv, "NVML_NVLINK_MAX_LINKS", MAX_NVLINKS))):
            try:
                states[str(link)] = int(nv.nvmlDeviceGetNvLinkState(h, link))
            except (nv.NVMLError_NotSupported, nv.NVMLError_InvalidArgument):
                # Link 0 not supported: the GPU has no NVLink ({}); past the last link: the end of the list.
                break
            except nv.NVMLError_NoPermission:
                return Unavailable(f"NVLink state: insufficient permissions; {ROOT_HINT}", NO_PERMISSION)
            except nv.NVMLError as exc:
                return Unavailable(f"NVLink {link} state: NVML error: {exc}", ERROR)
        return states

    def _nvlink_remote(self, h: Any, links: list[int]) -> dict[str, dict[str, Any]]:
        """What each link connects to: remote device type, the remote's PCI address, P2P over it; a key is
        left out where NVML does not say (an inactive link has no remote)."""
        nv = self._nv
        types = {0x00: "gpu", 0x01: "ibmnpu", 0x02: "switch", 0xFF: "unknown"}  # nvmlIntNvLinkDeviceType_t
        p2p_cap = getattr(nv, "NVML_NVLINK_CAP_P2P_SUPPORTED", 0)
        out: dict[str, dict[str, Any]] = {}
        for link in links:
            entry: dict[str, Any] = {}
            kind = self._read(partial(nv.nvmlDeviceGetNvLinkRemoteDeviceType, h, link))
            if isinstance(kind, int):
                entry["type"] = types.get(kind, "unknown")
            pci = self._read(partial(nv.nvmlDeviceGetNvLinkRemotePciInfo, h, link))
            if not isinstance(pci, Unavailable):
                try:
                    entry["bdf"] = normalize_bdf(_text(pci.busId))
                except (ValueError, AttributeError):
                    pass  # an inactive link reports no address
            cap = self._read(partial(nv.nvmlDeviceGetNvLinkCapability, h, link, p2p_cap))
            if isinstance(cap, int):
                entry["p2p"] = cap
            out[str(link)] = entry
        return out

    def _recovery_action(self, h: Any) -> int | Unavailable:
        """NVML_FI_DEV_GET_GPU_RECOVERY_ACTION (field 230 in nvml.h of driver 550+); a field the driver does not
        offer reads NOT_SUPPORTED, raised as the NVML error so ``_read`` records why."""
        nv = self._nv
        field = getattr(nv, "NVML_FI_DEV_GET_GPU_RECOVERY_ACTION", 230)
        try:
            (value,) = nv.nvmlDeviceGetFieldValues(h, [field])
            ret, action = int(value.nvmlReturn), int(value.value.uiVal)
        except (TypeError, ValueError, AttributeError) as exc:  # a binding that answers in another shape
            return Unavailable(f"GPU recovery action: unexpected answer from pynvml: {exc}", ERROR)
        if ret != 0:  # nvmlReturn_t of this field: 3 NOT_SUPPORTED, 4 NO_PERMISSION, 13 FUNCTION_NOT_FOUND
            name = {3: "NotSupported", 4: "NoPermission", 13: "FunctionNotFound"}.get(ret)
            raise getattr(nv, f"NVMLError_{name}")() if name else nv.NVMLError(ret)
        return action

    def _bar1_total(self, h: Any) -> int | Unavailable:
        """nvmlDeviceGetBAR1MemoryInfo().bar1Total in bytes."""
        try:
            return int(self._nv.nvmlDeviceGetBAR1MemoryInfo(h).bar1Total)
        except (TypeError, ValueError, AttributeError) as exc:
            return Unavailable(f"BAR1 memory info: unexpected answer from pynvml: {exc}", ERROR)

    def _processes(self, h: Any) -> list[dict[str, Any]]:
        nv = self._nv
        out: list[dict[str, Any]] = []
        for kind, fn in (
            ("compute", nv.nvmlDeviceGetComputeRunningProcesses),
            ("graphics", nv.nvmlDeviceGetGraphicsRunningProcesses),
        ):
            for p in fn(h):
                used = getattr(p, "usedGpuMemory", None)
                name = self._read(partial(_process_name, nv, p.pid))
                out.append(
                    {
                        "pid": int(p.pid),
                        "name": name if isinstance(name, str) else "?",
                        "used_b": int(used) if isinstance(used, int) else None,
                        "kind": kind,
                    }
                )
        return out

    def sample(self, index: int) -> tuple[int | None, int | None, int | None, int | None, int | None]:
        """One (gen, width, reasons, power_mw, sm_mhz) reading of GPU ``index``; ``None`` where NVML gave nothing."""
        nv, h = self._nv, self._handles[index]

        def val(fn: Callable[[], Any]) -> int | None:
            v = self._read(fn)
            return None if isinstance(v, Unavailable) else int(v)

        return (
            val(lambda: nv.nvmlDeviceGetCurrPcieLinkGeneration(h)),
            val(lambda: nv.nvmlDeviceGetCurrPcieLinkWidth(h)),
            val(lambda: self._reasons(h)),
            val(lambda: nv.nvmlDeviceGetPowerUsage(h)),
            val(lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)),
        )

    def readings(self, index: int) -> dict[str, float | None]:
        """GPU ``index`` now, for the soak sampler: ``sm_mhz``, ``mem_mhz``, ``temp_c``, ``mem_temp_c``,
        ``power_mw``, ``reasons`` (clock event reasons bitmask), ``fan_pct``, ``replay`` (PCIe replay
        counter), ``gen`` and ``width`` (current link); ``None`` for what NVML does not give (fan on
        passive cards, memory temperature on GDDR cards). Only ``nvmlDeviceGet*`` calls."""
        nv, h = self._nv, self._handles[index]

        def val(fn: Callable[[], Any]) -> float | None:
            try:
                v = self._read(fn)
            except Exception:  # noqa: BLE001 - a binding without the call: the reading is absent
                return None
            return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None

        return {
            "sm_mhz": val(lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)),
            "mem_mhz": val(lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM)),
            "temp_c": val(lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)),
            "mem_temp_c": val(lambda: _field_value(nv, h, NVML_FI_DEV_MEMORY_TEMP)),
            "power_mw": val(lambda: nv.nvmlDeviceGetPowerUsage(h)),
            "reasons": val(lambda: self._reasons(h)),
            "fan_pct": val(lambda: nv.nvmlDeviceGetFanSpeed(h)),
            "replay": val(lambda: nv.nvmlDeviceGetPcieReplayCounter(h)),
            "gen": val(lambda: nv.nvmlDeviceGetCurrPcieLinkGeneration(h)),
            "width": val(lambda: nv.nvmlDeviceGetCurrPcieLinkWidth(h)),
        }

    def usage(self, index: int) -> tuple[list[dict[str, Any]], int | None, int | None]:
        """GPU ``index`` read now: (processes as ``_processes``, GPU and memory utilization percent, None
        where NVML does not say); for ``p2p.busy``. NVML errors on the process list propagate."""
        nv, h = self._nv, self._handles[index]
        util = self._read(lambda: nv.nvmlDeviceGetUtilizationRates(h))
        ug = None if isinstance(util, Unavailable) else int(util.gpu)
        um = None if isinstance(util, Unavailable) else int(util.memory)
        return self._processes(h), ug, um

    def replay(self, index: int) -> int | None:
        v = self._read(lambda: int(self._nv.nvmlDeviceGetPcieReplayCounter(self._handles[index])))
        return None if isinstance(v, Unavailable) else int(v)

    def under_load(
        self, bdfs: Iterable[str], seconds: float, python: str | None = None, progress: Any = None
    ) -> dict[str, LoadReadings | Unavailable]:
        from .load import measure_under_load

        index = {g.bdf: g.index for g in self.system().gpus}
        wanted = [b for b in bdfs if b in index]
        out: dict[str, LoadReadings | Unavailable] = {
            b: Unavailable(f"{b} is not among the GPUs NVML sees") for b in bdfs if b not in index
        }
        kw = {"progress": progress} if progress is not None else {}
        out.update(measure_under_load(self, {b: index[b] for b in wanted}, seconds, python, **kw))
        return out

    def close(self) -> None:
        try:
            self._nv.nvmlShutdown()
        except self._nv.NVMLError:  # already shut down, or the driver went away: nothing to release
            pass


NVML_FI_DEV_MEMORY_TEMP = 82  # nvml.h: memory temperature field (HBM GPUs report it)


def _field_value(nv: Any, h: Any, field_id: int) -> float | None:
    """One NVML field value (``nvmlDeviceGetFieldValues``), ``None`` when the GPU does not report it."""
    vals = nv.nvmlDeviceGetFieldValues(h, [getattr(nv, "NVML_FI_DEV_MEMORY_TEMP", field_id)])
    v = vals[0]
    if int(getattr(v, "nvmlReturn", 1)) != 0:
        return None
    kind = int(getattr(v, "valueType", 1))
    # nvmlValueType_t: double, unsigned int, unsigned long, unsigned long long, signed long long, signed int, unsigned short
    member = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}.get(
        kind, "uiVal"
    )
    return float(getattr(v.value, member))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _process_name(nv: Any, pid: int) -> str:
    return _text(nv.nvmlSystemGetProcessName(pid))


def open_nvml(snapshot_root: Path | None, name: str) -> Nvml:
    """The NVML for a rig: recorded for a snapshot, live otherwise."""
    if snapshot_root is not None:
        return RecordedNvml.open(snapshot_root, name)
    return LiveNvml()
