"""Green only on evidence: missing NVML/torch/driver on a rig with NVIDIA GPUs, GPUs NVML does not see, and
readings of the wrong type or impossible are UNREADABLE (failed), never skipped, passed or a traceback.

Cases from /work/shared/cases/gate.md: D5 (a live run without nvidia-ml-py skipped 47 NVML checks, exit 0;
without torch the P2P checks were 83 setup errors) and D14 (a string or null in nvml.json gave a TypeError).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_rigcheck.gpu.state import CORRUPT, GpuState, SystemState, Unavailable

from ..conftest import SNAPSHOTS

PRO = "rtxpro6000x4-switch"
LOST = "rtxpro6000x4-powercap-lost"
G2 = "0000:05:00.0"  # GPU2 of the switch rig, in SLOT2 behind switch port 0000:02:01.0 (see its MANIFEST)

# A plugin for the inner run: the live code path (Rig.live) reads ROOT instead of "/", as gate.md D5's
# `unshare -m` bind mounts do, and pynvml/torch cannot be imported.
LIVESIM = """
import sys
from pytest_rigcheck.rig import Rig
from pytest_rigcheck.source import Source

sys.modules["pynvml"] = None  # import pynvml -> ImportError
sys.modules["torch"] = None  # importlib.util.find_spec("torch") -> None

def _live(cls, profile):
    return cls("live-sim", Source({root!r}), profile)

