"""Driver faults judged by NVIDIA's Xid catalog, NVLink expectations, and BAR1 size: the public cases kept as tests.

Cases (inputs copied from ../shared/cases/public into tests/gpu/data/cases, the kernel's symlinks restored):

- 01-xid95-reset-required: rebuilt from scitix/sichek PR 121 and issue 51 (an Xid 95 left GPU1 needing a reset;
  NV_ERR_RESET_REQUIRED lines without a bus id).
- 09-small-bar1: rebuilt from tinygrad/open-gpu-kernel-modules issue 13 and noonghunna/club-3090 issue 734
  (P2P failed on a server whose RTX 4090s expose a 256 MB and a 512 MB BAR1).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from pytest_rigcheck.gpu import bar, health
from pytest_rigcheck.gpu.state import GpuState, Unavailable
from pytest_rigcheck.gpu.xid import FAIL, INFO, WARN, judge, nvrm_lines, parse_events
from pytest_rigcheck.profile import Profile, parse_profile
from pytest_rigcheck.rig import Rig
from pytest_rigcheck.snapshot import open_snapshot
from pytest_rigcheck.targets import GpuTarget

from ..conftest import SNAPSHOTS
from .conftest import DATA

CASES = DATA / "cases"
XID95 = CASES / "01-xid95-reset-required"
BAR1 = CASES / "09-small-bar1"
NO_BRIDGE = SNAPSHOTS / "rtx3090x2-nvlink-no-bridge"


def _run(pytester: pytest.Pytester, *args: str) -> tuple[set[str], str, int]:
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rfE", "--tb=short", *args)
    out = result.stdout.str()
    return {m.group(1) for m in re.finditer(r"^(?:FAILED|ERROR) \S*::(\S+)", out, re.M)}, out, int(result.ret)


def _rig(path: Path, profile: Profile | None = None) -> Rig:
    return Rig.replay(open_snapshot(path), profile or Profile())


def _target(rig: Rig, bdf: str) -> GpuTarget:
    return GpuTarget(rig, rig.pcie.functions[bdf])


def _state(path: Path, bdf: str, **values: Any) -> GpuState:
    data = json.loads((path / "nvml.json").read_text())
    g = GpuState.from_json(next(g for g in data["gpus"] if g["bdf"] == bdf))
    g.values.update(values)
    return g


# -- case 01: Xid 95 ---------------------------------------------------------------------------------


def test_case01_xid95_fails_only_its_gpu(pytester: pytest.Pytester) -> None:
    """sichek#51: GPU 0000:20:00.0 fails naming Xid 95 (uncontained ECC) and its resolution (reset the GPU); the
    other seven GPUs do not fail because of the NV_ERR_RESET_REQUIRED lines that name no GPU."""
    failed, out, ret = _run(pytester, f"--rig-snapshot={XID95 / 'snapshot'}", "-k", "xid")
    assert failed == {"test_no_fatal_xid[0000:20:00.0]"}, out
    assert ret == 1
    assert "Xid 95 (ROBUST_CHANNEL_UNCONTAINED_ERROR: Uncontained memory error; uncontained ECC error)" in out
    assert "RESET_GPU: reset the GPU" in out and "nvidia-smi -r -i 1" in out
    assert "NV_ERR_RESET_REQUIRED" in out  # the unattributed lines are put down to that GPU


def test_case01_nothing_else_fails(pytester: pytest.Pytester) -> None:
    """sichek#51, every suite: the Xid check of GPU1 is the only failure (BAR1 is not judged on SXM boards with
    their NVLinks up, the NVLink check passes the 18 links of each H100)."""
    failed, out, ret = _run(pytester, f"--rig-snapshot={XID95 / 'snapshot'}")
    assert failed == {"test_no_fatal_xid[0000:20:00.0]"}, out
    assert ret == 1


def test_shipped_xid95_variant_uses_recovery_action() -> None:
    """The modelled rtxpro6000x4-xid95-reset: GPU1 fails with its Xid and NVML's recovery action (Reset)."""
    path = SNAPSHOTS / "rtxpro6000x4-xid95-reset"
    rig = _rig(path)
    log = "\n".join(json.loads((path / "nvml.json").read_text())["kernel_log"])
    v = health.xid(_target(rig, "0000:04:00.0"), _state(path, "0000:04:00.0"), log, "test")
    assert v.status == "fail" and "NVML recovery action: GPU Reset" in str(v)
    other = health.xid(_target(rig, "0000:03:00.0"), _state(path, "0000:03:00.0"), log, "test")
    assert other.status == "pass" and "put down to the failing GPU(s) 0000:04:00.0" in other.summary


