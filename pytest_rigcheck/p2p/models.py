"""``p2p.json`` for the shipped snapshots: transcribed from the real H200 capture, modelled for the modelled rigs.

``tools/make_snapshots.py`` calls ``modelled_p2p(name, gpu_bdfs)`` for each modelled rig and
``captured_p2p(name, captures_dir)`` for each real capture; ``expect_fail`` (popped there) lists the checks
the figures make fail, for the manifest's promise. Names this module does not know get ``None`` (no file:
the P2P/NCCL checks then skip on that snapshot).

Modelled figures follow the PCIe data rates and published measurements (NVIDIA/nvbandwidth README): Gen4 x16 is 31.5 GB/s per direction; a healthy Gen4 switch gives
P2P writes of about 28 GB/s and 52 GB/s bidirectional, 0.41 us latency (the seed's targets: 27.5 / 50.4 /
0.37-0.45); ACS redirect at the switch ports sends every peer request up to the root complex, which about
halves bidirectional bandwidth (#32: ~50 vs ~103 GB/s at Gen5) and multiplies latency. Stock GeForce
drivers refuse P2P (NVML CHIPSET_NOT_SUPPORTED, #21): NCCL then goes through host memory (SHM).
"""

from __future__ import annotations

import re
from itertools import permutations
from pathlib import Path
from typing import Any

from .figures import DEFINITIONS, FORMAT, group_key, pair_key
from .measure import DEFAULT_SIZES, JUDGED_BYTES

OK, CNS, NS = 0, 1, 5  # nvmlGpuP2PStatus_t


def _sweep(peak: float, n: int, lat_us: float = 25.0) -> list[dict[str, Any]]:
    """A plausible all-reduce sweep: time = latency + bytes / algbw_peak, busbw from it."""
    out = []
    factor = 2 * (n - 1) / n
    for size in DEFAULT_SIZES:
        sec = lat_us * 1e-6 + size * factor / (peak * 1e9)
        algbw = size / 1e9 / sec
        out.append(
            {
                "bytes": size,
                "time_us": round(sec * 1e6, 2),
                "algbw_gbps": round(algbw, 4),
                "busbw_gbps": round(algbw * factor, 4),
                "wrong": 0,
                "nan": 0,
            }
        )
    return out


def _base(origin: str) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "origin": origin,
        "definitions": DEFINITIONS,
        "gpus": {},
        "pairs": {},
        "nccl": {"groups": {}},
        "runs": {},
    }


def _pair(
    status: int,
    access: bool,
    uni: list[float],
    bidir: list[float],
    lat: list[float],
    ctl_uni: float,
    ctl_lat: float,
) -> dict[str, Any]:
    return {
        "nvml": {"read": status, "write": status, "nvlink": NS, "atomics": NS, "pci": status},
        "can_access_peer": access,
        "unidir_gbps": uni,
        "bidir_gbps": bidir,
        "latency_us": lat,
        "control_unidir_gbps": ctl_uni,
        "control_latency_us": ctl_lat,
        "unidir_verified": True,
        "bidir_verified": True,
        "latency_verified": True,
        "control_verified": True,
    }


