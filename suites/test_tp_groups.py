"""Each tensor-parallel group has one GPU model and one memory size."""

from __future__ import annotations

from pytest_rigcheck.gpu import inventory


def test_tp_groups_homogeneous(rig, rig_gpus, rig_check):
    verdict = rig_check(inventory.tp_groups(rig, rig_gpus))
    assert verdict.ok, str(verdict)