@pytest.mark.parametrize(
    ("line", "severity", "words"),
    [
        (
            "NVRM: Xid (PCI:0000:05:00): 95, pid=1, Uncontained ECC error",
            FAIL,
            ["uncontained ECC", "RESET_GPU"],
        ),
        ("NVRM: Xid (PCI:0000:05:00): 79, pid=1, GPU has fallen off the bus.", FAIL, ["RESTART_BM"]),
        ("NVRM: Xid (PCI:0000:05:00): 48, pid=1, DBE", FAIL, ["double-bit ECC", "WORKFLOW_XID_48"]),
        ("NVRM: Xid (PCI:0000:05:00): 171, pid=1, DRAM", FAIL, ["WORKFLOW_XID_48"]),
        (
            "NVRM: Xid (PCI:0000:05:00): 119, pid=1, Timeout waiting for RPC from GSP",
            FAIL,
            ["GSP_RPC_TIMEOUT"],
        ),
        ("NVRM: Xid (PCI:0000:05:00): 120, pid=1, GSP error", FAIL, ["RESET_GPU"]),
        (
            "NVRM: Xid (PCI:0000:05:00): 94, pid=1, Contained ECC error",
            WARN,
            ["contained ECC", "RESTART_APP"],
        ),
        ("NVRM: Xid (PCI:0000:05:00): 13, pid=1, Graphics Exception", WARN, ["RESTART_APP"]),
        ("NVRM: Xid (PCI:0000:05:00): 31, pid=1, MMU Fault", WARN, ["RESTART_APP"]),
        ("NVRM: Xid (PCI:0000:05:00): 63, pid=1, Row Remapper", INFO, ["IGNORE"]),
        (
            "NVRM: Xid (PCI:0000:05:00): 999, pid=1, new",
            WARN,
            ["not in NVIDIA Xid Catalog", "analyzing-xid-catalog"],
        ),
        (
            "NVRM: Xid (PCI:0000:05:00): 154, GPU recovery action changed from 0x0 (None) to 0x1 (GPU Reset Required)",
            FAIL,
            ["GPU Reset"],
        ),
        (
            "NVRM: Xid (PCI:0000:05:00): 154, GPU recovery action changed from 0x1 (Reset) to 0x0 (None)",
            INFO,
            [],
        ),
    ],
)
def test_xids_judged_by_the_catalog(line: str, severity: str, words: list[str]) -> None:
    """Each Xid gets the severity of its catalog bucket: reset or worse fails, an application restart warns,
    IGNORE is informational, an Xid not in the catalog warns naming the catalog; Xid 154 by its new action."""
    (event,) = parse_events(line)
    j = judge(event)
    assert j.severity == severity
    for w in words:
        assert w in j.name + " " + j.resolution


@pytest.mark.parametrize(
    ("line", "kind", "bdf"),
    [
        (
            "NVRM: GPU at PCI:0000:05:00: GPU-8a0e63d3 has fallen off the bus.",
            "fallen_off_bus",
            "0000:05:00.0",
        ),
        ("NVRM: GPU 0000:06:00.0: RmInitAdapter failed! (0x22:0x56:667)", "rm_init_failed", "0000:06:00.0"),
        ("NVRM: RmInitAdapter failed! (0x26:0x56:1474)", "rm_init_failed", None),
        ("NVRM: The NVIDIA probe routine failed for 1 device(s).", "probe_failed", None),
        ("nvidia: probe of 0000:07:00.0 failed with error -1", "probe_failed", "0000:07:00.0"),
        (
            "NVRM: nvAssertOkFailedNoLog: Assertion failed: Reset required [NV_ERR_RESET_REQUIRED] (0x00000062) "
            "returned from status @ kernel_channel.c:2874",
            "reset_required",
            None,
        ),
    ],
)
def test_driver_messages_without_an_xid(line: str, kind: str, bdf: str | None) -> None:
    """The driver's fault messages that carry no Xid number fail too, attributed where they name the GPU;
    a capture keeps them (the kernel's own 'nvidia: probe of ... failed' line included)."""
    (event,) = parse_events(line)
    assert (event.kind, event.bdf, judge(event).severity) == (kind, bdf, FAIL)
    assert nvrm_lines(line) == line + "\n"


