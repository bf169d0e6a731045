"""ACS is off on every bridge between two GPUs: peer-to-peer traffic stays in the switch."""

from __future__ import annotations

from pytest_rigcheck import pcie_checks


def test_acs_redirect_off(rig_bridge, rig_check):
    verdict = rig_check(pcie_checks.acs(rig_bridge))
    assert verdict.ok, str(verdict)
