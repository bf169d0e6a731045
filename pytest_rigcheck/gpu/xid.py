"""XID errors and the driver's other fault messages in the kernel log, judged by NVIDIA's Xid catalog.

Live, the log is ``/dev/kmsg`` (root, or ``kernel.dmesg_restrict=0``), which a snapshot cannot hold as a
file to replay; so a capture keeps the driver's lines in ``nvml.json`` under ``kernel_log`` (a list of
lines, or an ``Unavailable`` saying why it could not be read), and replay reads them from there.

Formats (gpud ``components/accelerator/nvidia/xid/kmsg.go``; the kernel's ``really_probe``)::

    NVRM: Xid (PCI:0000:05:00): 79, pid=1234, name=python, GPU has fallen off the bus.
    NVRM: GPU at PCI:0000:05:00: GPU-<uuid> ... has fallen off the bus.
    NVRM: GPU 0000:05:00.0: RmInitAdapter failed! (0x22:0x56:667)
    NVRM: The NVIDIA probe routine failed for 1 device(s).
    nvidia: probe of 0000:05:00.0 failed with error -1
    NVRM: nvAssertOkFailedNoLog: Assertion failed: Reset required [NV_ERR_RESET_REQUIRED] (0x00000062) ...

Each event is judged by the resolution bucket NVIDIA's Xid catalog gives it (``xid_catalog``): a GPU
reset or worse fails the GPU, an application restart warns, IGNORE is informational.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass

from ..pcie import normalize_bdf
from .state import CORRUPT, NO_PERMISSION, NOT_CAPTURED, SystemState, Unavailable, from_json_value
from .xid_catalog import CATALOG, CATALOG_EDITION, CATALOG_URL

_XID = re.compile(
    r"NVRM: Xid \(PCI:(?P<addr>[0-9a-fA-F]{1,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2})(?:\.[0-7])?\): "
    r"(?P<xid>\d+)(?:, (?P<rest>.*))?"
)
# A PCI address in a driver message: "PCI:0000:05:00" or "0000:05:00.0" (domain:bus:device[.fn]).
_ADDR = re.compile(r"(?:PCI:|\b)([0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2})(?:\.[0-7])?(?![0-9a-fA-F])")
# The driver's fault messages that carry no Xid number: kind -> pattern.
_MESSAGES = {
    "fallen_off_bus": re.compile(r"fallen off the bus", re.I),
    "rm_init_failed": re.compile(r"RmInitAdapter failed|rm_init_adapter failed", re.I),
    "probe_failed": re.compile(r"probe routine failed|\bprobe of \S+ failed", re.I),
    "reset_required": re.compile(r"NV_ERR_RESET_REQUIRED|\bReset required\b", re.I),
}
# Kept by a capture besides the NVRM lines: the kernel's own "nvidia: probe of ... failed".
_KEEP = re.compile(r"NVRM|\bnvidia\b.*\bprobe of\b", re.I)

FAIL, WARN, INFO = "fail", "warn", "info"

# Immediate-action bucket -> (severity, what to do). The buckets are the catalog's (xid_catalog).
_BUCKETS: dict[str, tuple[str, str]] = {
    "RESET_GPU": (FAIL, "reset the GPU"),
    "RESTART_BM": (FAIL, "reboot the machine"),
    "RESTART_VM": (FAIL, "restart the virtual machine"),
    "WORKFLOW_XID_48": (FAIL, "drain and reset the GPU (NVIDIA's Xid 48 double-bit ECC workflow)"),
    "WORKFLOW_NVLINK_ERR": (
        FAIL,
        "drain and reset the GPU, then check its NVLinks (NVIDIA's NVLink error workflow)",
    ),
    "WORKFLOW_NVLINK5_ERR": (
        FAIL,
        "NVIDIA's NVLink5 workflow: the error status decides; drain and reset the GPU",
    ),
    "CONTACT_SUPPORT": (FAIL, "report it to NVIDIA (`sudo nvidia-bug-report.sh`)"),
    "CHECK_MECHANICALS": (FAIL, "check the card's auxiliary power cables and seating"),
    "UPDATE_SWFW": (FAIL, "update the driver and GPU firmware"),
    "RESTART_APP": (WARN, "restart the application"),
    "WORKFLOW_XID_45": (WARN, "restart the application (Xid 45 follows another error: see that one)"),
    "CHECK_UVM": (WARN, "restart the application; check the nvidia-uvm module"),
    "IGNORE": (INFO, "no action needed"),
}
# Xids the catalog edition lists without a bucket, where NVIDIA says elsewhere what they mean: 171/172 give
# the DRAM/SRAM detail of an Xid 48 (docs.nvidia.com/deploy/a100-gpu-mem-error-mgmt/user-visible-statistics.html);
# 162-165 report the power-smoothing circuitry's state.
_UNBUCKETED = {
    171: "WORKFLOW_XID_48",
    172: "WORKFLOW_XID_48",
    162: "IGNORE",
    163: "IGNORE",
    164: "IGNORE",
    165: "IGNORE",
}
# NVIDIA's own words for the memory-error Xids (a100-gpu-mem-error-mgmt/user-visible-statistics.html).
_GLOSS = {
    48: "uncorrectable double-bit ECC error",
    94: "contained ECC error",
    95: "uncontained ECC error",
    63: "row-remapping recorded",
    64: "row-remapping failed",
    79: "GPU has fallen off the bus",
}

# nvmlGpuRecoveryAction_t (NVML_FI_DEV_GET_GPU_RECOVERY_ACTION): name and what to do. Meanings from
# docs.nvidia.com/deploy/a100-gpu-mem-error-mgmt/error-recovery-and-response-flags.html; values 5-7 from
# nvidia-ml-py 13.615 (pynvml NVML_GPU_RECOVERY_ACTION_*).
RECOVERY_ACTIONS: dict[int, tuple[str, str]] = {
    0: ("None", "no recovery action needed"),
    1: ("GPU Reset", "stop every process on the GPU and reset it (`sudo nvidia-smi -r -i {i}`)"),
    2: ("Node Reboot", "reboot the machine: the fault may have left the OS inconsistent"),
    3: (
        "Drain P2P",
        "stop every process doing peer-to-peer traffic and disable UVM persistence mode, then read the "
        "recovery action again (`nvidia-smi -q -i {i}`)",
    ),
    4: (
        "Drain and Reset",
        "let running work finish, start none, then reset the GPU (`sudo nvidia-smi -r -i {i}`)",
    ),
    5: ("Recover IMEX Domain", "recover the IMEX domain the GPU belongs to"),
    6: ("Bus Reset", "reset the GPU's PCIe bus (a reboot does it)"),
    7: ("System Reboot", "reboot the machine"),
}


@dataclass(frozen=True)
class DriverEvent:
    """One fault the driver logged: an Xid, or a message without an Xid number (``kind``)."""

    bdf: str | None  # function 0 of the GPU (the kernel prints domain:bus:device); None: the line names none
    xid: int | None
    kind: str  # "xid", "fallen_off_bus", "rm_init_failed", "probe_failed", "reset_required"
    text: str


@dataclass(frozen=True)
class Judged:
    """A ``DriverEvent`` with NVIDIA's verdict on it: severity (fail/warn/info), name, resolution."""

    event: DriverEvent
    severity: str
    name: str  # "Xid 95 (ROBUST_CHANNEL_UNCONTAINED_ERROR: Uncontained memory error; uncontained ECC error)"
    resolution: str  # "RESET_GPU: reset the GPU"

    @property
    def key(self) -> str:
        return f"Xid {self.event.xid}" if self.event.xid is not None else self.event.kind


