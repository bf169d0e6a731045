"""Every hop to a GPU has ASPM off, no uncorrectable PCIe error, and no error counter growing during the run."""

from __future__ import annotations

import pytest

from pytest_rigcheck import linkhealth


def test_aspm_off(rig_gpu, rig_check):
    verdict = rig_check(linkhealth.aspm(rig_gpu))
    assert verdict.ok, str(verdict)


def test_no_uncorrectable_link_errors(rig_gpu, rig_check):
    verdict = rig_check(linkhealth.aer_counters(rig_gpu))
    assert verdict.ok, str(verdict)


@pytest.mark.rig_late(2)
def test_link_errors_not_growing(rig_gpu, rig_check):
    verdict = rig_check(linkhealth.aer_growth(rig_gpu))
    assert verdict.ok, str(verdict)
