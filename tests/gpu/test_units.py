"""Pure parts of the GPU suites: load readings, reason bits, XID parsing, NVML error translation, the capture."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from pytest_rigcheck.gpu.busy import decode_reasons
from pytest_rigcheck.gpu.common import version_key
from pytest_rigcheck.gpu.models import captured_nvml, modelled_nvml
from pytest_rigcheck.gpu.state import GpuState, LoadReadings, SystemState, Unavailable
from pytest_rigcheck.gpu.xid import FAIL, WARN, judge, parse_events

from ..conftest import SNAPSHOTS
from .conftest import DATA

CAPTURES = Path(__file__).resolve().parents[3] / "shared" / "captures"


class TestLoadReadings:
    def test_lowest_link_and_all_reasons(self) -> None:
        """The link under load is the lowest seen, the reasons every bit seen."""
        r = LoadReadings(((1.0, 4, 16, 0x4, 1, 1), (1.1, 3, 16, 0x1, 1, 1), (1.2, 4, 8, 0x4, 1, 1)))
        assert r.link == (3, 8)
        assert r.reasons == 0x5
        assert r.link_changes() == 2

    def test_no_link_reading(self) -> None:
        """Samples without a link reading give no link, never a made-up one."""
        assert LoadReadings(((1.0, None, None, None, None, None),)).link is None
        assert LoadReadings(((1.0, None, None, None, None, None),)).reasons is None

    def test_json_round_trip(self) -> None:
        """A GPU state with unavailable fields and load readings survives nvml.json."""
        g = GpuState(
            "0000:17:00.0",
            1,
            {
                "name": "X",
                "ecc_mode": Unavailable("nope", "not_supported"),
                "load": LoadReadings(((1.0, 4, 16, 4, 300000, 1800),), "how", 3.0, 1, 2),
            },
        )
        back = GpuState.from_json(json.loads(json.dumps(g.to_json())))
        assert back.get("ecc_mode") == Unavailable("nope", "not_supported")
        assert back.load() == LoadReadings(((1.0, 4, 16, 4, 300000, 1800),), "how", 3.0, 1, 2)
        assert isinstance(back.get("absent"), Unavailable)

    def test_format_checked(self) -> None:
        """An nvml.json of another format is refused with its path."""
        with pytest.raises(ValueError, match="x.json: nvml.json format 2"):
            SystemState.from_json({"format": 2, "gpus": []}, "x.json")


@pytest.mark.parametrize(
    ("bits", "text"),
    [
        (0x1, "0x1 (GPU idle)"),
        (0x4, "0x4 (SW power cap)"),
        (0x48, "0x48 (HW slowdown, HW thermal slowdown)"),
        (0x1000, "0x1000 (unknown 0x1000)"),
        (0, "0x0 (none)"),
    ],
)
def test_decode_reasons(bits: int, text: str) -> None:
    """Clock event reason bits are named as NVML names them."""
    assert decode_reasons(bits) == text


def test_parse_xids() -> None:
    """NVRM Xid lines are parsed to the GPU's function 0 and the XID number; other lines are ignored.
    NVIDIA's catalog puts Xid 79 at RESTART_BM (fails) and Xid 13 at RESTART_APP (warns)."""
    log = (
        "[ 1.0] NVRM: loading NVIDIA UNIX x86_64 Kernel Module\n"
        "[ 2.0] NVRM: Xid (PCI:0000:05:00): 79, pid=1234, name=python, GPU has fallen off the bus.\n"
        "[ 3.0] NVRM: Xid (PCI:0000:3b:00): 13, pid='<unknown>', Graphics Exception\n"
    )
    events = parse_events(log)
    assert [(e.bdf, e.xid) for e in events] == [("0000:05:00.0", 79), ("0000:3b:00.0", 13)]
    assert [judge(e).severity for e in events] == [FAIL, WARN]


