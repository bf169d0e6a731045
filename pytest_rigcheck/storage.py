"""Model storage: how fast the filesystem holding the model reads, and what it sits on.

A 70B model in FP16 is ~140 GB: at 0.5 GB/s (a SATA SSD) it takes almost five minutes to load, and as
long again after every restart. The read is large and sequential, and bypasses the page cache so a
warm cache does not report RAM speed:

- ``O_DIRECT`` with a page-aligned buffer (open(2): "O_DIRECT ... transfer sizes, and the alignment of
  the user buffer and file offset must all be multiples of the logical block size"), the default;
- where the filesystem refuses ``O_DIRECT`` (EINVAL: tmpfs, some overlay and network filesystems), the
  file's cached pages are dropped first with ``posix_fadvise(POSIX_FADV_DONTNEED)`` (posix_fadvise(2))
  and read normally; the verdict says which was used.

The device comes from ``/proc/self/mountinfo`` (proc(5): field 3 is ``major:minor`` of the filesystem's
device) and ``/sys/dev/block/MAJ:MIN``; an NVMe namespace's ``device`` link leads to its controller,
whose own ``device`` link is the PCI function with ``current_link_speed``/``current_link_width``.

``storage.json`` in a snapshot holds a recorded measurement (``StorageReading.to_json``).
"""

from __future__ import annotations

import mmap
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ProfileError, SourceError
from .pcie import (
    LANE_GBPS,
    fmt_link,
    link_bandwidth_gbps,
    link_pair_problem,
    link_reading_problem,
    parse_link_speed,
)
from .profile import check_keys
from .source import Source
from .verdict import Verdict, failed, passed, physical, unreadable

STORAGE_JSON = "storage.json"
DEFAULT_MIN_READ_GBPS = 0.5  # GB/s (1e9 bytes/s): a SATA SSD; NVMe Gen3 x4 reads ~3 GB/s, Gen4 x4 ~7 GB/s
BLOCK = 16 << 20  # bytes per read call: large sequential reads
READ_LIMIT = 4 << 30  # read at most this much of the model (bytes)
TIME_LIMIT_S = 10.0  # and for at most this long
# The least a read must hold to be evidence of disk speed: 4 of the 16 MiB BLOCKs, unless it is the whole of
# the model or ran out TIME_LIMIT_S (a disk that slow is measured): a few KiB time the syscall, not the disk.
MIN_EVIDENCE_BYTES = 64 << 20
# The methods ``read_file`` writes: both bypass the page cache. A record naming any other (or none) may be
# a cached read at RAM speed, so it is no evidence of the disk.
DIRECT = "O_DIRECT"
FADVISE = "posix_fadvise DONTNEED then buffered reads (the filesystem refused O_DIRECT)"
READ_METHODS = (DIRECT, FADVISE)
# The fastest one rotating disk reads: 554 MB/s sustained (Seagate Exos 2X18 dual-actuator, product manual /
# datasheet "Max. Sustained Transfer Rate OD"); single-actuator 3.5" disks reach 285-298 MB/s (Seagate Exos
# X24 datasheet 285 MB/s, WD Ultrastar DC HC580 datasheet 298 MB/s), and SATA 6 Gb/s carries 600 MB/s at
# most. A rotational disk read faster is a corrupt record or the page cache answered. md/dm devices (arrays
# of disks) are left out: they add their members' rates.
ROTATIONAL_MAX_GBPS = 0.6
MODEL_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".ckpt", ".onnx", ".msgpack", ".h5")


@dataclass(frozen=True)
class StorageExpect:
    min_read_gbps: float = DEFAULT_MIN_READ_GBPS
    source: str = "pytest-rigcheck default (a SATA SSD's 0.5 GB/s)"


def parse_storage(table: Any, where: str) -> StorageExpect:
    """Validate ``[storage]`` (``min_read_gbps``, GB/s); a bad key or value raises ``ProfileError``."""
    if table is None:
        return StorageExpect()
    if not isinstance(table, dict):
        raise ProfileError(where, "storage", table, "must be a table ([storage])")
    check_keys(where, "storage", table, ["min_read_gbps"])
    v = table.get("min_read_gbps", DEFAULT_MIN_READ_GBPS)
    if physical(v, lo=0.01, hi=1000) is None:
        raise ProfileError(where, "storage.min_read_gbps", v, "GB/s from 0.01 to 1000, e.g. 2.0")
    return StorageExpect(float(v), f"[storage] of {where}")


