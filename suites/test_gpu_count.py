"""The rig has the GPUs it should: the profile's count, or at least one; and NVML sees every NVIDIA GPU on the bus."""

from __future__ import annotations

from pytest_rigcheck import pcie_checks
from pytest_rigcheck.gpu import inventory


def test_gpu_count(rig, rig_check):
    verdict = rig_check(pcie_checks.gpu_count(rig))
    assert verdict.ok, str(verdict)


def test_gpu_seen_by_nvml(rig_gpu, rig_nvml, rig_check):
    bdf = rig_gpu.gpu.bdf
    verdict = rig_check(inventory.seen_by_nvml(rig_gpu, rig_nvml.gpu(bdf), rig_nvml.system))
    assert verdict.ok, str(verdict)
