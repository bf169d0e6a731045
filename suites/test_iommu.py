"""The IOMMU does not translate GPU DMA: off, or passthrough where the profile allows."""

from __future__ import annotations

from pytest_rigcheck import pcie_checks


def test_iommu_not_translating(rig_gpu, rig_check):
    verdict = rig_check(pcie_checks.iommu(rig_gpu))
    assert verdict.ok, str(verdict)