def modelled_p2p(snapshot_name: str, gpu_bdfs: list[str]) -> dict[str, Any] | None:
    """Believable P2P/NCCL figures for a modelled rig, by snapshot name; ``None`` for a name not modelled."""
    n = snapshot_name
    origin = f"modelled for {n} (pytest_rigcheck.p2p.models), not measured"
    if n in ("rtx3090x2-gen4", "rtx3090x2-acs-root-port"):
        # Stock GeForce driver: P2P refused, so ACS on the root ports changes nothing measurable here.
        d = _base(origin)
        for i, (a, b) in enumerate(permutations(gpu_bdfs, 2)):
            d["pairs"][pair_key(a, b)] = _pair(CNS, False, [12.6 - 0.2 * i], [13.1], [14.8], 12.5, 14.6)
        for i, g in enumerate(gpu_bdfs):
            d["gpus"][g] = {
                "name": "NVIDIA GeForce RTX 3090",
                "h2d_gbps": [26.1 - 0.3 * i],
                "d2h_gbps": [26.7],
                "h2d_verified": True,
                "d2h_verified": True,
                "nvlink": {"active": 0},
            }
        key = group_key(gpu_bdfs)
        d["nccl"]["groups"][key] = {
            "gpus": gpu_bdfs,
            "sweep": _sweep(11.4, 2),
            "wrong": 0,
            "nan": 0,
            "judged_bytes": JUDGED_BYTES,
            "busbw_gbps": [_sweep(11.4, 2)[-1]["busbw_gbps"]],
            "transports": {"SHM/direct/direct": 4},
            "nccl": "2.28.9+cuda13.0",
        }
        d["nccl"]["control"] = {
            "gpus": gpu_bdfs,
            "env": {"NCCL_P2P_DISABLE": "1"},
            "judged_bytes": JUDGED_BYTES,
            "busbw_gbps": 11.3,
            "transports": {"SHM/direct/direct": 4},
        }
        d["nccl"]["ipc"] = {
            "pairs": {
                pair_key(a, b): {
                    "ok": False,
                    "error": "CudaError: cudaIpcOpenMemHandle failed: "
                    "cudaError 217 (peer access is not supported between these two "
                    "devices)",
                }
                for a, b in permutations(gpu_bdfs, 2)
            }
        }
        d["expect_fail"] = []
        return d
    if n in ("rtxpro6000x4-switch", "rtxpro6000x4-acs-switch"):
        acs = n.endswith("acs-switch")
        d = _base(origin)
        for i, (a, b) in enumerate(permutations(gpu_bdfs, 2)):
            if acs:  # every request up to the root complex and back: below the line even after the retry
                p = _pair(
                    OK,
                    True,
                    [23.9 - 0.05 * (i % 3), 24.2],
                    [26.2 + 0.1 * (i % 4), 26.5],
                    [0.93, 0.91],
                    11.0,
                    12.1,
                )
            else:
                p = _pair(OK, True, [28.1 - 0.05 * (i % 4)], [52.0 + 0.1 * (i % 3)], [0.41], 11.2, 12.0)
            d["pairs"][pair_key(a, b)] = p
        for i, g in enumerate(gpu_bdfs):
            d["gpus"][g] = {
                "name": "NVIDIA RTX PRO 6000 Blackwell Workstation Edition",
                "h2d_gbps": [26.4],
                "d2h_gbps": [26.9 - 0.1 * i],
                "h2d_verified": True,
                "d2h_verified": True,
                "nvlink": {"active": 0},
            }
        key = group_key(gpu_bdfs)
        peak = 9.8 if acs else 21.6
        busbw = _sweep(peak, 4)[-1]["busbw_gbps"]
        d["nccl"]["groups"][key] = {
            "gpus": gpu_bdfs,
            "sweep": _sweep(peak, 4),
            "wrong": 0,
            "nan": 0,
            "judged_bytes": JUDGED_BYTES,
            "busbw_gbps": [busbw, 9.9] if acs else [busbw],
            "transports": {"P2P/CUMEM/read": 16},
            "nccl": "2.28.9+cuda13.0",
        }
        d["nccl"]["control"] = {
            "gpus": gpu_bdfs,
            "env": {"NCCL_P2P_DISABLE": "1"},
            "judged_bytes": JUDGED_BYTES,
            "busbw_gbps": 8.6,
            "transports": {"SHM/direct/direct": 16},
        }
        d["nccl"]["ipc"] = {
            "pairs": {
                pair_key(a, b): {
                    "ok": True,
                    "mismatches": 0,
                    "bytes": 4194304,
                    "kernel_write": {"ok": True, "mismatches": 0, "bytes": 4194304},
                }
                for a, b in permutations(gpu_bdfs, 2)
            }
        }
        fail: list[str] = []
        if acs:
            for a, b in permutations(gpu_bdfs, 2):
                fail += [
                    f"test_p2p_unidirectional[{a}->{b}]",
                    f"test_p2p_bidirectional[{a}->{b}]",
                    f"test_p2p_latency[{a}->{b}]",
                ]
            fail += ["test_nccl_busbw[all]", "test_nccl_uses_p2p[all]"]
        d["expect_fail"] = fail
        return d
    return None


