"""--rig-report: one JSON document with every check's outcome, verdict, measured values and fix lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_rigcheck.report import REPORT_OPTION

from .conftest import SNAPSHOTS

ACS_ON = SNAPSHOTS / "rtxpro6000x4-acs-switch"


def _report(pytester: pytest.Pytester, *args: str) -> tuple[dict[str, Any], pytest.RunResult]:
    (pytester.path / "out").mkdir(exist_ok=True)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--rig-snapshot={ACS_ON}", *args)
    return json.loads((pytester.path / "out" / "rig.json").read_text()), result


def _by_id(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["nodeid"].rsplit("::", 1)[1]: r for r in doc["results"]}


class TestReport:
    def test_outcomes_verdicts_and_fixes(self, pytester: pytest.Pytester) -> None:
        """Failures carry the verdict text with the fix line; passes their summary; skips their reason."""
        doc, result = _report(pytester, f"{REPORT_OPTION}=out/rig.json", "-k", "acs or bifurcation")
        assert result.ret == 1 and doc["exit_status"] == 1
        rig = doc["rigs"][0]
        assert rig["name"] == "rtxpro6000x4-acs-switch" and rig["kind"] == "modelled"
        assert rig["source"] == str(ACS_ON) and len(rig["gpus"]) == 4 and rig["profile"]
        assert doc["format"] == 2 and doc["tool"].startswith("pytest-rigcheck ")
        r = _by_id(doc)
        bad = r["test_acs_redirect_off[0000:02:00.0]"]
        assert bad["outcome"] == "failed" and bad["status"] == "fail" and bad["verdict"] == "fail"
        assert bad["rig"] == "rtxpro6000x4-acs-switch"
        assert "ACS P2P Request Redirect" in bad["message"] and bad["message"] == bad["summary"]
        assert any("setpci -s 0000:02:00.0 ECAP_ACS+0x6.w=0000" in f for f in bad["fix"])  # a field
        assert bad["target"]["id"] == "0000:02:00.0" and bad["target"]["bdf"] == "0000:02:00.0"
        assert bad["target"]["path"] == ["0000:00:01.1", "0000:01:00.0", "0000:02:00.0"]  # format 2
        assert "rig_result" not in bad["properties"] and "rig_status" not in bad["properties"]
        assert bad["properties"]["acs_ctrl"] == "0x001d" and "ACS" in bad["summary"]
        good = r["test_acs_redirect_off[0000:01:00.0]"]
        assert good["outcome"] == "passed" and good["status"] == "pass"
        assert "no ACS capability" in good["summary"] and good["message"] == good["summary"]
        assert doc["counts"] == {o: sum(1 for x in doc["results"] if x["status"] == o) for o in doc["counts"]}
        result.stdout.fnmatch_lines(["rigcheck: report written to *rig.json"])

    def test_skip_reason(self, pytester: pytest.Pytester) -> None:
        doc, _ = _report(pytester, f"{REPORT_OPTION}=out/rig.json", "-k", "model_fit")
        assert {r["outcome"] for r in doc["results"]} == {"skipped"}
        assert {r["status"] for r in doc["results"]} == {"n/a"}
        assert all("no [vllm] model" in r["message"] for r in doc["results"])

    def test_with_xdist_the_controller_writes_all(self, pytester: pytest.Pytester) -> None:
        """Under -n 2 the report is whole: the same checks as a serial run."""
        serial, _ = _report(pytester, f"{REPORT_OPTION}=out/rig.json", "-k", "acs or iommu or link")
        parallel, _ = _report(
            pytester, f"{REPORT_OPTION}=out/rig.json", "-k", "acs or iommu or link", "-n", "2"
        )
        assert {k: v["outcome"] for k, v in _by_id(parallel).items()} == {
            k: v["outcome"] for k, v in _by_id(serial).items()
        }

    def test_from_ini_and_env(self, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
        """The ini path is taken from the ini file's folder, also when pytest runs from a subfolder (gate D22)."""
        pytester.makeini("[pytest]\nrig_report = out/rig.json\n")
        doc, _ = _report(pytester, "-k", "iommu")
        assert doc["results"]
        (pytester.path / "out" / "rig.json").unlink()
        sub = pytester.mkdir("sub")
        monkeypatch.chdir(sub)
        result = pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", f"--rig-snapshot={ACS_ON}", "-k", "iommu"
        )
        assert result.ret == 0, result.stderr.str()
        assert json.loads((pytester.path / "out" / "rig.json").read_text())["results"]
        (pytester.path / "out" / "rig.json").unlink()
        monkeypatch.setenv("RIGCHECK_REPORT", str(pytester.path / "out" / "rig.json"))
        pytester.makeini("[pytest]\n")
        doc, _ = _report(pytester, "-k", "iommu")
        assert doc["results"]

    def test_not_written_without_rig(self, pytester: pytest.Pytester) -> None:
        pytester.makepyfile("def test_mine(): pass")
        pytester.runpytest("-p", "no:cacheprovider", f"{REPORT_OPTION}=out/rig.json")
        assert not Path(pytester.path / "out" / "rig.json").exists()


