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
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--rig-snapshot={ACS_ON}", *args)
    return json.loads((pytester.path / "out" / "rig.json").read_text()), result


def _by_id(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["nodeid"].rsplit("::", 1)[1]: r for r in doc["results"]}


class TestReport:
    def test_outcomes_verdicts_and_fixes(self, pytester: pytest.Pytester) -> None:
        """Failures carry the verdict text with the fix line; passes their summary; skips their reason."""
        doc, result = _report(pytester, f"{REPORT_OPTION}=out/rig.json", "-k", "acs or bifurcation")
        assert result.ret == 1 and doc["exit_status"] == 1
        assert doc["rigs"][0].startswith("snapshot rtxpro6000x4-acs-switch [modelled]")
        assert doc["format"] == 1 and doc["tool"].startswith("pytest-rigcheck ")
        r = _by_id(doc)
        bad = r["test_acs_redirect_off[0000:02:00.0]"]
        assert bad["outcome"] == "failed"
        assert "setpci -s 0000:02:00.0 ECAP_ACS+0x6.w=0000" in bad["message"]
        assert bad["properties"]["acs_ctrl"] == "0x001d" and "ACS" in bad["summary"]
        good = r["test_acs_redirect_off[0000:01:00.0]"]
        assert good["outcome"] == "passed" and "no ACS capability" in good["summary"]
        assert doc["counts"] == {
            o: sum(1 for x in doc["results"] if x["outcome"] == o) for o in doc["counts"]
        }
        result.stdout.fnmatch_lines(["rigcheck: report written to *rig.json"])

    def test_skip_reason(self, pytester: pytest.Pytester) -> None:
        doc, _ = _report(pytester, f"{REPORT_OPTION}=out/rig.json", "-k", "model_fit")
        assert {r["outcome"] for r in doc["results"]} == {"skipped"}
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
        pytester.makeini("[pytest]\nrig_report = out/rig.json\n")
        doc, _ = _report(pytester, "-k", "iommu")
        assert doc["results"]
        (pytester.path / "out" / "rig.json").unlink()
        monkeypatch.setenv("RIGCHECK_REPORT", str(pytester.path / "out" / "rig.json"))
        pytester.makeini("[pytest]\n")
        doc, _ = _report(pytester, "-k", "iommu")
        assert doc["results"]

    def test_not_written_without_rig(self, pytester: pytest.Pytester) -> None:
        pytester.makepyfile("def test_mine(): pass")
        pytester.runpytest("-p", "no:cacheprovider", f"{REPORT_OPTION}=out/rig.json")
        assert not Path(pytester.path / "out" / "rig.json").exists()
