"""Each root-port lane group is split the way the profile (or the GPUs below it) need."""

from __future__ import annotations

from pytest_rigcheck import pcie_checks


def test_bifurcation(rig_lane_group, rig_check):
    verdict = rig_check(pcie_checks.bifurcation(rig_lane_group))
    assert verdict.ok, str(verdict)
