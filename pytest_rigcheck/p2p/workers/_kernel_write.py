"""Write into a peer's buffer with a GPU kernel, as vLLM's custom all-reduce does: its one-shot and
two-shot kernels store through the CUDA IPC mapping of the peers' buffers with the SMs
(vllm/csrc/custom_all_reduce.cuh), not with the copy engine.

A consumer rig on a patched P2P driver passed copy-engine round trips and NCCL while these stores
landed wrong (issue 9.9): the owner of the buffer reads back what its peer's kernel wrote. The store is an
elementwise torch kernel writing into the mapped memory (``_kernel_read.mapped``), precompiled in PyTorch.
"""

from __future__ import annotations

from typing import Any

from _kernel_read import mapped


def kernel_write(torch: Any, src: Any, remote_ptr: int, device: Any) -> None:
    """Store the int32 tensor ``src`` (on ``device``) at ``remote_ptr`` (a peer's memory, mapped with
    cudaIpcOpenMemHandle) with a kernel on ``device``: SM loads from local memory, SM stores over P2P.
    Returns after the kernel has finished (a device synchronize)."""
    n = int(src.numel())
    with torch.cuda.device(device):
        torch.bitwise_xor(src, 0, out=mapped(torch, remote_ptr, n, device))  # SM stores over P2P
        torch.cuda.synchronize(device)
