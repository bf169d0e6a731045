"""Driver, CUDA and VBIOS versions are recorded in the results, and meet the profile's minimums."""

from __future__ import annotations

from pytest_rigcheck.gpu import inventory


def test_versions(rig, rig_rigs, rig_nvml, rig_check, record_testsuite_property):
    verdict = inventory.versions(rig, rig_nvml.system)
    for key, value in verdict.properties.items():
        record_testsuite_property(f"{rig.name}:{key}" if len(rig_rigs) > 1 else key, value)
    verdict = rig_check(verdict)
    assert verdict.ok, str(verdict)
