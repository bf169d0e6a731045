"""``rigcheck merge``: node reports -> fleet.json (schema), fleet.xml (JUnit), fleet.html; outliers by
median/MAD; exit 0/1/2 (issue 13)."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from pytest_rigcheck.cli import main
from pytest_rigcheck.fleet.merge import merge

ROOT = Path(__file__).resolve().parents[1]
SNAPS = ROOT / "fixtures" / "sysfs-snapshots"


def schema() -> dict:
    text = resources.files("pytest_rigcheck").joinpath("schemas/fleet.schema.json").read_text()
    return json.loads(text)


GPU = {"bdf": "0000:03:00.0", "vendor": "0x10de", "device": "0x2bb1", "slot": None}


def node_report(name: str, p2p: float = 28.1, fail: bool = False, fmt: int = 1, **extra) -> dict:
    """A node's report in the shape report.py writes (format 1), with one P2P figure and one ACS check."""
    results = [
        {
            "nodeid": "suites/test_p2p_bandwidth.py::test_p2p_unidirectional[0000:03:00.0->0000:04:00.0]",
            "status": "pass",
            "measured": f"{p2p} GB/s (one reading)",
            "properties": {"unidir_gbps": p2p, "pass_line": 20.0},
            "target": {"id": "0000:03:00.0->0000:04:00.0"},
        },
        {
            "nodeid": "suites/test_acs.py::test_acs_redirect_off[0000:02:00.0]",
            "status": "fail" if fail else "pass",
            "message": "0000:02:00.0: ACS P2P Request Redirect enabled" if fail else "ACS off",
            "fix": ["setpci -s 0000:02:00.0 ECAP_ACS+6.w=0000"] if fail else [],
            "target": {"id": "0000:02:00.0"},
        },
    ]
    doc = {
        "format": fmt,
        "host": "localhost",
        "rigs": [{"name": name, "source": f"snap/{name}", "gpus": [GPU, {**GPU, "bdf": "0000:04:00.0"}]}],
        "exit_status": 1 if fail else 0,
        "results": results,
    }
    doc.update(extra)
    return doc


def write(tmp_path: Path, docs: dict[str, dict]) -> list[Path]:
    paths = []
    for name, doc in docs.items():
        p = tmp_path / f"{name}.json"
        p.write_text(json.dumps(doc))
        paths.append(p)
    return paths


def test_all_pass_exit_0_and_outputs_valid(tmp_path, capsys):
    paths = write(tmp_path, {f"n{i}": node_report(f"n{i}") for i in range(3)})
    assert main(["merge", *map(str, paths), "--out", str(tmp_path / "out")]) == 0
    doc = json.loads((tmp_path / "out" / "fleet.json").read_text())
    jsonschema.validate(doc, schema())
    assert doc["verdict"] == "pass" and doc["outliers"] == [] and doc["failing_nodes"] == []
    suites = ET.parse(tmp_path / "out" / "fleet.xml").getroot().findall("testsuite")
    assert [s.get("name") for s in suites] == ["n0", "n1", "n2"]
    assert "3/3 nodes pass" in capsys.readouterr().out


def test_failing_node_named_exit_1_first_in_grid(tmp_path, capsys):
    paths = write(tmp_path, {"a": node_report("a"), "b": node_report("b", fail=True), "c": node_report("c")})
    assert main(["merge", *map(str, paths), "--out", str(tmp_path / "out")]) == 1
    out = capsys.readouterr().out
    assert "NODE b: FAIL: test_acs_redirect_off" in out
    doc = json.loads((tmp_path / "out" / "fleet.json").read_text())
    jsonschema.validate(doc, schema())
    assert doc["failing_nodes"] == ["b"] and doc["nodes"][0]["name"] == "b"
    cell = doc["nodes"][0]["cells"]["suites/test_acs.py::test_acs_redirect_off"]
    assert cell["failing"][0]["fix"] == ["setpci -s 0000:02:00.0 ECAP_ACS+6.w=0000"]
    xml = ET.parse(tmp_path / "out" / "fleet.xml").getroot()
    b = xml.find("testsuite[@name='b']")
    assert b.get("failures") == "1" and b.find("testcase/failure") is not None
    page = (tmp_path / "out" / "fleet.html").read_text()
    assert page.index(">b<small>") < page.index(">a<small>")  # failing nodes first
    assert "http" not in page.replace("https://", "")  # self-contained: nothing fetched