class TestReportPath:
    """gate D12: a report path that cannot be written stops the run before any check, in one line."""

    @pytest.mark.parametrize(
        ("path", "says"),
        [
            ("somedir", "this is a directory"),
            ("/proc/nope/r.json", "/proc/nope does not exist"),
            ("missing/r.json", "missing does not exist"),
        ],
    )
    def test_unwritable_is_usage_error(self, pytester: pytest.Pytester, path: str, says: str) -> None:
        pytester.mkdir("somedir")
        result = pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", f"--rig-snapshot={ACS_ON}", f"{REPORT_OPTION}={path}"
        )
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        err = [line for line in result.stderr.lines if line.strip()]
        assert len(err) == 1 and err[0].startswith(f"ERROR: {REPORT_OPTION}: invalid value "), err
        assert says in err[0]
        assert "passed" not in result.stdout.str() and "Traceback" not in result.stderr.str()
        left = [p.name for p in pytester.path.iterdir() if "tmp" in p.name or "probe" in p.name]
        assert left == []  # no .tmp, no probe file left
        assert not list((pytester.path / "somedir").iterdir())

    def test_read_only_folder(self, pytester: pytest.Pytester, tmp_path: Path) -> None:
        """A folder that cannot be written (tested by writing, since root passes os.access): usage error."""
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        probe = ro / "x"
        try:
            probe.write_text("")
        except OSError:
            pass
        else:
            probe.unlink()
            pytest.skip("this user (root) can write a 0555 folder")
        result = pytester.runpytest_subprocess(f"--rig-snapshot={ACS_ON}", f"{REPORT_OPTION}={ro}/r.json")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(["ERROR: --rig-report: invalid value*a folder you can write*"])


