"""Modelled soak samples, link-health window readings and storage measurements for the shipped snapshots.

``tools/make_snapshots.py`` calls ``modelled_soak``, ``modelled_linkhealth`` and ``modelled_storage``
(name, GPU BDFs) for every modelled rig; each returns the file's content (with the checks it must fail
under ``expect_fail``) or ``None`` for rigs it does not model. Samples carry the noise of a real card
under load (SM clock +-25 MHz with occasional 60 MHz dips, power +-2%, temperature rising to a plateau),
from a fixed seed so the files are reproducible.
"""

from __future__ import annotations

import math
import random
from typing import Any

from .judge import FIELDS, FORMAT, GpuSamples, SoakRecord

SOAK_S = 300  # five minutes at one sample a second
HOW = "modelled: fp16 matmul mixed with device-memory copies, sampled every 1 s (pytest_rigcheck.soak.models)"
HEALTHY = "rtx3090x2-soak-healthy"
THROTTLE_LATE = "rtx3090x2-soak-throttle-late"
CLOCK_DECAY = "rtx3090x2-soak-clock-decay"
AER_RISER = "rtx3090x2-aer-riser"
SLOW_DISK = "rtx3090x2-slow-disk"
ASPM_ON = "rtx3090x2-aspm-on"


def samples(
    seed: int,
    seconds: int = SOAK_S,
    *,
    sm_mhz: float = 1905.0,
    decay_to: float | None = None,
    throttle_from: float | None = None,
    replay: int = 0,
) -> list[list[float | None]]:
    """One RTX 3090's samples under sustained load (``FIELDS`` order).

    ``decay_to``: the SM clock slides linearly to this by the end (no reason bit: a card losing boost as it
    heats). ``throttle_from``: from this second on, SW+HW thermal slowdown and the clock falls by a quarter.
    """
    rnd = random.Random(seed)
    rows: list[list[float | None]] = []
    for t in range(seconds):
        base = sm_mhz if decay_to is None else sm_mhz + (decay_to - sm_mhz) * t / (seconds - 1)
        reasons = 0x4 if rnd.random() < 0.8 else 0x0  # SW power cap: the normal state at full load
        temp = 44 + 28 * (1 - math.exp(-t / 70)) + rnd.uniform(-0.6, 0.6)
        sm = base + rnd.uniform(-25, 25) - (60 if rnd.random() < 0.03 else 0)
        if throttle_from is not None and t >= throttle_from:
            reasons |= 0x20 | 0x40
            sm = base * 0.75 + rnd.uniform(-20, 20)
            temp = 91 + rnd.uniform(-0.8, 0.8)
        values = {
            "t_s": float(t),
            "sm_mhz": round(sm),
            "mem_mhz": 9751,
            "temp_c": round(temp),
            "mem_temp_c": None,  # GDDR6X temperature is not in NVML for GeForce cards
            "power_mw": round(345000 * (1 + rnd.uniform(-0.02, 0.02))),
            "reasons": reasons,
            "fan_pct": round(55 + 20 * (1 - math.exp(-t / 90))),
            "replay": replay,
            "gen": 4,
            "width": 16,
            "aer_cor": 0,
            "aer_nonfatal": 0,
            "aer_fatal": 0,
        }
        rows.append([values[f] for f in FIELDS])
    return rows


def _record(gpus: list[str], rows: dict[str, list[list[float | None]]]) -> dict[str, Any]:
    hops = {"0000:21:00.0": "0000:00:01.1", "0000:4b:00.0": "0000:00:03.1"}
    rec = SoakRecord(float(SOAK_S), 1.0, HOW, "completed")
    for i, bdf in enumerate(gpus):
        zero = {"start": [0, 0, 0], "end": [0, 0, 0]}
        rec.gpus[bdf] = GpuSamples(
            bdf, i, "NVIDIA GeForce RTX 3090", rows[bdf], {hops.get(bdf, bdf): zero, bdf: zero}
        )
    out = rec.to_json()
    assert out["format"] == FORMAT
    return out