def test_unattributed_fault_on_one_gpu_rig_is_that_gpu() -> None:
    """On a one-GPU rig a driver message naming no GPU can only be about that GPU: it fails."""
    rig = _rig(SNAPSHOTS / "h100x1")
    t = _target(rig, "0000:00:06.0")
    gpu = _state(SNAPSHOTS / "h100x1", "0000:00:06.0")
    v = health.xid(t, gpu, "NVRM: RmInitAdapter failed! (0x26:0x56:1474)\n", "test")
    assert v.status == "fail" and "RmInitAdapter" in v.summary


def test_unattributed_fault_on_many_gpus_warns_everywhere() -> None:
    """On a larger rig with no GPU to put it down to, a message naming no GPU warns on each GPU (never passes
    silently, never fails seven healthy GPUs)."""
    path = SNAPSHOTS / "rtx3090x2-gen4"
    rig = _rig(path)
    log = "NVRM: nvAssertOkFailedNoLog: Assertion failed: Reset required [NV_ERR_RESET_REQUIRED]\n"
    for bdf in ("0000:21:00.0", "0000:4b:00.0"):
        v = health.xid(_target(rig, bdf), _state(path, bdf), log, "test")
        assert v.status == "warn" and "cannot tell which of the 2 GPUs" in v.summary


def test_recovery_action() -> None:
    """NVML's recovery action: Reset fails even with a clean log; not offered (NOT_SUPPORTED) is said, and the
    readable log decides; with the log unreadable the check is unreadable unless NVML already says Reset."""
    path = SNAPSHOTS / "rtx3090x2-gen4"
    t = _target(_rig(path), "0000:21:00.0")
    v = health.xid(t, _state(path, "0000:21:00.0", gpu_recovery_action=4), "", "test")
    assert v.status == "fail" and "Drain and Reset" in str(v)
    ns = Unavailable("not supported", "not_supported")
    v = health.xid(t, _state(path, "0000:21:00.0", gpu_recovery_action=ns), "", "test")
    assert v.status == "pass" and "not offered by this GPU/driver" in v.summary
    log = Unavailable("permission denied", "no_permission")
    assert health.xid(t, _state(path, "0000:21:00.0", gpu_recovery_action=0), log, "t").status == "unreadable"
    assert health.xid(t, _state(path, "0000:21:00.0", gpu_recovery_action=1), log, "t").status == "fail"
    corrupt = health.xid(t, _state(path, "0000:21:00.0", gpu_recovery_action="reset"), "", "t")
    assert corrupt.status == "unreadable" and "impossible value 'reset'" in corrupt.summary


def test_app_level_xids_warn_with_count() -> None:
    """Xids that only need the application restarted warn, with their count."""
    path = SNAPSHOTS / "rtx3090x2-gen4"
    t = _target(_rig(path), "0000:21:00.0")
    log = "NVRM: Xid (PCI:0000:21:00): 13, pid=1, x\nNVRM: Xid (PCI:0000:21:00): 13, pid=2, y\n"
    v = health.xid(t, _state(path, "0000:21:00.0"), log, "test")
    assert v.status == "warn" and "x2" in v.summary and v.measured_value == 2


# -- NVLink -----------------------------------------------------------------------------------------


def _profile(text: str) -> Profile:
    import tomllib

    return parse_profile(tomllib.loads(text), "test.toml")


@pytest.mark.parametrize(
    ("profile", "status", "words"),
    [
        ('[gpu]\nnvlink = "none"', "pass", ["no bridge or switch fitted"]),
        ('[gpu]\nnvlink = "bridge"', "fail", ["fit the NVLink bridge"]),
        ('[gpu]\nnvlink = "nvswitch"', "fail", ["fabricmanager"]),
        ('[gpu.device."0000:21:00.0"]\nnvlink = "bridge"', "fail", ["fit the NVLink bridge"]),
        ("", "warn", ['nvlink = "none"']),
    ],
)
def test_nvlink_without_a_bridge(profile: str, status: str, words: list[str]) -> None:
    """A 3090 pair without an NVLink bridge (NVML: all 4 links inactive): "none" passes, "bridge" fails asking to
    fit the bridge, never to RMA the card; unsaid, it warns (nothing on the rig is up to compare with)."""
    rig = _rig(NO_BRIDGE, _profile(profile))
    t = _target(rig, "0000:21:00.0")
    peers = {b: _state(NO_BRIDGE, b) for b in ("0000:21:00.0", "0000:4b:00.0")}
    v = health.nvlink(t, peers["0000:21:00.0"], peers)
    assert v.status == status, str(v)
    for w in words:
        assert w in str(v)
    assert "RMA" not in str(v)