class TestStructured:
    def test_warn_in_report_and_terminal(self, pytester: pytest.Pytester) -> None:
        """A WARN verdict is a pass of the gate, listed under "rigcheck warnings" and as status warn."""
        pytester.makepyfile(
            test_w="""
            from pytest_rigcheck.verdict import warned, unreadable, Unjudgeable

            def test_warn(rig, rig_check):
                v = rig_check(warned("GPU0: 25.2 GB/s is inside the warning band", measured_value=25.2,
                                     expected_value=27.5, unit="GB/s", target={"bdf": "0000:03:00.0"}))
                assert v.ok

            def _deep():
                raise Unjudgeable(unreadable("nvml.json: power_limit_mw is 'x', not a number"))

            def test_unjudgeable(rig, rig_check):
                rig_check(_deep)

            def test_unjudgeable_escaping(rig):
                _deep()
            """
        )
        (pytester.path / "out").mkdir()
        result = pytester.runpytest_subprocess(
            "-p",
            "no:cacheprovider",
            f"--rig-snapshot={ACS_ON}",
            "test_w.py",
            "-k",
            "test_warn or unjudgeable",
            f"{REPORT_OPTION}=out/rig.json",
            "--junitxml=out/j.xml",
        )
        result.assert_outcomes(passed=1, failed=2)
        result.stdout.fnmatch_lines(
            ["*rigcheck warnings*", "WARN test_w.py::test_warn*: GPU0: 25.2 GB/s is inside the warning band"]
        )
        assert "Traceback" not in result.stdout.str() and "PytestWarning" not in result.stdout.str()
        r = _by_id(json.loads((pytester.path / "out" / "rig.json").read_text()))
        w = r["test_warn[rtxpro6000x4-acs-switch]"]
        assert (w["status"], w["measured"], w["expected"], w["unit"]) == ("warn", 25.2, 27.5, "GB/s")
        assert w["target"]["bdf"] == "0000:03:00.0" and w["target"]["gpu_index"] == 0
        for name in ("test_unjudgeable", "test_unjudgeable_escaping"):
            u = r[f"{name}[rtxpro6000x4-acs-switch]"]
            assert u["status"] == "unreadable" and "power_limit_mw" in u["message"], u
        xml = (pytester.path / "out" / "j.xml").read_text()
        assert (
            '<property name="rig_measured" value="25.2"' in xml
            and '<property name="rig_unit" value="GB/s"' in xml
        )

    @pytest.mark.parametrize("family", ["xunit1", "xunit2"])
    def test_junit_properties_without_warning(self, pytester: pytest.Pytester, family: str) -> None:
        """Measured/expected/unit land in JUnit under both families, with no warning per test (issue 10 #7)."""
        pytester.makeini(f"[pytest]\njunit_family = {family}\n")
        result = pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", f"--rig-snapshot={ACS_ON}", "-k", "acs", "--junitxml=j.xml"
        )
        out = result.stdout.str()
        assert "warnings summary" not in out and "PytestWarning" not in out, out
        xml = (pytester.path / "j.xml").read_text()
        assert '<property name="rig_status" value="fail"' in xml and '<property name="rig_result"' in xml

    def test_two_rigs(self, pytester: pytest.Pytester) -> None:
        """gate D27: with two rigs each result names its rig, each rig is an object, and suite properties
        carry the rig's name."""
        (pytester.path / "out").mkdir()
        good = SNAPSHOTS / "rtxpro6000x4-switch"
        result = pytester.runpytest_subprocess(
            "-p",
            "no:cacheprovider",
            f"--rig-snapshot={ACS_ON}",
            f"--rig-snapshot={good}",
            f"{REPORT_OPTION}=out/rig.json",
            "-k",
            "redirect or versions",
            "--junitxml=out/j.xml",
        )
        doc = json.loads((pytester.path / "out" / "rig.json").read_text())
        assert [r["name"] for r in doc["rigs"]] == ["rtxpro6000x4-acs-switch", "rtxpro6000x4-switch"]
        assert {r["rig"] for r in doc["results"]} == {"rtxpro6000x4-acs-switch", "rtxpro6000x4-switch"}
        import xml.etree.ElementTree as ET

        suite = ET.parse(pytester.path / "out" / "j.xml").getroot().find("testsuite")
        names = [p.get("name") for p in suite.findall("./properties/property")]
        assert "rtxpro6000x4-switch:nvidia_driver" in names, result.stdout.str()
        assert "rtxpro6000x4-acs-switch:nvidia_driver" in names and "nvidia_driver" not in names


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_sigterm_writes_report(pytester: pytest.Pytester, sig: str) -> None:
    """A CI timeout's SIGTERM: on_stop callbacks run, fixtures are torn down, the report is written with
    what was measured, exit status 2 (issue 8: "the report is still written")."""
    import signal
    import subprocess
    import sys
    import time

    pytester.makepyfile(
        test_slow="""
        import time
        from pathlib import Path
        from pytest_rigcheck.runtime import on_stop

        def test_a_first(rig):
            pass

        def test_slow(rig):
            on_stop(lambda: Path("stopped").write_text("yes"))
            Path("started").write_text("")
            time.sleep(60)
        """
    )
    (pytester.path / "out").mkdir()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            f"--rig-snapshot={ACS_ON}",
            "test_slow.py",
            "-k",
            "test_slow or a_first",
            f"{REPORT_OPTION}=out/rig.json",
        ],
        cwd=pytester.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not (pytester.path / "started").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(getattr(signal, sig))
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out
    doc = json.loads((pytester.path / "out" / "rig.json").read_text())
    assert doc["stopped_by"] == sig and doc["exit_status"] == 2
    assert [r["status"] for r in doc["results"]] == ["pass"]
    assert (pytester.path / "stopped").read_text() == "yes"


