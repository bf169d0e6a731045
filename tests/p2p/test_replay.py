"""Replaying snapshots with ``p2p.json``: the verdicts the figures promise, with devices, figures and fixes named."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_rigcheck.p2p.models import captured_p2p, modelled_p2p

from ..conftest import REPO, SNAPSHOTS

SUITES = [
    str(REPO / "suites" / f)
    for f in ("test_p2p_bandwidth.py", "test_p2p_latency.py", "test_nccl_allreduce.py", "test_cuda_ipc.py")
]
DATA = Path(__file__).parent / "data"
CAPTURES = REPO.parent / "shared" / "captures"


def gpu_bdfs(snapshot: Path) -> list[str]:
    devices = snapshot / "sys/bus/pci/devices"
    return sorted(d.name for d in devices.iterdir() if (d / "class").read_text().startswith("0x03"))


@pytest.fixture
def snap(tmp_path: Path) -> Callable[..., Path]:
    """A copy of a shipped snapshot with the given ``p2p.json`` (``None``: none)."""

    def make(base: str, data: dict[str, Any] | None) -> Path:
        dest = tmp_path / base
        shutil.copytree(SNAPSHOTS / base, dest, symlinks=True)
        (dest / "p2p.json").unlink(missing_ok=True)
        if data is not None:
            (dest / "p2p.json").write_text(json.dumps(data))
        return dest

    return make


def run(pytester: pytest.Pytester, snapshot: Path, *extra: str) -> tuple[set[str], str, pytest.RunResult]:
    result = pytester.runpytest_subprocess(
        f"--rig-snapshot={snapshot}", *SUITES, "-rfEsw", "-p", "no:cacheprovider", "--tb=short", *extra
    )
    out = result.stdout.str()
    failed = {m.group(1) for m in re.finditer(r"^(?:FAILED|ERROR) \S*::(\S+)", out, re.M)}
    return failed, out, result


def _model(name: str) -> tuple[dict[str, Any], list[str]]:
    data = modelled_p2p(name, gpu_bdfs(SNAPSHOTS / name))
    assert data is not None
    return data, data.pop("expect_fail")


@pytest.mark.parametrize(
    "name", ["rtx3090x2-gen4", "rtx3090x2-acs-root-port", "rtxpro6000x4-switch", "rtxpro6000x4-acs-switch"]
)
def test_modelled_promise(pytester: pytest.Pytester, snap: Callable[..., Path], name: str) -> None:
    """Each modelled rig fails exactly the checks its model promises, each failure naming its GPUs and a fix."""
    data, want = _model(name)
    failed, out, _ = run(pytester, snap(name, data))
    assert failed == set(want), out
    for test_id in want:
        assert test_id.split("[", 1)[1].rstrip("]").split("->")[0] in out or "[all]" in test_id
    if want:
        assert "fix: " in out


def test_acs_switch_names_bridges_and_band(pytester: pytest.Pytester, snap: Callable[..., Path]) -> None:
    """ACS on the switch: bidir fails against the profile's 50.4 GB/s with the setpci fix; unidir only warns."""
    data, _ = _model("rtxpro6000x4-acs-switch")
    _, out, _ = run(pytester, snap("rtxpro6000x4-acs-switch", data))
    assert re.search(r"bidirectional P2P bandwidth 26.* GB/s, below 45.4 GB/s", out), out
    assert "[p2p] min_bidir_gbps" in out
    assert "setpci -s 0000:02:00.0 ECAP_ACS+0x6.w=0000" in out


def test_warning_band(pytester: pytest.Pytester, snap: Callable[..., Path]) -> None:
    """A reading below the pass line but inside the band, after its retry, passes with a warning that says so."""
    data, _ = _model("rtxpro6000x4-switch")
    data["pairs"]["0000:03:00.0->0000:04:00.0"]["unidir_gbps"] = [24.9, 25.2]
    failed, out, _ = run(pytester, snap("rtxpro6000x4-switch", data))
    assert not failed, out
    assert "rigcheck warnings" in out and "25.2 GB/s is inside the warning band (>= 27.5 GB/s" in out


def test_geforce_without_p2p_is_not_applicable(pytester: pytest.Pytester, snap: Callable[..., Path]) -> None:
    """Stock GeForce (NVML CHIPSET_NOT_SUPPORTED) with [p2p] required = false: P2P checks skip, NCCL ones judge SHM."""
    data, _ = _model("rtx3090x2-gen4")
    failed, out, result = run(pytester, snap("rtx3090x2-gen4", data))
    assert not failed
    assert "[p2p] required = false" in out
    result.assert_outcomes(passed=6, skipped=15)


@pytest.mark.parametrize("capture", ["h200x2-live-p2p.json", "h200x2-live-groupctl-p2p.json"])
def test_live_h200_capture_passes(pytester: pytest.Pytester, snap: Callable[..., Path], capture: str) -> None:
    """The live 2x H200 figures (taken by this package on an H200 pair: control at top level, then per
    group) replay as a clean pass."""
    data = json.loads((DATA / capture).read_text())
    failed, out, result = run(pytester, snap("h200x2-nvlink", data))
    assert not failed, out
    result.assert_outcomes(passed=21)


@pytest.mark.skipif(not CAPTURES.is_dir(), reason="../shared/captures is not beside this checkout")
def test_transcribed_h200_capture(pytester: pytest.Pytester, snap: Callable[..., Path]) -> None:
    """The shared capture's reference figures replay; what it did not record fails as unreadable, never passes."""
    data = captured_p2p("h200x2-nvlink", CAPTURES)
    assert data is not None
    want = set(data.pop("expect_fail"))
    failed, out, _ = run(pytester, snap("h200x2-nvlink", data))
    assert failed == want, out
    assert "UNREADABLE, not a pass" in out


def _live() -> dict[str, Any]:
    return json.loads((DATA / "h200x2-live-p2p.json").read_text())  # type: ignore[no-any-return]


def test_wrong_data_fails(pytester: pytest.Pytester, snap: Callable[..., Path]) -> None:
    """A copy that delivered wrong data fails, however fast it was."""
    data = _live()
    data["pairs"]["0000:00:06.0->0000:00:07.0"]["unidir_verified"] = False
    failed, out, _ = run(pytester, snap("h200x2-nvlink", data))
    assert failed == {"test_p2p_unidirectional[0000:00:06.0->0000:00:07.0]"}, out
    assert "WRONG DATA" in out


