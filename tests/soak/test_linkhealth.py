"""Link health parsers and checks: ASPM policy and LnkCtl bits, AER files, growth over the window."""

from __future__ import annotations

import json
import shutil

import pytest

from pytest_rigcheck import linkhealth
from pytest_rigcheck.profile import Profile
from pytest_rigcheck.rig import Rig
from pytest_rigcheck.snapshot import open_snapshot
from pytest_rigcheck.targets import gpus
from pytest_rigcheck.verdict import Status

from ..conftest import SNAPSHOTS

# The kernel's format: Documentation/ABI/testing/sysfs-bus-pci-devices-aer_stats.
AER_COR = "RxErr 2\nBadTLP 1\nBadDLLP 0\nRollover 0\nTimeout 0\nNonFatalErr 0\nCorrIntErr 0\nHeaderOF 0\nTOTAL_ERR_COR 3\n"


def rig(name: str, tmp_path=None) -> Rig:
    path = SNAPSHOTS / name
    if tmp_path is not None:
        path = shutil.copytree(path, tmp_path / name, symlinks=True)
    snap = open_snapshot(str(path))
    return Rig.replay(snap, Profile())


def test_policy_is_the_bracketed_word():
    assert linkhealth.parse_aspm_policy("[default] performance powersave powersupersave\n") == "default"
    assert linkhealth.parse_aspm_policy("default [performance] powersave") == "performance"
    with pytest.raises(ValueError):
        linkhealth.parse_aspm_policy("default performance")


def test_aer_totals():
    assert linkhealth.parse_aer(AER_COR, "correctable") == 3
    assert linkhealth.parse_aer("Undefined 0\nTOTAL_ERR_FATAL 1\n", "fatal") == 1
    # fresh-user findings: a counter twice, a bit's counter above the total
    for bad in (
        "TOTAL_ERR_COR -1\n",
        "RxErr\n",
        "RxErr 0\n",
        "TOTAL_ERR_COR 3\nTOTAL_ERR_COR 0\n",
        "RxErr 5\nTOTAL_ERR_COR 0\n",
    ):
        with pytest.raises(ValueError):
            linkhealth.parse_aer(bad, "correctable")


def test_aspm_text():
    assert [linkhealth.aspm_text(b) for b in range(4)] == ["disabled", "L0s", "L1", "L0s L1"]


def test_captured_h200_has_aspm_off_and_no_aer_files():
    """The 2x H200 capture (shared/captures/h200x2-nvlink): LnkCtl 0x0000 on both GPUs, policy [default]."""
    r = rig("h200x2-nvlink")
    for t in gpus(r):
        v = linkhealth.aspm(t)
        assert v.status == Status.PASS and "kernel policy [default]" in v.summary
        assert linkhealth.aer_counters(t).status == Status.NOT_APPLICABLE


def test_aspm_on_warns_naming_both_ends_and_the_fix():
    r = rig("rtx3090x2-aspm-on")
    v0, v1 = (linkhealth.aspm(t) for t in gpus(r))
    assert v0.status == Status.PASS
    assert v1.status == Status.WARN
    assert "0000:00:03.1 root port: ASPM L1 enabled" in v1.summary and "0000:4b:00.0" in v1.summary
    assert any("pcie_aspm=off" in f for f in v1.fix) and any("BIOS" in f for f in v1.fix)


def test_aspm_unreadable_without_root():
    r = rig("h100x1-nonroot")
    v = linkhealth.aspm(gpus(r)[0])
    assert v.status == Status.UNREADABLE and v.fix


def test_aer_growth_fails_naming_the_hop():
    r = rig("rtx3090x2-aer-riser")
    g0, g1 = gpus(r)
    assert linkhealth.aer_counters(g1).status == Status.PASS
    assert linkhealth.aer_growth(g0).status == Status.PASS
    v = linkhealth.aer_growth(g1)
    assert v.status == Status.FAIL
    assert (
        "correctable 0 -> 37 (+37)" in v.summary
        and "0000:00:03.1 root port: correctable 0 -> 12" in v.summary
    )
    assert "0000:00:03.1 -> 0000:4b:00.0" in v.fix[0] and "riser" in v.fix[0]


def test_fatal_counts_since_boot_fail(tmp_path):
    r = rig("rtx3090x2-soak-healthy", tmp_path)
    gpu = r.pcie["0000:4b:00.0"]
    (r.root / gpu.base / "aer_dev_fatal").write_text("Undefined 0\nTOTAL_ERR_FATAL 1\n")
    v = linkhealth.aer_counters(gpus(r)[1])
    assert v.status == Status.FAIL and "1 fatal" in v.summary and "riser" in v.fix[0]


def test_correctable_since_boot_warns(tmp_path):
    r = rig("rtx3090x2-soak-healthy", tmp_path)
    (r.root / r.pcie["0000:00:01.1"].base / "aer_dev_correctable").write_text(AER_COR)
    assert linkhealth.aer_counters(gpus(r)[0]).status == Status.WARN


