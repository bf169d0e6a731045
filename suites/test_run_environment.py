"""The environment NCCL, PyTorch and vLLM run in: /dev/shm, locked memory, visible GPUs, NCCL variables,
host memory for vLLM's swap space, and whether this is a container."""

from __future__ import annotations

from pytest_rigcheck.runenv import checks as runenv_checks


def test_shm_size(rig, rig_runenv, rig_check):
    verdict = rig_check(runenv_checks.shm_size(rig, rig_runenv))
    assert verdict.ok, str(verdict)


def test_memlock_limit(rig, rig_runenv, rig_check):
    verdict = rig_check(runenv_checks.memlock(rig, rig_runenv))
    assert verdict.ok, str(verdict)


def test_gpu_visible(rig_gpu, rig_runenv, rig_check):
    verdict = rig_check(runenv_checks.gpu_visible(rig_gpu, rig_runenv))
    assert verdict.ok, str(verdict)


def test_nccl_transport_env(rig, rig_runenv, rig_check):
    verdict = rig_check(runenv_checks.nccl_transport_env(rig, rig_runenv))
    assert verdict.ok, str(verdict)


def test_swap_space_fits(rig, rig_runenv, rig_check):
    verdict = rig_check(runenv_checks.swap_space(rig, rig_runenv))
    assert verdict.ok, str(verdict)


def test_container(rig, rig_runenv, rig_check):
    verdict = rig_check(runenv_checks.container(rig, rig_runenv))
    assert verdict.ok, str(verdict)
