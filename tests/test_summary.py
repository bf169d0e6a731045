"""The terminal summary (issue 10 #1), report format 2 with its schema (#2) and the HTML page (#3).

One end-to-end run per module (a subprocess, like a user's ``pytest``) is shared by the tests that read
its output, its report and its page; the grouping of root causes is tested as the pure function it is.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest

from pytest_rigcheck.causes import assign_causes, grouped, route
from pytest_rigcheck.report import load_report, schema_path
from pytest_rigcheck.summary import fix_block

from .conftest import SNAPSHOTS

ACS_ON = SNAPSHOTS / "rtxpro6000x4-acs-switch"
NVLINK = SNAPSHOTS / "h200x2-nvlink"
PORTS = ["0000:02:00.0", "0000:02:01.0", "0000:02:02.0", "0000:02:03.0"]
SCREEN = 40  # lines in one terminal screen


def _pytest(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RIGCHECK_", "PYTEST_"))}
    env["COLUMNS"] = "120"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def acs_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """The shipped ACS-on switch rig, default output, with --rig-report and --rig-html (one run)."""
    where = tmp_path_factory.mktemp("acs")
    run = _pytest(
        where, f"--rig-snapshot={ACS_ON}", "--rig-brief", "--rig-report=r.json", "--rig-html=r.html"
    )
    return run, where


@pytest.fixture(scope="module")
def two_rigs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two rigs on one page and in one report: the ACS-on switch rig and the NVLink H200 pair."""
    where = tmp_path_factory.mktemp("two")
    run = _pytest(
        where,
        "-q",
        f"--rig-snapshot={ACS_ON}",
        f"--rig-snapshot={NVLINK}",
        "--rig-report=r.json",
        "--rig-html=r.html",
    )
    assert run.returncode == 1, run.stdout[-3000:]
    return where


