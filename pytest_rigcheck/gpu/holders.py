"""After processes are stopped or killed: do they still hold GPU memory? (NVML)

Used after a started vLLM server stops and after hung or crashed P2P/NCCL workers are killed. A vLLM
engine that outlives its API server, or a zombie CUDA context, keeps GPU memory and makes the next start
fail with "free memory ... is less than desired GPU memory utilization". On a machine without NVML
(no driver, CPU only) the question does not apply and the answer is ``None``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any


def gpu_holders(
    pids: Iterable[int], open_nvml: Callable[[], Any] | None = None, wait_s: float = 10.0, poll_s: float = 1.0
) -> list[str] | None:
    """Which of ``pids`` still hold GPU memory, as ``GPU<i> (<name>): pid <p> (<name>) holds <n> MiB`` lines.

    Polls up to ``wait_s`` (the driver frees a context a moment after the process is gone). ``None`` when
    NVML cannot be opened (no NVIDIA driver or GPU, bindings not installed): not a pass, not a failure.

    Args:
        pids: every pid seen in the server's process group before it was stopped.
        open_nvml: factory of an object with ``system()`` and ``close()`` (default: live NVML).

    Example::

        left = gpu_holders(report.pids)
        assert not left, left
    """
    from ..errors import RigcheckError

    wanted = set(pids)
    if open_nvml is None:
        from .nvml import LiveNvml

        open_nvml = LiveNvml
    end = time.monotonic() + wait_s
    while True:
        try:
            nv = open_nvml()
        except RigcheckError:  # NvmlUnavailable / NvmlPermissionError: nothing to read here
            return None
        try:
            state = nv.system()
        finally:
            nv.close()
        left = []
        for gpu in state.gpus:
            procs = gpu.get("processes")
            if not isinstance(procs, list):
                continue  # Unavailable (not supported, no permission): cannot tell for this GPU
            for p in procs:
                if isinstance(p, dict) and p.get("pid") in wanted:
                    used = p.get("used_b")
                    mib = f"{used / 2**20:.0f} MiB" if isinstance(used, int) else "memory"
                    left.append(
                        f"GPU{gpu.index} ({gpu.name}): pid {p['pid']} ({p.get('name', '?')}) holds {mib}"
                    )
        if not left or time.monotonic() >= end:
            return left
        time.sleep(poll_s)
