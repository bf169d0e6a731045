"""``rigcheck diff A B`` (issue 10 #6): what changed between two snapshots, reports, or one of each."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
    # one judged result: a report in which nothing was checked is refused (test_report_with_nothing_checked)
    a = _report(tmp_path / "a.json", 2, {"t::acs[x]": "pass"}, ["0000:21:00.0", "0000:4b:00.0"], nodes)
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
    if bad == "missing":  # a report path, not a snapshot name: no list of the shipped snapshots
        assert "no such report" in err and "h100x1" not in err, err


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


# -- a report merge calls corrupt is refused by diff too: one line, exit 2 (report.validate_report) ------


def _full(path: Path, **change: object) -> Path:
    """A two-check report as ``--rig-report`` writes it (format 2), with ``change`` applied to result 1."""
    results = [
        {"id": "t::acs[x]", "status": "pass", "outcome": "passed", "measured": 0},
        {"id": "t::link[y]", "status": "fail", "outcome": "failed", "message": "Gen4 x8"},
    ]
    results[0].update(change)
    doc = {"format": 2, "rigs": [{"name": "r", "gpus": []}], "counts": {"pass": 1, "fail": 1}}
    doc["results"] = results
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"status": "bogus"}, 'status "bogus" is not one of pass, warn, fail, unreadable, n/a'),
        ({"status": "PASS"}, 'status "PASS" is not one of pass'),
        ({"status": "fail", "outcome": "passed"}, 'status "fail" contradicts its outcome "passed"'),
        ({"message": "UNREADABLE, not a pass: no ACS read"}, "but its message says"),
    ],
    ids=["status-bogus", "status-upper", "status-vs-outcome", "unreadable-message"],
)
def test_corrupt_report_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict, says: str
) -> None:
    """A fresh user's find: ``status: "bogus"`` (with ``measured: "abc"``) read as "BETTER ... bogus ->
    pass", exit 0. The report merge calls corrupt is refused here too, in one line naming the file."""
    a = _full(tmp_path / "a.json", measured="abc", **change)
    b = _full(tmp_path / "b.json")
    rc = main(["diff", str(a), str(b)])
    out, err = capsys.readouterr()
    assert rc == 2 and "BETTER" not in out and "Traceback" not in out + err
    line = [x for x in (out + err).splitlines() if x.strip()]
    assert len(line) == 1 and str(a) in line[0] and "corrupt report: " in line[0] and says in line[0], line


@pytest.mark.parametrize(
    ("results", "says"),
    [
        ([], "nothing was checked: the report has no results"),
        (
            [{"id": "t::n", "status": "n/a", "outcome": "skipped"}],
            "nothing was checked: all 1 results are n/a",
        ),
    ],
    ids=["no-results", "only-n/a"],
)
def test_report_with_nothing_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], results: list, says: str
) -> None:
    """A fresh user's find: ``results: []`` against the full report said "no changes", exit 0. A report in
    which nothing was judged is no evidence: one line, exit 2."""
    a = tmp_path / "a.json"
    a.write_text(json.dumps({"format": 2, "rigs": [], "results": results}))
    rc = main(["diff", str(a), str(_full(tmp_path / "b.json"))])
    out, err = capsys.readouterr()
    assert rc == 2 and "no changes" not in out
    assert says in err + out and len((out + err).strip().splitlines()) == 1


