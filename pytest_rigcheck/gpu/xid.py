"""XID errors in the kernel log: parsing NVRM lines and reading the log.

Live, the log is ``/dev/kmsg`` (root, or ``kernel.dmesg_restrict=0``), which a snapshot cannot hold as a
file to replay; so a capture keeps its NVRM lines in ``nvml.json`` under ``kernel_log`` (a list of
lines, or an ``Unavailable`` saying why it could not be read), and replay reads them from there.

Format (leptonai/gpud ``components/accelerator/nvidia/xid/kmsg.go``)::

    NVRM: Xid (PCI:0000:05:00): 79, pid=1234, name=python, GPU has fallen off the bus.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass

from ..pcie import normalize_bdf
from .state import NO_PERMISSION, NOT_CAPTURED, SystemState, Unavailable, from_json_value

_XID = re.compile(
    r"NVRM: Xid \(PCI:(?P<addr>[0-9a-fA-F]{1,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2})(?:\.[0-7])?\): "
    r"(?P<xid>\d+)(?:, (?P<rest>.*))?"
)
# Treated as fatal by Azure's GPU health checks (Azure/azurehpc-health-checks): the GPU needs a reset or service.
FATAL_XIDS = frozenset({48, 56, 57, 58, 62, 63, 64, 65, 68, 69, 73, 74, 79, 80, 81, 92, 119, 120})


@dataclass(frozen=True)
class XidEvent:
    bdf: str  # function 0 of the GPU: the kernel prints domain:bus:device only
    xid: int
    text: str


def parse_xids(log: str) -> list[XidEvent]:
    """Every ``NVRM: Xid`` line of a kernel log."""
    out = []
    for line in log.splitlines():
        m = _XID.search(line)
        if m:
            out.append(XidEvent(normalize_bdf(m["addr"] + ".0"), int(m["xid"]), line.strip()))
    return out


def nvrm_lines(log: str) -> str:
    """The NVRM lines of a kernel log: what a capture keeps."""
    return "".join(line + "\n" for line in log.splitlines() if "NVRM" in line)


KERNEL_LOG_KEY = "kernel_log"


def recorded_kernel_log(system: SystemState) -> str | Unavailable:
    """The NVRM lines a capture kept in ``nvml.json`` (``kernel_log``)."""
    value = from_json_value(system.raw.get(KERNEL_LOG_KEY))
    if isinstance(value, Unavailable):
        return value
    if isinstance(value, list) and all(isinstance(x, str) for x in value):
        return "".join(x + "\n" for x in value)
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