def captured_p2p(snapshot_name: str, captures: Path) -> dict[str, Any] | None:
    """The H200 capture's reference figures (measurements.txt, p2pBandwidthLatencyTest.txt) in ``p2p.json`` form."""
    if snapshot_name != "h200x2-nvlink":
        return None
    from .reference import parse_p2p_matrices

    base = captures / "h200x2-nvlink"
    text = (base / "measurements.txt").read_text()
    blt = parse_p2p_matrices((base / "p2pBandwidthLatencyTest.txt").read_text())
    bdfs = ["0000:00:06.0", "0000:00:07.0"]
    d = _base(
        "transcribed from a capture of a real 2x H200 NVLink machine: P2P copies, H2D/D2H and the NCCL "
        "sweep from measurements.txt (PyTorch on that machine), latency and the peer-access-off control from "
        "p2pBandwidthLatencyTest.txt; not captured there: NVML P2P read status (pynvml ArgumentError), data checks, "
        "NCCL transports, the NCCL_P2P_DISABLE=1 run, CUDA IPC"
    )
    uni = {
        (int(a), int(b)): float(v) for a, b, v in re.findall(r"^uni (\d)->(\d) .*? ([\d.]+) GB/s", text, re.M)
    }
    bidir = float(re.search(r"^bidir 0<->1 ([\d.]+) GB/s", text, re.M).group(1))  # type: ignore[union-attr]
    for (i, j), v in uni.items():
        caps = re.search(rf"^P2P {i} {j} (\{{.*?\}}) ancestor", text, re.M)
        nvml = (
            {
                "read": {"error": "not captured: pynvml ArgumentError (NVML_P2P_CAPS_INDEX_READ is a tuple)"},
                "write": OK,
                "nvlink": OK,
                "atomics": OK,
                "pci": NS,
            }
            if caps
            else {}
        )
        d["pairs"][pair_key(bdfs[i], bdfs[j])] = {
            "nvml": nvml,
            "can_access_peer": True,
            "unidir_gbps": [v],
            "bidir_gbps": [bidir],
            "latency_us": [blt["P2P=Enabled Latency (P2P Writes) Matrix (us)"][i][j]],
            "control_unidir_gbps": blt["Unidirectional P2P=Disabled Bandwidth Matrix (GB/s)"][i][j],
            "control_latency_us": blt["P2P=Disabled Latency Matrix (us)"][i][j],
        }
    for i, b in enumerate(bdfs):
        h2d = float(re.search(rf"^h2d {i} ([\d.]+)", text, re.M).group(1))  # type: ignore[union-attr]
        d2h = float(re.search(rf"^d2h {i} ([\d.]+)", text, re.M).group(1))  # type: ignore[union-attr]
        d["gpus"][b] = {
            "name": "NVIDIA H200",
            "h2d_gbps": [h2d],
            "d2h_gbps": [d2h],
            "nvlink": {"active": 18, "version": None, "remotes": {}},
        }
    sweep = []
    for size, us, alg, bus, ok in re.findall(
        r"^allreduce +(\d+) B +([\d.]+) us +algbw +([\d.]+) +busbw +([\d.]+) GB/s "
        r"+correct=(\w+)",
        text,
        re.M,
    ):
        sweep.append(
            {
                "bytes": int(size),
                "time_us": float(us),
                "algbw_gbps": float(alg),
                "busbw_gbps": float(bus),
                "wrong": 0 if ok == "True" else 1,
                "nan": 0,
            }
        )
    judged = max((s for s in sweep if s["bytes"] <= JUDGED_BYTES), key=lambda s: s["bytes"])
    d["nccl"]["groups"][group_key(bdfs)] = {
        "gpus": bdfs,
        "sweep": sweep,
        "wrong": sum(s["wrong"] for s in sweep),
        "nan": 0,
        "judged_bytes": judged["bytes"],
        "busbw_gbps": [judged["busbw_gbps"]],
        "nccl": "2.28.9",
    }
    d["expect_fail"] = [
        *(f"test_p2p_capability[{a}->{b}]" for a, b in permutations(bdfs, 2)),
        *(f"test_cuda_ipc_roundtrip[{a}->{b}]" for a, b in permutations(bdfs, 2)),
        *(f"test_cuda_ipc_kernel_write[{a}->{b}]" for a, b in permutations(bdfs, 2)),
        "test_nccl_uses_p2p[all]",
    ]
    return d
