"""``rigcheck merge``: node reports -> fleet.json (schema), fleet.xml (JUnit), fleet.html; outliers by
median/MAD; exit 0/1/2 (issue 13)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from pytest_rigcheck.cli import main
from pytest_rigcheck.fleet.merge import MergeError, merge

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


def gate_report(snapshot: str, out: Path) -> Path:
    """A real ``--rig-report`` at ``out``: pytest run on a shipped snapshot, as a node runs the gate."""
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"]
    cmd += [f"--rig-snapshot={SNAPS / snapshot}", f"--rig-report={out}"]
    subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=300, check=False)
    return out


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


def test_missing_reports_of_one_file_name_still_two_nodes(tmp_path):
    """Two reports that could not be read, named alike from two folders: nothing to compare, both named."""
    (tmp_path / "x").mkdir()
    doc = merge([tmp_path / "a.json", tmp_path / "x" / "a.json"])
    assert [n["name"] for n in doc["nodes"]] == ["a", "a#2"] and doc["exit_status"] == 2


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
        out = gate_report(name, tmp_path / f"{name}.json")
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


# -- each node once -----------------------------------------------------------------------------------

T1, T2, T3 = "2026-11-30T10:00:00+0000", "2026-11-30T12:00:00+0000", "2026-11-30T13:30:00+0100"


def merge_cli(tmp_path: Path, paths: list[Path], capsys) -> tuple[int, str, str]:
    rc = main(["merge", *map(str, paths), "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_same_file_twice_refused_naming_both(tmp_path, capsys):
    """The same report given twice (here by two spellings) would count its node twice in totals and
    outliers: one line naming both inputs, exit 2, nothing written."""
    paths = write(tmp_path, {f"n{i}": node_report(f"n{i}", created=T1) for i in range(3)})
    other = tmp_path / "." / "n0.json"
    rc, out, err = merge_cli(tmp_path, [*paths, other], capsys)
    assert rc == 2 and out == ""
    assert err.strip().splitlines() == [
        f"rigcheck: {paths[0]} and {other} are the same file: each node counts once; give it once"
    ]
    assert not (tmp_path / "out").exists()


def test_copy_of_one_report_refused_naming_both(tmp_path, capsys):
    """Two copies of one report (same host, same created, same results), e.g. a report folder globbed twice."""
    (tmp_path / "copy").mkdir()
    paths = write(tmp_path, {"a": node_report("a", created=T1), "b": node_report("b", created=T1)})
    paths += write(tmp_path / "copy", {"a": node_report("a", created=T1)})
    rc, out, err = merge_cli(tmp_path, paths, capsys)
    assert rc == 2 and out == "" and not (tmp_path / "out").exists()
    assert err.strip().splitlines() == [
        f"rigcheck: {paths[0]} and {paths[2]} are the same report of node a (created {T1}): "
        "each node counts once; give one of them"
    ]


def test_copies_without_created_refused(tmp_path):
    """Format-1 reports written by hand or by older tools may have no 'created': identical ones are copies."""
    (tmp_path / "x").mkdir()
    paths = write(tmp_path, {"a": node_report("a")}) + write(tmp_path / "x", {"a": node_report("a")})
    with pytest.raises(MergeError, match="are the same report of node a: each node counts once"):
        merge(paths)


def test_newest_run_of_a_node_counts_older_named(tmp_path, capsys):
    """Three runs of node a (the oldest failing): only the newest counts in the totals and the outliers,
    and the summary, fleet.json, JUnit and HTML say which older runs were left out."""
    (tmp_path / "old").mkdir()
    (tmp_path / "older").mkdir()
    paths = write(tmp_path, {"a": node_report("a", created=T3), "b": node_report("b", created=T1)})
    paths += write(tmp_path / "old", {"a": node_report("a", p2p=27.0, created=T2)})
    paths += write(tmp_path / "older", {"a": node_report("a", fail=True, created=T1)})
    rc, out, err = merge_cli(tmp_path, paths, capsys)
    assert rc == 0 and err == ""  # the failing oldest run does not count
    assert (
        f"NOTE a: counted its newest run {paths[0]} (created {T3}); older runs left out: "
        f"{paths[2]} (created {T2}), {paths[3]} (created {T1})"
    ) in out
    assert "rigcheck merge: PASS: 2/2 nodes pass, 0 outliers, 2 older runs left out" in out
    doc = json.loads((tmp_path / "out" / "fleet.json").read_text())
    jsonschema.validate(doc, schema())
    a = next(n for n in doc["nodes"] if n["name"] == "a")
    assert [n["name"] for n in doc["nodes"]] == ["a", "b"]
    assert a["report"] == str(paths[0]) and a["created"] == T3
    assert a["left_out"] == [
        {"report": str(paths[2]), "created": T2},
        {"report": str(paths[3]), "created": T1},
    ]
    xml = ET.parse(tmp_path / "out" / "fleet.xml").getroot()
    assert len(xml.findall("testsuite")) == 2
    assert len(xml.findall("testsuite[@name='a']/properties/property[@name='left_out']")) == 2
    assert "(newest of 3 runs)" in (tmp_path / "out" / "fleet.html").read_text()


def test_newest_by_time_not_by_text(tmp_path):
    """T3 (13:30 at +01:00, 12:30 UTC) is newer than T2 (12:00 UTC): times are compared, not strings."""
    (tmp_path / "x").mkdir()
    paths = write(tmp_path, {"a": node_report("a", created="2026-11-30T12:00:00+0000", fail=True)})
    paths += write(tmp_path / "x", {"a": node_report("a", created=T3)})
    doc = merge(paths)
    assert doc["exit_status"] == 0 and doc["nodes"][0]["report"] == str(paths[1])


def test_outliers_count_each_node_once(tmp_path):
    """A slow node given as three runs beside three good nodes: counted three times it would be half the
    peers, pull the median to 25 GB/s and hide itself (limit 11.5 GB/s); counted once, the median is
    28.1 GB/s and its newest 22 GB/s is named."""
    paths = write(tmp_path, {f"n{i}": node_report(f"n{i}", created=T1) for i in range(3)})
    for i, t in enumerate((T1, T2, T3)):
        (tmp_path / f"r{i}").mkdir()
        paths += write(tmp_path / f"r{i}", {"slow": node_report("slow", p2p=22.0, created=t)})
    doc = merge(paths)
    assert len(doc["nodes"]) == 4
    assert [(o["node"], o["nodes"], o["median"]) for o in doc["outliers"]] == [("slow", 4, 28.1)]


def test_same_run_different_results_refused(tmp_path):
    (tmp_path / "x").mkdir()
    paths = write(tmp_path, {"a": node_report("a", created=T1)})
    paths += write(tmp_path / "x", {"a": node_report("a", created=T1, fail=True)})
    with pytest.raises(MergeError) as exc:
        merge(paths)
    assert str(exc.value) == (
        f"{paths[0]} and {paths[1]} both claim node a's run of {T1} but their results differ: two machines "
        "share the name a, or a report was edited; give each machine its own hostname"
    )


def test_run_without_created_beside_another_refused(tmp_path):
    (tmp_path / "x").mkdir()
    paths = write(tmp_path, {"a": node_report("a", created=T1)})
    paths += write(tmp_path / "x", {"a": node_report("a", p2p=21.0)})
    with pytest.raises(MergeError, match=r"x/a.json has no 'created' time to tell which is newer"):
        merge(paths)


def test_one_host_name_two_machines_refused(tmp_path, capsys):
    """Two live reports from host gpu07 with different GPUs: two machines cloned with one hostname (or the
    node's GPUs changed between runs); neither is silently dropped nor counted as a peer of the other."""
    (tmp_path / "x").mkdir()
    a = node_report("gpu07", created=T1)
    b = node_report("gpu07", created=T2)
    for doc in (a, b):
        doc["host"] = "gpu07"
        doc["rigs"][0]["source"] = "live"
    b["rigs"][0]["gpus"] = [{**GPU, "device": "0x2330"}, {**GPU, "bdf": "0000:04:00.0", "device": "0x2330"}]
    paths = write(tmp_path, {"gpu07": a}) + write(tmp_path / "x", {"gpu07": b})
    rc, out, err = merge_cli(tmp_path, paths, capsys)
    assert rc == 2 and out == "" and not (tmp_path / "out").exists()
    assert err.strip().splitlines() == [
        f"rigcheck: {paths[0]} and {paths[1]} both report node gpu07 but with different GPUs "
        "(gpu07: 0000:03:00.0 0x10de:0x2bb1, gpu07: 0000:04:00.0 0x10de:0x2bb1 vs "
        "gpu07: 0000:03:00.0 0x10de:0x2330, gpu07: 0000:04:00.0 0x10de:0x2330): two machines share the "
        "name gpu07, or its GPUs changed between runs; give each machine its own hostname, or merge only "
        "the current report"
    ]


def test_gate_and_multinode_report_of_one_node_refused(tmp_path):
    """NODE.json (the gate) and NODE.multinode.json (multinode collect) are two kinds of report of one
    node; merged together the node would be two rows."""
    gate = node_report("n1", created=T1)
    gate["rigs"][0]["source"] = "live"
    gate["host"] = "n1"
    multi = {"format": 1, "tool": "pytest-rigcheck multinode", "created": T1, "host": "n1", "rigs": []}
    multi["results"] = [{"nodeid": "multinode::test_multinode_busbw[all]", "status": "pass"}]
    paths = write(tmp_path, {"n1": gate, "n1.multinode": multi})
    with pytest.raises(MergeError, match="merge each kind on its own"):
        merge(paths)


def test_snapshot_nodes_on_one_host_are_distinct(tmp_path):
    """CI and the Slurm/Ansible tests replay different snapshots on one host: one host, different nodes."""
    paths = write(tmp_path, {f"n{i}": node_report(f"n{i}", created=T1) for i in range(3)})
    assert [n["name"] for n in merge(paths)["nodes"]] == ["n0", "n1", "n2"]


@pytest.fixture(scope="module")
def real_report(tmp_path_factory) -> Path:
    """A real --rig-report of a shipped snapshot, written by pytest as a node writes it."""
    return gate_report("rtx3090x2-gen4", tmp_path_factory.mktemp("real") / "rtx3090x2-gen4.json")


@pytest.mark.fleet
def test_real_report_copied_refused_rerun_newest_counts(tmp_path, capsys, real_report):
    """A real report and its copy: refused. The copy with a later 'created' (the node ran again): the
    newest counts, the first is named as left out."""
    doc = json.loads(real_report.read_text())
    assert doc["created"] and doc["host"]
    (tmp_path / "copy").mkdir()
    copy = tmp_path / "copy" / real_report.name
    copy.write_text(real_report.read_text())
    rc, _, err = merge_cli(tmp_path, [real_report, copy], capsys)
    assert rc == 2
    assert f"{real_report} and {copy} are the same report of node rtx3090x2-gen4 (created " in err
    later = json.loads(real_report.read_text())
    later["created"] = "2999-01-01T00:00:00+0000"
    copy.write_text(json.dumps(later))
    rc, out, err = merge_cli(tmp_path, [real_report, copy], capsys)
    assert rc == 0, out + err
    assert f"NOTE rtx3090x2-gen4: counted its newest run {copy} (created 2999-01-01T00:00:00+0000); " in out
    assert "1/1 nodes pass" in out


def test_live_run_and_replay_of_one_node_refused(tmp_path):
    """`rigcheck capture` names a snapshot by the hostname, so a replay elsewhere reports node gpu07 too;
    its 'created' is when it was replayed, so it cannot be ordered against gpu07's live run."""
    live = node_report("gpu07", created=T1)
    live["rigs"][0]["source"] = "live"
    live["host"] = "gpu07"
    replay = node_report("gpu07", created=T2)  # replayed on a laptop: host "localhost", rig gpu07
    paths = write(tmp_path, {"gpu07": live, "gpu07-replay": replay})
    with pytest.raises(MergeError) as exc:
        merge(paths)
    assert str(exc.value).startswith(
        f"{paths[0]} is a live run of node gpu07 and {paths[1]} a replay of a snapshot of it"
    )


def test_same_file_through_a_link_and_missing_twice_refused(tmp_path):
    paths = write(tmp_path, {"a": node_report("a", created=T1)})
    (tmp_path / "link.json").symlink_to(paths[0])
    with pytest.raises(MergeError, match="link.json are the same file"):
        merge([paths[0], tmp_path / "link.json"])
    with pytest.raises(MergeError, match="gone.json are the same file"):
        merge([tmp_path / "gone.json", tmp_path / "x" / ".." / "gone.json"])


def run_merge_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``rigcheck merge`` in its own process with a time limit: a report that blocks ``open()`` (a FIFO
    with no writer) fails the test with ``TimeoutExpired`` instead of hanging the suite."""
    cmd = [sys.executable, "-m", "pytest_rigcheck.cli", "merge", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def test_fifo_device_and_directory_refused_without_opening(tmp_path):
    """A fresh user's report: ``mkfifo ff.json; rigcheck merge ff.json --out f10`` blocked forever in
    ``open()``. Each is now refused by ``lstat`` before any open (``Source.read_bytes``): one line saying
    what the path is, exit 2, the other nodes still merged; a symlink named on the command line is
    followed but must end at a regular file."""
    write(tmp_path, {"good": node_report("good")})
    os.mkfifo(tmp_path / "ff.json")
    os.mkfifo(tmp_path / "ff2.json")
    (tmp_path / "to-fifo.json").symlink_to("ff2.json")
    (tmp_path / "dir.json").mkdir()
    (tmp_path / "link.json").symlink_to(tmp_path / "good.json")  # followed: the user named it
    args = ["good.json", "ff.json", "to-fifo.json", "dir.json", "--out", "f10"]
    if stat.S_ISCHR(os.stat("/dev/null").st_mode):
        (tmp_path / "null.json").symlink_to("/dev/null")
        args.insert(0, "null.json")
    done = run_merge_cli(args, tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    out = done.stdout
    assert "NODE ff: UNREADABLE: a FIFO (named pipe), not a regular file: refused without opening it" in out
    assert "NODE to-fifo: UNREADABLE: a FIFO (named pipe)" in out
    assert "NODE dir: UNREADABLE: a directory, not a regular file" in out
    assert "null.json" not in args or "NODE null: UNREADABLE: a character device" in out
    assert "Traceback" not in done.stderr
    doc = json.loads((tmp_path / "f10" / "fleet.json").read_text())
    jsonschema.validate(doc, schema())
    assert {n["name"]: n["status"] for n in doc["nodes"]}["good"] == "pass"
    # a symlink to a regular report is followed; the FIFO given twice is one file given twice
    assert run_merge_cli(["link.json", "--out", "f11"], tmp_path).returncode == 0
    twice = run_merge_cli(["ff2.json", "to-fifo.json", "--out", "f12"], tmp_path)
    assert twice.returncode == 2 and "ff2.json and to-fifo.json are the same file" in twice.stderr
    assert not (tmp_path / "f12").exists()


def test_report_larger_than_the_cap_refused_in_one_line(tmp_path, monkeypatch, capsys):
    paths = write(tmp_path, {"big": node_report("big")})
    monkeypatch.setattr("pytest_rigcheck.report.REPORT_LIMIT", 100)
    assert main(["merge", str(paths[0]), "--out", str(tmp_path / "out")]) == 2
    assert "NODE big: UNREADABLE: larger than 100 bytes" in capsys.readouterr().out


def test_unknown_status_is_corrupt_not_a_fail(tmp_path, capsys):
    """A fresh user's report: a result of status "maybe" was counted as a FAIL whose failure text was the
    PASS message. A status outside report-2.schema.json's five makes the report corrupt: UNREADABLE, one
    line naming the report file, the result and the field; none of its results counted."""
    doc = node_report("odd")
    doc["results"][1]["status"] = "maybe"
    paths = write(tmp_path, {"odd": doc, "a": node_report("a")})
    assert main(["merge", *map(str, paths), "--out", str(tmp_path / "out")]) == 2
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("NODE odd"))
    assert line == (
        "NODE odd: UNREADABLE: corrupt report: result #2 "
        '(suites/test_acs.py::test_acs_redirect_off[0000:02:00.0]): status "maybe" is not one of pass, '
        f"warn, fail, unreadable, n/a (pytest_rigcheck/schemas/report-2.schema.json) ({paths[0]})"
    )
    assert "ACS off" not in out and "FAIL" not in out
    fleet = json.loads((tmp_path / "out" / "fleet.json").read_text())
    jsonschema.validate(fleet, schema())
    odd = next(n for n in fleet["nodes"] if n["name"] == "odd")
    assert odd["status"] == "unreadable" and odd["cells"] == {} and odd["counts"] == {}
    suite = ET.parse(tmp_path / "out" / "fleet.xml").getroot().find("testsuite[@name='odd']")
    assert suite.get("errors") == "1" and suite.get("failures") == "0"


def _result(doc: dict, **change) -> dict:
    doc["results"][0].update(change)
    return doc


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        (_result(node_report("x"), status=None), "result #1 (suites/test_p2p_bandwidth.py::"),
        (_result(node_report("x"), status="PASS"), 'status "PASS" is not one of pass, warn'),
        ({**node_report("x"), "results": ["pass"]}, "result #1 is a string, not an object"),
        (
            {**node_report("x"), "results": [{"nodeid": "t.py::test_a"}]},
            "result #1 (t.py::test_a): no 'status' (one of pass, warn, fail, unreadable, n/a)",
        ),
        ({**node_report("x"), "results": [{"status": "pass"}]}, "result #1: no 'id' or 'nodeid'"),
        (
            _result(node_report("x", fmt=2), duration_s="fast"),
            "duration_s \"fast\": 'fast' is not of type 'number'",
        ),
        (_result(node_report("x", fmt=2), fix="reboot"), "fix \"reboot\": 'reboot' is not of type 'array'"),
        (
            _result(node_report("x", fmt=2), target={"gpu_index": "0"}),
            "target.gpu_index \"0\": '0' is not of type 'integer'",
        ),
        (node_report("x", fmt=2, exit_status="0"), "exit_status: '0' is not of type 'integer'"),
        (node_report("x", fmt=2, counts={"maybe": 1}), "counts: 'maybe' is not one of ['pass', 'warn'"),
        (
            node_report("x", fmt=2, stopped_by="SIGKILL"),
            "stopped_by: 'SIGKILL' is not one of ['SIGTERM', 'SIGINT']",
        ),
    ],
    ids=[
        "status-null",
        "status-upper",
        "result-string",
        "status-missing",
        "no-id",
        "duration-string",
        "fix-string",
        "gpu-index-string",
        "exit-status-string",
        "counts-unknown-status",
        "stopped-by-unknown",
    ],
)
def test_report_contradicting_the_schema_is_corrupt(tmp_path, doc, says):
    fleet = merge(write(tmp_path, {"x": doc}))
    node = fleet["nodes"][0]
    assert node["status"] == "unreadable" and fleet["exit_status"] == 2
    assert node["reason"].startswith("corrupt report: ") and says in node["reason"]
    assert node["reason"].endswith("(pytest_rigcheck/schemas/report-2.schema.json)")


def test_schema_checks_agree_with_jsonschema(tmp_path):
    """The format-2 documents merge accepts or refuses, checked against the shipped schema by jsonschema
    too (with its ``required`` lists, which merge leaves to report.py, dropped)."""
    from pytest_rigcheck.report import contradiction, schema_path

    def lenient(node):
        if isinstance(node, dict):
            return {k: lenient(v) for k, v in node.items() if k != "required"}
        return [lenient(v) for v in node] if isinstance(node, list) else node

    report_schema = lenient(json.loads(schema_path().read_text()))
    good = node_report("x", fmt=2, counts={"pass": 2}, stopped_by="SIGINT")
    bad = [
        _result(node_report("x", fmt=2), measured=1, duration_s=-1),
        node_report("x", fmt=2, rigs=[{"name": "x", "gpus": [{"bdf": "3:00.0"}]}]),
        node_report("x", fmt=2, rigs=[{"name": "x", "p2p": {"unidir_gbps": [["fast"]]}}]),
    ]
    assert contradiction(good) is None
    jsonschema.validate(good, report_schema)
    for doc in bad:
        assert contradiction(doc) is not None
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(doc, report_schema)


# -- a node passes only on evidence: contradictions and empty reports are UNREADABLE (report.validate_report)


def _merged_node(tmp_path, doc, raw: str | None = None) -> tuple[dict, list[str], int]:
    """Merge ``doc`` (or the ``raw`` text) as node x beside a passing node a: x's record, the printed
    lines, the exit status."""
    paths = write(tmp_path, {"x": doc, "a": node_report("a")})
    if raw is not None:
        paths[0].write_text(raw)
    rc = main(["merge", *map(str, paths), "--out", str(tmp_path / "out")])
    fleet = json.loads((tmp_path / "out" / "fleet.json").read_text())
    jsonschema.validate(fleet, schema())
    return next(n for n in fleet["nodes"] if n["name"] in ("x", "x.json")), fleet, rc


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (
            {"results": [], "counts": {"pass": 41}},
            'corrupt report: counts {"pass": 41} disagree with its 0 results (none)',
        ),
        ({"counts": {"pass": 1}}, 'counts {"pass": 1} disagree with its 2 results ({"pass": 2})'),
        ({"results": []}, "nothing was checked: the report has no results; no evidence is not a pass"),
        (
            {"results": [{"nodeid": "t.py::test_a[x]", "status": "n/a", "outcome": "skipped"}]},
            "nothing was checked: all 1 results are n/a (none applied)",
        ),
    ],
    ids=["empty-results-counts-41", "counts-disagree", "no-results", "only-n/a"],
)
def test_node_without_evidence_is_unreadable(tmp_path, capsys, change, says):
    """A fresh user's find: ``results = []`` while ``counts`` said 41 pass was a passing node ("1/2 nodes
    pass"); a node of only n/a results passed on nothing. Both UNREADABLE, one line, exit 2."""
    node, fleet, rc = _merged_node(tmp_path, {**node_report("x"), **change})
    assert rc == 2 and node["status"] == "unreadable" and says in node["reason"], node["reason"]
    out = capsys.readouterr().out.splitlines()
    line = next(x for x in out if x.startswith("NODE x"))
    assert line.startswith("NODE x: UNREADABLE: ") and says in line
    assert fleet["verdict"] != "pass" and "1/2 nodes pass" in out[-2] and "PASS" not in out[-2], out


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"outcome": "failed"}, 'status "pass" contradicts its outcome "failed"'),
        ({"status": "warn", "outcome": "error"}, 'status "warn" contradicts its outcome "error"'),
        ({"status": "fail", "outcome": "skipped"}, 'status "fail" contradicts its outcome "skipped"'),
        (
            {"message": "UNREADABLE, not a pass: nvml.json unreadable"},
            'status "pass" but its message says "UNREADABLE, not a pass',
        ),
    ],
    ids=["pass-failed", "warn-error", "fail-skipped", "pass-unreadable-message"],
)
def test_result_contradicting_itself_is_corrupt(tmp_path, change, says):
    """A fresh user's find: a result ``status: "pass"`` with ``outcome: "failed"`` (or a message starting
    "UNREADABLE, not a pass") was counted as a pass. report.py's ``_status`` never writes that pair: the
    report is corrupt, the node UNREADABLE."""
    doc = node_report("x")
    doc["results"][0].update(change)
    node, _, rc = _merged_node(tmp_path, doc)
    assert rc == 2 and node["status"] == "unreadable"
    assert node["reason"].startswith("corrupt report: result #1 (suites/") and says in node["reason"]


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_nan_anywhere_is_corrupt(tmp_path, token):
    """``measured: NaN`` was accepted: Python's json reads NaN and Infinity, JSON does not (RFC 8259,
    section 6). Anywhere in a report they make it corrupt: UNREADABLE, one line."""
    raw = json.dumps(node_report("x")).replace('"pass_line": 20.0', f'"pass_line": {token}')
    assert token in raw
    node, _, rc = _merged_node(tmp_path, node_report("x"), raw)
    assert rc == 2 and node["status"] == "unreadable"
    assert node["reason"].endswith(f"{token} is not a JSON number (RFC 8259 section 6)"), node["reason"]


def test_consistent_counts_and_outcomes_still_pass(tmp_path):
    """The checks refuse only contradictions: counts and outcomes that agree with the statuses pass."""
    doc = node_report("x", counts={"pass": 2, "fail": 0})
    for r in doc["results"]:
        r["outcome"] = "passed"
    node, fleet, rc = _merged_node(tmp_path, doc)
    assert rc == 0 and node["status"] == "pass" and fleet["verdict"] == "pass"