def _hung_nccl(**hung: Any) -> dict[str, Any]:
    """The live figures with the NCCL run replaced by a hang in measure (``hung`` overrides its fields)."""
    data = _live()
    group = data["nccl"]["groups"]["0000:00:06.0+0000:00:07.0"]
    for k in ("sweep", "busbw_gbps", "wrong", "nan"):
        group.pop(k)
    group["hung"] = {
        "stage": "measure",
        "after_s": 120.0,
        "timeout_s": 120.0,
        "waiting_for": ["nccl.0", "nccl.1"],
        "tail": ["vm:1:1 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[1] via P2P/CUMEM/read"],
        "killed": [4242, 4243],
        "left": [],
        **hung,
    }
    data["nccl"].pop("ipc")
    return data


def test_nccl_hang_replayed(pytester: pytest.Pytester, snap: Callable[..., Path]) -> None:
    """A recorded NCCL hang fails every check of that run, saying it hung, what was killed and the likely causes."""
    failed, out, _ = run(pytester, snap("h200x2-nvlink", _hung_nccl()))
    assert failed == {
        "test_nccl_allreduce_correct[all]",
        "test_nccl_busbw[all]",
        "test_nccl_uses_p2p[all]",
        "test_cuda_ipc_roundtrip[0000:00:06.0->0000:00:07.0]",
        "test_cuda_ipc_roundtrip[0000:00:07.0->0000:00:06.0]",
        "test_cuda_ipc_kernel_write[0000:00:06.0->0000:00:07.0]",
        "test_cuda_ipc_kernel_write[0000:00:07.0->0000:00:06.0]",
    }, out
    assert "hung: no result 120.0 s into measure" in out
    assert "none left running" in out and "ACS redirect" in out and "NCCL INFO Channel" in out


def test_retry_reading_decides(pytester: pytest.Pytester, snap: Callable[..., Path]) -> None:
    """A noisy first reading below the line passes when the retry reading clears it; the readings are reported."""
    data = _live()
    data["pairs"]["0000:00:06.0->0000:00:07.0"]["unidir_gbps"] = [150.0, 391.0]
    failed, out, _ = run(pytester, snap("h200x2-nvlink", data), "--junitxml=j.xml")
    assert not failed, out
    assert 'name="readings" value="150.000,391.000"' in (pytester.path / "j.xml").read_text()


def test_no_p2p_json_skips(pytester: pytest.Pytester, snap: Callable[..., Path]) -> None:
    """A snapshot without p2p.json skips the P2P and NCCL checks, saying how to get the figures."""
    _, out, result = run(pytester, snap("h200x2-nvlink", None))
    result.assert_outcomes(skipped=21)
    assert "has no p2p.json" in out


def test_corrupt_p2p_json_is_unreadable(pytester: pytest.Pytester, snap: Callable[..., Path]) -> None:
    """A p2p.json of another format fails every check as unreadable instead of passing."""
    failed, out, _ = run(pytester, snap("h200x2-nvlink", {"format": 99}))
    assert len(failed) == 21 and "UNREADABLE" in out


def _tp_profile(tmp_path: Path) -> Path:
    preset = REPO / "pytest_rigcheck" / "presets" / "4x-rtxpro6000-gen4-switch.toml"
    text = preset.read_text().replace("gpus = 4\n", "gpus = 4\ntp_groups = [[0, 1], [2, 3]]\n")
    path = tmp_path / "tp2x2.toml"
    path.write_text(text)
    return path


def _with_tp_groups(data: dict[str, Any], bdfs: list[str], control_gbps: float) -> dict[str, Any]:
    """Add two 2-GPU groups to a modelled p2p.json, each with its own NCCL_P2P_DISABLE=1 control."""
    base = data["nccl"]["groups"]["+".join(bdfs)]
    for members in (bdfs[:2], bdfs[2:]):
        entry = json.loads(json.dumps(base))
        entry["gpus"] = members
        for row in entry["sweep"]:  # busbw = algbw x 2(n-1)/n: for 2 GPUs, algbw itself
            row["busbw_gbps"] = row["algbw_gbps"]
            if row["bytes"] == entry["judged_bytes"]:  # the first reading is the judged row's busbw
                entry["busbw_gbps"] = [row["busbw_gbps"]]
        entry["control"] = {
            "gpus": members,
            "env": {"NCCL_P2P_DISABLE": "1"},
            "transports": {"SHM/direct/direct": 2},
            "judged_bytes": 536870912,
            "busbw_gbps": control_gbps,
            "wrong": 0,
        }
        data["nccl"]["groups"]["+".join(members)] = entry
    return data


@pytest.mark.parametrize(("control_gbps", "fails"), [(8.0, False), (30.0, True)])
def test_control_per_tp_group(
    pytester: pytest.Pytester, snap: Callable[..., Path], tmp_path: Path, control_gbps: float, fails: bool
) -> None:
    """Each tensor-parallel group is judged against its own NCCL_P2P_DISABLE=1 control."""
    name = "rtxpro6000x4-switch"
    bdfs = gpu_bdfs(SNAPSHOTS / name)
    data, _ = _model(name)
    snapshot = snap(name, _with_tp_groups(data, bdfs, control_gbps))
    failed, out, _ = run(pytester, snapshot, f"--rig-profile={_tp_profile(tmp_path)}", "-k", "uses_p2p", "-v")
    tp = {"test_nccl_uses_p2p[tp0]", "test_nccl_uses_p2p[tp1]"}
    assert failed == (tp if fails else set()), out
    assert "test_nccl_uses_p2p[all] PASSED" in out
    if fails:
        assert "P2P is only x" in out and "NCCL_P2P_DISABLE=1 control" in out


def test_tp_group_without_its_control_is_unreadable(
    pytester: pytest.Pytester, snap: Callable[..., Path], tmp_path: Path
) -> None:
    """A p2p.json with one control over all GPUs says nothing about a TP group: unreadable, not a pass."""
    name = "rtxpro6000x4-switch"
    bdfs = gpu_bdfs(SNAPSHOTS / name)
    data, _ = _model(name)
    data = _with_tp_groups(data, bdfs, 8.0)
    for members in (bdfs[:2], bdfs[2:]):
        del data["nccl"]["groups"]["+".join(members)]["control"]
    failed, out, _ = run(
        pytester, snap(name, data), f"--rig-profile={_tp_profile(tmp_path)}", "-k", "uses_p2p"
    )
    assert failed == {"test_nccl_uses_p2p[tp0]", "test_nccl_uses_p2p[tp1]"}, out
    assert "no NCCL_P2P_DISABLE=1 control run recorded for this group" in out


def test_hang_with_gpu_memory_still_held(pytester: pytest.Pytester, snap: Callable[..., Path]) -> None:
    """Killed ranks whose memory NVML still sees on a GPU are named, with how much they hold."""
    data = _hung_nccl(gpu_holders=["GPU1 (NVIDIA H200): pid 4243 (python3) holds 1634 MiB"])
    _, out, _ = run(pytester, snap("h200x2-nvlink", data), "-k", "nccl_busbw")
    assert "STILL HOLDING GPU memory: GPU1 (NVIDIA H200): pid 4243 (python3) holds 1634 MiB" in out