@pytest.mark.parametrize(("text", "key"), [("550.54.15", (550, 54, 15)), ("12.4", (12, 4)), ("abc", ())])
def test_version_key(text: str, key: tuple[int, ...]) -> None:
    """Dotted versions compare numerically; anything else is no version."""
    assert version_key(text) == key


class TestModels:
    def test_every_shipped_modelled_rig_has_state(self) -> None:
        """Every modelled rig name of the shipped set gets NVML state, with one GPU per BDF."""
        for name, n in [("rtx3090x2-gen4", 2), ("rtxpro6000x4-switch", 4), ("rtx3080-3070-3060-mixed", 3)]:
            bdfs = [f"0000:{i + 3:02x}:00.0" for i in range(n)]
            state = modelled_nvml(name, bdfs)
            assert state is not None and [g["bdf"] for g in state["gpus"]] == bdfs
        assert modelled_nvml("unknown-rig", ["0000:01:00.0"]) is None

    def test_modelled_state_is_deterministic(self) -> None:
        """The same name gives the same state (the shipped trees are compared to what the script writes)."""
        assert modelled_nvml("rtx3090x2-gen4", ["a", "b"]) == modelled_nvml("rtx3090x2-gen4", ["a", "b"])

    @pytest.mark.skipif(not CAPTURES.is_dir(), reason="../shared/captures not beside the checkout")
    def test_h200_capture_transcribed(self) -> None:
        """The h200x2 capture's NVML lines become state; its failed P2P READ is recorded as not captured."""
        state = captured_nvml("h200x2-nvlink", CAPTURES)
        assert state is not None
        g0 = state["gpus"][0]
        assert (g0["bdf"], g0["power_limit_mw"], g0["pcie_replay"], len(g0["nvlink_states"])) == (
            "0000:00:06.0",
            700000,
            2,
            18,
        )
        assert g0["memory_used_b"] == 0 and g0["memory_reserved_b"] == 616 << 20
        assert state["p2p"]["0-1"]["caps"]["READ"]["code"] == "not_captured"
        assert g0["load"]["code"] == "not_captured"


# -- LiveNvml against a fake pynvml: error translation, read-only ---------------------------------


def _fake_pynvml(
    init_error: str | None = None, unsupported: tuple[str, ...] = (), nvlinks: int = 0
) -> types.ModuleType:
    m = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    for name in (
        "NotSupported",
        "NoPermission",
        "DriverNotLoaded",
        "LibraryNotFound",
        "FunctionNotFound",
        "InvalidArgument",
    ):
        setattr(m, f"NVMLError_{name}", type(f"NVMLError_{name}", (NVMLError,), {}))
    m.NVMLError = NVMLError  # type: ignore[attr-defined]
    calls: list[str] = []
    m.calls = calls  # type: ignore[attr-defined]
    values: dict[str, Any] = {
        "nvmlSystemGetDriverVersion": "570.133.07",
        "nvmlSystemGetCudaDriverVersion": 12080,
        "nvmlSystemGetNVMLVersion": "12.570.133.07",
        "nvmlDeviceGetCount": 1,
        "nvmlDeviceGetHandleByIndex": "h0",
        "nvmlDeviceGetPciInfo": types.SimpleNamespace(busId=b"00000000:17:00.0"),
        "nvmlDeviceGetName": "NVIDIA GeForce RTX 3090",
        "nvmlDeviceGetPowerManagementLimit": 350000,
        "nvmlDeviceGetPersistenceMode": 1,
        "nvmlDeviceGetComputeRunningProcesses": [],
        "nvmlDeviceGetGraphicsRunningProcesses": [],
        "nvmlDeviceGetMemoryInfo": types.SimpleNamespace(total=24 << 30, used=0, reserved=300 << 20),
        "nvmlDeviceGetPowerManagementLimitConstraints": (100000, 350000),
        "nvmlDeviceGetRemappedRows": (0, 0, 0, 0),
        "nvmlDeviceGetNvLinkRemoteDeviceType": 0,
        "nvmlDeviceGetNvLinkRemotePciInfo": types.SimpleNamespace(busId=b"00000000:4B:00.0"),
        "nvmlDeviceGetNvLinkCapability": 1,
        "nvmlDeviceGetBAR1MemoryInfo": types.SimpleNamespace(bar1Total=256 << 20, bar1Free=0, bar1Used=0),
        # NVML_FI_DEV_GET_GPU_RECOVERY_ACTION answered NVML_ERROR_NOT_SUPPORTED (3), as on a GeForce card.
        "nvmlDeviceGetFieldValues": [
            types.SimpleNamespace(nvmlReturn=3, value=types.SimpleNamespace(uiVal=0))
        ],
    }

    def make(name: str) -> Any:
        def fn(*args: Any, **kw: Any) -> Any:
            calls.append(name)
            if name == "nvmlInit" and init_error:
                raise getattr(m, f"NVMLError_{init_error}")()
            if name == "nvmlDeviceGetNvLinkState" and nvlinks:
                if args[1] >= nvlinks:
                    raise m.NVMLError_InvalidArgument()  # type: ignore[attr-defined]
                return 1
            if name in unsupported or name == "nvmlDeviceGetNvLinkState":
                raise m.NVMLError_NotSupported()  # type: ignore[attr-defined]
            return values.get(name, 0)

        return fn

    class Module(types.ModuleType):
        def __getattr__(self, name: str) -> Any:
            if name.startswith("nvml"):
                return make(name)
            raise AttributeError(name)

    m.__class__ = Module
    m.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, m.NVML_VOLATILE_ECC, m.NVML_AGGREGATE_ECC = 1, 0, 1  # type: ignore[attr-defined]
    m.nvmlMemory_v2, m.NVML_NVLINK_MAX_LINKS, m.NVML_CLOCK_SM = 0x02000028, 18, 1  # type: ignore[attr-defined]
    return m


