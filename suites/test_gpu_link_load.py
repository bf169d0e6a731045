"""The PCIe link as NVML sees it while the GPU is busy: trained to its generation and width, and steady."""

from __future__ import annotations

import pytest

from pytest_rigcheck.gpu import busy


@pytest.mark.rig_measure
def test_link_under_load(rig_gpu, rig_nvml, rig_check):
    bdf = rig_gpu.gpu.bdf
    verdict = rig_check(busy.link_under_load(rig_gpu, rig_nvml.gpu(bdf), rig_nvml.load_of(bdf)))
    assert verdict.ok, str(verdict)


@pytest.mark.rig_measure
def test_link_not_flapping(rig_gpu, rig_nvml, rig_check):
    bdf = rig_gpu.gpu.bdf
    verdict = rig_check(busy.link_flapping(rig_gpu, rig_nvml.gpu(bdf), rig_nvml.load_of(bdf)))
    assert verdict.ok, str(verdict)