@pytest.mark.parametrize(
    ("kernel", "fails", "prop"),
    [
        ({"ok": True, "mismatches": 0}, False, "True"),
        ({"ok": None, "error": "not run: No module named 'triton'"}, False, "not run"),
        ({"ok": False, "mismatches": 4096}, True, "False"),
        (None, False, "not run"),  # p2p.json from before the kernel read
    ],
)
def test_ipc_kernel_read(
    pytester: pytest.Pytester,
    snap: Callable[..., Path],
    kernel: dict[str, Any] | None,
    fails: bool,
    prop: str,
) -> None:
    """The IPC buffer read by a kernel (vLLM's custom all-reduce path) must match too; not run is said, not failed."""
    data = _live()
    for entry in data["nccl"]["ipc"]["pairs"].values():
        entry.pop("kernel_read", None)
        if kernel is not None:
            entry["kernel_read"] = kernel
    failed, out, _ = run(pytester, snap("h200x2-nvlink", data), "-k", "ipc", "--junitxml=j.xml")
    assert bool(failed) is fails, out
    assert f'name="kernel_read_ok" value="{prop}"' in (pytester.path / "j.xml").read_text()
    if fails:
        assert "a kernel reading it through the mapping got 4096 of" in out
        assert "--disable-custom-all-reduce" in out


# -- impossible figures (gate.md D4) ----------------------------------------------------------------

P01 = "0000:03:00.0->0000:04:00.0"  # GPU0 -> GPU1 of the switch rigs


@pytest.mark.parametrize(
    ("figure", "value", "checks", "why"),
    [
        (
            "latency_us",
            [-1.0],
            ["test_p2p_latency"],
            "reading -1.0 is impossible (a latency is a finite number",
        ),
        (
            "unidir_gbps",
            [float("inf")],
            ["test_p2p_unidirectional", "test_p2p_not_through_host"],
            "reading 'inf' is impossible (a bandwidth is a finite number",
        ),
        ("bidir_gbps", [1e308], ["test_p2p_bidirectional"], "reading 1e+308 is impossible"),
        ("unidir_gbps", ["fast"], ["test_p2p_unidirectional", "test_p2p_not_through_host"], "reading 'fast'"),
        ("control_latency_us", [0], ["test_p2p_latency"], "reading 0 is impossible"),
    ],
)
def test_impossible_figure_is_unreadable(
    pytester: pytest.Pytester,
    snap: Callable[..., Path],
    figure: str,
    value: list[Any],
    checks: list[str],
    why: str,
) -> None:
    """gate.md D4: a latency of -1 us passed ("P2P latency -1 us"); an infinite unidirectional and a 1e308 GB/s
    bidirectional bandwidth passed both bandwidth checks ("P2P infx the host"). Each impossible figure is now
    UNREADABLE as corrupt, naming the file, the pair and the field; the pair's other checks still judge."""
    data, _ = _model("rtxpro6000x4-switch")
    data["pairs"][P01][figure] = value
    failed, out, _ = run(pytester, snap("rtxpro6000x4-switch", data))
    assert failed == {f"{c}[{P01}]" for c in checks}, out
    assert f'p2p.json pairs["{P01}"].{figure}: {why}' in out, out
    assert "corrupt figure" in out and "UNREADABLE, not a pass" in out


def test_bandwidth_above_the_path_is_unreadable(pytester: pytest.Pytester, snap: Callable[..., Path]) -> None:
    """60 GB/s one way between two GPUs whose path is Gen4 x16 (31.5 GB/s) and which NVML says have no NVLink
    P2P cannot have been measured: UNREADABLE, with the path's capacity as the expectation."""
    data, _ = _model("rtxpro6000x4-switch")
    data["pairs"][P01]["unidir_gbps"] = [60.0]
    failed, out, _ = run(pytester, snap("rtxpro6000x4-switch", data), "-k", "unidirectional")
    assert failed == {f"test_p2p_unidirectional[{P01}]"}, out
    assert "reading 60 GB/s is above what the path can carry: corrupt figure" in out, out
    assert "expected: at most 33.08 GB/s: PCIe Gen4 x16" in out, out


def test_bandwidth_above_the_path_is_no_evidence_of_peer_to_peer(
    pytester: pytest.Pytester, snap: Callable[..., Path]
) -> None:
    """Fresh-user finding: with unidir_gbps [1500, 1500] on a Gen4 x16 pair the bandwidth check said corrupt
    but test_p2p_not_through_host passed ("P2P 133.9x the host-staged copy"). A corrupt figure proves nothing."""
    data, _ = _model("rtxpro6000x4-switch")
    data["pairs"][P01]["unidir_gbps"] = [1500.0, 1500.0]
    failed, out, _ = run(
        pytester, snap("rtxpro6000x4-switch", data), "-k", "unidirectional or not_through_host"
    )
    assert failed == {f"test_p2p_unidirectional[{P01}]", f"test_p2p_not_through_host[{P01}]"}, out
    assert "the host-staged copy" not in out, out


def test_impossible_nccl_figures_are_unreadable(pytester: pytest.Pytester, snap: Callable[..., Path]) -> None:
    """A NaN busbw and a wrong-count that is not a count make the NCCL checks UNREADABLE, not a traceback."""
    data, _ = _model("rtxpro6000x4-switch")
    group = next(iter(data["nccl"]["groups"].values()))
    group["busbw_gbps"] = [float("nan")]
    group["wrong"] = "none"
    failed, out, _ = run(pytester, snap("rtxpro6000x4-switch", data), "-k", "nccl")
    assert failed == {
        "test_nccl_allreduce_correct[all]",
        "test_nccl_busbw[all]",
        "test_nccl_uses_p2p[all]",
    }, out
    assert "busbw_gbps: reading 'nan' is impossible" in out and "wrong: 'none' is not a count" in out, out
    assert "Traceback" not in out


def test_symlinked_p2p_json_is_refused(
    pytester: pytest.Pytester, snap: Callable[..., Path], tmp_path: Path
) -> None:
    """A p2p.json that is a symbolic link (to a file outside the snapshot) is refused, never followed: every
    P2P check fails as UNREADABLE saying so (DESIGN-REVIEW (a) row 7: it was read through Path and followed)."""
    data, _ = _model("rtxpro6000x4-switch")
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(data))
    dest = snap("rtxpro6000x4-switch", None)
    (dest / "p2p.json").symlink_to(outside)
    failed, out, _ = run(pytester, dest, "-k", "latency")
    # The one containment mechanism: the rig's Source refuses the link (main's wording).
    assert len(failed) == 12, out
    assert (
        "UNREADABLE, not a pass: snapshot rtxpro6000x4-switch: unreadable p2p.json: symlink p2p.json" in out
    ), out
    assert "leaves the snapshot: refused" in out, out