def test_nvlink_kinds(pytester: pytest.Pytester) -> None:
    """End to end on the shipped no-bridge rig: its own profile (nvlink = "none") passes; a profile asking for a
    bridge fails both GPUs with the fix to fit it."""
    failed, out, ret = _run(pytester, f"--rig-snapshot={NO_BRIDGE}", "-k", "nvlinks")
    assert failed == set() and ret == 0, out
    prof = pytester.path / "bridge.toml"
    prof.write_text((NO_BRIDGE / "profile.toml").read_text().replace('nvlink = "none"', 'nvlink = "bridge"'))
    failed, out, ret = _run(pytester, f"--rig-snapshot={NO_BRIDGE}", f"--rig-profile={prof}", "-k", "nvlinks")
    assert failed == {"test_nvlinks_up[0000:21:00.0]", "test_nvlinks_up[0000:4b:00.0]"}, out
    assert "fit the NVLink bridge" in out and "RMA" not in out


def test_nvlink_hardware_cases() -> None:
    """No NVLink hardware: n/a unless the profile asks for NVLink (then it fails, naming the card has none);
    some links down: fails naming them; all up: passes naming what they reach."""
    path = SNAPSHOTS / "rtx3090x2-gen4"
    t = _target(_rig(path), "0000:21:00.0")
    assert health.nvlink(t, _state(path, "0000:21:00.0")).status == "n/a"
    t_bridge = _target(_rig(path, _profile('[gpu]\nnvlink = "bridge"')), "0000:21:00.0")
    v = health.nvlink(t_bridge, _state(path, "0000:21:00.0"))
    assert v.status == "fail" and "no NVLink hardware" in v.summary
    down = _state(path, "0000:21:00.0", nvlink_states={"0": 1, "1": 0, "2": 1, "3": 1})
    v = health.nvlink(t, down)
    assert v.status == "fail" and "NVLink(s) 1 down (3 of 4 up" in v.summary
    remote = {str(k): {"type": "gpu", "bdf": "0000:4b:00.0", "p2p": 1} for k in range(4)}
    up = _state(path, "0000:21:00.0", nvlink_states={str(k): 1 for k in range(4)}, nvlink_remote=remote)
    v = health.nvlink(t, up)
    assert v.status == "pass" and "to GPU 0000:4b:00.0" in v.summary


def test_nvlink_inactive_where_others_are_up_fails() -> None:
    """Unsaid in the profile, a GPU with every link inactive fails when another GPU of the rig has links up."""
    t = _target(_rig(NO_BRIDGE), "0000:21:00.0")
    mine = _state(NO_BRIDGE, "0000:21:00.0")
    other = _state(NO_BRIDGE, "0000:4b:00.0", nvlink_states={str(k): 1 for k in range(4)})
    v = health.nvlink(t, mine, {"0000:21:00.0": mine, "0000:4b:00.0": other})
    assert v.status == "fail" and "other GPUs of this rig have NVLink up" in v.summary


@pytest.mark.parametrize(
    ("name", "status"),
    [("NVIDIA H100 80GB HBM3", "fail"), ("NVIDIA A100-SXM4-80GB", "fail"), ("NVIDIA H100 PCIe", "warn")],
)
def test_sxm_board_links_down_fail_without_a_profile(name: str, status: str) -> None:
    """An SXM board's NVLinks are wired on its baseboard: all inactive fails even with nothing in the profile
    (fabric manager, reset); a PCIe card with all links inactive may simply have no bridge (warns)."""
    t = _target(_rig(NO_BRIDGE), "0000:21:00.0")
    v = health.nvlink(t, _state(NO_BRIDGE, "0000:21:00.0", name=name))
    assert v.status == status, str(v)
    assert ("fabricmanager" in str(v)) == (status == "fail")


