"""Under load no GPU is held back by HW slowdown, thermal limits or power brake (the SW power cap is fine)."""

from __future__ import annotations

import pytest

from pytest_rigcheck.gpu import busy


@pytest.mark.rig_measure
def test_clock_event_reasons(rig_gpu, rig_nvml, rig_check):
    bdf = rig_gpu.gpu.bdf
    verdict = rig_check(busy.clock_reasons(rig_gpu, rig_nvml.gpu(bdf), rig_nvml.load_of(bdf)))
    assert verdict.ok, str(verdict)