class TestLiveNvml:
    def test_not_supported_is_recorded_not_passed(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A NotSupported reading becomes Unavailable(not_supported); no NVLink reads as {}; nothing is ever set."""
        fake = _fake_pynvml(unsupported=("nvmlDeviceGetEccMode", "nvmlDeviceGetEnforcedPowerLimit"))
        monkeypatch.setitem(sys.modules, "pynvml", fake)
        from pytest_rigcheck.gpu.nvml import LiveNvml

        state = LiveNvml().system()
        g = state.gpus[0]
        assert (g.bdf, g.get("power_limit_mw"), g.get("nvlink_states")) == ("0000:17:00.0", 350000, {})
        assert g.get("ecc_mode").code == "not_supported"
        assert g.get("enforced_limit_mw").code == "not_supported"
        assert g.get("gpu_recovery_action").code == "not_supported"
        assert g.get("bar1_total_b") == 256 << 20
        assert state.driver == "570.133.07"
        assert not [
            c for c in fake.calls if "Set" in c or c.startswith(("nvmlDeviceClear", "nvmlDeviceReset"))
        ]

    def test_nvlink_remote_ends_recorded(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """With NVLinks, each link's remote end is recorded: device type, PCI address, P2P capability."""
        fake = _fake_pynvml(unsupported=("nvmlDeviceGetEccMode",), nvlinks=4)
        monkeypatch.setitem(sys.modules, "pynvml", fake)
        from pytest_rigcheck.gpu.nvml import LiveNvml

        g = LiveNvml().system().gpus[0]
        assert g.get("nvlink_states") == {str(k): 1 for k in range(4)}
        assert g.get("nvlink_remote")["3"] == {"type": "gpu", "bdf": "0000:4b:00.0", "p2p": 1}

    @pytest.mark.parametrize(
        ("error", "text"),
        [("DriverNotLoaded", "driver not loaded"), ("LibraryNotFound", "libnvidia-ml.so.1 not found")],
    )
    def test_no_driver_is_unavailable(self, monkeypatch: pytest.MonkeyPatch, error: str, text: str) -> None:
        """No driver or no library raises NvmlUnavailable (a FeatureUnavailable: UNREADABLE on a rig with NVIDIA GPUs)."""
        monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(init_error=error))
        from pytest_rigcheck.gpu.nvml import LiveNvml, NvmlUnavailable

        with pytest.raises(NvmlUnavailable, match=text):
            LiveNvml()

    def test_readings_for_the_soak(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """``readings`` (the soak sampler's): numbers as floats; an unsupported fan (passive card) and a
        field value NVML does not report (memory temperature on GDDR) read as None, not 0."""
        fake = _fake_pynvml(unsupported=("nvmlDeviceGetFanSpeed",))
        fake.NVML_CLOCK_MEM, fake.NVML_TEMPERATURE_GPU = 0, 0  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "pynvml", fake)
        from pytest_rigcheck.gpu.nvml import LiveNvml

        r = LiveNvml().readings(0)
        assert r["fan_pct"] is None and r["mem_temp_c"] is None
        assert r["power_mw"] == 0.0 and isinstance(r["power_mw"], float)
        assert set(r) == {
            "sm_mhz", "mem_mhz", "temp_c", "mem_temp_c", "power_mw", "reasons", "fan_pct", "replay", "gen", "width"
        }  # fmt: skip
        assert not [c for c in fake.calls if "Set" in c]

    def test_gpu_that_cannot_be_opened_is_recorded(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A GPU NVML counts but cannot open (fallen off the bus) is recorded as unopened, not a traceback."""
        fake = _fake_pynvml(unsupported=("nvmlDeviceGetEccMode",))

        def handle(i: int) -> str:
            if i == 1:
                raise fake.NVMLError("GPU is lost")  # type: ignore[attr-defined]
            return "h0"

        fake.nvmlDeviceGetCount = lambda: 2  # type: ignore[attr-defined]
        fake.nvmlDeviceGetHandleByIndex = handle  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "pynvml", fake)
        from pytest_rigcheck.gpu.nvml import LiveNvml

        state = LiveNvml().system()
        assert [g.index for g in state.gpus] == [0]
        assert state.unopened == [{"index": 1, "error": "nvmlDeviceGetHandleByIndex: GPU is lost"}]
        assert state.to_json()["unopened"] == state.unopened

    def test_no_permission_is_a_clear_error(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """NoPermission at init says to run as root."""
        monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(init_error="NoPermission"))
        from pytest_rigcheck.gpu.nvml import LiveNvml, NvmlPermissionError

        with pytest.raises(NvmlPermissionError, match="run as root"):
            LiveNvml()


def test_live_capture_data_is_readable() -> None:
    """The nvml.json captured live on 2x H200 reads back: 60 samples under load at Gen5 x16, SW power cap."""
    state = SystemState.from_json(json.loads((DATA / "h200x2-live-nvml.json").read_text()), "live")
    load = state.gpus[0].load()
    assert isinstance(load, LoadReadings)
    assert load.link == (5, 16) and load.reasons == 0x4 and len(load.samples) == 60


def test_plugin_import_is_cheap(pytester: pytest.Pytester) -> None:
    """A rig run registers the GPU feature plugin, and neither it nor the core imports pynvml or torch
    before a GPU check runs; without --rig the GPU plugin is not even imported."""
    pytester.makepyfile(
        test_x="""
        import sys
        def test_x(rig_rigs):
            assert "pynvml" not in sys.modules and "torch" not in sys.modules
            assert "pytest_rigcheck.gpu.plugin" in sys.modules

        def test_y():
            assert "pytest_rigcheck.gpu.plugin" not in sys.modules
    """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--rig-snapshot={SNAPSHOTS / 'rtx3090x2-gen4'}", "test_x.py::test_x", "-rA"
    )
    result.stdout.fnmatch_lines(["PASSED test_x.py::test_x*"])
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "test_x.py::test_y")
    result.assert_outcomes(passed=1)