Rig.live = classmethod(_live)
"""


def _outcome(out: str) -> tuple[set[str], set[str], set[str]]:
    ids = {k: {m.group(1) for m in re.finditer(rf"^{k} \S*::(\S+)", out, re.M)} for k in ("FAILED", "ERROR")}
    skipped = set(re.findall(r"^SKIPPED .*$", out, re.M))
    return ids["FAILED"], ids["ERROR"], skipped


def _live_sim(pytester: pytest.Pytester, root: Path, *args: str) -> tuple[str, pytest.RunResult]:
    pytester.makepyfile(livesim=LIVESIM.format(root=str(root)))
    result = pytester.runpytest_subprocess(
        "--rig", "-p", "livesim", "-p", "no:cacheprovider", "-rfEs", "--tb=short", *args
    )
    return result.stdout.str(), result


def test_live_rig_without_pynvml_fails_unreadable(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """gate.md D5: a live rig whose sysfs shows 4 NVIDIA GPUs bound to nvidia, without nvidia-ml-py and
    without torch or a loaded driver: the NVML and P2P checks FAIL as UNREADABLE with the install line or
    the driver fix (not skipped, not setup errors), and the run exits 1."""
    root = tmp_path / "rig"
    shutil.copytree(SNAPSHOTS / LOST, root, symlinks=True)
    (root / "proc/driver/nvidia/version").unlink()  # nvidia.ko not loaded
    out, result = _live_sim(
        pytester,
        root,
        "--rig-profile=4x-rtxpro6000-gen4-switch",
        "-k",
        "test_power_limit or test_circuit_budget or test_gpu_seen_by_nvml or test_p2p_latency",
    )
    failed, errors, skipped = _outcome(out)
    assert result.ret == 1, out
    assert errors == set() and skipped == set(), out
    assert f"test_power_limit[{G2}]" in failed and "test_circuit_budget[live-sim]" in failed, out
    assert f"test_gpu_seen_by_nvml[{G2}]" in failed, out
    assert any(t.startswith("test_p2p_latency[") for t in failed), out
    assert "UNREADABLE, not a pass: GPU checks cannot run: NVML bindings (pynvml) not installed" in out
    assert "pip install 'pytest-rigcheck[nvml]'" in out
    assert "4 NVIDIA GPU(s) on the PCIe bus" in out
    assert "P2P/NCCL checks cannot run: NVIDIA driver not loaded" in out
    assert "sudo modprobe nvidia" in out


def test_live_rig_without_torch_fails_not_errors(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """gate.md D5: with the driver loaded but no PyTorch, the P2P checks were 83 setup errors; now each is a
    failed UNREADABLE check naming the install line."""
    root = tmp_path / "rig"
    shutil.copytree(SNAPSHOTS / PRO, root, symlinks=True)
    assert (root / "proc/driver/nvidia/version").is_file()  # the driver is loaded
    out, result = _live_sim(pytester, root, "-k", "test_p2p_latency or test_nccl_busbw")
    failed, errors, skipped = _outcome(out)
    assert result.ret == 1, out
    assert errors == set() and skipped == set(), out
    assert len(failed) == 12 + 1, out  # 12 ordered pairs, one all-GPU NCCL group
    assert "P2P/NCCL checks cannot run: PyTorch is not installed" in out
    assert "pip install 'pytest-rigcheck[torch]'" in out


def test_no_nvidia_gpu_skips_saying_why(pytester: pytest.Pytester) -> None:
    """Where the PCIe bus shows no NVIDIA GPU (this test machine, or a live root without one) the GPU
    checks do not apply: skipped, and the reason says so."""
    pytester.makepyfile(
        test_x="""
        def test_nvml_one(rig_nvml):
            pass
        def test_nvml_two(rig_gpus):
            pass
    """
    )
    root = pytester.path / "empty-rig"
    (root / "sys/bus/pci/devices").mkdir(parents=True)
    (root / "proc").mkdir()
    (root / "proc/cmdline").write_text("ro quiet\n")
    out, result = _live_sim(pytester, root, "test_x.py", "-k", "nvml_one or nvml_two")
    result.assert_outcomes(skipped=2)
    assert out.count("GPU checks skipped: no NVIDIA GPU on the PCIe bus of this machine") == 2, out


# -- nvml.json: wrong types and impossible readings (D14) -------------------------------------------


def _gpu(state: dict[str, Any], bdf: str) -> dict[str, Any]:
    return next(g for g in state["gpus"] if g["bdf"] == bdf)


def _run(pytester: pytest.Pytester, snap: Path, *args: str) -> tuple[set[str], str]:
    result = pytester.runpytest_subprocess(
        f"--rig-snapshot={snap}", "-p", "no:cacheprovider", "-rfE", "--tb=short", *args
    )
    out = result.stdout.str()
    return {m.group(1) for m in re.finditer(r"^(?:FAILED|ERROR) \S*::(\S+)", out, re.M)}, out


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("power_limit_mw", "350000", "'350000' is not a number (mW)"),
        ("power_limit_mw", None, "None is not a number (mW)"),
        ("power_limit_mw", 0, "0 is not a possible reading (mW, 1..5e+06)"),
        ("power_limit_mw", 6_000_000, "6000000 is not a possible reading"),
        ("enforced_limit_mw", -350000, "-350000 is not a possible reading"),
    ],
)
def test_wrong_type_in_nvml_json_is_unreadable(
    pytester: pytest.Pytester, make_snapshot: Callable[..., Path], field: str, value: Any, why: str
) -> None:
    """gate.md D14: GPU2's power_limit_mw "350000" or null gave a TypeError traceback in test_power_limit and
    test_circuit_budget. Now the power checks of GPU2 fail as UNREADABLE naming nvml.json, the GPU and the
    field; impossible wattages (0, negative, above 5000 W) are corrupt too."""

    def mutate(state: dict[str, Any]) -> None:
        _gpu(state, G2)[field] = value

    failed, out = _run(pytester, make_snapshot(PRO, mutate), "-k", "power_limit or circuit")
    assert f"test_power_limit[{G2}]" in failed, out
    assert "TypeError" not in out and "Traceback" not in out, out
    assert f"nvml.json gpus[2] ({G2}) field {field}: {why}" in out, out
    assert "UNREADABLE, not a pass" in out


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("nvlink_states", []),
        ("nvlink_states", {str(k): 1 for k in range(40)}),  # "40 up" on an H200: NVML has at most 36
        ("nvlink_states", {"0": 1, "1": 1, "5": 1}),  # NVML numbers links 0..n-1
        ("ecc_mode", {"0": 1}),
        ("processes", {"pid": 1}),
        ("processes", [{"pid": 1, "name": "python3", "used_b": 1 << 30}]),  # FRESH5: no kind -> KeyError
        ("remapped_rows", [0, -1, 0, 0]),
        ("temperature_c", 250),
        ("pcie_replay", -3),
        ("load", {"samples": [[1.0, "4", 16, 4, 300000, 1800]]}),
    ],
)
def test_bad_field_is_corrupt_at_load(field: str, value: Any) -> None:
    """Every field is checked once, in GpuState.from_json: a list where an object is (or the reverse), a
    negative count, a temperature above 200 C, text in a sample under load: Unavailable(corrupt)."""
    g = GpuState.from_json(
        {"index": 2, "bdf": G2, "power_limit_mw": 350000, field: value}, "x/nvml.json gpus[2]"
    )
    got = g.get(field)
    assert isinstance(got, Unavailable) and got.code == CORRUPT, got
    assert f"x/nvml.json gpus[2] ({G2}) field {field}:" in got.reason
    assert g.get("power_limit_mw") == 350000


def test_unplaceable_gpu_entry_is_a_corrupt_file() -> None:
    """An entry whose index or bdf is unusable cannot be matched to the bus: the file is corrupt (every GPU
    check UNREADABLE), with the field named."""
    with pytest.raises(ValueError, match=r"gpus\[0\] field index: '0' is not an NVML index"):
        SystemState.from_json({"format": 1, "gpus": [{"index": "0", "bdf": G2}]}, "n.json")
    with pytest.raises(ValueError, match=r"gpus\[0\]: \[1, 2\] is not an object"):
        SystemState.from_json({"format": 1, "gpus": [[1, 2]]}, "n.json")
    s = SystemState.from_json({"format": 1, "gpus": [], "cuda": "12040"}, "n.json")
    assert isinstance(s.cuda, Unavailable) and s.cuda.code == CORRUPT


# -- NVML vs PCIe -----------------------------------------------------------------------------------


def test_gpu_missing_from_nvml_fails_named(
    pytester: pytest.Pytester, make_snapshot: Callable[..., Path]
) -> None:
    """An NVIDIA GPU on the PCIe bus that nvml.json lacks (dead, unbound, fallen off the bus) fails
    test_gpu_seen_by_nvml naming BDF, slot and path with what to look at; its other NVML checks are
    UNREADABLE saying NVML does not see it; the other GPUs pass."""

    def drop(state: dict[str, Any]) -> None:
        state["gpus"] = [g for g in state["gpus"] if g["bdf"] != G2]

    failed, out = _run(
        pytester, make_snapshot(PRO, drop), "-k", "seen_by_nvml or power_limit or ecc or vram or circuit"
    )
    assert failed == {
        f"test_gpu_seen_by_nvml[{G2}]",
        f"test_power_limit[{G2}]",
        f"test_vram_free[{G2}]",
        f"test_no_uncorrected_ecc[{G2}]",
        f"test_circuit_budget[{PRO}]",
    }, out
    assert 'in slot "SLOT2": on the PCIe bus (driver nvidia) but NVML does not see it' in out, out
    assert "fallen off the bus" in out and f"nvidia-smi -q -i {G2}" in out and "reseat" in out
    assert "path: 0000:00:01.1 root port" in out, out
    assert "power limit unknown: NVML does not see this GPU" in out, out


def test_unopened_gpu_is_named(make_snapshot: Callable[..., Path]) -> None:
    """A GPU NVML counts but cannot open (nvmlDeviceGetHandleByIndex fails) is recorded, not a traceback,
    and the cross-check names it."""
    from pytest_rigcheck.gpu import inventory
    from pytest_rigcheck.profile import Profile
    from pytest_rigcheck.rig import Rig
    from pytest_rigcheck.snapshot import open_snapshot
    from pytest_rigcheck.targets import gpus

    snap = make_snapshot(PRO)
    data = json.loads((snap / "nvml.json").read_text())
    data["gpus"] = [g for g in data["gpus"] if g["bdf"] != G2]
    data["unopened"] = [{"index": 2, "error": "nvmlDeviceGetHandleByIndex: GPU is lost"}]
    state = SystemState.from_json(data, "n.json")
    rig = Rig.replay(open_snapshot(str(snap)), Profile())
    t = next(x for x in gpus(rig) if x.gpu.bdf == G2)
    v = inventory.seen_by_nvml(t, Unavailable("not in NVML", "not_in_nvml"), state)
    assert v.status == "fail" and v.target["slot"] == "SLOT2"
    assert "NVML counted GPU index 2 but could not open it: nvmlDeviceGetHandleByIndex: GPU is lost" in str(v)


# -- contradictory records: NVML vs PCIe, limits vs constraints, counters that go backwards ----------


def _stray(state: dict[str, Any]) -> None:
    state["gpus"].append({**state["gpus"][3], "bdf": "0000:99:00.0", "index": 4, "uuid": "GPU-ffff"})


def _set(field: str, value: Any, bdf: str = G2) -> Callable[[dict[str, Any]], None]:
    def mutate(state: dict[str, Any]) -> None:
        _gpu(state, bdf).update({field: value} if not isinstance(value, dict) or field else value)

    return mutate


def _dup(field: str) -> Callable[[dict[str, Any]], None]:
    def mutate(state: dict[str, Any]) -> None:
        state["gpus"][3][field] = _gpu(state, G2)[field]

    return mutate


def _load(before: int, after: int) -> Callable[[dict[str, Any]], None]:
    def mutate(state: dict[str, Any]) -> None:
        _gpu(state, G2)["load"].update(replay_before=before, replay_after=after)

    return mutate


def _samples(col: int, value: Any, only: int | None = None, **gpu: Any) -> Callable[[dict[str, Any]], None]:
    """Set column ``col`` of G2's load samples (``t_s, gen, width, ...``) to ``value`` (a callable of the
    sample's number), in every sample or ``only`` one; ``gpu`` sets fields of G2 beside. FRESH3 F-N11, F-N20:
    a link under load above the GPU's own maximum (NVML's, or sysfs: the lesser of the GPU's and the switch
    port's above it, Gen4 on this rig although the GPU is Gen5), times that do not rise, samples spanning a
    sliver of window_s."""

    def mutate(state: dict[str, Any]) -> None:
        g = _gpu(state, G2)
        g.update(gpu)
        for i, s in enumerate(g["load"]["samples"]):
            if only is None or i == only:
                s[col] = value(i) if callable(value) else value

    return mutate


def _no_samples(state: dict[str, Any]) -> None:
    _gpu(state, G2)["load"]["samples"] = []


def _limits(state: dict[str, Any]) -> None:
    g = _gpu(state, G2)
    g.update(power_limit_mw=350000, enforced_limit_mw=350000, default_limit_mw=350000)
    g["limit_constraints_mw"] = [400000, 600000]


def _kernel_log(state: dict[str, Any]) -> None:
    state["kernel_log"] = 5


def _mem(state: dict[str, Any]) -> None:
    g = _gpu(state, G2)
    g["memory_used_b"] = g["memory_total_b"] + 1


@pytest.mark.parametrize(
    ("mutate", "check", "why"),
    [
        (_stray, f"test_circuit_budget[{PRO}]", "lists GPU4 0000:99:00.0, not on the PCIe bus"),
        (_dup("index"), f"test_power_limit[{G2}]", "field index: 2 appears in gpus[2], gpus[3]"),
        (_dup("bdf"), f"test_power_limit[{G2}]", f"field bdf: '{G2}' appears in gpus[2], gpus[3]"),
        (_dup("uuid"), f"test_power_limit[{G2}]", "field uuid: "),  # FRESH5: one UUID on two GPUs
        (
            _set("memory_reserved_b", 3 * 102_641_893_376),
            f"test_gpu_seen_by_nvml[{G2}]",
            "memory_reserved_b 307925680128 is above memory_total_b",
        ),
        (_set("limit_constraints_mw", [600000, 100000]), f"test_power_limit[{G2}]", "minimum above maximum"),
        (_limits, f"test_power_limit[{G2}]", "outside the card's own limit_constraints_mw [400000, 600000]"),
        (
            _load(10, 2),
            f"test_no_pcie_replays_under_load[{G2}]",
            "replay_after 2 is below load.replay_before 10",
        ),
        (_set("bar1_total_b", -1), f"test_bar1_aperture[{G2}]", "field bar1_total_b: -1 is not a possible"),
        (
            _set("bar1_total_b", "big"),
            f"test_bar1_aperture[{G2}]",
            "field bar1_total_b: 'big' is not a number",
        ),
        (_mem, f"test_vram_free[{G2}]", "memory_used_b"),
        (_kernel_log, f"test_no_fatal_xid[{G2}]", "field kernel_log: 5 is not a list of lines"),
        (_set("power_usage_mw", -5), f"test_power_limit[{G2}]", "field power_usage_mw: -5 is not a possible"),
        (
            _set("pcie_gen", 7),
            f"test_link_under_load[{G2}]",
            "pcie_gen = 7 (Gen7) is above the link's own maximum pcie_max_gen = 4 (Gen4)",
        ),
        (
            _samples(1, 5),
            f"test_link_under_load[{G2}]",
            "load.samples[0] gen = 5 (Gen5) is above the link's own maximum pcie_max_gen = 4 (Gen4)",
        ),
        (
            _samples(1, 5, pcie_gen=4),
            f"test_link_under_load[{G2}]",
            "load.samples[0] gen = 5 (Gen5) is above the link's own maximum pcie_max_gen = 4 (Gen4)",
        ),
        (
            _samples(2, 32),
            f"test_link_not_flapping[{G2}]",
            "load.samples[0] width = 32 (x32) is above the link's own maximum pcie_max_width = 16 (x16)",
        ),
        (
            _samples(2, 32, only=7),
            f"test_clock_event_reasons[{G2}]",
            "load.samples[7] width = 32 (x32) is above the link's own maximum pcie_max_width = 16",
        ),
        (
            _samples(1, 5, pcie_max_gen={"unavailable": "not supported", "code": "not_supported"}),
            f"test_link_not_flapping[{G2}]",
            "gen = 5 (Gen5) is above the link's own maximum 0000:02:02.0 max_link_speed = 4 (Gen4)",
        ),
        (
            _samples(2, 3),
            f"test_link_not_flapping[{G2}]",
            "load.samples[0] width = 3 is not a PCIe link width",
        ),
        (
            _samples(0, 1.0),
            f"test_link_not_flapping[{G2}]",
            "load.samples[1] t_s = 1.0 does not follow the previous sample's 1.0",
        ),
        (
            _samples(0, lambda i: 1.0 + i / 1000),
            f"test_link_not_flapping[{G2}]",
            "link readings under load cover 0.04 s of the 3 s window",
        ),
        (
            _no_samples,
            f"test_no_pcie_replays_under_load[{G2}]",
            "PCIe replay counter 0 -> 0, but no sample was taken under load",
        ),
        (_set("pcie_width", 17), f"test_link_under_load[{G2}]", "17 is not a PCIe link width"),
        (_set("pstate", 99), f"test_gpu_seen_by_nvml[{G2}]", "its NVML record holds 1 impossible reading"),
    ],
    ids=[
        "stray-bdf",
        "dup-index",
        "dup-bdf",
        "dup-uuid",
        "reserved-above-total",
        "min-above-max",
        "limit-below-min",
        "replay-backwards",
        "bar1-negative",
        "bar1-text",
        "used-above-total",
        "kernel-log-type",
        "negative-watts",
        "idle-gen-above-max",
        "load-gen-above-max",
        "load-gen-above-max-idle-at-max",
        "load-width-above-max",
        "one-load-sample-above-max",
        "load-gen-above-the-switch-port-max",
        "load-width-3",
        "load-samples-one-instant",
        "load-samples-span-a-sliver",
        "load-no-samples-replays",
        "width-17",
        "unread-field",
    ],
)
def test_contradictory_nvml_json_is_unreadable(
    pytester: pytest.Pytester,
    make_snapshot: Callable[..., Path],
    mutate: Callable[[dict[str, Any]], None],
    check: str,
    why: str,
) -> None:
    """A new user's false passes: NVML listing a GPU the PCIe bus lacks (the circuit summed 4 of 5 boards),
    two entries with one index or BDF, a limit outside the card's own constraints
    (nvmlDeviceGetPowerManagementLimitConstraints), a replay counter that went down, an impossible BAR1
    size, used memory above total, a kernel_log of the wrong type. Each is a corrupt record: the named
    check FAILS as UNREADABLE naming file and field, and the run exits 1."""
    name = check.split("[")[0]
    result = pytester.runpytest_subprocess(
        f"--rig-snapshot={make_snapshot(PRO, mutate)}",
        "-p",
        "no:cacheprovider",
        "-rfEs",
        "--tb=short",
        "-k",
        name,
    )
    out = result.stdout.str()
    assert result.ret == 1, out
    assert re.search(rf"^FAILED \S*::{re.escape(check)}", out, re.M), out
    assert "UNREADABLE, not a pass" in out and why in out, out
    assert "nvml.json" in out and "Traceback" not in out, out


def test_soak_aer_counter_backwards_is_unreadable(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """soak.json with a hop's AER counters lower at the end than at the start (they only rise,
    Documentation/PCI/pcieaer-howto.rst) is corrupt: test_soak FAILS as UNREADABLE, exit 1."""
    snap = tmp_path / "soak"
    shutil.copytree(SNAPSHOTS / "rtx3090x2-soak-healthy", snap, symlinks=True)
    data = json.loads((snap / "soak.json").read_text())
    hop = data["gpus"]["0000:21:00.0"]["aer_hops"]["0000:00:01.1"]
    hop["start"], hop["end"] = [5, 0, 0], [1, 0, 0]
    (snap / "soak.json").write_text(json.dumps(data))
    result = pytester.runpytest_subprocess(
        f"--rig-snapshot={snap}", "-p", "no:cacheprovider", "-rfEs", "--tb=short", "-k", "test_soak"
    )
    out = result.stdout.str()
    assert result.ret == 1, out
    assert re.search(r"^FAILED \S*::test_soak\[0000:21:00.0\]", out, re.M), out
    assert "UNREADABLE" in out and "end [1, 0, 0] is below start [5, 0, 0]" in out, out


def test_linkhealth_aer_counter_backwards_is_unreadable(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """linkhealth.json's end reading below the sysfs start reading of a hop (AER counters only rise,
    Documentation/PCI/pcieaer-howto.rst) is corrupt: test_link_errors_not_growing FAILS as UNREADABLE."""
    snap = tmp_path / "lh"
    shutil.copytree(SNAPSHOTS / "rtx3090x2-soak-healthy", snap, symlinks=True)
    aer = (snap / "sys/bus/pci/devices/0000:00:01.1").resolve() / "aer_dev_correctable"
    text = aer.read_text().replace("TOTAL_ERR_COR 0", "TOTAL_ERR_COR 7")
    aer.unlink()
    aer.write_text(text)
    result = pytester.runpytest_subprocess(
        f"--rig-snapshot={snap}",
        "-p",
        "no:cacheprovider",
        "-rfEs",
        "--tb=short",
        "-k",
        "link_errors_not_growing",
    )
    out = result.stdout.str()
    assert result.ret == 1, out
    assert re.search(r"^FAILED \S*::test_link_errors_not_growing\[0000:21:00.0\]", out, re.M), out
    assert "UNREADABLE" in out and "correctable went backwards 7 -> 0" in out, out


def test_linkhealth_end_reading_missing_is_unreadable(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """Fresh-user finding: linkhealth.json without the end reading of a GPU's hops made
    test_link_errors_not_growing skip as "kernel without CONFIG_PCIEAER", while the same run read those AER
    counters at the start. The counters exist; the end reading is missing: UNREADABLE naming the hops."""
    snap = tmp_path / "lh"
    shutil.copytree(SNAPSHOTS / "rtx3090x2-soak-healthy", snap, symlinks=True)
    lh = snap / "linkhealth.json"
    data = json.loads(lh.read_text())
    for bdf in ("0000:4b:00.0", "0000:00:03.1"):
        data["end"].pop(bdf)
    lh.write_text(json.dumps(data))
    result = pytester.runpytest_subprocess(
        f"--rig-snapshot={snap}",
        "-p",
        "no:cacheprovider",
        "-rfEs",
        "--tb=short",
        "-k",
        "link_errors_not_growing",
    )
    out = result.stdout.str()
    assert result.ret == 1, out
    assert re.search(r"^FAILED \S*::test_link_errors_not_growing\[0000:4b:00.0\]", out, re.M), out
    assert "were read at the start but the end reading (linkhealth.json) has none" in out, out
    assert "CONFIG_PCIEAER" not in out, out


def test_nvml_gpu_not_on_the_bus_makes_every_nvml_check_unreadable(
    pytester: pytest.Pytester, make_snapshot: Callable[..., Path]
) -> None:
    """Fresh-user finding: an nvml.json GPU at 0000:99:00.0 (not on the PCIe bus) was noticed only by
    test_circuit_budget, and a profile without circuit_w gave 172 passed, exit 0. NVML and PCIe disagreeing
    means no NVML reading can be placed on a GPU: every NVML check is UNREADABLE naming the stray BDF."""

    def stray(state: dict[str, Any]) -> None:
        extra = dict(state["gpus"][0], bdf="0000:99:00.0", index=len(state["gpus"]))
        state["gpus"].append(extra)

    failed, out = _run(pytester, make_snapshot(PRO, stray), "-k", "power_limit or vram or seen_by_nvml")
    assert failed and all(
        name.split("[")[0] in {"test_power_limit", "test_vram_free", "test_gpu_seen_by_nvml"}
        for name in failed
    ), out
    assert f"test_power_limit[{G2}]" in failed, out
    assert "lists GPU(s) at 0000:99:00.0 that are not on this rig's PCIe bus" in out, out
    assert "Traceback" not in out


@pytest.mark.parametrize("doc", ["[]", "5", '"x"', "null"])
def test_nvml_json_not_an_object_is_unreadable(pytester: pytest.Pytester, tmp_path: Path, doc: str) -> None:
    """Fresh-user finding: an nvml.json whose top level is a list gave 97 AttributeError tracebacks."""
    snap = tmp_path / "s"
    shutil.copytree(SNAPSHOTS / "rtxpro6000x4-switch", snap, symlinks=True)
    (snap / "nvml.json").write_text(doc)
    result = pytester.runpytest_subprocess(
        f"--rig-snapshot={snap}", "-p", "no:cacheprovider", "-k", "power_limit"
    )
    out = result.stdout.str()
    assert result.ret == 1 and "not an object" in out and "UNREADABLE" in out, out
    assert "Traceback" not in out and "AttributeError" not in out, out


@pytest.mark.parametrize("change", ["vendor", "driver"])
def test_nvml_gpu_that_pcie_says_is_not_nvidias(
    pytester: pytest.Pytester, tmp_path: Path, change: str
) -> None:
    """Fresh-user finding: GPU1's sysfs vendor set to AMD (0x1002), or its driver link to nouveau, while
    nvml.json names it an RTX 3090: "seen by NVML as GPU1", 41 passed. NVML only reports GPUs the nvidia
    driver runs: NVML and PCIe disagree, so that GPU's NVML checks are UNREADABLE, saying so."""
    snap = tmp_path / "s"
    shutil.copytree(SNAPSHOTS / "rtx3090x2-gen4", snap, symlinks=True)
    dev = (snap / "sys/bus/pci/devices/0000:4b:00.0").resolve()
    if change == "vendor":
        (dev / "vendor").unlink()
        (dev / "vendor").write_text("0x1002\n")
    else:
        (dev / "driver").unlink()
        (dev / "driver").symlink_to("../../../../bus/pci/drivers/nouveau")
    result = pytester.runpytest_subprocess(
        f"--rig-snapshot={snap}", "-p", "no:cacheprovider", "-k", "seen_by_nvml"
    )
    out = result.stdout.str()
    assert result.ret == 1 and "NVML and PCIe disagree" in out and "UNREADABLE" in out, out