def test_quiet_outlier_named_though_it_passes(tmp_path, capsys):
    """24 GB/s passes the node's own 20 GB/s line but sits 14 % below four peers at 28.0-28.3 GB/s."""
    docs = {f"n{i}": node_report(f"n{i}", p2p=28.0 + 0.1 * i) for i in range(4)}
    docs["slow"] = node_report("slow", p2p=24.0)  # passes its absolute line, 14% below the median
    paths = write(tmp_path, docs)
    assert main(["merge", *map(str, paths), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "OUTLIER slow: test_p2p_unidirectional: P2P 24 GB/s" in out
    assert "median" in out and "MAD" in out  # the statistic is stated
    doc = json.loads((tmp_path / "out" / "fleet.json").read_text())
    jsonschema.validate(doc, schema())
    assert [o["node"] for o in doc["outliers"]] == ["slow"]
    assert doc["outliers"][0]["median"] == pytest.approx(28.1)


def test_no_outlier_within_ten_percent_or_among_different_gpus(tmp_path):
    docs = {f"n{i}": node_report(f"n{i}", p2p=28.0) for i in range(3)}
    docs["near"] = node_report("near", p2p=26.0)  # 7 % below: run-to-run, not flagged
    other = node_report("h100", p2p=10.0)
    other["rigs"][0]["gpus"] = [{**GPU, "device": "0x2330"}]  # a different GPU: not a peer
    docs["h100"] = other
    assert merge(write(tmp_path, docs))["outliers"] == []


def test_missing_and_unreadable_named_exit_2_others_merged(tmp_path, capsys):
    paths = write(tmp_path, {"a": node_report("a"), "b": node_report("b", fail=True)})
    (tmp_path / "cut.json").write_text('{"format": 1, "results": [')
    (tmp_path / "v9.json").write_text('{"format": 9, "results": []}')
    paths += [tmp_path / "cut.json", tmp_path / "v9.json", tmp_path / "gone.json"]
    assert main(["merge", *map(str, paths), "--out", str(tmp_path / "out")]) == 2
    out = capsys.readouterr().out
    assert "NODE gone: MISSING" in out and "NODE cut: UNREADABLE" in out and "format 9" in out
    assert "NODE b: FAIL" in out  # the others still merged
    doc = json.loads((tmp_path / "out" / "fleet.json").read_text())
    jsonschema.validate(doc, schema())
    assert {n["name"]: n["status"] for n in doc["nodes"]} == {
        "a": "pass",
        "b": "fail",
        "cut": "unreadable",
        "v9": "unreadable",
        "gone": "missing",
    }


def test_stopped_run_is_incomplete(tmp_path, capsys):
    paths = write(tmp_path, {"a": node_report("a"), "s": node_report("s", stopped_by="SIGTERM")})
    assert main(["merge", *map(str, paths), "--out", str(tmp_path / "out")]) == 2
    assert "NODE s: INCOMPLETE: the run was stopped by SIGTERM" in capsys.readouterr().out


def test_format_2_and_unknown_keys_accepted(tmp_path):
    doc = node_report("f2", fmt=2, topology={"x": 1}, models=[])
    doc["results"][0]["cause"] = None
    doc["results"][0]["rig"] = "f2"
    fleet = merge(write(tmp_path, {"f2": doc, "f1": node_report("f1")}))
    assert fleet["exit_status"] == 0 and len(fleet["nodes"]) == 2


def test_same_name_twice_still_two_nodes(tmp_path):
    (tmp_path / "x").mkdir()
    p1 = write(tmp_path, {"a": node_report("a")})
    p2 = write(tmp_path / "x", {"a": node_report("a")})
    assert [n["name"] for n in merge(p1 + p2)["nodes"]] == ["a", "a#2"]


def test_live_node_named_by_host(tmp_path):
    doc = node_report("rig")
    doc["rigs"][0]["source"] = "live"
    doc["host"] = "gpu-node-07"
    assert merge(write(tmp_path, {"r": doc}))["nodes"][0]["name"] == "gpu-node-07"


@pytest.mark.fleet
def test_shipped_snapshots_as_nodes(tmp_path):
    """Real reports from shipped snapshots (one faulty) merge; the CLI entry point runs as a program."""
    reports = []
    for name in ("rtx3090x2-gen4", "rtx3090x2-riser-x8"):
        out = tmp_path / f"{name}.json"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-p",
                "no:cacheprovider",
                "-q",
                f"--rig-snapshot={SNAPS / name}",
                f"--rig-report={out}",
            ],
            cwd=ROOT,
            capture_output=True,
            timeout=300,
            check=False,
        )
        reports.append(out)
        assert json.loads(out.read_text())["host"]  # report.py names the node's host
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest_rigcheck.cli",
            "merge",
            *map(str, reports),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "NODE rtx3090x2-riser-x8: FAIL: test_link_under_load, test_link_trained" in proc.stdout
    jsonschema.validate(json.loads((tmp_path / "o" / "fleet.json").read_text()), schema())


def test_out_under_missing_folder_refused_before_reading(tmp_path, capsys, monkeypatch):
    """``--out DIR/sub`` with DIR missing: one line naming the path, exit 2 (usage), nothing created, and
    no report read (the same check as ``rigcheck capture``'s destination)."""
    import pytest_rigcheck.fleet.merge as merge_mod

    paths = write(tmp_path, {"a": node_report("a")})
    read: list[Path] = []
    monkeypatch.setattr(merge_mod, "load_report", lambda p: read.append(p) or {})
    out = tmp_path / "nope" / "sub"
    assert main(["merge", *map(str, paths), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert lines == [
        f"rigcheck: cannot write {out}: the folder {out.parent} does not exist (create it first)"
    ]
    assert captured.out == "" and read == [] and not (tmp_path / "nope").exists()


def test_out_new_folder_in_existing_one_made_and_existing_folder_reused(tmp_path):
    paths = write(tmp_path, {"a": node_report("a")})
    out = tmp_path / "fleet"
    assert main(["merge", *map(str, paths), "--out", str(out)]) == 0  # one new level: made
    assert main(["merge", *map(str, paths), "--out", str(out)]) == 0  # merged again into it
    assert sorted(p.name for p in out.iterdir()) == ["fleet.html", "fleet.json", "fleet.xml"]


def test_out_is_a_file_refused(tmp_path, capsys):
    paths = write(tmp_path, {"a": node_report("a")})
    (tmp_path / "taken").write_text("x")
    assert main(["merge", *map(str, paths), "--out", str(tmp_path / "taken")]) == 2
    assert "it exists and is not a folder" in capsys.readouterr().err
    assert (tmp_path / "taken").read_text() == "x"
