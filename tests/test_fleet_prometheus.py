"""--rig-prometheus FILE.prom: a node-exporter textfile of every check's status and figures (issue 13)."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pytest_rigcheck.fleet.prometheus import textfile

from .conftest import SNAPSHOTS

ACS_ON = SNAPSHOTS / "rtxpro6000x4-acs-switch"


def _families(text: str) -> dict[str, list]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def test_acs_on_rig_textfile(pytester: pytest.Pytester) -> None:
    """Statuses per check and device, figures per check; parsed by Prometheus' own client parser."""
    (pytester.path / "prom").mkdir()
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        f"--rig-snapshot={ACS_ON}",
        "--rig-prometheus=prom/rig.prom",
        "-k",
        "acs or p2p_uni",
    )
    assert result.ret == 1
    result.stdout.fnmatch_lines(["rigcheck: Prometheus textfile written to *rig.prom"])
    folder = pytester.path / "prom"
    assert sorted(p.name for p in folder.iterdir()) == ["rig.prom"]  # no temporary file left
    fam = _families((folder / "rig.prom").read_text())
    bad = [
        s
        for s in fam["rigcheck_check_status"]
        if s.labels["check"] == "test_acs_redirect_off" and s.labels["device"] == "0000:02:00.0"
    ]
    assert [(s.labels["status"], s.value, s.labels["rig"]) for s in bad] == [
        ("fail", 1.0, "rtxpro6000x4-acs-switch")
    ]
    ok = {(s.labels["check"], s.labels["device"]): s.value for s in fam["rigcheck_check_ok"]}
    assert ok[("test_acs_redirect_off", "0000:02:00.0")] == 0
    assert ok[("test_acs_redirect_off", "0000:01:00.0")] == 1
    uni = [s for s in fam["rigcheck_figure"] if s.labels["figure"] == "unidir_gbps"]
    assert uni and all(s.labels["device"].count("->") == 1 and s.value > 0 for s in uni)
    assert fam["rigcheck_exit_status"][0].value == 1


@pytest.mark.parametrize("value", ["out.txt", "nodir/x.prom"])
def test_bad_path_is_one_usage_error(pytester: pytest.Pytester, value: str) -> None:
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--rig-snapshot={ACS_ON}", f"--rig-prometheus={value}"
    )
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*--rig-prometheus: invalid value*"])
    assert "Traceback" not in result.stderr.str()


def test_env_equivalent(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIGCHECK_PROMETHEUS", str(pytester.path / "e.prom"))
    pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--rig-snapshot={ACS_ON}", "-k", "iommu")
    assert "rigcheck_check_status" in (pytester.path / "e.prom").read_text()


def test_label_escapes_and_numbers() -> None:
    text = textfile(
        [
            {
                "nodeid": 'a.py::t[x"y\\z]',
                "status": "pass",
                "rig": "r\n1",
                "measured": 2.5,
                "unit": "GB/s",
                "properties": {"n": 3, "s": "text", "b": True},
            }
        ],
        0,
        1.0,
    )
    fam = _families(text)
    assert fam["rigcheck_check_status"][0].labels["device"] == 'x"y\\z'
    assert fam["rigcheck_check_status"][0].labels["rig"] == "r\n1"
    assert fam["rigcheck_measured"][0].value == 2.5
    assert [s.labels["figure"] for s in fam["rigcheck_figure"]] == ["n"]  # strings and booleans left out