def test_figure_checks_at_load() -> None:
    """figures.check: a sweep size may round to 0.0 GB/s (the 2x H200 capture's 8 B all-reduce), a negative one
    may not; a GPU entry that is not an object makes the file corrupt."""
    from pytest_rigcheck.errors import SnapshotError
    from pytest_rigcheck.p2p.figures import Corrupt, check

    group = {
        "sweep": [{"bytes": 8, "busbw_gbps": 0.0}, {"bytes": 1 << 20, "busbw_gbps": 12.5}],
        "busbw_gbps": [12.5],
    }
    data = check({"pairs": {}, "gpus": {}, "nccl": {"groups": {"a+b": group}}}, "x")
    assert data["nccl"]["groups"]["a+b"]["sweep"][0]["busbw_gbps"] == 0.0
    group["sweep"][1]["busbw_gbps"] = -1.0
    data = check({"pairs": {}, "gpus": {}, "nccl": {"groups": {"a+b": group}}}, "x")
    assert isinstance(data["nccl"]["groups"]["a+b"]["sweep"], Corrupt)
    assert 'x nccl.groups["a+b"].sweep[1] (1048576 B) busbw_gbps: reading -1.0 is impossible' in str(
        data["nccl"]["groups"]["a+b"]["sweep"]
    )
    with pytest.raises(SnapshotError, match=r'gpus\["a"\]: \[1\] is not an object'):
        check({"pairs": {}, "gpus": {"a": [1]}, "nccl": {}}, "x")


def _ipc(data: dict[str, Any]) -> dict[str, Any]:
    return data["nccl"]["ipc"]["pairs"][P01]


@pytest.mark.parametrize(
    ("mutate", "check", "field"),
    [
        (lambda d: d["pairs"][P01].update(can_access_peer="false"), "test_p2p_capability", "can_access_peer"),
        (lambda d: d["pairs"][P01].update(can_access_peer=0), "test_p2p_capability", "can_access_peer"),
        (lambda d: d["pairs"][P01]["nvml"].update(read="0"), "test_p2p_capability", "nvml.read"),
        (
            lambda d: d["pairs"][P01].update(unidir_verified="false"),
            "test_p2p_unidirectional",
            "unidir_verified",
        ),
        (lambda d: d["pairs"][P01].update(bidir_verified="no"), "test_p2p_bidirectional", "bidir_verified"),
        (lambda d: d["pairs"][P01].update(latency_verified=1), "test_p2p_latency", "latency_verified"),
        (
            lambda d: d["pairs"][P01].update(control_verified="true"),
            "test_p2p_not_through_host",
            "control_verified",
        ),
        (lambda d: d["gpus"][P01[:12]].update(h2d_verified="false"), "test_host_to_device", "h2d_verified"),
        (lambda d: _ipc(d).update(ok="false"), "test_cuda_ipc_roundtrip", "ok"),
        (lambda d: _ipc(d).update(ok=True, mismatches=7), "test_cuda_ipc_roundtrip", "ok: true contradicts"),
        (lambda d: _ipc(d)["kernel_write"].update(ok="yes"), "test_cuda_ipc_kernel_write", "kernel_write.ok"),
        (
            lambda d: _ipc(d)["kernel_write"].update(ok=True, mismatches=3),
            "test_cuda_ipc_kernel_write",
            "kernel_write.ok: true contradicts",
        ),
    ],
)
def test_wrong_typed_boolean_is_unreadable(
    pytester: pytest.Pytester,
    snap: Callable[..., Path],
    mutate: Callable[[dict[str, Any]], None],
    check: str,
    field: str,
) -> None:
    """A new user's report: "false" (a string), 0 or "no" where p2p.json holds a boolean read as true, and
    ``ok: true`` with ``mismatches: 7`` passed (161 passed). Each is now a corrupt reading: the check that
    reads it is UNREADABLE naming the file and the field, and the run exits 1."""
    data = json.loads((SNAPSHOTS / "rtxpro6000x4-switch" / "p2p.json").read_text())
    mutate(data)
    failed, out, result = run(pytester, snap("rtxpro6000x4-switch", data))
    assert result.ret == 1, out
    assert any(f.startswith(f"{check}[") for f in failed), out
    assert "p2p.json" in out and f"].{field}" in out and "UNREADABLE, not a pass" in out, out


# -- figures that contradict each other or the rig (fresh-user findings) -----------------------------

SWITCH = "rtxpro6000x4-switch"
GROUP = "0000:03:00.0+0000:04:00.0+0000:05:00.0+0000:06:00.0"  # the switch rig's all-GPU group
GPU0 = "0000:03:00.0"
NCCL_CORRECT = "test_nccl_allreduce_correct[all]"


def _shipped() -> dict[str, Any]:
    """The switch rig's shipped p2p.json (a clean pass), to break one figure of."""
    return json.loads((SNAPSHOTS / SWITCH / "p2p.json").read_text())  # type: ignore[no-any-return]


def _rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    return data["nccl"]["groups"][GROUP]["sweep"]  # type: ignore[no-any-return]


def _every_row(field: str, count: int) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        for row in _rows(data):
            row[field] = count

    return mutate


def _last_row(field: str, count: int, total: int | None = None) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        _rows(data)[-1][field] = count
        if total is not None:
            data["nccl"]["groups"][GROUP][field] = total

    return mutate


@pytest.mark.parametrize(
    ("mutate", "unreadable", "said"),
    [
        # the group's total stays 0: a file no run wrote (the total sums every rank's rows)
        (
            _every_row("wrong", 5),
            True,
            "wrong: total 0 contradicts its sweep rows (70 at 14 sizes: 5 at 8 B, 5 at 32 B",
        ),
        (
            _last_row("wrong", 3),
            True,
            "wrong: total 0 contradicts its sweep rows (3 at 1 size: 3 at 536870912 B)",
        ),
        (
            _last_row("nan", 2),
            True,
            "nan: total 0 contradicts its sweep rows (2 at 1 size: 2 at 536870912 B)",
        ),
        # rows and total agree: wrong results, a FAIL naming the size
        (_last_row("wrong", 3, 3), False, "3 elements != 4, 0 NaN at 1 of 14 sizes (536870912 B)"),
        (_last_row("nan", 2, 2), False, "0 elements != 4, 2 NaN at 1 of 14 sizes (536870912 B)"),
        (
            _every_row("wrong", 5),
            None,
            "70 elements != 4, 0 NaN at 14 of 14 sizes (8 B, 32 B, 128 B, 512 B, ...)",
        ),
    ],
)
def test_wrong_elements_per_size(
    pytester: pytest.Pytester,
    snap: Callable[..., Path],
    mutate: Callable[[dict[str, Any]], None],
    unreadable: bool | None,
    said: str,
) -> None:
    """Fresh-user finding: every sweep row with wrong = 5 (or only the 512 MiB row with wrong = 3) beside a group
    total of 0 PASSED test_nccl_allreduce_correct ("all-reduce of ones == 4 on every rank at 14 sizes") while
    all_reduce_perf's table printed #wrong 5. The rows are judged now: wrong or NaN elements at any size FAIL,
    naming the sizes; a total below its rows is a contradiction, UNREADABLE as corrupt. ``None``: the total
    made consistent (70) with the rows."""
    data = _shipped()
    mutate(data)
    if unreadable is None:
        data["nccl"]["groups"][GROUP]["wrong"] = 70
        unreadable = False
    failed, out, result = run(pytester, snap(SWITCH, data), "-k", "nccl")
    assert failed == {NCCL_CORRECT}, out
    assert said in out, out
    assert ("UNREADABLE, not a pass" in out) is unreadable, out
    assert "all-reduce of ones == 4" not in out and "Traceback" not in out, out
    if not unreadable:
        assert "all-reduce returned WRONG values" in out and "fix: " in out, out


