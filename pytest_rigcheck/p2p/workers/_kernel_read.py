"""Read a peer's buffer with a GPU kernel, as vLLM's custom all-reduce does (loads issued by the SMs
through the IPC mapping), rather than with the copy engine.

The raw pointer from ``cudaIpcOpenMemHandle`` becomes a torch tensor through the CUDA Array Interface
(``__cuda_array_interface__`` version 3, https://numba.readthedocs.io/en/stable/cuda/cuda_array_interface.html,
which ``torch.as_tensor`` accepts), and an elementwise torch kernel (``bitwise_xor`` with 0, precompiled in
PyTorch: no JIT, so nothing to compile on a fresh machine) loads from it. A plain ``copy_`` would not do:
PyTorch copies contiguous device memory with ``cudaMemcpyAsync``, the copy engine.
"""

from __future__ import annotations

from typing import Any


class _Mapped:
    """``numel`` int32 at device pointer ``ptr``, as a CUDA array torch can wrap without copying."""

    def __init__(self, ptr: int, numel: int) -> None:
        self.__cuda_array_interface__ = {
            "shape": (numel,),
            "typestr": "<i4",
            "data": (ptr, False),
            "version": 3,
            "strides": None,
        }


def mapped(torch: Any, ptr: int, numel: int, device: Any) -> Any:
    """The int32 tensor over ``numel`` elements at ``ptr`` (a peer's memory mapped on ``device``)."""
    return torch.as_tensor(_Mapped(ptr, numel), device=device)


def kernel_read(torch: Any, remote_ptr: int, numel: int, device: Any) -> Any:
    """``numel`` int32 read from ``remote_ptr`` by a kernel running on ``device``, into a new tensor."""
    out = torch.full((numel,), -1, dtype=torch.int32, device=device)
    with torch.cuda.device(device):
        torch.bitwise_xor(mapped(torch, remote_ptr, numel, device), 0, out=out)  # SM loads over P2P
        torch.cuda.synchronize(device)
    return out