def test_counts_disagreeing_and_nan_are_corrupt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Counts that disagree with the results, and NaN (which Python's json reads, JSON does not: RFC 8259
    section 6), make a report corrupt for diff as for merge."""
    a = _full(tmp_path / "a.json")
    doc = json.loads(a.read_text())
    doc["counts"] = {"pass": 41}
    a.write_text(json.dumps(doc))
    b = tmp_path / "b.json"
    b.write_text(_full(tmp_path / "c.json").read_text().replace('"measured": 0', '"measured": NaN'))
    for bad, says in ((a, "counts"), (b, "NaN is not a JSON number")):
        rc = main(["diff", str(bad), str(tmp_path / "c.json")])
        out, err = capsys.readouterr()
        assert rc == 2 and says in err + out and len((out + err).strip().splitlines()) == 1, out + err


# -- side B read through the checks' own loaders (nvml.json: gpu.plugin.GpuSession; p2p.json: P2pSession) ------


def _edit(tmp_path: Path, snap: str, name: str, change: object, to: str = "b") -> Path:
    """A copy ``tmp_path / to`` of the shipped snapshot ``snap`` whose JSON file ``name`` is passed through
    ``change``."""
    import shutil

    b = tmp_path / to
    shutil.copytree(SNAPSHOTS / snap, b, symlinks=True)
    doc = json.loads((b / name).read_text())
    change(doc)  # type: ignore[operator]
    (b / name).write_text(json.dumps(doc))
    return b


def test_gpu_dropped_from_nvml_is_worse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A fresh user's find: GPU2 (0000:05:00.0) deleted from nvml.json, still on the PCIe bus, gave "no
    changes", exit 0, while pytest on that snapshot fails 13 checks (test_gpu_seen_by_nvml and every NVML
    reading of GPU2 UNREADABLE). The NVML-vs-PCIe join of the GPU suites says NVML lost it: WORSE, once
    (its power cap is not listed again); and back, BETTER."""
    b = _edit(tmp_path, "rtxpro6000x4-switch", "nvml.json", lambda d: d["gpus"].pop(2))
    rc, lines = _diff(capsys, "rtxpro6000x4-switch", b)
    assert rc == 1
    assert len(lines) == 1, lines
    assert lines[0].startswith("WORSE   NVML lost GPU: 0000:05:00.0 GPU2: seen by NVML -> not seen by NVML (")
    assert "not among the 3 GPU(s)" in lines[0]
    rc, lines = _diff(capsys, b, "rtxpro6000x4-switch")
    assert (rc, lines) == (0, ["BETTER  NVML sees GPU again: 0000:05:00.0 GPU2: not seen -> seen by NVML"])


def test_nvml_json_unreadable_or_cap_corrupt_is_worse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A whole nvml.json the GPU suites refuse (format 9) is one WORSE line; one corrupt reading (an enforced
    limit recorded as text: ``GpuState.from_json`` marks it corrupt) is WORSE for that GPU's power cap."""
    b = _edit(tmp_path, "rtxpro6000x4-switch", "nvml.json", lambda d: d.update(format=9))
    rc, lines = _diff(capsys, "rtxpro6000x4-switch", b)
    assert rc == 1 and len(lines) == 1, lines
    assert (
        lines[0].startswith("WORSE   NVML state: nvml.json: read -> unreadable (") and "format 9" in lines[0]
    )

    c = _edit(
        tmp_path,
        "rtxpro6000x4-switch",
        "nvml.json",
        lambda d: d["gpus"][1].update(enforced_limit_mw="350"),
        "c",
    )
    rc, lines = _diff(capsys, "rtxpro6000x4-switch", c)
    assert rc == 1 and len(lines) == 1, lines
    assert lines[0].startswith("WORSE   power cap: 0000:04:00.0 GPU1: 350 W -> unreadable (")
    assert "enforced_limit_mw: '350' is not a number" in lines[0]


def _pair(key: str, **figures: object) -> object:
    return lambda d: d["pairs"][key].update(figures)