def test_bad_nvlink_value_names_the_choices() -> None:
    """A wrong [gpu] nvlink value stops the profile at load, naming the allowed values (never a per-check verdict)."""
    from pytest_rigcheck.errors import ProfileError

    with pytest.raises(ProfileError, match="'none', 'bridge', 'nvswitch'"):
        _profile('[gpu]\nnvlink = "yes"')


# -- BAR1 -------------------------------------------------------------------------------------------


def test_case09_small_bar1_flagged(pytester: pytest.Pytester) -> None:
    """tinygrad/open-gpu-kernel-modules#13: both GPUs (BAR1 256 MiB and 512 MiB of 24 GiB) fail on a rig that
    needs P2P, with the fix: Resizable BAR and Above 4G Decoding in the BIOS."""
    failed, out, ret = _run(
        pytester,
        f"--rig-snapshot={BAR1 / 'snapshot'}",
        f"--rig-profile={BAR1 / 'profile.toml'}",
        "-k",
        "bar1",
    )
    assert failed == {"test_bar1_aperture[0000:01:00.0]", "test_bar1_aperture[0000:02:00.0]"}, out
    assert ret == 1 and "BAR1 256 MiB" in out and "BAR1 512 MiB" in out
    assert "Above 4G Decoding" in out and "Resizable BAR" in out


