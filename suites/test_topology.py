"""Each GPU pair is connected no farther apart than the profile allows (PIX, PXB, PHB, NODE, SYS)."""

from __future__ import annotations

from pytest_rigcheck import pcie_checks


def test_topology_class(rig_gpu_pair, rig_check):
    verdict = rig_check(pcie_checks.topology(rig_gpu_pair))
    assert verdict.ok, str(verdict)