# -- mount and device (pure over the text and the rooted reader) ------------------------------------


def _unescape(field_text: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \040 \011 \012 \134 (proc(5))
    for code, ch in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field_text = field_text.replace(code, ch)
    return field_text


def mount_of(path: str, mountinfo: str) -> dict[str, str] | None:
    """The mount holding absolute ``path`` (the longest mount point above it; the last one mounted wins):
    ``{"mount_point", "dev", "fstype", "source"}``; ``None`` when no line matches. Raises ``ValueError``
    on a line that is not mountinfo's format."""
    best: dict[str, str] | None = None
    for line in mountinfo.splitlines():
        if not line.strip():
            continue
        left, sep, right = line.partition(" - ")
        a, b = left.split(), right.split()
        if not sep or len(a) < 6 or len(b) < 2 or ":" not in a[2]:
            raise ValueError(f"not a mountinfo line: {line!r}")
        mp = _unescape(a[4])
        inside = path == mp or path.startswith(mp.rstrip("/") + "/") or mp == "/"
        if inside and (best is None or len(mp) >= len(best["mount_point"])):
            best = {"mount_point": mp, "dev": a[2], "fstype": b[0], "source": _unescape(b[1])}
    return best


def block_device(source: Source, dev: str) -> dict[str, Any]:
    """What ``major:minor`` is: ``{"name", "disk", "model", "rotational", "pcie": {"bdf", "gen", "width",
    "max_gen", "max_width"}}``, as far as sysfs tells (no ``pcie`` for a device not on PCIe, {} for a
    virtual device without ``sys/dev/block`` entry)."""
    rel = f"sys/dev/block/{dev}"
    if not source.exists(rel):
        return {}
    real = source.resolve(rel, link=True)  # sys/devices/.../block/nvme0n1/nvme0n1p2
    parts = real.split("/")
    out: dict[str, Any] = {"name": parts[-1]}
    disk_rel = real
    if source.exists(f"{real}/partition"):
        disk_rel = "/".join(parts[:-1])
    out["disk"] = disk_rel.rsplit("/", 1)[-1]
    model = source.read_optional(f"{disk_rel}/device/model")
    if model:
        out["model"] = model
    rot = source.read_optional(f"{disk_rel}/queue/rotational")
    if rot in ("0", "1"):
        out["rotational"] = rot == "1"
    # The PCI function: the nearest directory up the path with a current_link_speed (NVMe: the controller's parent).
    for i in range(len(parts) - 1, 2, -1):
        d = "/".join(parts[:i])
        speed = source.read_optional(f"{d}/current_link_speed")
        if speed is not None:
            width = source.read_optional(f"{d}/current_link_width")
            out["pcie"] = {
                "bdf": parts[i - 1],
                "gen": parse_link_speed(speed),
                "width": int(width) if width and width.isdigit() else None,
                "max_gen": parse_link_speed(source.read_optional(f"{d}/max_link_speed") or ""),
                "max_width": _int(source.read_optional(f"{d}/max_link_width")),
            }
            break
    return out


def _int(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


# -- measuring (live) ------------------------------------------------------------------------------


@dataclass
class StorageReading:
    """A measured read (or why there is none) of the model's filesystem."""

    model_dir: str
    files: int = 0
    total_bytes: int = 0
    read_bytes: int = 0
    seconds: float = 0.0
    method: str = ""
    file: str = ""
    mount: dict[str, str] = field(default_factory=dict)
    device: dict[str, Any] = field(default_factory=dict)
    unavailable: str | None = None

    @property
    def gbps(self) -> float | None:
        return self.read_bytes / self.seconds / 1e9 if self.seconds > 0 and self.read_bytes > 0 else None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, "", {})}

    @classmethod
    def from_json(cls, data: Any) -> StorageReading:
        """From ``storage.json``; raises ``ValueError`` on a shape or a number that cannot be real."""
        if not isinstance(data, dict) or not isinstance(data.get("model_dir"), str):
            raise ValueError("not an object with 'model_dir'")
        r = cls(data["model_dir"])
        for key in ("files", "total_bytes", "read_bytes"):
            v = data.get(key, 0)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{key} = {v!r} is not a count")
            setattr(r, key, v)
        s = physical(data.get("seconds", 0.0), lo=0)
        if s is None:
            raise ValueError(f"seconds = {data.get('seconds')!r} is not a duration")
        r.seconds = s
        for key in ("method", "file", "unavailable"):
            if key in data:
                setattr(r, key, str(data[key]))
        for key in ("mount", "device"):
            if not isinstance(data.get(key, {}), dict):
                raise ValueError(f"{key} is not an object")
            setattr(r, key, data.get(key, {}))
        if r.file and not r.file.startswith(r.model_dir.rstrip("/") + "/"):
            raise ValueError(
                f"file {r.file!r} is not under model_dir {r.model_dir!r} (the file read is a model file)"
            )
        pcie = r.device.get("pcie")
        if pcie is not None:
            if not isinstance(pcie, dict):
                raise ValueError("device.pcie is not an object")
            for key in ("max_gen", "max_width"):
                if (problem := link_reading_problem(key, pcie.get(key))) is not None:
                    raise ValueError(f"device.pcie.{problem}")
            names = ("max_gen", "max_width")
            gen, width, most_gen, most_width = (pcie.get(k) for k in ("gen", "width", *names))
            if why := link_pair_problem(gen, width, most_gen, most_width, names):
                raise ValueError(f"device.pcie.{why}")
        if r.total_bytes < r.read_bytes:
            # measure() reads part of one of the model's files, so what it read is part of their total
            raise ValueError(
                f"total_bytes = {r.total_bytes} is smaller than read_bytes = {r.read_bytes}: the bytes read are "
                "part of the model's files (contradictory)"
            )
        return r


