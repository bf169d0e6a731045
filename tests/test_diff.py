"""``rigcheck diff A B`` (issue 10 #6): what changed between two snapshots, reports, or one of each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_rigcheck.cli import main
from pytest_rigcheck.diff import WORSE, Side, compare

SNAPSHOTS = Path(__file__).resolve().parent.parent / "fixtures" / "sysfs-snapshots"


def _diff(capsys: pytest.CaptureFixture[str], a: str | Path, b: str | Path) -> tuple[int, list[str]]:
    rc = main(
        [
            "diff",
            str(SNAPSHOTS / a if isinstance(a, str) else a),
            str(SNAPSHOTS / b if isinstance(b, str) else b),
        ]
    )
    out = capsys.readouterr().out.splitlines()
    return rc, [line for line in out if line.split(" ", 1)[0] in ("WORSE", "CHANGED", "BETTER")]


def test_acs_switched_on_at_the_four_switch_ports(capsys: pytest.CaptureFixture[str]) -> None:
    """The four downstream ports' ACS, then the P2P/NCCL figures that fell with it; nothing else."""
    rc, lines = _diff(capsys, "rtxpro6000x4-switch", "rtxpro6000x4-acs-switch")
    assert rc == 1
    acs = [x for x in lines if " ACS: " in x]
    assert [x.split()[2] for x in acs] == ["0000:02:00.0", "0000:02:01.0", "0000:02:02.0", "0000:02:03.0"]
    assert all("ReqRedir CmpltRedir UpstreamFwd switched on" in x for x in acs)
    rest = [x for x in lines if x not in acs]
    assert rest and all(" figure: " in x and "follows from the ACS change" in x for x in rest), rest
    assert lines[:4] == acs  # the cause first


def test_riser_at_x8(capsys: pytest.CaptureFixture[str]) -> None:
    rc, lines = _diff(capsys, "rtx3090x2-gen4", "rtx3090x2-riser-x8")
    assert rc == 1
    assert lines == [
        "WORSE   link: 0000:00:03.1 root port: Gen4 x16 (16.0 GT/s) -> Gen4 x8 (16.0 GT/s) (width dropped)",
        "WORSE   link: 0000:4b:00.0 GPU1: Gen4 x16 (16.0 GT/s) -> Gen4 x8 (16.0 GT/s) (width dropped)",
    ]


def test_power_cap_lost(capsys: pytest.CaptureFixture[str]) -> None:
    rc, lines = _diff(capsys, "rtxpro6000x4-switch", "rtxpro6000x4-powercap-lost")
    assert (rc, lines) == (1, ["WORSE   power cap moved: 0000:05:00.0 GPU2: 350 W -> 600 W (enforced limit)"])


def test_iommu_and_same(capsys: pytest.CaptureFixture[str]) -> None:
    rc, lines = _diff(capsys, "rtx3090x2-gen4", "rtx3090x2-iommu-dma")
    assert (rc, lines) == (1, ["WORSE   IOMMU mode: rig: off -> translated"])
    assert _diff(capsys, "rtxpro6000x4-switch", "rtxpro6000x4-switch") == (0, [])


def test_fixed_is_better_and_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    rc, lines = _diff(capsys, "rtxpro6000x4-acs-switch", "rtxpro6000x4-switch")
    assert rc == 0 and lines and all(x.startswith("BETTER") for x in lines)


def _report(
    path: Path, fmt: int, statuses: dict[str, str], gpus: list[str], nodes: dict | None = None
) -> Path:
    rig: dict = {"name": "r", "gpus": [{"bdf": b} for b in gpus]}
    if fmt == 2:
        rig = {"identity": {"name": "r", "gpus": [{"bdf": b, "name": "GPU"} for b in gpus]}}
        rig["topology"] = {"nodes": nodes or {}, "iommu": {"mode": "off"}}
    key = "nodeid" if fmt == 1 else "id"
    results = [{key: k, "status": v} for k, v in statuses.items()]
    path.write_text(json.dumps({"format": fmt, "rigs": [rig], "results": results}))
    return path


