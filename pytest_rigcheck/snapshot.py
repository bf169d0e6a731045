"""Snapshots: a directory (or a .tar.gz of one) whose paths mirror the live filesystem, plus a manifest.

Layout::

    MANIFEST.toml            kind (captured|modelled|imported), name, kernel, driver, date, tool, what it shows
    sys/bus/pci/devices/...  the kernel's relative symlinks kept
    sys/devices/pci0000:00/...
    proc/...
    nvml.json                optional: recorded NVML state (see the GPU suites)

Replaying needs no root and no GPU. A tarball is unpacked into a private temporary directory,
refusing absolute names, ``..``, device files and links that leave the snapshot; a directory is
read in place through ``Source``, which refuses links out of it at read time.
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SnapshotError

MANIFEST = "MANIFEST.toml"
FORMAT = 1
KINDS = ("captured", "modelled", "imported")
_MAX_UNPACKED = 512 << 20  # a snapshot is a few MB; refuse archive bombs
_MAX_MEMBERS = 200_000


@dataclass(frozen=True)
class Manifest:
    """What a snapshot is and what it shows."""

    name: str
    kind: str
    description: str = ""
    shows: str = ""
    kernel: str = ""
    driver: str = ""
    date: str = ""
    tool: str = ""
    root: bool = True  # captured as root: extended config space (ACS, AER) is included
    empty_dirs: frozenset[str] = frozenset()
    profile: str | None = None
    expect: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class Snapshot:
    """A snapshot ready to read: ``root`` is the directory holding ``sys/`` and ``proc/``."""

    origin: Path
    root: Path
    manifest: Manifest
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def parse_manifest(data: dict[str, Any], where: str) -> Manifest:
    """Validate a manifest table; errors name the key and what is allowed."""

    def req(key: str) -> str:
        value = data.get(key)
        if not isinstance(value, str) or not value:
            raise SnapshotError(f"{where}: {key!r} must be a non-empty string, found {value!r}")
        return value

    fmt = data.get("format", FORMAT)
    if fmt != FORMAT:
        raise SnapshotError(f"{where}: format {fmt!r} is not supported (this version reads format {FORMAT})")
    kind = req("kind")
    if kind not in KINDS:
        raise SnapshotError(f"{where}: kind {kind!r} must be one of {', '.join(KINDS)}")
    empty = data.get("empty_dirs", [])
    if not isinstance(empty, list) or not all(isinstance(e, str) for e in empty):
        raise SnapshotError(f"{where}: empty_dirs must be a list of paths")
    for e in empty:
        if e.startswith("/") or ".." in e.split("/"):
            raise SnapshotError(f"{where}: empty_dirs entry {e!r} leaves the snapshot")
    root = data.get("root", True)
    if not isinstance(root, bool):
        raise SnapshotError(f"{where}: root must be true or false, found {root!r}")
    expect = data.get("expect", {})
    if not isinstance(expect, dict):
        raise SnapshotError(f"{where}: [expect] must be a table")
    return Manifest(
        name=req("name"),
        kind=kind,
        description=str(data.get("description", "")),
        shows=str(data.get("shows", "")),
        kernel=str(data.get("kernel", "")),
        driver=str(data.get("driver", "")),
        date=str(data.get("date", "")),
        tool=str(data.get("tool", "")),
        root=root,
        empty_dirs=frozenset(e.strip("/") for e in empty),
        profile=data.get("profile"),
        expect=expect,
        raw=data,
    )


def read_manifest(root: Path) -> Manifest:
    path = root / MANIFEST
    if path.is_symlink() or not path.is_file():
        raise SnapshotError(
            f"{root}: no {MANIFEST}: not a rigcheck snapshot (make one with `rigcheck capture DIR`)"
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SnapshotError(f"{path}: corrupt manifest: {exc}") from None
    return parse_manifest(data, str(path))


def open_snapshot(path: Path | str) -> Snapshot:
    """Open a snapshot directory or ``.tar.gz``; raise ``SnapshotError`` with the reason if unusable."""
    origin = Path(path)
    if not origin.exists():
        raise SnapshotError(f"{origin}: no such snapshot")
    if origin.is_dir():
        root = origin.resolve()
        manifest = read_manifest(root)
        _check_layout(root)
        return Snapshot(origin, root, manifest)
    if not tarfile.is_tarfile(origin):
        raise SnapshotError(f"{origin}: neither a directory nor a tar archive")
    tmp = tempfile.TemporaryDirectory(prefix="rigcheck-snapshot-")
    try:
        root = _safe_extract(origin, Path(tmp.name))
        manifest = read_manifest(root)
        _check_layout(root)
    except BaseException:
        tmp.cleanup()
        raise
    return Snapshot(origin, root, manifest, tmp)


def _check_layout(root: Path) -> None:
    devices = root / "sys/bus/pci/devices"
    if not devices.is_dir() or devices.is_symlink():
        raise SnapshotError(f"{root}: partial snapshot: sys/bus/pci/devices is missing")


def _safe_extract(archive: Path, dest: Path) -> Path:
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = []
            total = 0
            for i, m in enumerate(tar):
                if i >= _MAX_MEMBERS:
                    raise SnapshotError(f"{archive}: more than {_MAX_MEMBERS} entries: not a snapshot")
                name = m.name.lstrip("./") if m.name.startswith("./") else m.name
                if name.startswith("/") or ".." in Path(name).parts:
                    raise SnapshotError(
                        f"{archive}: unsafe entry {m.name!r} (absolute or '..'): refused, nothing read"
                    )
                if not (m.isfile() or m.isdir() or m.issym()):
                    raise SnapshotError(
                        f"{archive}: entry {m.name!r} is a device, fifo or hard link: refused"
                    )
                if m.issym():
                    target = Path(m.name).parent / m.linkname
                    if m.linkname.startswith("/") or _escapes(target):
                        raise SnapshotError(
                            f"{archive}: symlink {m.name!r} -> {m.linkname!r} leaves the snapshot: refused"
                        )
                total += m.size
                if total > _MAX_UNPACKED:
                    raise SnapshotError(
                        f"{archive}: unpacks to more than {_MAX_UNPACKED >> 20} MiB: not a snapshot"
                    )
                members.append(m)
            # The "data" filter (PEP 706) re-checks every rule above and strips modes and owners.
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise SnapshotError(f"{archive}: corrupt archive: {exc}") from None
    if (dest / MANIFEST).exists():
        return dest
    tops = [p for p in dest.iterdir()]
    if len(tops) == 1 and tops[0].is_dir() and not tops[0].is_symlink() and (tops[0] / MANIFEST).exists():
        return tops[0]
    raise SnapshotError(f"{archive}: no {MANIFEST} at the top of the archive: not a rigcheck snapshot")


def _escapes(path: Path) -> bool:
    depth = 0
    for part in path.parts:
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def pack(directory: Path, archive: Path) -> None:
    """Write ``directory`` as a .tar.gz snapshot, links kept as links."""
    with tarfile.open(archive, "w:gz") as tar:
        for p in sorted(directory.rglob("*")):
            tar.add(p, arcname=str(p.relative_to(directory)), recursive=False)


def copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, symlinks=True)
