"""NCCL all-reduce across all GPUs and each tensor-parallel group: right values, bus bandwidth, over P2P."""

from __future__ import annotations

from pytest_rigcheck.p2p import checks


def test_nccl_allreduce_correct(rig_nccl_group, rig_nccl, rig_check):
    verdict = rig_check(checks.nccl_correct(rig_nccl_group, rig_nccl))
    assert verdict.ok, str(verdict)


def test_nccl_busbw(rig_nccl_group, rig_nccl, rig_check):
    verdict = rig_check(checks.nccl_busbw(rig_nccl_group, rig_nccl))
    assert verdict.ok, str(verdict)


def test_nccl_uses_p2p(rig_nccl_group, rig_nccl, rig_check):
    verdict = rig_check(checks.nccl_uses_p2p(rig_nccl_group, rig_nccl))
    assert verdict.ok, str(verdict)