@pytest.mark.parametrize(
    ("figure", "reading", "shown"),
    [("h2d_gbps", 260.0, "260"), ("d2h_gbps", 1900.0, "1900")],
)
def test_host_bandwidth_above_the_link_is_unreadable(
    pytester: pytest.Pytester, snap: Callable[..., Path], figure: str, reading: float, shown: str
) -> None:
    """Fresh-user finding: h2d_gbps [260] and d2h_gbps [1900] on a Gen4 x16 GPU PASSED test_host_to_device and
    test_device_to_host while the message named the 31.5 GB/s capacity. A host-link reading above the GPU's
    PCIe path (by more than CAPACITY_MARGIN, as for P2P) is UNREADABLE as corrupt; the other GPUs still pass."""
    data = _shipped()
    data["gpus"][GPU0][figure] = [reading]
    failed, out, _ = run(pytester, snap(SWITCH, data), "-k", "host")
    check = {"h2d_gbps": "test_host_to_device", "d2h_gbps": "test_device_to_host"}[figure]
    assert len(failed) == 1 and next(iter(failed)).startswith(f"{check}["), out
    assert f"reading {shown} GB/s is above what the path can carry: corrupt figure" in out, out
    assert "expected: at most 33.08 GB/s: PCIe Gen4 x16" in out and "between the GPU and the host" in out, out
    assert "UNREADABLE, not a pass" in out, out


@pytest.mark.parametrize(
    ("row", "field", "bad", "said"),
    [
        (-1, "time_us", -5, "time_us: reading -5 is impossible"),
        (-1, "time_us", 0, "time_us: reading 0 is impossible"),
        (-1, "time_us", float("inf"), "time_us: reading 'inf' is impossible"),
        (-1, "bytes", 0, "bytes: 0 is not a count"),
        (-1, "bytes", -8, "bytes: -8 is not a count"),
        (-1, "algbw_gbps", -1.0, "algbw_gbps: reading -1.0 is impossible"),
        (-1, "algbw_gbps", 0.0, "algbw_gbps: 0 GB/s contradicts 536870912 B in 3.731e+04 us (= 14.39 GB/s)"),
        (-1, "busbw_gbps", float("inf"), "busbw_gbps: reading 'inf' is impossible"),
        (
            -1,
            "busbw_gbps",
            30.0,
            "busbw_gbps: 30 GB/s contradicts algbw 14.39 GB/s x 2(4-1)/4 (= 21.59 GB/s)",
        ),
        (-1, "wrong", -3, "wrong: -3 is not a count"),
        (0, "nan", "none", "nan: 'none' is not a count"),
    ],
)
def test_impossible_sweep_row_is_unreadable(
    pytester: pytest.Pytester, snap: Callable[..., Path], row: int, field: str, bad: Any, said: str
) -> None:
    """Fresh-user finding: a sweep row with time_us = -5 passed silently. Each impossible row value (negative,
    zero or infinite bytes, time, algbw, busbw; algbw not bytes / time, busbw not algbw x 2(n-1)/n; a wrong or
    NaN count that is no count) makes the sweep corrupt: both checks that read it are UNREADABLE naming the
    group, the size and the field; test_nccl_uses_p2p, which does not read it, still judges."""
    data = _shipped()
    _rows(data)[row][field] = bad
    failed, out, _ = run(pytester, snap(SWITCH, data), "-k", "nccl")
    assert failed == {NCCL_CORRECT, "test_nccl_busbw[all]"}, out
    index = len(_rows(data)) - 1 if row == -1 else row
    size = "" if field == "bytes" else f" ({_rows(_shipped())[row]['bytes']} B)"
    assert f'p2p.json nccl.groups["{GROUP}"].sweep[{index}]{size} {said}' in out, out
    assert "corrupt figure" in out and "UNREADABLE, not a pass" in out and "Traceback" not in out, out


ALIEN = "0000:99:00.0"


ALIEN_GROUP = GROUP.rsplit("+", 1)[0] + f"+{ALIEN}"


def _alien_group(data: dict[str, Any]) -> None:
    group = data["nccl"]["groups"].pop(GROUP)
    group["gpus"][-1] = ALIEN
    data["nccl"]["groups"][ALIEN_GROUP] = group


def _alien_pair(data: dict[str, Any]) -> None:
    data["pairs"][f"{ALIEN}->{GPU0}"] = data["pairs"][P01]


def _alien_bridge(data: dict[str, Any]) -> None:
    data["gpus"]["0000:02:00.0"] = data["gpus"][GPU0]  # the switch's downstream port: on the bus, not a GPU


@pytest.mark.parametrize(
    ("mutate", "said"),
    [
        (_alien_group, f'names {ALIEN} (nccl.groups["{ALIEN_GROUP}"]), which is not on this rig\'s PCIe bus'),
        (_alien_pair, f'names {ALIEN} (pairs["{ALIEN}->{GPU0}"]), which is not on this rig\'s PCIe bus'),
        (_alien_bridge, 'names 0000:02:00.0 (gpus["0000:02:00.0"]), which is not a GPU'),
    ],
)
def test_figures_of_another_machine_are_unreadable(
    pytester: pytest.Pytester, snap: Callable[..., Path], mutate: Callable[[dict[str, Any]], None], said: str
) -> None:
    """Fresh-user finding: an NCCL group naming 0000:99:00.0 (no such device here), or a pair key
    "0000:99:00.0->0000:03:00.0", was silently ignored. A p2p.json naming GPUs this rig does not have is from
    another machine or corrupt: every P2P/NCCL check of the rig is UNREADABLE with the one reason, naming the
    BDF and the file."""
    data = _shipped()
    mutate(data)
    failed, out, result = run(pytester, snap(SWITCH, data))
    assert result.ret == 1, out
    result.assert_outcomes(failed=95)
    assert len(failed) == 95, out
    assert f"snapshot {SWITCH} p2p.json {said} (GPUs here: 0000:03:00.0, 0000:04:00.0" in out, out
    assert "figures from another machine, or corrupt" in out and "Traceback" not in out, out