@pytest.mark.parametrize(
    ("name", "memory_b", "foreign"),
    [
        ("NVIDIA H100 80GB HBM3", 85520809984, True),  # FRESH3 F-NM, as the fresh user wrote it
        ("NVIDIA GeForce RTX 3090", 25769803776, True),
        (
            "NVIDIA A100-SXM4-80GB",
            85899345920,
            True,
        ),  # a model the id table does not list: still another model
        ("NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition", None, False),  # the same model number
        ("NVIDIA TITAN V", None, False),  # no model number: no contradiction claimed
    ],
)
def test_nvml_name_of_another_model_than_the_pci_id_is_unreadable(
    pytester: pytest.Pytester,
    make_snapshot: Callable[..., Path],
    name: str,
    memory_b: int | None,
    foreign: bool,
) -> None:
    """FRESH3 F-NM: nvml.json naming every GPU "NVIDIA H100 80GB HBM3" (80 GB) at the addresses of the RTX PRO
    6000 Blackwell cards (sysfs device 0x2bb1) gave 173 passed, exit 0, every message calling them H100. The
    PCI device ID and NVML's name of one address must name one model (pcie.other_model): otherwise NVML and
    PCIe disagree, the snapshot mixes two machines, and every NVML check of those GPUs is UNREADABLE."""

    def rename(state: dict[str, Any]) -> None:
        for g in state["gpus"]:
            g["name"] = name
            if memory_b is not None:
                g["memory_total_b"] = memory_b

    failed, out = _run(pytester, make_snapshot(PRO, rename), "-k", "seen_by_nvml or power_limit or vram")
    if not foreign:
        assert failed == set(), out
        return
    assert {f"test_gpu_seen_by_nvml[{G2}]", f"test_power_limit[{G2}]", f"test_vram_free[{G2}]"} <= failed, out
    assert (
        f"{G2} is NVIDIA RTX PRO 6000 Blackwell Workstation Edition by its PCI ID 10de:2bb1 (sysfs), yet "
        in out
    ), out
    assert f"names the GPU there {name!r}" in out and "NVML and PCIe disagree" in out and "UNREADABLE" in out
    assert "Traceback" not in out