def test_on_stop_forget() -> None:
    """A callback that was forgotten (its work stopped normally) does not run; the others run newest first."""
    from pytest_rigcheck.runtime import on_stop, run_stop_callbacks

    ran: list[int] = []
    on_stop(lambda: ran.append(1))
    forget = on_stop(lambda: ran.append(2))
    on_stop(lambda: 1 / 0)  # an error does not stop the others
    on_stop(lambda: ran.append(3))
    forget()
    run_stop_callbacks()
    assert ran == [3, 1]
    run_stop_callbacks()
    assert ran == [3, 1]


def test_sigterm_before_the_session_starts_still_writes_the_report(pytester: pytest.Pytester) -> None:
    """Fresh-user finding: SIGTERM while the snapshots were still loading (pytest's session start) exited 2
    but wrote no --rig-report: pytest calls no sessionfinish then. The report is written, stopped_by set."""
    pytester.makeconftest(
        """
        import os, signal, time

        def pytest_sessionstart(session):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(2)
        """
    )
    (pytester.path / "out").mkdir()
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--rig-snapshot={ACS_ON}", f"{REPORT_OPTION}=out/rig.json"
    )
    assert result.ret == 2, result.stdout.str()
    doc = json.loads((pytester.path / "out" / "rig.json").read_text())
    assert doc["stopped_by"] == "SIGTERM" and doc["exit_status"] == 2 and doc["results"] == []
    assert "Traceback" not in result.stderr.str()


def test_load_report_refuses_a_fifo_without_opening_it(tmp_path: Path) -> None:
    """load_report (rigcheck diff, html.render) reads through the one rooted reader: a FIFO is refused by
    lstat, never opened (opening it would block until a writer comes). Guarded by an alarm, so a regression
    fails instead of hanging."""
    import os
    import signal

    from pytest_rigcheck.report import load_report

    fifo = tmp_path / "r.json"
    os.mkfifo(fifo)
    old = signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("load_report blocked")))
    signal.alarm(10)
    try:
        with pytest.raises(ValueError, match="FIFO"):
            load_report(fifo)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_missing_snapshot_file_is_unreadable_in_the_report(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """Fresh-user finding: a snapshot without nvml.json failed its NVML checks as "UNREADABLE, not a pass" in
    the terminal, but the report and the Prometheus textfile said status "fail", and the summary listed one
    root cause per check. They are recorded as verdicts now: status unreadable, one root cause."""
    import shutil

    from .conftest import SNAPSHOTS

    snap = tmp_path / "nonv"
    shutil.copytree(SNAPSHOTS / "rtx3090x2-gen4", snap, symlinks=True)
    (snap / "nvml.json").unlink()
    (pytester.path / "out").mkdir()
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--rig-snapshot={snap}", f"{REPORT_OPTION}=out/rig.json"
    )
    doc = json.loads((pytester.path / "out" / "rig.json").read_text())
    nvml = [r for r in doc["results"] if "no nvml.json" in str(r.get("message"))]
    assert nvml and {r["status"] for r in nvml} == {"unreadable"}, nvml[:2]
    result.stdout.fnmatch_lines([f"*{len(nvml)} failing checks, 1 root cause first*"])
