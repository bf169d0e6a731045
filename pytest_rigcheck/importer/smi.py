"""``nvidia-smi -q`` text -> the GPU entries of ``nvml.json`` (see ``gpu/state.py``).

Only what the text shows is filled; a field it lacks is left out (read back as "not captured") and
``N/A`` becomes an Unavailable "not supported". Section and key names are nvidia-smi's (its
``nvidia-smi -q`` output, documented in the nvidia-smi manual page, "GPU ATTRIBUTES"); older drivers
say "Clocks Throttle Reasons" and "Power Readings", newer "Clocks Event Reasons" and "GPU Power Readings".
"""

from __future__ import annotations

import re
from typing import Any

from ..gpu import state as S
from ..pcie import normalize_bdf
from .lspci import PasteError

_GPU = re.compile(r"^GPU (?P<bdf>[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7])\s*$")
_KV = re.compile(r"^(?P<ind>\s*)(?P<key>[^:]+?)\s*:\s(?P<val>.*)$")

# NVML clocks event reason bits (nvml.h nvmlClocksEventReason*), by nvidia-smi's labels.
REASONS = {
    "Idle": 0x1,
    "Applications Clocks Setting": 0x2,
    "SW Power Cap": 0x4,
    "HW Slowdown": 0x8,
    "Sync Boost": 0x10,
    "SW Thermal Slowdown": 0x20,
    "HW Thermal Slowdown": 0x40,
    "HW Power Brake Slowdown": 0x80,
    "Display Clock Setting": 0x100,
}
# Not (yet) NVML fields of gpu/state.py; kept under these names for the checks that read them.
F_BAR1_TOTAL = "bar1_total_b"  # nvmlDeviceGetBAR1MemoryInfo().bar1Total
F_RECOVERY_ACTION = "recovery_action"  # nvidia-smi -q "GPU Recovery Action"
NA = {"unavailable": "N/A in nvidia-smi -q (not supported)", "code": S.NOT_SUPPORTED}


def _w_to_mw(v: str) -> Any:
    m = re.match(r"^([0-9.]+)\s*W$", v.strip())
    return int(round(float(m.group(1)) * 1000)) if m else NA


def _mib(v: str) -> Any:
    m = re.match(r"^(\d+)\s*MiB$", v.strip())
    return int(m.group(1)) << 20 if m else NA


def _int(v: str) -> Any:
    m = re.match(r"^(\d+)x?$", v.strip())
    return int(m.group(1)) if m else NA


def parse_smi_q(text: str, where: str) -> dict[str, Any]:
    """Parse ``nvidia-smi -q``; raises ``PasteError`` if no ``GPU dddd:bb:dd.f`` section is found."""
    out: dict[str, Any] = {"gpus": []}
    gpu: dict[str, Any] | None = None
    path: list[tuple[int, str]] = []
    reasons: int | None = None
    ecc_unc: dict[str, Any] = {}
    for raw in text.split("\n"):
        line = raw.rstrip()
        if not line.strip():
            continue
        m = _GPU.match(line.strip())
        if m and not line.startswith((" ", "\t")):
            if gpu is not None:
                _finish(gpu, reasons, ecc_unc)
            gpu = {"index": len(out["gpus"]), "bdf": normalize_bdf(m["bdf"])}
            out["gpus"].append(gpu)
            path, reasons, ecc_unc = [], None, {}
            continue
        ind = len(line) - len(line.lstrip())
        kv = _KV.match(line)
        key = (kv["key"] if kv else line).strip()
        while path and path[-1][0] >= ind:
            path.pop()
        if kv is None:
            path.append((ind, key))
            continue
        val = kv["val"].strip()
        if gpu is None:
            if key == "Driver Version":
                out["driver"] = val
            elif key == "CUDA Version":
                mm = re.match(r"^(\d+)\.(\d+)$", val)
                if mm:
                    out["cuda"] = int(mm.group(1)) * 1000 + int(mm.group(2)) * 10
            continue
        sec = "/".join(p[1] for p in path)
        _field(gpu, sec, key, val, ecc_unc)
        if (
            sec.endswith(("Clocks Event Reasons", "Clocks Throttle Reasons", "HW Slowdown"))
            and key in REASONS
        ):
            reasons = (reasons or 0) | (REASONS[key] if val == "Active" else 0)
    if gpu is not None:
        _finish(gpu, reasons, ecc_unc)
    if not out["gpus"]:
        raise PasteError(f"{where}: no 'GPU 00000000:BB:DD.F' section: not nvidia-smi -q output")
    return out


