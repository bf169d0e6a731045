"""Capture the live machine as a snapshot: the sysfs and procfs files the checks read, links kept.

Read-only: it only reads files (as root it gets the full 4096-byte config space, with ACS and AER;
as non-root the kernel gives 64 bytes and the manifest records that). ``capture_with_gaps`` also says
what the snapshot lacks (NVML state, P2P figures, the kernel log, extended config space), for the
``rigcheck capture`` command to print. The destination is checked before any work is done.
"""

from __future__ import annotations

import datetime
import importlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from . import __version__
from .errors import RigcheckError
from .snapshot import MANIFEST, pack
from .testing import dump_toml

DEVICE_ATTRS = (
    "vendor",
    "device",
    "class",
    "subsystem_vendor",
    "subsystem_device",
    "revision",
    "numa_node",
    "local_cpulist",
    "current_link_speed",
    "current_link_width",
    "max_link_speed",
    "max_link_width",
    "config",
    "resource",  # BAR addresses and sizes (gpu/bar.py: BAR1 against VRAM)
    "enable",
    "reset_method",
    "aer_dev_correctable",
    "aer_dev_fatal",
    "aer_dev_nonfatal",
    "power/runtime_status",
    "power/control",
)
DEVICE_LINKS = ("driver", "iommu_group")
FILES = (
    "proc/cmdline",
    "proc/version",
    "proc/driver/nvidia/version",
    "sys/module/nvidia/version",
    "sys/module/pcie_aspm/parameters/policy",
)
# Feature plugins add their recorded state: "module:function"(out_dir) -> dict of manifest notes.
EXTRA_CAPTURERS = (
    "pytest_rigcheck.gpu.capture:capture_nvml",
    "pytest_rigcheck.p2p.capture:capture_p2p",
    "pytest_rigcheck.runenv.capture:capture_env",
)


class CaptureError(RigcheckError):
    """The capture cannot be written where asked (folder missing, not writable, path taken)."""


def check_destination(out: Path) -> None:
    """Refuse ``out`` before any work: its folder must exist and be writable, and ``out`` must be new (or an
    empty directory, for a directory snapshot). Raises ``CaptureError`` with one line saying why."""
    archive = out.name.endswith((".tar.gz", ".tgz"))
    if out.is_dir() and not archive:
        if any(out.iterdir()):
            raise CaptureError(f"{out} is a folder that is not empty; choose a new path")
        folder = out
    elif out.is_symlink() or (out.exists() and not out.is_dir()):
        what = "a link" if out.is_symlink() else "a file"
        raise CaptureError(f"{out} exists and is {what}; choose a new path")
    elif out.exists():
        raise CaptureError(f"{out} already exists; choose a new path")
    else:
        folder = out.parent
    check_folder(out, folder)


def check_folder(out: Path, folder: Path, error: type[RigcheckError] = CaptureError) -> None:
    """Refuse to write ``out`` unless ``folder`` (the one it goes into) exists and this user can write
    there (``options.folder_problem``); never creates it. Raises ``error`` with one line naming ``out``
    and the folder. Used by ``rigcheck capture`` and ``rigcheck merge --out``."""
    from .options import folder_problem

    why = folder_problem(folder)
    if why:
        raise error(f"cannot write {out}: {why}")


def capture(out: Path, root: Path = Path("/"), name: str | None = None) -> Path:
    """Write a snapshot of ``root`` (normally ``/``) to ``out`` (a directory, or ``*.tar.gz``)."""
    return capture_with_gaps(out, root, name)[0]


def capture_with_gaps(out: Path, root: Path = Path("/"), name: str | None = None) -> tuple[Path, list[str]]:
    """Like ``capture``; also returns what the snapshot lacks, one line each (``"NVML state: ..."``).

    Raises ``CaptureError`` before any work when ``out`` cannot be written; a failure midway leaves no
    temporary folder behind.
    """
    check_destination(out)
    archive = out if out.name.endswith((".tar.gz", ".tgz")) else None
    work = Path(tempfile.mkdtemp(prefix="rigcheck-capture-")) if archive else out
    try:
        gaps = _capture(work, root, name)
        if archive:
            pack(work, archive)
    finally:
        if archive:
            shutil.rmtree(work, ignore_errors=True)
    return out, gaps


# What each capturer's manifest note is about, for the lines saying what was not captured.
GAP_NAMES = {
    "nvml": "NVML state (nvml.json: power, clocks, health, versions)",
    "p2p": "P2P/NCCL figures (p2p.json)",
    "kernel_log": "kernel log (XID lines)",
}