def model_files(model_dir: Path) -> list[Path]:
    """The model's weight files (by suffix), or every regular file when none has a weights suffix."""
    files = [p for p in sorted(model_dir.rglob("*")) if p.is_file() and not p.is_symlink()]
    weights = [p for p in files if p.suffix in MODEL_SUFFIXES]
    if not weights:  # HF cache dirs keep the weights as symlinks into blobs/: follow them
        weights = [p for p in sorted(model_dir.rglob("*")) if p.suffix in MODEL_SUFFIXES and p.is_file()]
    return weights or files


def read_file(
    path: Path, limit: int = READ_LIMIT, time_limit_s: float = TIME_LIMIT_S
) -> tuple[int, float, str]:
    """Read ``path`` sequentially, bypassing the page cache: ``(bytes, seconds, method)``.

    ``O_DIRECT`` with an ``mmap``-aligned buffer first; EINVAL (the filesystem refuses it) falls back to
    ``posix_fadvise(DONTNEED)`` then buffered reads. Raises ``OSError`` when the file cannot be read.
    """
    flags = os.O_RDONLY | getattr(os, "O_DIRECT", 0)
    method = DIRECT
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if not getattr(os, "O_DIRECT", 0) or exc.errno != 22:
            raise
        fd, method = -1, ""
    buf = mmap.mmap(-1, BLOCK)  # page-aligned, as O_DIRECT needs
    try:
        if fd >= 0:
            try:
                return _read_loop(fd, buf, limit, time_limit_s) + (method,)
            except OSError as exc:
                if exc.errno != 22:
                    raise
            finally:
                os.close(fd)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            got = _read_loop(fd, buf, limit, time_limit_s)
        finally:
            os.close(fd)
        return (*got, FADVISE)
    finally:
        buf.close()


def _read_loop(fd: int, buf: mmap.mmap, limit: int, time_limit_s: float) -> tuple[int, float]:
    total = 0
    t0 = time.perf_counter()
    while total < limit and time.perf_counter() - t0 < time_limit_s:
        n = os.readv(fd, [buf])
        if n <= 0:
            break
        total += n
    return total, time.perf_counter() - t0