def test_report_and_summary_survive_corrupt_sweep(
    pytester: pytest.Pytester, snap: Callable[..., Path]
) -> None:
    """Fresh-user finding: a sweep row with wrong = -3 crashed --rig-report (facts.nccl_sweeps: TypeError:
    'Corrupt' object is not iterable). With corrupt, contradictory and foreign figures alike, the run ends with
    its verdicts, the terminal summary and a written report; never a traceback."""
    data = _shipped()
    _rows(data)[-1]["wrong"] = -3
    data["gpus"][GPU0]["d2h_gbps"] = [1900.0]
    report = pytester.path / "report.json"
    failed, out, result = run(pytester, snap(SWITCH, data), f"--rig-report={report}")
    assert result.ret == 1, out
    assert {NCCL_CORRECT, "test_nccl_busbw[all]"} <= failed, out
    assert "Traceback" not in out + result.stderr.str() and "INTERNALERROR" not in out, out
    doc = json.loads(report.read_text())
    assert doc, out


@pytest.mark.parametrize(
    ("total", "ranks", "rows", "corrupt"),
    [
        (0, None, [0, 5], True),  # below its rows
        (9, None, [0, 5], False),  # other ranks' wrong elements: at least the rows' sum
        (9, 1, [0, 5], True),  # one rank checked: the rows' sum exactly
        (5, 1, [0, 5], False),
    ],
)
def test_total_against_rows(total: int, ranks: int | None, rows: list[int], corrupt: bool) -> None:
    """figures.check: a group's wrong total sums every checked rank's rows (measure._fold_nccl), so it is never
    below rank 0's rows, and equals them when one rank was checked; otherwise it is corrupt."""
    from pytest_rigcheck.p2p.figures import Corrupt, check

    group: dict[str, Any] = {
        "gpus": ["a", "b"],
        "wrong": total,
        "sweep": [{"bytes": 8 << i, "wrong": w} for i, w in enumerate(rows)],
    }
    if ranks is not None:
        group["checked_ranks"] = ranks
    data = check({"nccl": {"groups": {"a+b": group}}}, "x")
    assert isinstance(data["nccl"]["groups"]["a+b"]["wrong"], Corrupt) is corrupt


def _busbw_off_its_row(data: dict[str, Any]) -> None:
    data["nccl"]["groups"][GROUP]["busbw_gbps"] = [30.0, 30.5]


def _judged_no_row(data: dict[str, Any]) -> None:
    data["nccl"]["groups"][GROUP]["judged_bytes"] = 12345


@pytest.mark.parametrize(
    ("mutate", "said"),
    [
        (
            _busbw_off_its_row,
            "busbw_gbps: first reading 30 GB/s contradicts its sweep row at judged_bytes 536870912 B "
            "(busbw 21.59 GB/s)",
        ),
        (_judged_no_row, "judged_bytes: 12345 B is no size of its sweep"),
    ],
)
def test_busbw_against_its_judged_row(
    pytester: pytest.Pytester, snap: Callable[..., Path], mutate: Callable[[dict[str, Any]], None], said: str
) -> None:
    """Fresh-user finding on the switch rig's shipped p2p.json: busbw_gbps [30.0, 30.5] beside a judged row of
    21.59 GB/s passed ("busbw 30 GB/s"), and judged_bytes 12345 (no row of that size) passed ("21.59 GB/s at
    12345 B"). The first reading is the judged row's busbw (measure.retry appends later ones) and the judged
    size is one of the sweep's: either contradiction is UNREADABLE as corrupt."""
    data = _shipped()
    mutate(data)
    failed, out, _ = run(pytester, snap(SWITCH, data), "-k", "busbw")
    assert failed == {"test_nccl_busbw[all]"}, out
    assert f'p2p.json nccl.groups["{GROUP}"].{said}' in out, out
    assert "corrupt figure" in out and "UNREADABLE, not a pass" in out and "Traceback" not in out, out


def test_busbw_retry_and_rounding_still_pass() -> None:
    """figures.check: a first reading within 2% + 0.1 GB/s of its row, and later retry readings anywhere, are no
    contradiction."""
    from pytest_rigcheck.p2p.figures import check

    data = _shipped()
    group = data["nccl"]["groups"][GROUP]
    group["busbw_gbps"] = [21.9, 28.0]
    check(data, "x")
    assert group["busbw_gbps"] == [21.9, 28.0] and group["judged_bytes"] == 536870912


def _gpu_twice(data: dict[str, Any]) -> None:
    data["nccl"]["groups"][GROUP]["gpus"] = [GPU0, "0000:04:00.0", "0000:05:00.0", GPU0]


def _gpus_not_the_key(data: dict[str, Any]) -> None:
    data["nccl"]["groups"][GROUP]["gpus"] = [GPU0, "0000:04:00.0", "0000:05:00.0"]


@pytest.mark.parametrize(
    ("mutate", "said"),
    [
        (_gpu_twice, f".gpus: {GPU0} listed twice in"),
        (_gpus_not_the_key, f".gpus: ['{GPU0}', '0000:04:00.0', '0000:05:00.0'] are not the GPUs of its key"),
    ],
)
def test_group_members_must_be_its_key(
    pytester: pytest.Pytester, snap: Callable[..., Path], mutate: Callable[[dict[str, Any]], None], said: str
) -> None:
    """Fresh-user finding: a group whose gpus listed 0000:03:00.0 twice and left out 0000:06:00.0 passed ("all
    GPUs"). A group's gpus are distinct and are its key's members (figures.group_key); otherwise the file cannot
    say whose figures they are: every P2P/NCCL check is UNREADABLE naming the group."""
    data = _shipped()
    mutate(data)
    failed, out, result = run(pytester, snap(SWITCH, data), "-k", "nccl")
    assert result.ret == 1 and "test_nccl_busbw[all]" in failed and "passed" not in out.splitlines()[-1], out
    assert f'p2p.json nccl.groups["{GROUP}"]{said}' in out, out
    assert "Traceback" not in out, out