def test_two_reports_pass_to_fail_and_a_gpu_gone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _report(
        tmp_path / "a.json",
        1,
        {"t::acs[x]": "pass", "t::link[y]": "fail", "t::n": "n/a"},
        ["0000:03:00.0", "0000:04:00.0"],
    )
    b = _report(
        tmp_path / "b.json", 2, {"t::acs[x]": "fail", "t::link[y]": "pass", "t::n": "n/a"}, ["0000:03:00.0"]
    )
    rc, lines = _diff(capsys, a, b)
    assert rc == 1
    assert lines == [
        "WORSE   GPU vanished: 0000:04:00.0: present -> absent",
        "WORSE   check: t::acs[x]: pass -> fail",
        "BETTER  check: t::link[y]: fail -> pass",
    ]


def test_report_against_snapshot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One of each: what both record (GPUs; with format 2 the links, ACS and IOMMU) is compared."""
    nodes = {
        "0000:00:03.1": {"role": "root port", "gen": 4, "width": 16, "acs": "off"},
        "0000:4b:00.0": {"role": "GPU", "gen": 4, "width": 16, "gpu_index": 1},
        "0000:21:00.0": {"role": "GPU", "gen": 4, "width": 16, "gpu_index": 0},
    }
    a = _report(tmp_path / "a.json", 2, {}, ["0000:21:00.0", "0000:4b:00.0"], nodes)
    rc, lines = _diff(capsys, a, "rtx3090x2-riser-x8")
    assert rc == 1 and any("0000:4b:00.0 GPU1: Gen4 x16 (16.0 GT/s) -> Gen4 x8" in x for x in lines), lines
    assert not any("ACS" in x or "vanished" in x for x in lines), lines


def test_spread_from_the_readings() -> None:
    """A fall within the readings' own spread is not a change; beyond it, the spread used is stated."""
    a, b = (
        Side("a", figures={"P2P unidirectional GPU0->GPU1 GB/s": [20.0, 28.0]}),
        Side("b", figures={"P2P unidirectional GPU0->GPU1 GB/s": [23.0]}),
    )
    assert compare(a, b) == []  # -18 % within the recorded 29 % spread
    b.figures = {"P2P unidirectional GPU0->GPU1 GB/s": [15.0]}
    (c,) = compare(a, b)
    assert c.level == WORSE and "29 % run-to-run spread" in c.note


@pytest.mark.parametrize("bad", ["missing", "notjson", "otherjson"])
def test_unreadable_input_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    path = tmp_path / "x.json"
    if bad == "notjson":
        path.write_text("{")
    elif bad == "otherjson":
        path.write_text('{"format": 9}')
    rc = main(["diff", str(path), str(SNAPSHOTS / "rtx3090x2-gen4")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("rigcheck: ") and len(err.strip().splitlines()) == 1, err


def test_report_ids_without_the_rig_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Reports of two differently named captures of one rig name the same checks alike."""
    for name, rig, status in (("a", "rig-before", "pass"), ("b", "rig-after", "fail")):
        doc = {
            "format": 1,
            "rigs": [{"name": rig, "gpus": []}],
            "results": [
                {"nodeid": f"t.py::test_iommu[{rig}]", "status": status},
                {"nodeid": "t.py::test_acs[0000:02:00.0]", "status": status},
            ],
        }
        (tmp_path / f"{name}.json").write_text(json.dumps(doc))
    rc, lines = _diff(capsys, tmp_path / "a.json", tmp_path / "b.json")
    assert rc == 1
    assert lines == [
        "WORSE   check: t.py::test_acs[0000:02:00.0]: pass -> fail",
        "WORSE   check: t.py::test_iommu[*]: pass -> fail",
    ]


def test_acs_unreadable_on_side_b_is_worse(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Root port 0000:00:03.1's config truncated to 100 bytes on side B: its ACS state cannot be read, so
    the diff names it as worse (exit 1), never "no changes"."""
    import shutil

    b = tmp_path / "b"
    shutil.copytree(SNAPSHOTS / "rtx3090x2-acs-root-port", b, symlinks=True)
    cfg = b / "sys/devices/pci0000:00/0000:00:03.1/config"
    cfg.write_bytes(cfg.read_bytes()[:100])
    rc, lines = _diff(capsys, "rtx3090x2-acs-root-port", b)
    assert rc == 1
    assert any(line.startswith("WORSE   ACS: 0000:00:03.1") and "ACS unreadable" in line for line in lines), (
        lines
    )