def measure(model_dir: Path, source: Source | None = None, limit: int = READ_LIMIT) -> StorageReading:
    """Measure the read speed of the filesystem under ``model_dir`` on its largest weight file."""
    source = source or Source("/")
    r = StorageReading(str(model_dir))
    if not model_dir.is_dir():
        r.unavailable = f"{model_dir} is not a directory"
        return r
    files = model_files(model_dir)
    if not files:
        r.unavailable = f"{model_dir} holds no file to read"
        return r
    r.files = len(files)
    r.total_bytes = sum(p.stat().st_size for p in files)
    big = max(files, key=lambda p: p.stat().st_size)
    r.file = str(big)
    try:
        r.read_bytes, r.seconds, r.method = read_file(big.resolve(), limit)
    except OSError as exc:
        r.unavailable = f"cannot read {big}: {exc.strerror or exc}"
        return r
    try:
        mi = mount_of(str(big.resolve()), source.read_text("proc/self/mountinfo"))
    except (KeyError, SourceError, ValueError):
        mi = None
    if mi:
        r.mount = mi
        try:
            r.device = block_device(source, mi["dev"])
        except (SourceError, ValueError):  # ValueError: a link speed sysfs does not write
            r.device = {}
    return r


# -- judging (pure) ------------------------------------------------------------------------------


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e10 else f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


def _secs(s: float) -> str:
    return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"


def device_text(r: StorageReading) -> str:
    """``/dev/nvme0n1p2 (ext4 on /) on nvme0n1 'Samsung SSD 990 PRO', PCIe 0000:01:00.0 Gen4 x4``."""
    bits = []
    if r.mount:
        bits.append(f"{r.mount.get('source')} ({r.mount.get('fstype')} on {r.mount.get('mount_point')})")
    d = r.device
    if d.get("disk"):
        bits.append(f"disk {d['disk']}" + (f" '{d['model']}'" if d.get("model") else ""))
    p = d.get("pcie")
    if p:
        link = f"Gen{p.get('gen')} x{p.get('width')}"
        cap = (
            f" (capable Gen{p.get('max_gen')} x{p.get('max_width')})"
            if (p.get("max_gen"), p.get("max_width")) != (p.get("gen"), p.get("width"))
            else ""
        )
        bits.append(f"PCIe {p.get('bdf')} {link}{cap}")
    elif d.get("rotational"):
        bits.append("a rotating disk")
    return ", ".join(bits) or "device unknown (not in /proc/self/mountinfo or /sys/dev/block)"


def _not_evidence(r: StorageReading, gbps: float) -> str | None:
    """Why a read is no evidence of the disk's speed, or None: faster than the PCIe link of the device it
    names can carry (``pcie.link_bandwidth_gbps`` of its trained link: a corrupt record, or the page cache
    answered), faster than one rotating disk reads (``ROTATIONAL_MAX_GBPS``), read by a method not known to
    bypass the page cache (``READ_METHODS``), from no file, or too small (``MIN_EVIDENCE_BYTES``) unless it
    is the whole model or ran out the time limit."""
    if r.method not in READ_METHODS:
        return (
            f"read by method {r.method or '(none recorded)'!r}, not one that bypasses the page cache "
            f"({' or '.join(repr(m) for m in READ_METHODS)}): {gbps:.2f} GB/s may be a cached read at RAM speed"
        )
    if r.files < 1:
        return f"files = {r.files} beside {r.read_bytes} bytes read of a {r.total_bytes}-byte model (contradictory)"
    disk = str(r.device.get("disk") or "")
    if (
        r.device.get("rotational") is True
        and not disk.startswith(("md", "dm-"))
        and gbps > ROTATIONAL_MAX_GBPS
    ):
        model = f" '{r.device['model']}'" if r.device.get("model") else ""
        return (
            f"reads at {gbps:.2f} GB/s from {disk or 'its disk'}{model}, a rotating disk (queue/rotational = 1): "
            f"no single hard disk reads above {ROTATIONAL_MAX_GBPS:g} GB/s (the fastest, Seagate's dual-actuator "
            "Exos 2X18, 554 MB/s sustained per its datasheet; single-actuator 3.5-inch disks 285-298 MB/s): "
            "a corrupt record, or the page cache answered"
        )
    p = r.device.get("pcie") or {}
    gen, width = p.get("gen") or p.get("max_gen"), p.get("width") or p.get("max_width")
    if gen in LANE_GBPS and isinstance(width, int) and not isinstance(width, bool) and width > 0:
        cap = link_bandwidth_gbps(gen, width)
        if gbps > cap:
            return (
                f"reads at {gbps:.2f} GB/s ({r.read_bytes} bytes in {r.seconds:g} s), above the {cap:.2f} GB/s its "
                f"device's PCIe link {p.get('bdf', '?')} {fmt_link(gen, width)} can carry: not a disk read "
                "(a corrupt record, or the page cache answered)"
            )
    if r.read_bytes < MIN_EVIDENCE_BYTES and r.read_bytes < r.total_bytes and r.seconds < TIME_LIMIT_S:
        return (
            f"read {r.read_bytes} bytes of the model's {r.total_bytes} in {r.seconds:g} s: too small to be evidence "
            f"of disk speed (the measurement reads up to {READ_LIMIT >> 30} GiB or {TIME_LIMIT_S:g} s, at least "
            f"{MIN_EVIDENCE_BYTES >> 20} MiB unless that is the whole model)"
        )
    return None


