"""The rig has the GPUs it should: the profile's count, or at least one."""

from __future__ import annotations

from pytest_rigcheck import pcie_checks


def test_gpu_count(rig, rig_check):
    verdict = rig_check(pcie_checks.gpu_count(rig))
    assert verdict.ok, str(verdict)
