"""Read a peer's buffer with a GPU kernel, as vLLM's custom all-reduce does (loads issued by the SMs
through the IPC mapping), rather than with the copy engine. Imported by the NCCL worker only when Triton
is there (it ships with PyTorch on Linux).

Triton takes any object with ``data_ptr()`` and ``dtype`` as a pointer argument, which is how the raw
pointer from ``cudaIpcOpenMemHandle`` reaches the kernel.
"""

from __future__ import annotations

from typing import Any

import triton
import triton.language as tl

BLOCK = 1024


@triton.jit  # type: ignore[untyped-decorator]
def _copy(src, dst, n, BLOCK: tl.constexpr):  # type: ignore[no-untyped-def]
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(dst + offs, tl.load(src + offs, mask=mask), mask=mask)


class _Pointer:
    def __init__(self, ptr: int, dtype: Any) -> None:
        self.ptr, self.dtype = ptr, dtype

    def data_ptr(self) -> int:
        return self.ptr


def kernel_read(torch: Any, remote_ptr: int, numel: int, device: Any) -> Any:
    """``numel`` int32 read from ``remote_ptr`` by a kernel running on ``device``, into a new tensor."""
    out = torch.full((numel,), -1, dtype=torch.int32, device=device)
    with torch.cuda.device(device):
        _copy[(triton.cdiv(numel, BLOCK),)](_Pointer(remote_ptr, torch.int32), out, numel, BLOCK=BLOCK)
        torch.cuda.synchronize(device)
    return out