def judge(r: StorageReading, expect: StorageExpect) -> Verdict:
    """PASS when the read speed reaches ``min_read_gbps``; says how long loading the model takes at it."""
    label = f"model storage {r.model_dir}"
    if r.unavailable:
        return unreadable(
            f"{label}: {r.unavailable}", fix=["pass the model's directory: --rig-model-dir DIR"]
        )
    gbps = r.gbps
    if gbps is None or physical(gbps, lo=0, hi=1000, allow_lo=False) is None:
        return unreadable(f"{label}: read {r.read_bytes} bytes in {r.seconds} s: not a measurement")
    if (why := _not_evidence(r, gbps)) is not None:
        return unreadable(
            f"{label}: {why}", fix=["measure again on the rig: pytest --rig --rig-model-dir DIR"]
        )
    load_s = r.total_bytes / (gbps * 1e9)
    dev = device_text(r)
    props: dict[str, object] = {
        "storage_read_gbps": round(gbps, 3),
        "storage_method": r.method,
        "storage_model_bytes": r.total_bytes,
        "storage_load_s": round(load_s, 1),
        "storage_device": dev,
    }
    measured = (
        f"{gbps:.2f} GB/s reading {_gb(r.read_bytes)} of {Path(r.file).name or 'the model'} "
        f"({r.method}); {r.files} file(s), {_gb(r.total_bytes)}: load in {_secs(load_s)} at that rate"
    )
    common: dict[str, Any] = dict(
        measured=measured,
        expected=f">= {expect.min_read_gbps:g} GB/s ({expect.source})",
        measured_value=round(gbps, 3),
        expected_value=expect.min_read_gbps,
        unit="GB/s",
        notes=[f"device: {dev}"],
        properties=props,
    )
    if gbps < expect.min_read_gbps:
        fix = [
            f"move the model to a faster disk (NVMe); at {expect.min_read_gbps:g} GB/s it would load in "
            f"{_secs(r.total_bytes / (expect.min_read_gbps * 1e9))}",
        ]
        p = r.device.get("pcie") or {}
        if (
            p.get("gen")
            and p.get("max_gen")
            and p["gen"] < p["max_gen"]
            or p.get("width")
            and p.get("max_width")
            and p["width"] < p["max_width"]
        ):
            fix.append(
                f"the disk's link {p.get('bdf')} trained below its capability (Gen{p.get('gen')} x{p.get('width')} of "
                f"Gen{p.get('max_gen')} x{p.get('max_width')}): reseat it or move it to a CPU-attached M.2/U.2 slot"
            )
        if r.mount.get("fstype") in ("nfs", "nfs4", "cifs", "fuse.sshfs", "9p", "virtiofs"):
            fix.append(
                f"the model is on a {r.mount['fstype']} network/shared filesystem: copy it to local NVMe"
            )
        return failed(
            f"{label}: reads at {gbps:.2f} GB/s, below {expect.min_read_gbps:g} GB/s; the model's "
            f"{_gb(r.total_bytes)} take {_secs(load_s)} to load",
            fix=fix,
            **common,
        )
    return passed(
        f"{label}: reads at {gbps:.2f} GB/s; the model's {_gb(r.total_bytes)} load in {_secs(load_s)}",
        **common,
    )