def test_nvml_name_judged_only_for_a_known_pci_id() -> None:
    """An id not in the table (pcie.DEVICES) says nothing about the model: no contradiction claimed; one
    model spelled two ways (pci.ids "H100 SXM5 80GB", NVML "NVIDIA H100 80GB HBM3") is one model."""
    from pytest_rigcheck.pcie import model_number, other_model

    assert other_model(0x10DE, 0x2BB4, "NVIDIA H100 80GB HBM3") is None  # unknown id
    assert other_model(0x10DE, 0x2330, "NVIDIA H100 80GB HBM3") is None
    assert other_model(0x10DE, 0x2335, "NVIDIA H200") is None
    assert other_model(0x10DE, 0x2204, "NVIDIA GeForce RTX 3090") is None
    assert other_model(0x10DE, 0x2BB1, "NVIDIA H100 80GB HBM3") == "H100 SXM5 80GB"
    assert other_model(0x10DE, 0x2BB1, "NVIDIA GH200 480GB") == "model GH200"
    assert model_number("NVIDIA A100-SXM4-80GB") == "A100" and model_number("NVIDIA TITAN V") is None


@pytest.mark.parametrize("where", ["proc/driver/nvidia/version", "sys/module/nvidia/version"])
def test_kernel_module_and_nvml_driver_disagree(
    pytester: pytest.Pytester, tmp_path: Path, where: str
) -> None:
    """FRESH4: the loaded module 550 beside NVML's 570 passed test_versions (even against min_driver 560).
    NVML does not start on such a mismatch, so the two readings are contradictory: UNREADABLE, naming both."""
    snap = tmp_path / "s"
    shutil.copytree(SNAPSHOTS / PRO, snap, symlinks=True)
    path = snap / where
    path.parent.mkdir(parents=True, exist_ok=True)
    if where.startswith("proc"):
        path.write_text(path.read_text().replace("570.133.07", "550.54.15"))
    else:
        path.write_text("550.54.15\n")
    failed, out = _run(pytester, snap, "-k", "versions")
    assert failed == {f"test_versions[{PRO}]"}, out
    assert "NVML reports driver 570.133.07 but the loaded kernel module is 550.54.15" in out, out