@pytest.mark.parametrize("latency", [1e-9, 0.05])
def test_latency_below_any_round_trip_is_unreadable(
    pytester: pytest.Pytester, snap: Callable[..., Path], latency: float
) -> None:
    """Fresh-user finding: latency_us [1e-9] passed ("P2P latency 1e-09 us"). No P2P copy completes in under 0.1 us
    (the fastest public figures: ~0.4 us over a PCIe switch, local-inference-lab/rtx6kpro; ~1-3 us on NVLink,
    cuda-samples p2pBandwidthLatencyTest): UNREADABLE as corrupt, naming the floor."""
    data = _shipped()
    data["pairs"][P01]["latency_us"] = [latency]
    failed, out, _ = run(pytester, snap(SWITCH, data), "-k", "latency")
    assert failed == {f"test_p2p_latency[{P01}]"}, out
    assert f'p2p.json pairs["{P01}"].latency_us: reading {latency!r} is impossible' in out, out
    assert "above 0.1" in out and "UNREADABLE, not a pass" in out, out


def test_gpu_name_of_another_model_is_unreadable(
    pytester: pytest.Pytester, snap: Callable[..., Path]
) -> None:
    """Fresh-user finding: gpus["0000:03:00.0"].name "NVIDIA GeForce RTX 3090" on the RTX PRO 6000 rig passed
    without a word. A recorded name naming another known model than the GPU's PCI id (sysfs) says the figures
    are another machine's: every P2P/NCCL check is UNREADABLE, naming the GPU, both models and the file."""
    data = _shipped()
    data["gpus"][GPU0]["name"] = "NVIDIA GeForce RTX 3090"
    failed, out, result = run(pytester, snap(SWITCH, data), "-k", "latency")
    assert result.ret == 1 and len(failed) == 12, out
    assert (
        f"snapshot {SWITCH} p2p.json gpus[\"{GPU0}\"].name is 'NVIDIA GeForce RTX 3090' (GeForce RTX 3090), but "
        f"{GPU0} here is NVIDIA RTX PRO 6000 Blackwell Workstation Edition (PCI id 10de:2bb1" in out
    ), out


@pytest.mark.parametrize(
    ("name", "foreign"),
    [
        ("NVIDIA RTX PRO 6000 Blackwell Workstation Edition", False),
        ("NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition", False),  # names no known model: no word
        ("NVIDIA H200", True),
        ("nvidia geforce rtx 3090", True),
        ("NVIDIA H100 80GB HBM3", True),  # NVML's spelling of the id table's "H100 SXM5 80GB" (FRESH3 F-NM)
    ],
)
def test_other_model(name: str, foreign: bool) -> None:
    """session.other_model speaks only where both models are known and differ."""
    from pytest_rigcheck.p2p.session import other_model
    from pytest_rigcheck.profile import Profile
    from pytest_rigcheck.rig import Rig
    from pytest_rigcheck.snapshot import open_snapshot

    rig = Rig.replay(open_snapshot(SNAPSHOTS / SWITCH), Profile())
    data = _shipped()
    data["gpus"][GPU0]["name"] = name
    assert (other_model(rig, data, "x") is not None) is foreign


# -- no p2p.json where the snapshot says it should have one (fresh-user finding F-P2Pmiss) -----------

NOT_CAPTURED_NOTE = (
    "not captured: P2P/NCCL checks: PyTorch is not installed; fix: pip install 'pytest-rigcheck[torch]'"
)


def _manifest(snapshot: Path, **top: str) -> Callable[[str], None]:
    """Set top-level manifest keys (``kind``, ``tool``) of ``snapshot``; the returned function adds a [notes] key."""
    path = snapshot / "MANIFEST.toml"
    text = path.read_text()
    for key, val in top.items():
        text = re.sub(rf'^{key} = ".*"$', f'{key} = "{val}"', text, flags=re.M)
    path.write_text(text)

    def note(line: str) -> None:
        path.write_text(path.read_text() + f"\n[notes]\n{line}\n")

    return note


@pytest.mark.parametrize(
    ("top", "note", "said"),
    [
        # `rigcheck capture` on a GPU rig without torch writes no p2p.json, only this note (capture.py)
        ({}, f'p2p = "{NOT_CAPTURED_NOTE}"', "p2p.json was not captured on a rig with NVIDIA GPUs"),
        # the note says the figures were written; the file is gone
        ({}, 'p2p = "p2p.json: 12 GPU pair(s), 1 NCCL group(s), 41.2 s"', "p2p.json missing from a capture"),
    ],
    ids=["not-captured-note", "recorded-note"],
)
def test_p2p_json_the_manifest_promises_is_unreadable_when_missing(
    pytester: pytest.Pytester, snap: Callable[..., Path], top: dict[str, str], note: str | None, said: str
) -> None:
    """FRESH3 F-P2Pmiss: capture + replay turned the live UNREADABLE ("PyTorch is not installed", never a
    skip) into 72 green skips. Where the snapshot's own manifest says P2P figures were recorded, or their
    capture was attempted and not taken on this rig of NVIDIA GPUs, every P2P/NCCL check is UNREADABLE,
    saying why and how to capture them."""
    dest = snap(SWITCH, None)
    add_note = _manifest(dest, **top)
    if note:
        add_note(note)
    failed, out, result = run(pytester, dest)
    assert result.ret == 1 and len(failed) == 95, out
    result.assert_outcomes(failed=95)
    assert said in out and "rigcheck capture DIR" in out and "pytest-rigcheck[torch]" in out, out
    assert "has no p2p.json; P2P and NCCL figures are measured" not in out


def test_capture_noting_nothing_of_p2p_skips(pytester: pytest.Pytester, snap: Callable[..., Path]) -> None:
    """A capture whose manifest notes nothing of P2P (taken before rigcheck noted what it captured, as the
    2x H200 capture in tests/gpu/data) proves nothing missing: not applicable, with the reason."""
    dest = snap(SWITCH, None)
    _manifest(dest, kind="captured", tool="pytest-rigcheck 0.1.0")
    _, out, result = run(pytester, dest)
    result.assert_outcomes(skipped=95)
    assert "has no p2p.json" in out


def test_no_p2p_json_without_record_or_requirement_still_skips(
    pytester: pytest.Pytester, snap: Callable[..., Path]
) -> None:
    """A modelled snapshot that never had figures: not applicable, with the reason, whatever `[p2p] required`
    says (it says whether the cards must be able to do P2P, not that a replay must hold figures; a capture
    that could not measure is caught by its manifest note above)."""
    _, out, result = run(pytester, snap(SWITCH, None))
    result.assert_outcomes(skipped=95)
    assert "has no p2p.json" in out