def _capture(work: Path, root: Path, name: str | None) -> list[str]:
    work.mkdir(parents=True, exist_ok=True)
    empty: list[str] = []
    devices = root / "sys/bus/pci/devices"
    for entry in sorted(os.listdir(devices)):
        target = os.readlink(devices / entry)
        _symlink(work / "sys/bus/pci/devices" / entry, target)
        real = (devices / entry).resolve()
        rel = real.relative_to(root)
        for attr in DEVICE_ATTRS:
            _copy(real / attr, work / rel / attr)
        for link in DEVICE_LINKS:
            if (real / link).is_symlink():
                _symlink(work / rel / link, os.readlink(real / link))
    groups = root / "sys/kernel/iommu_groups"
    if groups.is_dir():
        names = sorted(os.listdir(groups))
        if not names:
            empty.append("sys/kernel/iommu_groups")
        for g in names:
            _copy(groups / g / "type", work / "sys/kernel/iommu_groups" / g / "type")
            for dev in sorted(os.listdir(groups / g / "devices")):
                _symlink(
                    work / "sys/kernel/iommu_groups" / g / "devices" / dev,
                    os.readlink(groups / g / "devices" / dev),
                )
    iommu_class = root / "sys/class/iommu"
    if iommu_class.is_dir():
        units = sorted(os.listdir(iommu_class))
        if not units:
            empty.append("sys/class/iommu")
        for u in units:
            (work / "sys/class/iommu" / u).mkdir(parents=True, exist_ok=True)
    slots = root / "sys/bus/pci/slots"
    if slots.is_dir():
        for s in sorted(os.listdir(slots)):
            _copy(slots / s / "address", work / "sys/bus/pci/slots" / s / "address")
    for rel_file in FILES:
        _copy(root / rel_file, work / rel_file)
    gpus_info = root / "proc/driver/nvidia/gpus"
    if gpus_info.is_dir():
        for g in sorted(os.listdir(gpus_info)):
            _copy(gpus_info / g / "information", work / "proc/driver/nvidia/gpus" / g / "information")
    cpuinfo = root / "proc/cpuinfo"
    if cpuinfo.is_file():  # the first processor's block is enough to name the CPU vendor
        first = cpuinfo.read_text(errors="replace").split("\n\n", 1)[0]
        (work / "proc").mkdir(parents=True, exist_ok=True)
        (work / "proc/cpuinfo").write_text(first + "\n")

    is_root = os.geteuid() == 0
    gaps: list[str] = []
    if not is_root:
        gaps.append(
            "extended PCIe config space (ACS, AER): not running as root, config space stops at 64 bytes, "
            "so the ACS checks will be UNREADABLE on replay; capture with sudo for a complete snapshot"
        )
    notes: dict[str, Any] = {}
    for spec in EXTRA_CAPTURERS:
        module, _, func = spec.partition(":")
        try:
            fn = getattr(importlib.import_module(module), func)
        except (ModuleNotFoundError, AttributeError):
            continue
        notes.update(fn(work) or {})
    for key, what in GAP_NAMES.items():
        note = notes.get(key)
        if note is None:
            why = (
                "it is recorded with the NVML state, which was not captured"
                if key == "kernel_log"
                else "its capture module could not be loaded"
            )
            gaps.append(f"{what}: {why}")
        elif str(note).startswith("not captured"):
            gaps.append(f"{what}: {str(note).removeprefix('not captured: ')}")
    kernel = (
        (root / "proc/version").read_text(errors="replace").split()[2]
        if (root / "proc/version").is_file()
        else ""
    )
    driver_file = root / "sys/module/nvidia/version"
    driver = driver_file.read_text().strip() if driver_file.is_file() else ""
    manifest: dict[str, Any] = {
        "format": 1,
        "kind": "captured",
        "name": name or os.uname().nodename,
        "description": f"captured live from {os.uname().nodename}",
        "shows": "as captured",
        "kernel": kernel,
        "driver": driver,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tool": f"pytest-rigcheck {__version__}",
        "root": is_root,
        "empty_dirs": empty,
    }
    if notes:
        manifest["notes"] = {k: str(v) for k, v in notes.items()}
    (work / MANIFEST).write_text(dump_toml(manifest))
    return gaps


def _copy(src: Path, dst: Path) -> None:
    try:
        data = src.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return  # an attribute this kernel or device lacks
    except PermissionError:
        return  # root-only attributes (reset_method on some kernels): the manifest's root flag says why
    except OSError:
        return  # sysfs attributes can fail to read (EIO on a device in D3cold); the check reports it absent
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data)


def _symlink(at: Path, target: str) -> None:
    at.parent.mkdir(parents=True, exist_ok=True)
    if not at.is_symlink():
        at.symlink_to(target)
