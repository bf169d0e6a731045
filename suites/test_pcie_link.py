"""Every link from root port to GPU trained to its expected generation and width."""

from __future__ import annotations

from pytest_rigcheck import pcie_checks


def test_link_trained(rig_link, rig_check):
    verdict = rig_check(pcie_checks.link(rig_link))
    assert verdict.ok, str(verdict)