def modelled_soak(name: str, gpus: list[str]) -> dict[str, Any] | None:
    """``soak.json`` of the soak variants; ``None`` for the other rigs."""
    if name == HEALTHY:
        return _record(gpus, {b: samples(10 + i) for i, b in enumerate(gpus)})
    if name == THROTTLE_LATE:  # GPU1's cooler gives up four minutes in
        rows = {gpus[0]: samples(20), gpus[1]: samples(21, throttle_from=240)}
        return {**_record(gpus, rows), "expect_fail": [f"test_soak[{gpus[1]}]"]}
    if name == CLOCK_DECAY:  # GPU0 slides from 1905 to 1640 MHz over five minutes, no reason bit set
        rows = {gpus[0]: samples(30, decay_to=1640), gpus[1]: samples(31)}
        return {**_record(gpus, rows), "expect_fail": [f"test_soak[{gpus[0]}]"]}
    return None


def modelled_linkhealth(name: str, gpus: list[str]) -> dict[str, Any] | None:
    """``linkhealth.json``: the AER totals and links at the end of a 20-minute run (start: the sysfs files)."""
    zero = {"aer": {"correctable": 0, "nonfatal": 0, "fatal": 0}, "gen": 4, "width": 16}
    hops = ["0000:00:01.1", "0000:00:03.1", *gpus]
    if name == HEALTHY:
        return {"format": 1, "window_s": 1200, "end": dict.fromkeys(hops, zero)}
    if name == AER_RISER:  # the riser to GPU1: correctable errors grow on both ends of its link
        end = dict.fromkeys(hops, zero)
        end["0000:4b:00.0"] = {"aer": {"correctable": 37, "nonfatal": 0, "fatal": 0}, "gen": 4, "width": 16}
        end["0000:00:03.1"] = {"aer": {"correctable": 12, "nonfatal": 0, "fatal": 0}, "gen": 4, "width": 16}
        return {
            "format": 1,
            "window_s": 1200,
            "end": end,
            "expect_fail": [f"test_link_errors_not_growing[{gpus[1]}]"],
        }
    return None


def modelled_storage(name: str, gpus: list[str]) -> dict[str, Any] | None:
    """``storage.json``: a 70B FP16 model (141 GB in 30 safetensors files) on NVMe, or on a SATA hard disk."""
    model = {"model_dir": "/models/Llama-3.3-70B-Instruct", "files": 30, "total_bytes": 141_107_412_992}
    if name == HEALTHY:
        return {
            **model,
            "read_bytes": 4 << 30,
            "seconds": 0.71,
            "method": "O_DIRECT",
            "file": "/models/Llama-3.3-70B-Instruct/model-00001-of-00030.safetensors",
            "mount": {"mount_point": "/models", "dev": "259:1", "fstype": "ext4", "source": "/dev/nvme1n1p1"},
            "device": {
                "name": "nvme1n1p1",
                "disk": "nvme1n1",
                "model": "Samsung SSD 990 PRO 4TB",
                "rotational": False,
                "pcie": {"bdf": "0000:41:00.0", "gen": 4, "width": 4, "max_gen": 4, "max_width": 4},
            },
        }
    if name == SLOW_DISK:
        return {
            **model,
            "read_bytes": 1_932_735_283,
            "seconds": 10.0,
            "method": "O_DIRECT",
            "file": "/models/Llama-3.3-70B-Instruct/model-00001-of-00030.safetensors",
            "mount": {"mount_point": "/models", "dev": "8:17", "fstype": "ext4", "source": "/dev/sdb1"},
            "device": {"name": "sdb1", "disk": "sdb", "model": "ST8000DM004-2U91", "rotational": True},
            "expect_fail": [f"test_model_storage_read[{SLOW_DISK}]"],
        }
    return None
