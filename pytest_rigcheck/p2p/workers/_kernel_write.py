"""Write into a peer's buffer with a GPU kernel, as vLLM's custom all-reduce does: its one-shot and
two-shot kernels store through the CUDA IPC mapping of the peers' buffers with the SMs
(vllm/csrc/custom_all_reduce.cuh), not with the copy engine. Imported by the NCCL worker only when
Triton is there (it ships with PyTorch on Linux).

A consumer rig on a patched P2P driver passed copy-engine round trips and NCCL while these stores
landed wrong (issue 9.9): the owner of the buffer reads back what its peer's kernel wrote.
"""

from __future__ import annotations

from typing import Any

import triton
from _kernel_read import BLOCK, _copy, _Pointer


def kernel_write(torch: Any, src: Any, remote_ptr: int, device: Any) -> None:
    """Store the int32 tensor ``src`` (on ``device``) at ``remote_ptr`` (a peer's memory, mapped with
    cudaIpcOpenMemHandle) with a kernel on ``device``: SM loads from local memory, SM stores over P2P.
    Returns after the kernel has finished (a device synchronize)."""
    n = int(src.numel())
    with torch.cuda.device(device):
        _copy[(triton.cdiv(n, BLOCK),)](src, _Pointer(remote_ptr, torch.int32), n, BLOCK=BLOCK)
        torch.cuda.synchronize(device)