PAIR = "0000:03:00.0->0000:04:00.0"


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        (
            _pair(PAIR, unidir_gbps=[45.0], bidir_gbps=[90.0]),
            [
                "WORSE   figure: P2P bidirectional GPU0->GPU1: 52 GB/s -> unreadable (GPU0->GPU1: P2P "
                "bidirectional reading 90 GB/s is above what the path can carry: corrupt figure (at most 66.16 GB/s",
                "WORSE   figure: P2P unidirectional GPU0->GPU1: 28.1 GB/s -> unreadable (GPU0->GPU1: P2P "
                "unidirectional reading 45 GB/s is above what the path can carry: corrupt figure (at most 33.08 GB/s",
            ],
        ),
        (
            lambda d: next(iter(d["nccl"]["groups"].values())).update(busbw_gbps=[500.0]),
            [
                "WORSE   figure: NCCL all-reduce busbw GPU0+GPU1+GPU2+GPU3: 21.5855 GB/s -> unreadable (snapshot "
                'rtxpro6000x4-switch p2p.json nccl.groups["0000:03:00.0+0000:04:00.0+0000:05:00.0+0000:06:00.0"]'
                ".busbw_gbps: first reading 500 GB/s contradicts its sweep row",
            ],
        ),
        (
            _pair(PAIR, latency_us=[0.0]),
            [
                "WORSE   figure: P2P latency GPU0->GPU1: 0.41 us -> unreadable (snapshot rtxpro6000x4-switch "
                f'p2p.json pairs["{PAIR}"].latency_us: reading 0.0 is impossible',
            ],
        ),
        (
            lambda d: d["pairs"].pop(PAIR),
            [
                f"WORSE   figure: P2P {what} GPU0->GPU1: {v} -> unreadable (not recorded on side B"
                for what, v in (
                    ("bidirectional", "52 GB/s"),
                    ("latency", "0.41 us"),
                    ("unidirectional", "28.1 GB/s"),
                )
            ],
        ),
        (
            lambda d: d["gpus"]["0000:03:00.0"].update(h2d_gbps=[float("nan")]),
            [
                'WORSE   figure: host->device GPU0: 26.4 GB/s -> unreadable (snapshot rtxpro6000x4-switch p2p.json gpus["0000:03:00.0"].h2d_gbps: reading'
            ],
        ),
    ],
    ids=["p2p-above-path", "busbw-contradicts-sweep", "latency-0", "pair-dropped", "h2d-nan"],
)
def test_figure_the_checks_call_corrupt_is_worse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: object, expect: list[str]
) -> None:
    """A fresh user's find: figures the P2P suite calls UNREADABLE (45 GB/s P2P on a Gen4 x16 path, 500 GB/s
    busbw beside a sweep row of 21.6) were listed as BETTER, exit 0; latency 0.41 -> 0 us as "no changes".
    Read through ``figures.load`` and the checks' path ceiling (``p2p.checks.above_capacity``), each is
    WORSE as unreadable, with the checks' reason; a figure side B no longer records too."""
    b = _edit(tmp_path, "rtxpro6000x4-switch", "p2p.json", change)
    rc, lines = _diff(capsys, "rtxpro6000x4-switch", b)
    assert rc == 1
    assert len(lines) == len(expect) and all(x.startswith(e) for x, e in zip(lines, expect, strict=True)), (
        lines
    )


def test_latency_compared(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """P2P latency is compared, lower being better: 0.41 -> 2 us is WORSE, 0.41 -> 0.2 us BETTER."""
    b = _edit(tmp_path, "rtxpro6000x4-switch", "p2p.json", _pair(PAIR, latency_us=[2.0]))
    rc, lines = _diff(capsys, "rtxpro6000x4-switch", b)
    assert (rc, lines) == (
        1,
        [
            "WORSE   figure: P2P latency GPU0->GPU1: 0.41 us -> 2 us (+388 %, beyond the 5 % run-to-run spread)"
        ],
    )
    b = _edit(tmp_path, "rtxpro6000x4-switch", "p2p.json", _pair(PAIR, latency_us=[0.2]), "c")
    rc, lines = _diff(capsys, "rtxpro6000x4-switch", b)
    assert (rc, lines) == (
        0,
        [
            "BETTER  figure: P2P latency GPU0->GPU1: 0.41 us -> 0.2 us (-51 %, beyond the 5 % run-to-run spread)"
        ],
    )


def test_p2p_json_of_another_rig_is_worse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A p2p.json naming a GPU that is not on the rig (``session.foreign_gpu``: every P2P/NCCL check
    UNREADABLE) is one WORSE line, never a list of figures."""

    def move(d: dict[str, Any]) -> None:
        d["pairs"]["0000:99:00.0->0000:04:00.0"] = d["pairs"].pop(PAIR)

    b = _edit(tmp_path, "rtxpro6000x4-switch", "p2p.json", move)
    rc, lines = _diff(capsys, "rtxpro6000x4-switch", b)
    assert rc == 1 and len(lines) == 1, lines
    assert (
        lines[0].startswith("WORSE   P2P/NCCL figures: p2p.json: recorded -> unreadable (")
        and "0000:99:00.0" in lines[0]
    )