def _addr(text: str) -> str | None:
    m = _ADDR.search(text)
    if not m:
        return None
    try:
        return normalize_bdf(m.group(1) + ".0")
    except ValueError:
        return None


def parse_events(log: str) -> list[DriverEvent]:
    """Every Xid line of a kernel log, and every driver fault message that carries no Xid number."""
    out = []
    for raw in log.splitlines():
        line = raw.strip()
        m = _XID.search(line)
        if m:
            out.append(DriverEvent(normalize_bdf(m["addr"] + ".0"), int(m["xid"]), "xid", line))
            continue
        for kind, pat in _MESSAGES.items():
            if pat.search(line):
                out.append(DriverEvent(_addr(line), None, kind, line))
                break
    return out


_MESSAGE_JUDGED = {
    "fallen_off_bus": (
        "the GPU has fallen off the bus (as Xid 79)",
        "RESTART_BM: reboot the machine; reseat the card and its riser, check its power cables",
    ),
    "rm_init_failed": (
        "the driver could not initialise the GPU (RmInitAdapter failed)",
        "reboot the machine; if it persists, reseat the card, check its power cables, update the driver",
    ),
    "probe_failed": (
        "the driver's probe of the GPU failed (the GPU is not usable)",
        "reboot the machine; if it persists, reseat the card, check its power cables, update the driver",
    ),
    "reset_required": (
        "the driver returned NV_ERR_RESET_REQUIRED (the GPU must be reset)",
        "RESET_GPU: reset the GPU",
    ),
}


