"""A short load on the live GPUs, sampling NVML while they are busy.

NVIDIA GPUs drop their PCIe link speed and clocks at idle (``nvidia-smi -q`` shows the current PCIe
generation drop at idle; DCGM reads the link only in P0, NVIDIA/DCGM ``nvvs/plugin_src/pcie/PcieMain.cpp``),
so link generation, clock event reasons and power are read while a half-precision
matrix multiply keeps every GPU busy. Sampling starts after a warm-up, so the idle-to-busy retrain
is not counted as flapping. The PCIe replay counter is read before and after.

Live only; needs torch (``pytest-rigcheck[torch]``). Reads NVML, never sets anything.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from ..pcie import normalize_bdf
from .state import NOT_SUPPORTED, LoadReadings, Unavailable

if TYPE_CHECKING:
    from .nvml import LiveNvml

WARMUP_S = 1.0
INTERVAL_S = 0.05
MATRIX = 8192  # fp16 8192x8192: 128 MiB a matrix, ~1.1 TFLOP a product; fits every card of 8 GB and more
HOW = f"fp16 {MATRIX}x{MATRIX} matmul on every GPU at once, NVML sampled every {INTERVAL_S * 1000:.0f} ms after a {WARMUP_S:.0f} s warm-up"


def torch_indices(torch: Any) -> dict[str, int]:
    """BDF -> torch device index, from the CUDA device properties (torch orders devices fastest-first, not by bus)."""
    out: dict[str, int] = {}
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        dom, bus, dev = (getattr(p, a, None) for a in ("pci_domain_id", "pci_bus_id", "pci_device_id"))
        if bus is None or dev is None:
            return {}
        out[normalize_bdf(f"{dom or 0:x}:{bus:02x}:{dev:02x}.0")] = i
    return out


def measure_under_load(
    nvml: LiveNvml, gpus: dict[str, int], seconds: float
) -> dict[str, LoadReadings | Unavailable]:
    """Load the GPUs ``{bdf: nvml_index}`` for ``seconds`` and sample NVML on each; ``Unavailable`` where it could not."""
    if not gpus:
        return {}
    try:
        import torch
    except ImportError:
        why = Unavailable(
            "no load could be run: torch is not installed (pip install pytest-rigcheck[torch])", NOT_SUPPORTED
        )
        return dict.fromkeys(gpus, why)
    if not torch.cuda.is_available():
        return dict.fromkeys(gpus, Unavailable("no load could be run: torch sees no CUDA device"))
    tmap = torch_indices(torch)
    out: dict[str, LoadReadings | Unavailable] = {}
    devices: dict[str, int] = {}
    for bdf in gpus:
        if bdf in tmap:
            devices[bdf] = tmap[bdf]
        else:
            out[bdf] = Unavailable(
                f"no load could be run: torch has no device at {bdf} "
                "(CUDA_VISIBLE_DEVICES hides it, or this torch does not report PCI ids)"
            )
    if not devices:
        return out
    replay_before = {b: nvml.replay(gpus[b]) for b in devices}
    stop = threading.Event()
    errors: list[str] = []
    worker = threading.Thread(target=_burn, args=(torch, list(devices.values()), stop, errors), daemon=True)
    samples: dict[str, list[tuple[float, int | None, int | None, int | None, int | None, int | None]]] = {
        b: [] for b in devices
    }
    worker.start()
    try:
        t0 = time.monotonic()
        time.sleep(WARMUP_S)
        while time.monotonic() - t0 < WARMUP_S + seconds and not errors:
            t = round(time.monotonic() - t0, 3)
            for bdf in devices:
                samples[bdf].append((t, *nvml.sample(gpus[bdf])))
            time.sleep(INTERVAL_S)
    finally:
        stop.set()
        worker.join(timeout=60)
    replay_after = {b: nvml.replay(gpus[b]) for b in devices}
    for bdf in devices:
        if errors:
            out[bdf] = Unavailable(f"the load failed: {errors[0]}")
            continue
        out[bdf] = LoadReadings(
            tuple(samples[bdf]),
            how=HOW,
            window_s=seconds,
            replay_before=replay_before[bdf],
            replay_after=replay_after[bdf],
        )
    return out


def _burn(torch: Any, devices: list[int], stop: threading.Event, errors: list[str]) -> None:
    try:
        mats = []
        for d in devices:
            a = torch.randn(MATRIX, MATRIX, device=f"cuda:{d}", dtype=torch.float16)
            mats.append((d, a, torch.randn(MATRIX, MATRIX, device=f"cuda:{d}", dtype=torch.float16)))
        while not stop.is_set():
            for _, a, b in mats:
                for _ in range(4):
                    torch.matmul(a, b)
            for d, _, _ in mats:
                torch.cuda.synchronize(d)
    except Exception as exc:  # noqa: BLE001 - any failure of the load (OOM, CUDA error) makes the readings unusable
        errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        mats = []
        torch.cuda.empty_cache()
