"""NVML state for the shipped snapshots: transcribed from the real captures, modelled for the modelled rigs.

``tools/make_snapshots.py`` calls ``modelled_nvml(name, gpu_bdfs)`` for each modelled rig and
``captured_nvml(name, captures_dir)`` for each real capture, and writes the result as ``nvml.json``;
``expect_fail`` (popped there) lists the GPU checks the state makes fail, for the manifest's promise.

Modelled values follow the cards' published figures: RTX 3090 350 W default (some partner boards ship
370 W or 390 W limits), RTX 3080 320 W, 3070 220 W, 3060 170 W, RTX Pro 6000 Blackwell 600 W (seed 000
caps it at 350 W to share one 110 V circuit). GeForce cards have no ECC and no row remapping (NVML: not
supported); the Pro 6000 has both.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path
from typing import Any

from ..pcie import normalize_bdf
from .state import (
    F_BAR1_TOTAL,
    F_CLOCK_REASONS,
    F_DISPLAY_ACTIVE,
    F_ECC_MODE,
    F_ECC_UNCORR_AGGREGATE,
    F_ECC_UNCORR_VOLATILE,
    F_LOAD,
    F_MEM_RESERVED,
    F_MEM_TOTAL,
    F_MEM_USED,
    F_NAME,
    F_NVLINK,
    F_NVLINK_REMOTE,
    F_PCIE_GEN,
    F_PCIE_MAX_GEN,
    F_PCIE_MAX_WIDTH,
    F_PCIE_REPLAY,
    F_PCIE_WIDTH,
    F_PERSISTENCE,
    F_POWER_CONSTRAINTS,
    F_POWER_DEFAULT,
    F_POWER_ENFORCED,
    F_POWER_LIMIT,
    F_POWER_USAGE,
    F_PROCESSES,
    F_PSTATE,
    F_RECOVERY_ACTION,
    F_REMAPPED_ROWS,
    F_RETIRED_PENDING,
    F_UUID,
    F_VBIOS,
    FORMAT,
    NOT_CAPTURED,
    NOT_SUPPORTED,
    Unavailable,
)

MIB = 1 << 20
_NS = Unavailable("not supported on this GPU/driver (NVML_ERROR_NOT_SUPPORTED)", NOT_SUPPORTED).to_json()

# name, memory MiB, default W, (min W, max W), max PCIe gen, ECC, vbios
CARDS: dict[str, tuple[str, int, int, tuple[int, int], int, bool, str]] = {
    "rtx3090": ("NVIDIA GeForce RTX 3090", 24576, 350, (100, 350), 4, False, "94.02.42.00.A9"),
    "rtx3090-390w": ("NVIDIA GeForce RTX 3090", 24576, 390, (100, 390), 4, False, "94.02.42.80.D3"),
    "rtx3080": ("NVIDIA GeForce RTX 3080", 10240, 320, (100, 320), 4, False, "94.02.27.00.0B"),
    "rtx3070": ("NVIDIA GeForce RTX 3070", 8192, 220, (100, 240), 4, False, "94.04.25.00.2E"),
    "rtx3060": ("NVIDIA GeForce RTX 3060", 12288, 170, (100, 170), 4, False, "94.06.14.00.1C"),
    "rtxpro6000": (
        "NVIDIA RTX PRO 6000 Blackwell Workstation Edition",
        97887,
        600,
        (150, 600),
        5,
        True,
        "98.02.2E.00.0A",
    ),
}
MODELLED_DRIVER, MODELLED_CUDA = "570.133.07", 12080


def _samples(gen: int, width: int, reasons: int, power_w: float, sm: int, n: int = 40) -> list[list[Any]]:
    """A steady window under load: ``n`` samples 75 ms apart after a 1 s warm-up."""
    return [
        [
            round(1.0 + i * 0.075, 3),
            gen,
            width,
            reasons,
            int(power_w * 1000) - (i * 37) % 900,
            sm - (i * 15) % 45,
        ]
        for i in range(n)
    ]


def _gpu(
    index: int,
    bdf: str,
    card: str,
    *,
    limit_w: int | None = None,
    gen_load: int | None = None,
    width_load: int = 16,
    idle_gen: int = 1,
    max_gen: int | None = None,
    display: bool = False,
    processes: list[dict[str, Any]] | None = None,
    replay: int = 0,
    bar1_b: int | None = None,
) -> dict[str, Any]:
    name, mem, default_w, (lo, hi), card_gen, ecc, vbios = CARDS[card]
    limit_w = limit_w or default_w
    max_gen = max_gen or card_gen
    gen_load = gen_load or max_gen
    procs = processes or []
    used = sum(p["used_b"] for p in procs)
    # Under load a capped card sits at its cap with the SW power cap reason (0x4); an uncapped one may too.
    reasons = 0x4 if limit_w < default_w or card.startswith("rtx30") else 0x0
    g: dict[str, Any] = {
        "index": index,
        "bdf": bdf,
        F_NAME: name,
        F_UUID: f"GPU-{zlib.crc32(f'{bdf}{card}'.encode()):08x}-0000-4000-8000-modelled0000",
        F_VBIOS: vbios,
        F_MEM_TOTAL: mem * MIB,
        F_MEM_USED: used,
        F_MEM_RESERVED: (338 if mem < 30000 else 616) * MIB,
        F_POWER_LIMIT: limit_w * 1000,
        F_POWER_ENFORCED: limit_w * 1000,
        F_POWER_DEFAULT: default_w * 1000,
        F_POWER_CONSTRAINTS: [lo * 1000, hi * 1000],
        F_POWER_USAGE: (22 if display else 14) * 1000,
        F_PERSISTENCE: 1,
        F_DISPLAY_ACTIVE: int(display),
        F_PCIE_MAX_GEN: max_gen,
        F_PCIE_MAX_WIDTH: 16,
        F_PCIE_GEN: idle_gen,
        F_PCIE_WIDTH: width_load,
        F_PCIE_REPLAY: replay,
        F_CLOCK_REASONS: 0x1,
        F_PSTATE: 8,
        F_ECC_MODE: [1, 1] if ecc else _NS,
        F_ECC_UNCORR_VOLATILE: 0 if ecc else _NS,
        F_ECC_UNCORR_AGGREGATE: 0 if ecc else _NS,
        F_RETIRED_PENDING: _NS,
        F_REMAPPED_ROWS: [0, 0, 0, 0] if ecc else _NS,
        F_NVLINK: {},
        F_PROCESSES: procs,
        # Resizable BAR on: BAR1 the next power of two at or above VRAM (32 GiB on a 24 GiB RTX 3090).
        F_BAR1_TOTAL: bar1_b or 1 << (mem * MIB - 1).bit_length(),
        F_LOAD: {
            "samples": _samples(
                gen_load, width_load, reasons, limit_w * 0.98, 1695 if card.startswith("rtx30") else 2400
            ),
            "how": "modelled: a steady loaded window",
            "window_s": 3.0,
            "replay_before": replay,
            "replay_after": replay,
        },
    }
    return g


def _system(
    gpus: list[dict[str, Any]],
    origin: str,
    driver: str = MODELLED_DRIVER,
    cuda: int = MODELLED_CUDA,
    kernel_log: list[str] | dict[str, str] | None = None,
    expect_fail: list[str] | None = None,
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "origin": origin,
        "driver": driver,
        "cuda": cuda,
        "nvml": f"12.{driver}",
        "gpus": gpus,
        "kernel_log": kernel_log
        if kernel_log is not None
        else [f"[    3.152831] NVRM: loading NVIDIA UNIX x86_64 Kernel Module  {driver}"],
        "expect_fail": expect_fail or [],
    }


def modelled_nvml(snapshot_name: str, bdfs: list[str]) -> dict[str, Any] | None:
    """Believable NVML state for a modelled rig, by snapshot name; ``None`` for a name this module does not know."""
    origin = f"modelled for {snapshot_name} (pytest_rigcheck.gpu.models)"
    n = snapshot_name
    if n.startswith("rtx3090x2"):
        # Board 0: Founders Edition, 350 W default. Board 1: a partner card with a 390 W BIOS, capped at 350 W.
        g0 = _gpu(0, bdfs[0], "rtx3090")
        g1 = _gpu(
            1,
            bdfs[1],
            "rtx3090-390w",
            limit_w=350,
            idle_gen=4,
            gen_load=3 if n.endswith("gen3") else None,
            width_load=8 if n.endswith("riser-x8") else 16,
        )
        fail = [f"test_link_under_load[{bdfs[1]}]"] if n.endswith(("gen3", "riser-x8")) else []
        if n.endswith("nvlink-no-bridge"):
            # RTX 3090s have 4 NVLinks; without a bridge NVML reports every one inactive, with no remote end.
            for g in (g0, g1):
                g[F_NVLINK] = {str(k): 0 for k in range(4)}
                g[F_NVLINK_REMOTE] = {str(k): {"type": "unknown", "p2p": 1} for k in range(4)}
        if n.endswith("small-bar1"):
            # Resizable BAR off: the legacy 256 MiB BAR1 (tinygrad/open-gpu-kernel-modules#13).
            for g in (g0, g1):
                g[F_BAR1_TOTAL] = 256 * MIB
        if n.endswith("power-390w"):
            g1 = _gpu(1, bdfs[1], "rtx3090-390w", idle_gen=4)  # the cap did not survive a reboot: 390 W
            fail = [f"test_power_limit[{bdfs[1]}]"]
        return _system([g0, g1], origin, expect_fail=fail)
    if n.startswith("rtxpro6000x4"):
        # Gen5 cards behind a Gen4 switch: NVML's max is the lesser of card and system, Gen4.
        lost = n.endswith("powercap-lost")
        gpus = [
            _gpu(i, b, "rtxpro6000", limit_w=None if (lost and i == 2) else 350, max_gen=4)
            for i, b in enumerate(bdfs)
        ]
        fail = [f"test_power_limit[{bdfs[2]}]", f"test_circuit_budget[{n}]"] if lost else []
        if n.endswith("xid95-reset"):
            # scitix/sichek#51: after an Xid 95 (uncontained ECC) GPU1 needs a reset; ECC and row-remap counters
            # read 0; the driver's NV_ERR_RESET_REQUIRED lines name no GPU; NVML's recovery action says Reset.
            for g in gpus:
                g[F_RECOVERY_ACTION] = 1 if g is gpus[1] else 0
            bus = bdfs[1].rsplit(":", 1)[0]
            log = [
                f"[    3.152831] NVRM: loading NVIDIA UNIX x86_64 Kernel Module  {MODELLED_DRIVER}",
                f"[52011.300000] NVRM: Xid (PCI:{bus}:00): 95, pid=4242, name=python, Uncontained ECC error",
                "[52100.000001] NVRM: nvAssertOkFailedNoLog: Assertion failed: Reset required "
                "[NV_ERR_RESET_REQUIRED] (0x00000062) returned from status @ kernel_channel.c:2874",
            ]
            return _system(gpus, origin, kernel_log=log, expect_fail=[f"test_no_fatal_xid[{bdfs[1]}]"])
        return _system(gpus, origin, expect_fail=fail)
    if n.startswith("rtx3080-3070-3060"):
        xorg = [
            {"pid": 1873, "name": "/usr/lib/xorg/Xorg", "used_b": 742 * MIB, "kind": "graphics"},
            {"pid": 2290, "name": "/usr/bin/gnome-shell", "used_b": 281 * MIB, "kind": "graphics"},
        ]
        gpus = [
            _gpu(0, bdfs[0], "rtx3080", display=True, processes=xorg),
            _gpu(1, bdfs[1], "rtx3070"),
            _gpu(2, bdfs[2], "rtx3060"),
        ]
        return _system(
            gpus, origin, expect_fail=[f"test_tp_groups_homogeneous[{n}]", f"test_vram_free[{bdfs[0]}]"]
        )
    return None


# -- real captures --------------------------------------------------------------------------------


def captured_nvml(snapshot_name: str, captures: Path) -> dict[str, Any] | None:
    """NVML state of a real capture in ``captures`` (../shared/captures), transcribed from its files."""
    if snapshot_name == "h200x2-nvlink":
        return _h200x2(captures / "h200x2-nvlink")
    if snapshot_name in ("h100x1", "h100x1-nonroot"):
        return _h100x1(captures / "h100x1")
    return None


def _not_captured(what: str) -> dict[str, str]:
    return Unavailable(f"not captured: {what}", NOT_CAPTURED).to_json()


def _smi_sections(text: str) -> dict[str, str]:
    """``nvidia-smi -q`` text split by ``GPU 00000000:00:06.0`` headings."""
    parts = re.split(r"^GPU ([0-9A-Fa-f]{8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7])$", text, flags=re.M)
    return {normalize_bdf(parts[i]): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def _smi(section: str, *keys: str) -> str:
    """The value of a nested ``nvidia-smi -q`` key path, e.g. ``("FB Memory Usage", "Used")``."""
    pos = 0
    for key in keys[:-1]:
        m = re.compile(rf"^\s*{re.escape(key)}\s*$", re.M).search(section, pos)
        if not m:
            raise KeyError(keys)
        pos = m.end()
    m = re.compile(rf"^\s*{re.escape(keys[-1])}\s*: (.*)$", re.M).search(section, pos)
    if not m:
        raise KeyError(keys)
    return m.group(1).strip()


def _mib(text: str) -> int:
    return int(text.split()[0]) * MIB


def _h200x2(d: Path) -> dict[str, Any]:
    meas = (d / "measurements.txt").read_text()
    smi = _smi_sections((d / "nvidia-smi-q.txt").read_text())
    head = re.search(r"^driver (\S+) nvml (\S+) cuda (\d+)$", meas, re.M)
    assert head, "measurements.txt: no driver line"
    gpus = []
    for m in re.finditer(r"^GPU (\d+) (\{.*\})$", meas, re.M):
        r = json.loads(m.group(2))
        bdf = normalize_bdf(r["busId"])
        sec = smi[bdf]
        total = int(re.search(r"total: (\d+) B", r["mem"]).group(1))  # type: ignore[union-attr]
        ecc_vol = int(_smi(sec, "ECC Errors", "Volatile", "DRAM Uncorrectable")) + int(
            _smi(sec, "ECC Errors", "Volatile", "SRAM Uncorrectable SEC-DED")
        )
        ecc_agg = int(_smi(sec, "ECC Errors", "Aggregate", "DRAM Uncorrectable")) + int(
            _smi(sec, "ECC Errors", "Aggregate", "SRAM Uncorrectable SEC-DED")
        )
        gpus.append(
            {
                "index": int(m.group(1)),
                "bdf": bdf,
                F_NAME: r["name"],
                F_UUID: r["uuid"],
                F_VBIOS: r["vbios"],
                # NVML v1 counts the driver's reservation as used (644939776 B); nvidia-smi splits it off.
                F_MEM_TOTAL: total,
                F_MEM_USED: _mib(_smi(sec, "FB Memory Usage", "Used")),
                F_MEM_RESERVED: _mib(_smi(sec, "FB Memory Usage", "Reserved")),
                F_POWER_LIMIT: r["power_limit_mw"],
                F_POWER_ENFORCED: r["enforced_mw"],
                F_POWER_DEFAULT: r["default_mw"],
                F_POWER_CONSTRAINTS: r["constraints"],
                F_POWER_USAGE: r["power_usage_mw"],
                F_PERSISTENCE: r["persistence"],
                F_DISPLAY_ACTIVE: 0 if _smi(sec, "Display Active") == "Disabled" else 1,
                F_PCIE_MAX_GEN: r["max_gen"],
                F_PCIE_MAX_WIDTH: r["max_width"],
                F_PCIE_GEN: r["curr_gen"],
                F_PCIE_WIDTH: r["curr_width"],
                F_PCIE_REPLAY: r["pcie_replay"],
                F_CLOCK_REASONS: r["clocks_event_reasons"],
                F_PSTATE: int(_smi(sec, "Performance State").lstrip("P")),
                F_ECC_MODE: r["ecc_mode"],
                F_ECC_UNCORR_VOLATILE: ecc_vol,
                F_ECC_UNCORR_AGGREGATE: ecc_agg,
                F_RETIRED_PENDING: _NS
                if _smi(sec, "Retired Pages", "Pending Page Blacklist") == "N/A"
                else 0,
                F_REMAPPED_ROWS: [
                    int(_smi(sec, "Remapped Rows", "Correctable Error")),
                    int(_smi(sec, "Remapped Rows", "Uncorrectable Error")),
                    int(_smi(sec, "Remapped Rows", "Pending") == "Yes"),
                    int(_smi(sec, "Remapped Rows", "Remapping Failure Occurred") == "Yes"),
                ],
                F_NVLINK: {k: int(v) for k, v in r["nvlink_states"].items()},
                F_PROCESSES: [] if _smi(sec, "Processes") == "None" else _not_captured("process list"),
                F_LOAD: _not_captured(
                    "the capture read NVML at idle only; P2P and NCCL loads were not sampled"
                ),
            }
        )
    p2p = {}
    for m in re.finditer(r"^P2P (\d) (\d) (\{.*\}) ancestor (\d+)$", meas, re.M):
        caps = json.loads(m.group(3))
        p2p[f"{m.group(1)}-{m.group(2)}"] = {
            "caps": {
                k: (
                    _not_captured(f"pynvml call failed: {v[4:]}")
                    if isinstance(v, str) and v.startswith("ERR")
                    else v
                )
                for k, v in caps.items()
            },
            "common_ancestor": int(m.group(4)),
        }
    out = _system(
        gpus,
        "transcribed from a capture of a real 2x H200 NVLink machine (its NVML readings and nvidia-smi -q)",
        driver=head.group(1),
        cuda=int(head.group(3)),
        kernel_log=_not_captured("the capture kept no kernel log"),
        expect_fail=[],
    )
    out["nvml"] = head.group(2)
    out["p2p"] = p2p  # nvmlDeviceGetP2PStatus per pair; READ failed in pynvml (ArgumentError): not captured
    bdfs = [g["bdf"] for g in gpus]
    out["expect_fail"] = sorted(
        f"{t}[{b}]"
        for b in bdfs
        for t in (
            "test_link_not_flapping",
            "test_clock_event_reasons",
            "test_no_pcie_replays_under_load",
            "test_no_fatal_xid",
        )
    )
    return out


def _h100x1(d: Path) -> dict[str, Any]:
    root = ET.parse(d / "nvidia-smi-q.xml").getroot()
    g = root.find("gpu")
    assert g is not None

    def x(path: str) -> str:
        el = g.find(path)
        if el is None or el.text is None:
            raise KeyError(path)
        return el.text.strip()

    def w(path: str) -> int:
        return int(round(float(x(path).split()[0]) * 1000))

    bdf = normalize_bdf(g.get("id", x("pci/pci_bus_id")))
    idle_load = (d / "nvml-idle-load.txt").read_text()
    load = re.search(
        r"^load 0 gen (\d+) width (\d+) pstate \d+ reasons (0x[0-9a-f]+) sm (\d+) W ([\d.]+)$",
        idle_load,
        re.M,
    )
    assert load, "nvml-idle-load.txt: no load line"
    gen, width, reasons, sm, watts = (
        int(load[1]),
        int(load[2]),
        int(load[3], 16),
        int(load[4]),
        float(load[5]),
    )
    ecc = [x(f"ecc_errors/{k}/dram_uncorrectable") for k in ("volatile", "aggregate")]
    sram = [x(f"ecc_errors/{k}/sram_uncorrectable_secded") for k in ("volatile", "aggregate")]
    state = {
        "index": 0,
        "bdf": bdf,
        F_NAME: x("product_name"),
        F_UUID: x("uuid"),
        F_VBIOS: x("vbios_version"),
        F_MEM_TOTAL: _mib(x("fb_memory_usage/total")),
        F_MEM_USED: _mib(x("fb_memory_usage/used")),
        F_MEM_RESERVED: _mib(x("fb_memory_usage/reserved")),
        F_POWER_LIMIT: w("gpu_power_readings/current_power_limit"),
        F_POWER_ENFORCED: w("gpu_power_readings/current_power_limit"),
        F_POWER_DEFAULT: w("gpu_power_readings/default_power_limit"),
        F_POWER_CONSTRAINTS: [
            w("gpu_power_readings/min_power_limit"),
            w("gpu_power_readings/max_power_limit"),
        ],
        F_POWER_USAGE: w("gpu_power_readings/instant_power_draw"),
        F_PERSISTENCE: int(x("persistence_mode") == "Enabled"),
        F_DISPLAY_ACTIVE: int(x("display_active") != "Disabled"),
        F_PCIE_MAX_GEN: int(x("pci/pci_gpu_link_info/pcie_gen/max_link_gen")),
        F_PCIE_MAX_WIDTH: int(x("pci/pci_gpu_link_info/link_widths/max_link_width").rstrip("x")),
        F_PCIE_GEN: int(x("pci/pci_gpu_link_info/pcie_gen/current_link_gen")),
        F_PCIE_WIDTH: int(x("pci/pci_gpu_link_info/link_widths/current_link_width").rstrip("x")),
        F_PCIE_REPLAY: int(x("pci/replay_counter")),
        F_CLOCK_REASONS: 0x1,
        F_PSTATE: 0,
        F_ECC_MODE: [
            int(x("ecc_mode/current_ecc") == "Enabled"),
            int(x("ecc_mode/pending_ecc") == "Enabled"),
        ],
        F_ECC_UNCORR_VOLATILE: int(ecc[0]) + int(sram[0]),
        F_ECC_UNCORR_AGGREGATE: int(ecc[1]) + int(sram[1]),
        F_RETIRED_PENDING: _NS if x("retired_pages/pending_retirement") == "N/A" else 0,
        F_REMAPPED_ROWS: [
            int(x("remapped_rows/remapped_row_corr")),
            int(x("remapped_rows/remapped_row_unc")),
            int(x("remapped_rows/remapped_row_pending") == "Yes"),
            int(x("remapped_rows/remapped_row_failure") == "Yes"),
        ],
        F_NVLINK: _not_captured("nvidia-smi -q -x of this capture has no NVLink section"),
        F_PROCESSES: [] if not list(g.find("processes") or []) else _not_captured("process list"),
        # One reading under a matrix-multiply load (nvml-idle-load.txt): no window, no replay counter around it.
        F_LOAD: {
            "samples": [[0.0, gen, width, reasons, int(watts * 1000), sm]],
            "how": "one NVML reading under a matrix-multiply load (nvml-idle-load.txt)",
            "window_s": 0.0,
            "replay_before": None,
            "replay_after": None,
        },
    }
    log = [line for line in (d / "dmesg.txt").read_text().splitlines() if "NVRM" in line]
    out = _system(
        [state],
        "transcribed from a capture of a real 1x H100 machine (nvidia-smi -q -x, NVML idle and load readings, dmesg)",
        driver=root.findtext("driver_version", "").strip(),
        cuda=_cuda(root.findtext("cuda_version", "")),
        kernel_log=log,
    )
    out["nvml"] = _not_captured("NVML version")
    out["expect_fail"] = sorted(
        f"{t}[{bdf}]"
        for t in ("test_link_not_flapping", "test_no_pcie_replays_under_load", "test_nvlinks_up")
    )
    return out


def _cuda(text: str) -> int:
    major, _, minor = text.strip().partition(".")
    return int(major) * 1000 + int(minor or 0) * 10
