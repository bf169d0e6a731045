"""A buffer one GPU's process writes reads back intact in another's through a CUDA IPC handle (vLLM's custom all-reduce path)."""

from __future__ import annotations

from pytest_rigcheck.p2p import checks, ipc_write


def test_cuda_ipc_roundtrip(rig_p2p_pair, rig_nccl, rig_check):
    verdict = rig_check(checks.ipc(rig_p2p_pair, rig_nccl))
    assert verdict.ok, str(verdict)


def test_cuda_ipc_kernel_write(rig_p2p_pair, rig_nccl, rig_check):
    """A kernel on SRC stores into DST's buffer through the IPC mapping, as vLLM's custom all-reduce does."""
    verdict = rig_check(ipc_write.kernel_write(rig_p2p_pair, rig_nccl))
    assert verdict.ok, str(verdict)