def judge(event: DriverEvent) -> Judged:
    """NVIDIA's verdict on one event: an Xid by its catalog bucket, a driver message by what it says."""
    if event.xid is None:
        name, resolution = _MESSAGE_JUDGED[event.kind]
        return Judged(event, FAIL, name, resolution)
    x = event.xid
    info = CATALOG.get(x)
    if info is None:
        return Judged(
            event,
            WARN,
            f"Xid {x} (not in {CATALOG_EDITION})",
            f"unknown to the catalog: look it up at {CATALOG_URL}",
        )
    gloss = f"; {_GLOSS[x]}" if x in _GLOSS else ""
    name = f"Xid {x} ({info.mnemonic}: {info.description}{gloss})"
    bucket = info.immediate or _UNBUCKETED.get(x, "")
    if bucket == "XID_154":
        return _xid154(event, name)
    if bucket not in _BUCKETS:
        return Judged(event, WARN, name, f"no resolution bucket in {CATALOG_EDITION}: see {CATALOG_URL}")
    severity, todo = _BUCKETS[bucket]
    return Judged(event, severity, name, f"{bucket}: {todo}")


_ACTION_TO = re.compile(r"\bto (?:0x)?([0-9a-fA-F]+)\b")


def _xid154(event: DriverEvent, name: str) -> Judged:
    # "GPU recovery action changed from 0x0 (None) to 0x1 (Reset)": the new action decides.
    m = _ACTION_TO.search(event.text.split("changed", 1)[-1])
    action = int(m.group(1), 16) if m else None
    if action == 0:
        return Judged(event, INFO, name, "recovery action back to None: no action needed")
    if action in RECOVERY_ACTIONS:
        label, todo = RECOVERY_ACTIONS[action]
        return Judged(event, FAIL, name, f"recovery action {label}: {todo.format(i='N')}")
    return Judged(event, FAIL, name, "the new recovery action is not in the line: read it (`nvidia-smi -q`)")


def nvrm_lines(log: str) -> str:
    """The driver's lines of a kernel log (NVRM, and the kernel's ``nvidia: probe of ... failed``): what a capture keeps."""
    return "".join(line + "\n" for line in log.splitlines() if _KEEP.search(line))


KERNEL_LOG_KEY = "kernel_log"


def recorded_kernel_log(system: SystemState) -> str | Unavailable:
    """The NVRM lines a capture kept in ``nvml.json`` (``kernel_log``)."""
    value = from_json_value(system.raw.get(KERNEL_LOG_KEY))
    if isinstance(value, Unavailable):
        return value
    if isinstance(value, list) and all(isinstance(x, str) for x in value):
        return "".join(x + "\n" for x in value)
    if KERNEL_LOG_KEY in system.raw:
        return Unavailable(
            f"nvml.json field {KERNEL_LOG_KEY}: {value!r} is not a list of lines: corrupt reading", CORRUPT
        )
    return Unavailable(f"the kernel log was not captured (no {KERNEL_LOG_KEY} in nvml.json)", NOT_CAPTURED)


def read_kmsg(path: str = "/dev/kmsg") -> str | Unavailable:
    """Read every record buffered in ``/dev/kmsg`` without blocking (Documentation/ABI/testing/dev-kmsg)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except PermissionError:
        return Unavailable(
            f"{path}: permission denied (run as root, or sysctl kernel.dmesg_restrict=0)", NO_PERMISSION
        )
    except OSError as exc:
        return Unavailable(f"{path}: {exc.strerror}")
    lines: list[str] = []
    try:
        while True:
            try:
                rec = os.read(fd, 8192)
            except BlockingIOError:
                break  # EAGAIN: no more records
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    continue  # records were overwritten while reading: go on with the next
                return Unavailable(f"{path}: {exc.strerror}")
            if not rec:
                break
            # "prio,seq,usec,flags;message\n": keep the message.
            text = rec.decode("utf-8", "replace")
            lines.append(text.split(";", 1)[-1].splitlines()[0] if text else "")
    finally:
        os.close(fd)
    return "\n".join(lines) + "\n"
