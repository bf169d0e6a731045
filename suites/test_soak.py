"""Under minutes of load every GPU holds its clock, stays cool, and no error counter grows (--rig-soak)."""

from __future__ import annotations

import pytest


@pytest.mark.rig_measure
@pytest.mark.rig_late(1)
def test_soak(rig_gpu, rig_soak, rig_check):
    verdict = rig_check(rig_soak.verdict(rig_gpu))
    assert verdict.ok, str(verdict)