def test_case09_large_bar1_says_nothing(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """The same rig with a 32 GiB BAR1 (Resizable BAR on, as on the desktop of the report) passes."""
    snap = tmp_path / "snap"
    shutil.copytree(BAR1 / "snapshot", snap, symlinks=True)
    for n, res in enumerate(sorted(snap.glob("sys/devices/pci0000:00/*/*/resource"))):
        lines = res.read_text().splitlines()
        if lines[1].split()[2] == "0x000000000014220c":  # the GPU's BAR1 line (64-bit prefetchable)
            start = (n + 1) << 40
            lines[1] = f"{start:#018x} {start + (32 << 30) - 1:#018x} 0x000000000014220c"
            res.chmod(0o644)
            res.write_text("\n".join(lines) + "\n")
    failed, out, ret = _run(
        pytester, f"--rig-snapshot={snap}", f"--rig-profile={BAR1 / 'profile.toml'}", "-k", "bar1"
    )
    assert failed == set() and ret == 0, out


def test_bar1_is_the_second_memory_bar() -> None:
    """NVIDIA's BAR1 is the second memory BAR: line 1 after a 32-bit BAR0 (RTX 4090), line 2 after a 64-bit BAR0
    (the H100 capture), so a 128 GiB aperture is not missed."""
    res = bar.read_resources(_rig(SNAPSHOTS / "h100x1"), "0000:00:06.0")
    assert not isinstance(res, Unavailable)
    assert bar.bar_sizes(res)[:2] == [16 << 20, 128 << 30] and bar.bar1_line(res) == 2
    res = bar.read_resources(_rig(BAR1 / "snapshot"), "0000:01:00.0")
    assert not isinstance(res, Unavailable)
    assert bar.bar_sizes(res)[:3] == [16 << 20, 256 << 20, 32 << 20] and bar.bar1_line(res) == 1


def test_bar1_not_applicable_without_p2p_and_for_one_gpu() -> None:
    """A small BAR1 does not matter where P2P is not used ([p2p] required = false) or on a one-GPU rig."""
    path = SNAPSHOTS / "rtx3090x2-small-bar1"
    rig = _rig(path, _profile("[p2p]\nrequired = false"))
    v = bar.check(_target(rig, "0000:21:00.0"), _state(path, "0000:21:00.0"))
    assert v.status == "n/a" and "BAR1 256 MiB" in v.summary
    one = _rig(SNAPSHOTS / "h100x1")
    assert (
        bar.check(_target(one, "0000:00:06.0"), _state(SNAPSHOTS / "h100x1", "0000:00:06.0")).status == "n/a"
    )


def test_bar1_not_applicable_over_nvlink() -> None:
    """Peers joined by NVLink (the 2x H200 capture: 18 links up on each) do not use BAR1 for P2P."""
    path = SNAPSHOTS / "h200x2-nvlink"
    v = bar.check(_target(_rig(path), "0000:00:06.0"), _state(path, "0000:00:06.0"))
    assert v.status == "n/a" and "over NVLink" in v.summary


def test_bar1_not_captured_is_judged_only_when_p2p_is_said(tmp_path: Path) -> None:
    """A snapshot that kept neither the resource file nor NVML's BAR1: not applicable while [p2p] required is
    unsaid; unreadable (never a pass) where the profile says P2P is required."""
    snap = tmp_path / "snap"
    shutil.copytree(SNAPSHOTS / "rtx3090x2-small-bar1", snap, symlinks=True)
    for res in snap.glob("sys/devices/pci0000:00/*/*/resource"):
        res.unlink()
    gpu = _state(snap, "0000:21:00.0")
    del gpu.values["bar1_total_b"]
    assert bar.check(_target(_rig(snap), "0000:21:00.0"), gpu).status == "n/a"
    said = _rig(snap, _profile("[p2p]\nrequired = true"))
    assert bar.check(_target(said, "0000:21:00.0"), gpu).status == "unreadable"


def test_bar1_unassigned_fails(tmp_path: Path) -> None:
    """A BAR1 the kernel could not place (IORESOURCE_UNSET) fails: the GPU's memory cannot be mapped."""
    snap = tmp_path / "snap"
    shutil.copytree(SNAPSHOTS / "rtx3090x2-small-bar1", snap, symlinks=True)
    res = next(snap.glob("sys/devices/pci0000:00/*/0000:21:00.0/resource"))
    lines = res.read_text().splitlines()
    start, end, _ = lines[1].split()  # as the kernel shows a BAR it could not place: size kept, flagged unset
    lines[1] = f"0x0000000000000000 {int(end, 16) - int(start, 16):#018x} 0x000000002014220c"
    res.write_text("\n".join(lines) + "\n")
    rig = _rig(snap, _profile("[p2p]\nrequired = true"))
    v = bar.check(_target(rig, "0000:21:00.0"), _state(snap, "0000:21:00.0"))
    assert v.status == "fail" and "BAR1 not assigned" in v.summary and "Above 4G Decoding" in str(v)


def test_corrupt_resource_is_unreadable(tmp_path: Path) -> None:
    """A resource file that is not 'start end flags' in hex is unreadable, not a pass."""
    snap = tmp_path / "snap"
    shutil.copytree(SNAPSHOTS / "rtx3090x2-small-bar1", snap, symlinks=True)
    res = next(snap.glob("sys/devices/pci0000:00/*/0000:21:00.0/resource"))
    res.write_text("garbage\n")
    gpu = _state(snap, "0000:21:00.0")
    del gpu.values["bar1_total_b"]
    v = bar.check(_target(_rig(snap, _profile("[p2p]\nrequired = true")), "0000:21:00.0"), gpu)
    assert v.status == "unreadable" and "corrupt line 0" in v.summary


def test_bar1_small_hint_for_p2p_diagnosis() -> None:
    """``bar1_small`` gives the P2P failure diagnosis its hint, and the P2P fixes carry it."""
    from pytest_rigcheck.p2p.checks import fixes

    rig = _rig(SNAPSHOTS / "rtx3090x2-small-bar1")
    hint = bar.bar1_small(rig, "0000:21:00.0")
    assert hint and "BAR1 is 256 MiB" in hint and "Above 4G Decoding" in hint
    assert any("BAR1 is 256 MiB" in f for f in fixes(rig, ["0000:21:00.0", "0000:4b:00.0"]))
    assert bar.bar1_small(_rig(SNAPSHOTS / "h200x2-nvlink"), "0000:00:06.0") is None


def test_fatal_xid_of_a_gpu_no_longer_on_the_bus_fails() -> None:
    """FRESH5: Xid 79 ("fallen off the bus") naming an address no GPU of the rig has was ignored (exit 0). A
    GPU that fell off the bus is often no longer enumerated: the fault fails, naming the address."""
    path = SNAPSHOTS / "rtx3090x2-gen4"
    t = _target(_rig(path), "0000:21:00.0")
    log = "[ 8123.5] NVRM: Xid (PCI:0000:61:00): 79, pid=4242, name=python3, GPU has fallen off the bus.\n"
    v = health.xid(t, _state(path, "0000:21:00.0"), log, "kernel log")
    assert v.status == "fail" and "0000:61:00.0, which is no GPU on this rig's bus now" in v.summary, (
        v.summary
    )
    assert any("0000:61:00.0" in f for f in v.fix)