class TestTerminal:
    def test_budget_and_last_screen(self, acs_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
        """issue 10 #1: the shipped ACS-on switch rig's --rig-brief output fits in 120 lines, and its last
        screen names the four ports and their four setpci lines, once each."""
        run, _ = acs_run
        lines = run.stdout.splitlines()
        assert run.returncode == 1
        assert len(lines) <= 120, "\n".join(lines)
        last = "\n".join(lines[-SCREEN:])
        for port in PORTS:
            assert f"FAIL {port} switch downstream port" in last, last
            assert last.count(f"sudo setpci -s {port} ECAP_ACS+0x6.w=0000") == 1, last
        assert "4 root causes first" in last and "42 failing checks" in last
        assert "42 failed" in lines[-1]

    def test_no_source_echo_and_dependents_under_cause(
        self, acs_run: tuple[subprocess.CompletedProcess[str], Path]
    ) -> None:
        """The Python source, ``assert False`` and per-failure sections are gone by default; the 38 slow
        P2P/NCCL results sit under their ports, and the tree, matrix and sweep are shown."""
        out = acs_run[0].stdout
        assert "assert False" not in out and "def test_" not in out and "AssertionError" not in out
        assert "short test summary info" not in out and "= FAILURES =" not in out
        follow = [
            int(line.split("-> ")[1].split()[0]) for line in out.splitlines() if "follow from it" in line
        ]
        assert sum(follow) == 38, out
        assert "0000:02:00.0 switch downstream port  Gen4 x16  ACS on" in out
        assert "   D\\D      0      1      2      3" in out  # p2pBandwidthLatencyTest's matrix header
        assert "algbw   busbw #wrong" in out  # nccl-tests' columns
        assert "driver 570.133.07, CUDA 12.8" in out

    def test_verbose_brings_detail_back(self, tmp_path: Path) -> None:
        """``-v`` (or any --tb but auto) restores pytest's own per-failure text."""
        run = _pytest(tmp_path, f"--rig-snapshot={ACS_ON}", "-k", "acs_redirect", "--tb=long")
        assert "= FAILURES =" in run.stdout and "assert verdict.ok" in run.stdout
        assert "short test summary info" in run.stdout


class TestReportFormat2:
    def test_validates_against_shipped_schema(self, acs_run: Any, two_rigs: Path) -> None:
        """issue 10 #2: reports validate against pytest_rigcheck/schemas/report-2.schema.json."""
        jsonschema = pytest.importorskip("jsonschema")
        schema = json.loads(schema_path().read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        for path in (acs_run[1] / "r.json", two_rigs / "r.json"):
            doc = json.loads(path.read_text())
            errors = list(jsonschema.Draft202012Validator(schema).iter_errors(doc))
            assert not errors, [f"{e.json_path}: {e.message}" for e in errors[:5]]

    def test_causes_targets_and_figures(self, acs_run: Any) -> None:
        doc = json.loads((acs_run[1] / "r.json").read_text())
        assert doc["format"] == 2
        by_id = {r["id"]: r for r in doc["results"]}
        lat = by_id["test_p2p_latency.py::test_p2p_latency[0000:06:00.0->0000:04:00.0]"]
        assert (
            lat["cause"] == "test_acs.py::test_acs_redirect_off[0000:02:03.0]"
        )  # first ACS port on its route
        assert lat["target"]["gpus"] == [3, 1]
        port = by_id["test_acs.py::test_acs_redirect_off[0000:02:01.0]"]
        assert port["cause"] is None and port["target"]["path"] == [
            "0000:00:01.1",
            "0000:01:00.0",
            "0000:02:01.0",
        ]
        assert sum(1 for r in doc["results"] if r["cause"]) == 38
        rig = doc["rigs"][0]
        assert rig["identity"]["cuda"] == "12.8" and rig["topology"]["nodes"]["0000:02:00.0"]["acs"] == "on"
        assert rig["p2p"]["unidir_gbps"][0][1] == 24.2 and rig["nccl"][0]["sweep"][-1]["bytes"] == 536870912
        assert rig["served_model"] is None

    def test_format_1_still_read(self, tmp_path: Path) -> None:
        """A format-1 report (before issue 10) is read with the format-2 keys it lacks filled in."""
        old = {
            "format": 1,
            "tool": "pytest-rigcheck 0.1.0",
            "rigs": [{"name": "r"}],
            "results": [{"nodeid": "test_acs.py::test_acs_redirect_off[0000:02:00.0]", "status": "fail"}],
        }
        (tmp_path / "old.json").write_text(json.dumps(old))
        doc = load_report(tmp_path / "old.json")
        r = doc["results"][0]
        assert (r["id"], r["check"], r["cause"]) == (r["nodeid"], "test_acs_redirect_off", None)
        assert doc["rigs"][0]["topology"] is None
        (tmp_path / "bad.json").write_text('{"format": 9}')
        with pytest.raises(ValueError, match="not a rigcheck report"):
            load_report(tmp_path / "bad.json")


# -- the root-cause rules, pure ----------------------------------------------------------------------

TOPO = {
    "paths": {
        "g0": ["rp", "up", "d0", "g0"],
        "g1": ["rp", "up", "d1", "g1"],
        "g2": ["rp2", "g2"],
    },
    "groups": {"all": ["g0", "g1", "g2"]},
}


def _r(nodeid: str, status: str, **kw: Any) -> dict[str, Any]:
    return {"nodeid": nodeid, "status": status, "rig": "R", **kw}


class TestCauses:
    def test_route(self) -> None:
        assert route(TOPO["paths"], "g0", "g1") == ["d0", "g0", "d1", "g1", "up"]
        assert route(TOPO["paths"], "g0", "g2") == ["rp", "up", "d0", "g0", "rp2", "g2"]

    def test_acs_link_iommu_and_shared_unreadable(self) -> None:
        results = [
            _r("t.py::test_acs_redirect_off[d1]", "fail"),
            _r("t.py::test_link_trained[g2]", "fail"),
            _r("t.py::test_p2p_unidirectional[g0->g1]", "fail"),  # through d1 (ACS on)
            _r("t.py::test_p2p_latency[g0->g2]", "fail"),  # g2's link is down-trained
            _r("t.py::test_host_to_device[g2]", "warn"),  # the same link
            _r("t.py::test_host_to_device[g0]", "fail"),  # nothing explains it: a root of its own
            _r("t.py::test_nccl_busbw[all]", "fail"),
            _r("t.py::test_p2p_bidirectional[g0->g1]", "pass"),  # passing: never a dependent
            _r("t.py::test_power_limit[g0]", "unreadable", fix=["install nvidia-ml-py"]),
            _r("t.py::test_clocks[g0]", "unreadable", fix=["install nvidia-ml-py"]),
            _r("t.py::test_clocks[g1]", "unreadable", fix=["install nvidia-ml-py"]),
        ]
        assign_causes(results, {"R": TOPO})
        cause = {r["nodeid"].split("::")[1]: r.get("cause") for r in results}
        assert cause["test_p2p_unidirectional[g0->g1]"] == "t.py::test_acs_redirect_off[d1]"
        assert cause["test_p2p_latency[g0->g2]"] == "t.py::test_link_trained[g2]"
        assert cause["test_host_to_device[g2]"] == "t.py::test_link_trained[g2]"
        assert cause["test_host_to_device[g0]"] is None
        assert cause["test_nccl_busbw[all]"] == "t.py::test_acs_redirect_off[d1]"
        assert cause["test_p2p_bidirectional[g0->g1]"] is None
        assert cause["test_clocks[g0]"] == cause["test_clocks[g1]"] == "t.py::test_power_limit[g0]"
        roots = [(r["nodeid"], len(d)) for r, d in grouped(results)]
        assert roots == [  # causes with results under them first, then the rest
            ("t.py::test_acs_redirect_off[d1]", 2),
            ("t.py::test_link_trained[g2]", 2),
            ("t.py::test_power_limit[g0]", 2),
            ("t.py::test_host_to_device[g0]", 0),
        ]

    def test_other_rig_is_not_a_cause(self) -> None:
        results = [
            _r("t.py::test_acs_redirect_off[d1]", "fail"),
            _r("t.py::test_p2p_latency[g0->g1]", "fail"),
        ]
        results[1]["rig"] = "other"
        assign_causes(results, {"R": TOPO, "other": TOPO})
        assert "cause" not in results[1]

    def test_fix_block_one_line_per_bridge(self) -> None:
        acs = "sudo setpci -s {0} ECAP_ACS+0x6.w=0000   (now; lost at reboot)"
        param = 'kernel parameter "pci=disable_acs_redir={0}" in GRUB_CMDLINE_LINUX (every boot)'
        roots = [acs.format("a"), param.format("a"), acs.format("b"), param.format("b")]
        deps = [
            "sudo setpci -s a ECAP_ACS+0x6.w=0000   (ACS on a; lost at reboot: add pci=disable_acs_redir=a)"
        ]
        assert fix_block(roots, deps) == [
            "sudo setpci -s a ECAP_ACS+0x6.w=0000",
            "sudo setpci -s b ECAP_ACS+0x6.w=0000",
            "# setpci: now; lost at reboot",
            '# kernel parameter "pci=disable_acs_redir=a;b" in GRUB_CMDLINE_LINUX (every boot)',
        ]


# -- the HTML page --------------------------------------------------------------------------------


def _png_ink(path: Path) -> tuple[int, int, int]:
    """(width, height, non-white pixels) of an 8-bit RGB/RGBA PNG, decoded with zlib (no dependency)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    assert header is not None
    width, height, depth, colour = header[:4]
    assert depth == 8 and colour in (2, 6), header
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    prev = bytearray(stride)
    ink = 0
    i = 0
    for _ in range(height):
        f = raw[i]
        line = bytearray(raw[i + 1 : i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if f == 1:
                line[x] = (line[x] + a) & 0xFF
            elif f == 2:
                line[x] = (line[x] + b) & 0xFF
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 0xFF
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        ink += sum(1 for x in range(0, stride, bpp) if min(line[x : x + 3]) < 235)
        prev = line
    return width, height, ink


def _chromium() -> str | None:
    return next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser")) if p), None)


class TestHtml:
    def test_self_contained_with_every_part(self, two_rigs: Path) -> None:
        page = (two_rigs / "r.html").read_text()
        for needle in ("http://", "https://", "<script", "<link", "@import", "url("):
            if needle == "http://":
                assert "http://www.w3.org/2000/svg" in page  # the SVG namespace, not a request
                continue
            assert needle not in page, needle
        assert (
            page.count('aria-label="PCIe topology"') == 2
            and page.count('aria-label="P2P bandwidth heatmap"') == 2
        )
        assert "ACS on: P2P redirected" in page and "NV18" in page  # a failing bridge; NVLink peers
        assert "Root causes first" in page and "sudo setpci -s 0000:02:03.0 ECAP_ACS+0x6.w=0000" in page
        assert (
            "Every check" in page
            and "test_p2p_latency[rtxpro6000x4-acs-switch:0000:06:00.0-&gt;0000:04:00.0]" in page
        )

    def test_screenshot_in_headless_chromium(self, two_rigs: Path, tmp_path: Path) -> None:
        """issue 10 #3: the page drawn by a real browser (Debian's chromium; .ci/run installs it) has
        content: the topology and heatmap put colour on a good share of the first screen."""
        chromium = _chromium()
        if chromium is None:
            if os.environ.get("CI"):
                pytest.fail("chromium is missing in CI: .ci/run installs it (apt-get install chromium)")
            pytest.skip("chromium not installed here (apt-get install chromium); .ci/run installs it in CI")
        shot = tmp_path / "page.png"
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                f"--screenshot={shot}",
                "--window-size=1400,2000",
                (two_rigs / "r.html").as_uri(),
            ],
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert shot.is_file(), "chromium wrote no screenshot"
        width, height, ink = _png_ink(shot)
        assert (width, height) == (1400, 2000)
        assert ink > 0.05 * width * height, f"only {ink} non-white pixels: the page looks blank"


def test_html_from_env_and_ini(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """--rig-html has its RIGCHECK_HTML variable and rig_html ini key (taken from the ini's folder)."""
    snap = f"--rig-snapshot={SNAPSHOTS / 'rtxpro6000x4-switch'}"
    monkeypatch.setenv("RIGCHECK_HTML", str(pytester.path / "env.html"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", snap, "-k", "acs")
    assert result.ret == 0 and (pytester.path / "env.html").read_text().startswith("<!DOCTYPE html>")
    result.stdout.fnmatch_lines(["rigcheck: HTML page written to *env.html"])
    monkeypatch.delenv("RIGCHECK_HTML")
    (pytester.path / "sub").mkdir()
    pytester.makeini("[pytest]\nrig_html = sub/ini.html\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", snap, "-k", "acs")
    assert result.ret == 0 and (pytester.path / "sub" / "ini.html").is_file()


def test_matrix_cells_never_run_together() -> None:
    """Fresh-user finding: a 1500 GB/s figure beside the '-' diagonal printed as '-1500.00' (it looked
    negative). Every figure keeps a space before it; a figure that is not finite prints '?'."""
    from pytest_rigcheck.summary import matrix_lines

    lines = [
        t
        for t, _ in matrix_lines({"gpus": ["a", "b"], "unidir_gbps": [[None, 1500.0], [float("inf"), None]]})
    ]
    assert lines[2] == "     0       - 1500.00", lines
    assert lines[3] == "     1       ?      -", lines


def test_corrupt_sweep_never_crashes_the_summary() -> None:
    """Fresh-user finding: a sweep row with wrong = -3 (held as a Corrupt reading) crashed the terminal summary
    (TypeError in facts.nccl_sweeps) and the --rig-report was never written. Corrupt values show as None."""
    from pytest_rigcheck.facts import nccl_sweeps
    from pytest_rigcheck.p2p.figures import Corrupt

    groups = {
        "a+b": {"gpus": ["a", "b"], "sweep": Corrupt("sweep: not a list"), "busbw_gbps": Corrupt("nan")},
        "c+d": {"sweep": [{"bytes": 8, "wrong": Corrupt("wrong: -3"), "busbw_gbps": float("inf")}]},
        "e+f": "garbage",
    }
    out = nccl_sweeps({"nccl": {"groups": groups}})
    assert out is not None and [g["group"] for g in out] == ["a+b", "c+d"]
    assert out[0]["sweep"] == [] and out[0]["busbw_gbps"] is None
    assert out[1]["sweep"][0]["wrong"] is None and out[1]["sweep"][0]["busbw_gbps"] is None


def test_idle_link_speed_is_not_called_down(pytester: pytest.Pytester) -> None:
    """FRESH5: the healthy rtx3090x2-gen4 (every check passing) printed "Gen1 x16 (DOWN: ...)" in the topology
    summary for the idle power-saving downshift test_link_trained passes; full width at Gen1/2 is idle speed."""
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--rig-snapshot=rtx3090x2-gen4", "-k", "link"
    )
    out = result.stdout.str()
    assert result.ret == 0 and "Gen1 x16 (idle speed; both ends can Gen4 x16)" in out and "DOWN" not in out, (
        out
    )
