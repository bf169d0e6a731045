"""Load worker: keep every GPU of the plan busy with half-precision matrix multiplies until told to stop.

Run by ``gpu/load.py`` as ``python load_worker.py --plan PLAN --run-dir DIR --name load`` (a script,
not a module: stdlib and torch, never pytest_rigcheck), so no CUDA context lives in the pytest process
and a hung kernel hangs this process group, which is killed, not pytest. The pytest process samples
NVML meanwhile.

Handshake (``_proto.py``): set-up (torch, CUDA, two ``MATRIX``-square fp16 matrices per GPU and one
product to load cuBLAS) -> ``ready.<name>`` -> wait for ``go.load`` -> multiply until ``stop.load``
appears (or ``max_s`` passes, or the launcher is gone) -> ``result.<name>.json``. Plan ``mode``:
``matmul`` (default) multiplies only; ``mixed`` (the soak) also copies a ``COPY_MIB`` buffer back and
forth on each GPU between products, so device memory and its controller are loaded with the SMs. When no load can be
run at all (no torch, no CUDA device, no GPU of the plan visible), the result says why and is written
before ``ready``, and the worker exits without waiting.

Result: ``{"loaded": {bdf: torch_index}, "missing": {bdf: why}, "iterations": n, "seconds": s,
"torch": version, "error": str | None}`` or ``{"unavailable": why, "code": "not_supported" | "error"}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _proto import finish, log, mark_ready, wait_go, write_result  # noqa: E402

PHASE = "load"
PRODUCTS_PER_SYNC = 4  # products queued on each GPU between synchronisations
COPY_MIB = 1024  # mixed mode: two buffers of this size per GPU, copied into each other between products


def normalize_bdf(dom: int, bus: int, dev: int) -> str:
    """``0000:3b:00.0`` from CUDA's PCI ids, spelled as ``pcie.normalize_bdf`` and sysfs do (4-digit
    domain, 8 digits above 0xffff as VMD domains are); function 0, which a GPU is."""
    return f"{dom:08x}:{bus:02x}:{dev:02x}.0" if dom > 0xFFFF else f"{dom:04x}:{bus:02x}:{dev:02x}.0"


def torch_indices(torch: Any) -> dict[str, int]:
    """BDF -> torch device index, from the CUDA device properties (torch's order is CUDA's, which is
    fastest-first unless ``CUDA_DEVICE_ORDER=PCI_BUS_ID``); ``{}`` when this torch gives no PCI ids."""
    out: dict[str, int] = {}
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        dom, bus, dev = (getattr(p, a, None) for a in ("pci_domain_id", "pci_bus_id", "pci_device_id"))
        if bus is None or dev is None:
            return {}
        out[normalize_bdf(dom or 0, bus, dev)] = i
    return out


def _unavailable(run_dir: str, name: str, why: str, code: str = "error") -> None:
    log(why)
    write_result(run_dir, name, {"unavailable": why, "code": code})
    mark_ready(run_dir, name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--plan", required=True)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--name", required=True)
    a = ap.parse_args(argv)
    parent = os.getppid()
    with open(a.plan, encoding="utf-8") as f:
        plan = json.load(f)
    size, max_s = int(plan["matrix"]), float(plan["max_s"])
    mixed = plan.get("mode", "matmul") == "mixed"
    t_start = time.perf_counter()
    try:
        import torch
    except ImportError as exc:
        _unavailable(
            a.run_dir,
            a.name,
            f"no load could be run: torch is not installed for {sys.executable} ({exc}); "
            "pip install 'pytest-rigcheck[torch]'",
            "not_supported",
        )
        return 0
    if not torch.cuda.is_available():
        _unavailable(a.run_dir, a.name, "no load could be run: torch sees no CUDA device")
        return 0
    tmap = torch_indices(torch)
    loaded: dict[str, int] = {}
    missing: dict[str, str] = {}
    for bdf in plan["gpus"]:
        if bdf in tmap:
            loaded[bdf] = tmap[bdf]
        else:
            cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
            missing[bdf] = f"no load could be run: torch has no device at {bdf} " + (
                f"(hidden by CUDA_VISIBLE_DEVICES={cvd}: unset it or list every GPU)"
                if cvd is not None
                else "(this torch does not report PCI ids)"
            )
    if not loaded:
        write_result(a.run_dir, a.name, {"loaded": {}, "missing": missing, "iterations": 0, "error": None})
        mark_ready(a.run_dir, a.name)
        return 0
    result: dict[str, Any] = {"loaded": loaded, "missing": missing, "torch": torch.__version__, "error": None}
    result["import_s"] = round(time.perf_counter() - t_start, 3)
    mats = []
    try:
        for i in loaded.values():
            x = torch.randn(size, size, device=f"cuda:{i}", dtype=torch.float16)
            y = torch.randn(size, size, device=f"cuda:{i}", dtype=torch.float16)
            torch.matmul(x, y)  # loads cuBLAS before "ready", so the load starts at full speed on "go"
            bufs: tuple[Any, ...] = ()
            if mixed:
                n = COPY_MIB * (1 << 20) // 2
                bufs = (
                    torch.empty(n, device=f"cuda:{i}", dtype=torch.float16),
                    torch.empty(n, device=f"cuda:{i}", dtype=torch.float16),
                )
            torch.cuda.synchronize(i)
            mats.append((i, x, y, bufs))
    except Exception as exc:  # noqa: BLE001 - any failure to set up (OOM, CUDA error) is the answer
        result["error"] = f"{type(exc).__name__}: {exc}"
        write_result(a.run_dir, a.name, {**result, "iterations": 0})
        mark_ready(a.run_dir, a.name)
        return 0
    result["setup_s"] = round(time.perf_counter() - t_start, 3)
    mark_ready(a.run_dir, a.name)
    wait_go(a.run_dir, PHASE, parent)
    stop = os.path.join(a.run_dir, f"stop.{PHASE}")
    t0 = time.monotonic()
    n = 0
    try:
        while not os.path.exists(stop) and time.monotonic() - t0 < max_s and os.getppid() == parent:
            for _, x, y, bufs in mats:
                for _ in range(PRODUCTS_PER_SYNC):
                    torch.matmul(x, y)
                    if bufs:
                        bufs[1].copy_(bufs[0])
                        bufs[0].copy_(bufs[1])
            for i, _, _, _ in mats:
                torch.cuda.synchronize(i)
            n += 1
    except Exception as exc:  # noqa: BLE001 - any failure of the load (OOM, Xid, ECC) makes the readings unusable
        result["error"] = f"{type(exc).__name__}: {exc}"
    result.update(iterations=n, seconds=round(time.monotonic() - t0, 3))
    write_result(a.run_dir, a.name, result)
    return 0


if __name__ == "__main__":
    finish(main())