def test_corrupt_files_are_unreadable(tmp_path):
    r = rig("rtx3090x2-soak-healthy", tmp_path)
    (r.root / r.pcie["0000:00:01.1"].base / "aer_dev_correctable").write_text("garbage\n")
    assert linkhealth.aer_counters(gpus(r)[0]).status == Status.UNREADABLE
    r2 = rig("rtx3090x2-aer-riser", tmp_path)
    data = json.loads((r2.root / "linkhealth.json").read_text())
    data["end"]["0000:4b:00.0"]["aer"]["correctable"] = -4
    (r2.root / "linkhealth.json").write_text(json.dumps(data))
    v = linkhealth.aer_growth(gpus(r2)[1])
    assert v.status == Status.UNREADABLE and "corrupt" in v.summary


@pytest.mark.parametrize(("key", "value"), [("gen", 9), ("width", 33), ("width", 5)])
def test_impossible_link_reading_is_corrupt(tmp_path, key, value):
    """An end reading of Gen9 or x33 (no such link) is corrupt: UNREADABLE, not "no AER counter grew"."""
    r = rig("rtx3090x2-soak-healthy", tmp_path)
    data = json.loads((r.root / "linkhealth.json").read_text())
    data["end"]["0000:21:00.0"] = {**data["end"]["0000:21:00.0"], key: value}
    (r.root / "linkhealth.json").write_text(json.dumps(data))
    v = linkhealth.aer_growth(gpus(r)[0])
    assert v.status == Status.UNREADABLE and f"{key} = {value}" in v.summary, v.summary


@pytest.mark.parametrize(
    ("bdf", "key", "value", "why"),
    [
        (
            "0000:21:00.0",
            "gen",
            5,
            "gen = 5 (Gen5) is above the link's own maximum 0000:21:00.0 max_link_speed = 4",
        ),
        (
            "0000:21:00.0",
            "width",
            32,
            "width = 32 (x32) is above the link's own maximum 0000:21:00.0 max_link_width = 16",
        ),
        ("0000:00:01.1", "width", 32, "end[0000:00:01.1]: width = 32 (x32) is above the link's own maximum"),
    ],
    ids=["gpu-gen5", "gpu-x32", "root-port-x32"],
)
def test_end_link_above_its_maximum_is_corrupt(tmp_path, bdf, key, value, why):
    """FRESH3 F-Lh7: an end reading faster or wider than the function's own sysfs max_link_speed/width (Gen5 or
    x32 on a Gen4 x16 link) is corrupt, on any hop: UNREADABLE naming the file, the value and the maximum."""
    r = rig("rtx3090x2-soak-healthy", tmp_path)
    data = json.loads((r.root / "linkhealth.json").read_text())
    data["end"][bdf] = {**data["end"][bdf], key: value}
    (r.root / "linkhealth.json").write_text(json.dumps(data))
    v = linkhealth.aer_growth(gpus(r)[0])
    assert v.status == Status.UNREADABLE and "linkhealth.json is corrupt" in v.summary and why in v.summary, (
        v.summary
    )


def test_width_drop_over_the_window_fails(tmp_path):
    r = rig("rtx3090x2-soak-healthy", tmp_path)
    data = json.loads((r.root / "linkhealth.json").read_text())
    data["end"]["0000:21:00.0"] = {**data["end"]["0000:21:00.0"], "width": 8}
    (r.root / "linkhealth.json").write_text(json.dumps(data))
    v = linkhealth.aer_growth(gpus(r)[0])
    assert v.status == Status.FAIL and "width x16 -> x8" in v.summary


def test_single_reading_snapshot_does_not_apply():
    v = linkhealth.aer_growth(gpus(rig("rtx3090x2-gen4"))[0])
    assert v.status == Status.NOT_APPLICABLE and "linkhealth.json" in v.summary


def test_switch_port_errors_name_the_link_below_it(tmp_path):
    """A downstream port counts errors received on its link to the GPU; the switch's upstream port, on the
    link above it to the root port (receiver-side AER counts)."""
    r = rig("rtxpro6000x4-switch", tmp_path)
    nonfatal = "Undefined 0\nTOTAL_ERR_NONFATAL 1\n"

    def aer(bdf: str) -> None:  # the kernel creates the three files together
        base = r.root / r.pcie[bdf].base
        (base / "aer_dev_nonfatal").write_text(nonfatal)
        (base / "aer_dev_correctable").write_text("TOTAL_ERR_COR 0\n")
        (base / "aer_dev_fatal").write_text("TOTAL_ERR_FATAL 0\n")

    aer("0000:02:01.0")
    v = linkhealth.aer_counters(gpus(r)[1])
    assert v.status == Status.FAIL and "0000:02:01.0 -> 0000:04:00.0" in v.fix[0]
    aer("0000:01:00.0")
    r2 = Rig.replay(open_snapshot(str(r.root)), Profile())
    v = linkhealth.aer_counters(gpus(r2)[0])
    assert "0000:00:01.1 -> 0000:01:00.0" in v.fix[0]


@pytest.mark.parametrize("window", [0, 0.001, float("nan"), None])
def test_window_that_is_no_duration_is_unreadable(tmp_path, window):
    """FRESH5: window_s 0, 0.001, NaN or null passed "no AER counter grew over nan s"."""
    r = rig("rtx3090x2-soak-healthy", tmp_path)
    data = json.loads((r.root / "linkhealth.json").read_text())
    data["window_s"] = window
    (r.root / "linkhealth.json").write_text(json.dumps(data))
    v = linkhealth.aer_growth(gpus(r)[0])
    assert v.status == Status.UNREADABLE and "window_s" in v.summary, v.summary