def _field(g: dict[str, Any], sec: str, key: str, val: str, ecc_unc: dict[str, Any]) -> None:
    leaf = sec.rsplit("/", 1)[-1] if sec else ""
    if not sec:
        simple = {
            "Product Name": S.F_NAME,
            "GPU UUID": S.F_UUID,
            "VBIOS Version": S.F_VBIOS,
        }
        if key in simple:
            g[simple[key]] = val
        elif key == "Persistence Mode":
            g[S.F_PERSISTENCE] = 1 if val == "Enabled" else 0 if val == "Disabled" else NA
        elif key == "Display Active":
            g[S.F_DISPLAY_ACTIVE] = 1 if val == "Enabled" else 0 if val == "Disabled" else NA
        elif key == "GPU Recovery Action":  # drivers >= 550: None, Reset, Reboot, Drain P2P, Drain and Reset
            g[F_RECOVERY_ACTION] = val if val != "N/A" else NA
        elif key == "Performance State":
            mm = re.match(r"^P(\d+)$", val)
            g[S.F_PSTATE] = int(mm.group(1)) if mm else NA
        return
    if leaf == "BAR1 Memory Usage" and key == "Total":
        g[F_BAR1_TOTAL] = _mib(val)
    elif leaf == "FB Memory Usage":
        f = {"Total": S.F_MEM_TOTAL, "Used": S.F_MEM_USED, "Reserved": S.F_MEM_RESERVED}.get(key)
        if f:
            g[f] = _mib(val)
    elif leaf in ("Power Readings", "GPU Power Readings"):
        f = {
            "Power Draw": S.F_POWER_USAGE,
            "Instantaneous Power Draw": S.F_POWER_USAGE,
            "Current Power Limit": S.F_POWER_LIMIT,
            "Power Limit": S.F_POWER_LIMIT,
            "Default Power Limit": S.F_POWER_DEFAULT,
            "Enforced Power Limit": S.F_POWER_ENFORCED,
        }.get(key)
        if f and not (f == S.F_POWER_USAGE and S.F_POWER_USAGE in g and key == "Power Draw"):
            g[f] = _w_to_mw(val)
        if key in ("Min Power Limit", "Max Power Limit"):
            g.setdefault("_constraints", {})[key] = _w_to_mw(val)
    elif leaf == "PCIe Generation":
        if key == "Max":
            g[S.F_PCIE_MAX_GEN] = _int(val)
        elif key == "Current":
            g[S.F_PCIE_GEN] = _int(val)
    elif leaf == "Link Width":
        if key == "Max":
            g[S.F_PCIE_MAX_WIDTH] = _int(val)
        elif key == "Current":
            g[S.F_PCIE_WIDTH] = _int(val)
    elif leaf == "PCI" and key in ("Replays Since Reset", "Replay Counter"):
        g[S.F_PCIE_REPLAY] = _int(val)
    elif leaf == "Ecc Mode":
        v = 1 if val == "Enabled" else 0 if val == "Disabled" else None
        g.setdefault("_ecc", {})[key] = v
    elif (
        "ECC Errors/Volatile" in sec
        and "Uncorrectable" in key
        or sec.endswith("Volatile/Double Bit")
        and key == "Total"
    ):
        ecc_unc.setdefault("volatile", []).append(_int(val))
    elif (
        "ECC Errors/Aggregate" in sec
        and "Uncorrectable" in key
        or sec.endswith("Aggregate/Double Bit")
        and key == "Total"
    ):
        ecc_unc.setdefault("aggregate", []).append(_int(val))
    elif leaf == "Remapped Rows":
        g.setdefault("_remap", {})[key] = val
    elif leaf in ("Retired Pages",) and key in ("Pending Page Blacklist", "Pending"):
        g[S.F_RETIRED_PENDING] = 1 if val == "Yes" else 0 if val == "No" else NA


def _finish(g: dict[str, Any], reasons: int | None, ecc_unc: dict[str, Any]) -> None:
    if reasons is not None:
        g[S.F_CLOCK_REASONS] = reasons
    c = g.pop("_constraints", None)
    if c and "Min Power Limit" in c and "Max Power Limit" in c:
        lo, hi = c["Min Power Limit"], c["Max Power Limit"]
        g[S.F_POWER_CONSTRAINTS] = [lo, hi] if isinstance(lo, int) and isinstance(hi, int) else NA
    e = g.pop("_ecc", None)
    if e and "Current" in e and "Pending" in e:
        g[S.F_ECC_MODE] = [e["Current"], e["Pending"]] if None not in e.values() else NA
    for k, f in (("volatile", S.F_ECC_UNCORR_VOLATILE), ("aggregate", S.F_ECC_UNCORR_AGGREGATE)):
        vals = ecc_unc.get(k)
        if vals:
            g[f] = sum(vals) if all(isinstance(v, int) for v in vals) else NA
    r = g.pop("_remap", None)
    if r:
        try:
            vals = [
                int(r["Correctable Error"]),
                int(r["Uncorrectable Error"]),
                {"No": 0, "Yes": 1}[r["Pending"]],
                {"No": 0, "Yes": 1}[r["Remapping Failure Occurred"]],
            ]
            g[S.F_REMAPPED_ROWS] = vals
        except (KeyError, ValueError):
            g[S.F_REMAPPED_ROWS] = NA
