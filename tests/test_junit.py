"""JUnit (issue 10 #7): measured, expected and unit are properties of each test case, under pytest's default
``junit_family`` (xunit2) and under xunit1, with no warning per test (``record_property`` warns under xunit2;
``rig_check`` writes ``item.user_properties``, which junitxml writes under every family)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

SNAPSHOT = Path(__file__).resolve().parent.parent / "fixtures" / "sysfs-snapshots" / "rtx3090x2-riser-x8"


@pytest.mark.parametrize("family", [None, "xunit1", "xunit2"])
def test_measured_expected_unit_per_test_case(pytester: pytest.Pytester, family: str | None) -> None:
    if family:
        pytester.makeini(f"[pytest]\njunit_family = {family}\n")
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        f"--rig-snapshot={SNAPSHOT}",
        "-k",
        "link or power",
        "--junitxml=j.xml",
        "-W",
        "error::pytest.PytestWarning",
    )
    out = result.stdout.str()
    assert "warnings summary" not in out and "PytestWarning" not in out, out
    cases = ET.parse(pytester.path / "j.xml").getroot().iter("testcase")
    with_figures = 0
    for case in cases:
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        if "rig_result" not in props:
            continue
        fields = json.loads(props["rig_result"] or "{}")
        for key in ("measured", "expected", "unit"):
            if key in fields:
                assert f"rig_{key}" in props, (case.get("name"), props)
        with_figures += "rig_measured" in props and "rig_unit" in props
    assert with_figures >= 2, out  # the two GPUs' links at least: x8 measured vs x16 expected
    link = next(
        c
        for c in ET.parse(pytester.path / "j.xml").getroot().iter("testcase")
        if c.get("name") == "test_link_trained[0000:4b:00.0]"
    )
    props = {p.get("name"): p.get("value") for p in link.iter("property")}
    measured, expected = props["rig_measured"], props["rig_expected"]
    assert ("x8" in measured or '"width": 8' in measured) and (
        "x16" in expected or '"width": 16' in expected
    ), props