def test_not_captured_without_nvidia_gpus_does_not_apply(tmp_path: Path) -> None:
    """As live (``availability.decision``): a capture that could not measure P2P on a rig whose bus shows no
    NVIDIA GPU (here its GPUs turned AMD) is no missing evidence; a lost p2p.json the note says was written
    is, whatever the GPUs."""
    from pytest_rigcheck.availability import record_missing
    from pytest_rigcheck.profile import Profile
    from pytest_rigcheck.rig import Rig
    from pytest_rigcheck.snapshot import open_snapshot

    dest = tmp_path / "amd"
    shutil.copytree(SNAPSHOTS / "rtx3090x2-gen4", dest, symlinks=True)
    (dest / "p2p.json").unlink()
    note = _manifest(dest)
    note(f'p2p = "{NOT_CAPTURED_NOTE}"')
    rig = Rig.replay(open_snapshot(dest), Profile())
    assert record_missing(rig, "p2p") is not None  # NVIDIA GPUs: UNREADABLE
    for vendor in dest.glob("sys/devices/pci0000:00/*/0000:*:00.0/vendor"):
        vendor.write_text("0x1002\n")
    rig = Rig.replay(open_snapshot(dest), Profile())
    assert rig.pcie.gpus and record_missing(rig, "p2p") is None
    (dest / "MANIFEST.toml").write_text(
        (dest / "MANIFEST.toml").read_text().replace(NOT_CAPTURED_NOTE, "p2p.json: 2 GPU pair(s)")
    )
    rig = Rig.replay(open_snapshot(dest), Profile())
    assert "p2p.json missing from a capture that recorded it" in str(record_missing(rig, "p2p"))


# -- P2P figures of a pair CUDA says cannot access its peer (fresh-user rough edge) ------------------

PAIR = "0000:03:00.0->0000:04:00.0"
FIGURE_CHECKS = ("test_p2p_unidirectional", "test_p2p_bidirectional", "test_p2p_latency")


def _statuses(pytester: pytest.Pytester, snapshot: Path) -> dict[str, str]:
    report = pytester.path / "r.json"
    run(pytester, snapshot, f"--rig-report={report}")
    results = json.loads(report.read_text())["results"]
    return {r["id"].split("::")[-1]: r["status"] for r in results if r["id"].endswith(f"[{PAIR}]")}


@pytest.mark.parametrize("staged", [False, True], ids=["figures-of-p2p", "figures-of-staged-copies"])
def test_figures_without_peer_access_are_not_judged(
    pytester: pytest.Pytester, snap: Callable[..., Path], staged: bool
) -> None:
    """FRESH3: a pair with can_access_peer false but 28 GB/s figures failed test_p2p_capability, yet its
    unidirectional, bidirectional and not-through-host checks PASSED ("P2P 2.5x the host-staged copy").
    Without peer access no copy goes peer-to-peer (CUDA stages cudaMemcpyPeer through host memory), so the
    pair's P2P figures are UNREADABLE, never a pass: contradictory where they beat the staged control, no P2P
    figures where they match it (then test_p2p_not_through_host fails on them: traffic is not P2P)."""
    data = _shipped()
    pair = data["pairs"][PAIR]
    pair["can_access_peer"] = False
    if staged:  # what a rig without peer access really records: the "P2P" copy is the staged one
        pair.update(unidir_gbps=[11.1], bidir_gbps=[20.5], latency_us=[9.8])
    got = _statuses(pytester, snap(SWITCH, data))
    assert got["test_p2p_capability[" + PAIR + "]"] == "fail", got
    for check in FIGURE_CHECKS:
        assert got[f"{check}[{PAIR}]"] == "unreadable", got
    assert got[f"test_p2p_not_through_host[{PAIR}]"] == ("fail" if staged else "unreadable"), got


def test_figures_without_peer_access_say_why(snap: Callable[..., Path]) -> None:
    from pytest_rigcheck.p2p import checks
    from pytest_rigcheck.p2p.targets import routes
    from pytest_rigcheck.profile import Profile
    from pytest_rigcheck.rig import Rig
    from pytest_rigcheck.snapshot import open_snapshot

    data = _shipped()
    data["pairs"][PAIR]["can_access_peer"] = False
    rig = Rig.replay(open_snapshot(snap(SWITCH, data)), Profile())
    target = next(t for t in routes(rig) if t.id == PAIR)
    v = checks.unidirectional(target, data)
    assert v.status == "unreadable" and v.cause == "test_p2p_capability"
    assert "cudaDeviceCanAccessPeer 0" in v.summary and "contradicts itself (corrupt)" in v.summary
    assert v.measured_value == 28.1 and v.unit == "GB/s" and v.path


SHIPPED_SWITCH = SNAPSHOTS / "rtxpro6000x4-switch" / "p2p.json"
SWITCH_ALL = "0000:03:00.0+0000:04:00.0+0000:05:00.0+0000:06:00.0"


@pytest.mark.parametrize(
    "key",
    ["0000:03:00.0->0000:03:00.0", "0000:03:00.0->0000:04:00.0->0000:05:00.0"],
    ids=["self-pair", "three-ends"],
)
def test_pair_of_a_gpu_with_itself_is_corrupt(
    pytester: pytest.Pytester, snap: Callable[..., Path], key: str
) -> None:
    """FRESH4 finding 9: the shipped rtxpro6000x4-switch p2p.json with a copy of a real pair under
    "0000:03:00.0->0000:03:00.0" was ignored, exit 0. No run measures a GPU against itself: the file is
    corrupt, every P2P/NCCL check UNREADABLE naming the key."""
    data = json.loads(SHIPPED_SWITCH.read_text())
    data["pairs"][key] = data["pairs"]["0000:03:00.0->0000:04:00.0"]
    failed, out, result = run(pytester, snap("rtxpro6000x4-switch", data))
    assert result.ret == 1 and "test_p2p_unidirectional[0000:03:00.0->0000:04:00.0]" in failed, out
    assert "test_nccl_busbw[all]" in failed, out
    assert f'pairs["{key}"] is' in out and "corrupt" in out and "UNREADABLE" in out, out
    assert "Traceback" not in out


def test_nccl_transports_empty_cannot_tell_p2p(pytester: pytest.Pytester, snap: Callable[..., Path]) -> None:
    """FRESH4 finding 9: the NCCL group's `transports = {}` let test_nccl_uses_p2p pass on the busbw ratio
    alone ("transports: not recorded"). NCCL's own transport lines are the evidence it used P2P: without
    them it is UNREADABLE, saying so; with them (the shipped file) it passes."""
    data = json.loads(SHIPPED_SWITCH.read_text())
    snapshot = snap("rtxpro6000x4-switch", data)
    failed, out, _ = run(pytester, snapshot, "-k", "uses_p2p", "-v")
    assert failed == set() and "test_nccl_uses_p2p[all] PASSED" in out, out
    data["nccl"]["groups"][SWITCH_ALL]["transports"] = {}
    (snapshot / "p2p.json").write_text(json.dumps(data))
    failed, out, result = run(pytester, snapshot, "-k", "uses_p2p")
    assert failed == {"test_nccl_uses_p2p[all]"} and result.ret == 1, out
    assert "NCCL's transports not recorded" in out and "cannot be told" in out and "UNREADABLE" in out, out
