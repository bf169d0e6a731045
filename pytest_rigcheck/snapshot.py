"""Snapshots: a directory (or a .tar.gz of one) whose paths mirror the live filesystem, plus a manifest.

Layout::

    MANIFEST.toml            kind (captured|modelled|imported), name, kernel, driver, date, tool, what it shows
    sys/bus/pci/devices/...  the kernel's relative symlinks kept
    sys/devices/pci0000:00/...
    proc/...
    nvml.json                optional: recorded NVML state (see the GPU suites)

Replaying needs no root and no GPU. A tarball is unpacked into a private temporary directory,
refusing absolute names, ``..``, device files and links that leave the snapshot, by this module's own
checks on every Python (``tarfile``'s ``data`` filter, PEP 706, exists only from Python 3.11.4 and
is used as a second line where present); a directory is read in place through ``Source``, which
refuses links out of it and anything but regular files at read time. Every file of a replay, the
manifest's ``profile``, ``nvml.json`` and ``p2p.json`` included, is read through ``Source``.

The snapshots shipped with the package are found by name (``--rig-snapshot=rtxpro6000x4-switch``):
``fixtures/sysfs-snapshots/NAME`` in a checkout, ``pytest_rigcheck/snapshots/NAME.tar.gz`` in a wheel.
"""

from __future__ import annotations

import difflib
import os
import shutil
import stat
import tarfile
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from .errors import SnapshotError, SourceError
from .source import FLATTENED, HARD_LINK, Source

if TYPE_CHECKING:
    from .profile import Profile
    from .verdict import Verdict

MANIFEST = "MANIFEST.toml"
FORMAT = 1
KINDS = ("captured", "modelled", "imported")
_MAX_UNPACKED = 512 << 20  # a snapshot is a few MB; refuse archive bombs
_MAX_MEMBERS = 200_000
_MAX_MANIFEST = 1 << 20
_MAX_PROFILE = 1 << 20
SHIPPED_DIR = "snapshots"  # pytest_rigcheck/snapshots/NAME.tar.gz in a wheel
CHECKOUT_DIR = ("fixtures", "sysfs-snapshots")  # beside the package in a checkout


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
    # Entries of a directory snapshot refused for safety (a link out, a FIFO or device node), found
    # when it was opened: each ``"path: reason"``. A tarball holding one is refused whole instead.
    refused: list[str] = field(default_factory=list)
    # Symlinks packed as text files holding their target (``Source(flattened_links=True)``), found
    # when it was opened: their paths. Replay reads them as links, and says so in its header.
    flattened: list[str] = field(default_factory=list)

    @property
    def source(self) -> Source:
        """The one reader, rooted at the snapshot (reading flattened links as links if it has any)."""
        return Source(self.root, flattened_links=bool(self.flattened))

    def flattened_note(self) -> str:
        """``"3 links were stored as text files (flattened) and read as links"``, or ``""``."""
        n = len(self.flattened)
        return FLATTENED.format(n=n, s="s were" if n != 1 else " was") if n else ""

    def profile(self) -> Profile | None:
        """The manifest's ``profile``: a file inside the snapshot, else a preset name; ``None`` if unset.

        Read through ``Source`` and parsed from its text: a manifest never makes rigcheck read a
        host file. Raises ``SnapshotError`` naming the manifest, the value and why it was refused.
        """
        from .profile import parse_profile, presets

        spec = self.manifest.profile
        if spec is None:
            return None
        where = f"{MANIFEST} profile {spec!r}"
        try:
            data = self.source.read_bytes(spec, _MAX_PROFILE, whole=True)
            label = f"{spec} in snapshot {self.manifest.name}"
        except KeyError:
            known = presets()
            if spec not in known:
                raise SnapshotError(
                    f"{where}: no such file in the snapshot, and not a preset "
                    f"(presets: {', '.join(sorted(known))})"
                ) from None
            data, label = known[spec].read_bytes(), f"preset {spec}"
        except SourceError as exc:
            raise SnapshotError(f"{where}: {exc.reason}") from None
        try:
            table = tomllib.loads(data.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise SnapshotError(f"{label}: not valid TOML: {exc}") from None
        return parse_profile(table, label)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


# Every key a MANIFEST.toml may hold (the capture, import-lspci and make_snapshots writers use these only):
# a typo such as ``profle`` would otherwise replay the rig against hardware defaults without a word.
MANIFEST_KEYS = (
    "format", "kind", "name", "description", "shows", "kernel", "driver", "date", "tool", "root",
    "empty_dirs", "profile", "expect", "notes", "imported",
)  # fmt: skip
EXPECT_KEYS = ("fail",)


def _known_keys(where: str, table: dict[str, Any], keys: tuple[str, ...], section: str) -> None:
    for k in table:
        if k not in keys:
            close = difflib.get_close_matches(k.lower(), keys, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise SnapshotError(f"{where}: unknown key {section}{k!r}{hint}; the keys are {', '.join(keys)}")


def parse_manifest(data: dict[str, Any], where: str) -> Manifest:
    """Validate a manifest table; errors name the key and what is allowed.

    Raises:
        SnapshotError: a key not in ``MANIFEST_KEYS`` (or under ``[expect]`` not ``fail``), or a bad value.
    """
    _known_keys(where, data, MANIFEST_KEYS, "")

    def req(key: str) -> str:
        value = data.get(key)
        if value is None:
            raise SnapshotError(
                f"{where}: no {key!r} (every manifest names its kind and name; `rigcheck capture` writes one)"
            )
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
    _known_keys(where, expect, EXPECT_KEYS, "expect.")
    fail = expect.get("fail", [])
    if not isinstance(fail, list) or not all(isinstance(f, str) and f for f in fail):
        raise SnapshotError(f"{where}: expect.fail must be a list of test ids, found {fail!r}")
    for key in ("notes", "imported"):
        if not isinstance(data.get(key, {}), dict):
            raise SnapshotError(f"{where}: [{key}] must be a table, found {data[key]!r}")
    profile = _manifest_profile(data.get("profile"), where)
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
        profile=profile,
        expect=expect,
        raw=data,
    )


def _manifest_profile(value: object, where: str) -> str | None:
    """The manifest's ``profile``: a preset name or a relative path inside the snapshot."""
    if value is None:
        return None
    allowed = "a preset name (such as '2x-rtx3090-gen4') or a path inside the snapshot"
    if not isinstance(value, str):
        raise SnapshotError(f"{where}: profile must be a string, {allowed}; found {value!r}")
    if not value.strip():
        raise SnapshotError(
            f"{where}: profile is empty: give {allowed}, or leave the key out for hardware defaults"
        )
    if "\0" in value:
        raise SnapshotError(f"{where}: profile {value!r} holds a NUL byte")
    if value.startswith("/"):
        raise SnapshotError(
            f"{where}: profile {value!r} is an absolute path: refused, a snapshot reads nothing outside "
            f"itself; give {allowed}"
        )
    if ".." in PurePosixPath(value).parts:
        raise SnapshotError(
            f"{where}: profile {value!r} climbs out with '..': refused, a snapshot reads nothing outside "
            f"itself; give {allowed}"
        )
    return value


def read_manifest(root: Path, where: str | None = None) -> Manifest:
    """Read and validate ``MANIFEST.toml`` at ``root`` through ``Source``.

    ``where`` names it in messages (``ARCHIVE: MANIFEST.toml`` for a tarball), default its path.
    """
    where = where or str(root / MANIFEST)
    try:
        data = Source(root).read_bytes(MANIFEST, _MAX_MANIFEST, whole=True)
    except KeyError:
        raise SnapshotError(
            f"{root}: no {MANIFEST}: not a rigcheck snapshot (make one with `rigcheck capture DIR`)"
        ) from None
    except SourceError as exc:
        raise SnapshotError(f"{where}: {exc.reason}") from None
    try:
        table = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SnapshotError(f"{where}: not valid TOML: {exc}") from None
    return parse_manifest(table, where)


def shipped() -> dict[str, Path]:
    """The snapshots shipped with the package, by name: directories in a checkout, ``.tar.gz`` in a wheel."""
    here = Path(__file__).resolve().parent
    found: dict[str, Path] = {}
    wheel = here / SHIPPED_DIR
    if wheel.is_dir():
        for p in wheel.iterdir():
            if p.name.endswith(".tar.gz"):
                found[p.name.removesuffix(".tar.gz")] = p
    checkout = here.parent.joinpath(*CHECKOUT_DIR)
    if checkout.is_dir():
        for p in checkout.iterdir():
            if (p / MANIFEST).is_file():
                found.setdefault(p.name, p)
    return dict(sorted(found.items()))


def find_snapshot(spec: str) -> Path:
    """``spec`` as a path if it exists, else a shipped snapshot of that name (as presets for profiles).

    Raises ``SnapshotError`` naming the shipped snapshots when it is neither.
    """
    path = Path(spec)
    if os.path.lexists(path):
        return path
    known = shipped()
    if spec in known:
        return known[spec]
    names = ", ".join(known) or "none found in this installation"
    raise SnapshotError(f"{spec}: no such snapshot (no such path, and not a shipped snapshot: {names})")


def open_snapshot(path: Path | str) -> Snapshot:
    """Open a snapshot directory or ``.tar.gz`` (or a shipped one by name); ``SnapshotError`` if unusable."""
    origin = find_snapshot(str(path))
    if origin.is_symlink() and not origin.exists():
        raise SnapshotError(f"{origin}: a dangling symlink, no snapshot behind it")
    try:
        mode = origin.stat().st_mode
    except OSError as exc:
        raise SnapshotError(f"{origin}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        root = origin.resolve()
        manifest = read_manifest(root)
        _check_layout(root)
        flat: list[str] = []
        refused = audit(root, flattened=flat)
        return Snapshot(origin, root, manifest, refused=refused, flattened=flat)
    if not stat.S_ISREG(mode):
        raise SnapshotError(f"{origin}: neither a directory nor a tar archive (not a regular file): refused")
    if not tarfile.is_tarfile(origin):
        raise SnapshotError(f"{origin}: neither a directory nor a tar archive")
    tmp = tempfile.TemporaryDirectory(prefix="rigcheck-snapshot-")
    try:
        root = _safe_extract(origin, Path(tmp.name))
        manifest = read_manifest(root, f"{origin}: {MANIFEST}")
        _check_layout(root, str(origin))
        flat = []
        refused = audit(root, flattened=flat)  # links and special files were refused at extraction
    except BaseException:
        tmp.cleanup()
        raise
    return Snapshot(origin, root, manifest, tmp, refused=refused, flattened=flat)


def _check_layout(root: Path, where: str | None = None) -> None:
    devices = root / "sys/bus/pci/devices"
    if not devices.is_dir() or devices.is_symlink():
        raise SnapshotError(f"{where or root}: partial snapshot: sys/bus/pci/devices is missing")


def audit(root: Path, limit: int = 20, flattened: list[str] | None = None) -> list[str]:
    """Entries of a snapshot directory that replay refuses: links leaving it, FIFOs, devices, sockets,
    hard-linked files.

    Each is ``"path: reason"``; at most ``limit`` are listed, then a count. Only small regular files
    are opened (``Source`` checks them, as every read), to find symlinks stored as text files: their
    paths are appended to ``flattened``, and those that would leave the snapshot are listed as refused.
    Otherwise the walk uses ``lstat`` and ``readlink``; links are resolved as ``Source`` resolves them.
    """
    src = Source(root, flattened_links=True)
    found: list[str] = []
    more = 0
    for dirpath, dirnames, filenames in os.walk(root):  # does not follow links to directories
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(dirnames + filenames):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError as exc:
                problem = exc.strerror or str(exc)
            else:
                mode = st.st_mode
                if stat.S_ISREG(mode) and st.st_nlink > 1:
                    problem = HARD_LINK.format(n=st.st_nlink)
                elif stat.S_ISLNK(mode):
                    try:
                        src.resolve(rel)
                        continue
                    except SourceError as exc:
                        problem = exc.reason
                elif stat.S_ISREG(mode) and src.readlink(rel) is not None:
                    if flattened is not None:
                        flattened.append(rel)
                    try:
                        src.resolve(rel, link=True)
                        continue
                    except SourceError as exc:
                        problem = exc.reason
                elif stat.S_ISREG(mode) or stat.S_ISDIR(mode):
                    continue
                else:
                    problem = f"{_special(mode)}, not a regular file: refused"
            if len(found) < limit:
                found.append(
                    problem
                    if problem.startswith((f"symlink {rel} -> ", f"flattened link {rel} -> "))
                    else f"{rel}: {problem}"
                )
            else:
                more += 1
    if more:
        found.append(f"... and {more} more")
    return found


def containment(snapshot: Snapshot | None) -> Verdict:
    """The verdict on what a directory snapshot holds that replay refuses to read.

    A link leaving the snapshot, a FIFO or a device node is never read (``Source`` refuses it), so a
    check needing it could not judge; one that does not need it would pass in silence. This verdict
    makes the refusal visible and fails the gate: a snapshot holding such entries is not evidence.
    """
    from .verdict import not_applicable, passed, unreadable

    if snapshot is None:
        return not_applicable("live rig: read in place, there is no snapshot to contain")
    name = snapshot.manifest.name
    if not snapshot.refused:
        return passed(
            f"snapshot {name}: every entry is a regular file, a directory or a link inside it",
            measured_value=0,
            expected_value=0,
            unit="refused entries",
        )
    return unreadable(
        f"snapshot {name} ({snapshot.origin}): {len(snapshot.refused)} entr"
        f"{'y' if len(snapshot.refused) == 1 else 'ies'} refused, not read: checks needing them cannot judge",
        measured="; ".join(snapshot.refused),
        expected="only regular files, directories and links that stay inside the snapshot",
        measured_value=len(snapshot.refused),
        expected_value=0,
        unit="refused entries",
        fix=[
            "capture the rig again with `rigcheck capture DIR` (it writes only regular files and the "
            "kernel's own relative links), or remove the entries listed"
        ],
    )


def _special(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return f"a special file (mode {mode:o})"


def _member_name(archive: Path, raw: str) -> str:
    """A member's name inside the snapshot ("" for the top), or ``SnapshotError`` if it is unsafe.

    Leading ``./`` components are dropped one at a time (``tar -C DIR .`` writes them); what is left
    must be relative and must not contain ``..``. So ``.//etc/x`` is absolute and ``./../x`` climbs out.
    """
    name = raw
    while name.startswith("./"):
        name = name[2:]
    if name in (".", ""):
        return ""
    if name.startswith("/"):
        raise SnapshotError(f"{archive}: unsafe entry {raw!r}: an absolute path: refused, nothing read")
    parts = PurePosixPath(name).parts
    if ".." in parts:
        raise SnapshotError(
            f"{archive}: unsafe entry {raw!r}: '..' leaves the snapshot: refused, nothing read"
        )
    if "\0" in name:
        raise SnapshotError(f"{archive}: unsafe entry {raw!r}: a NUL byte in the name: refused, nothing read")
    return "/".join(p for p in parts if p != ".")


def _safe_extract(archive: Path, dest: Path) -> Path:
    """Unpack ``archive`` into ``dest`` after checking every member; return the snapshot's top directory.

    The checks are this module's own (absolute names, ``..``, links out, hard links, devices, FIFOs,
    entries below a link, duplicates, size and entry count), so they hold on every Python the package
    admits. Python 3.11.4+ has ``tarfile``'s ``data`` filter (PEP 706), used as a second line; on 3.11.0
    to 3.11.3 members are written here one by one, files created with ``O_EXCL | O_NOFOLLOW``.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            members: list[tuple[tarfile.TarInfo, str]] = []
            names: set[str] = set()
            links: dict[str, str] = {}
            total = 0
            for i, m in enumerate(tar):
                if i >= _MAX_MEMBERS:
                    raise SnapshotError(f"{archive}: more than {_MAX_MEMBERS} entries: not a snapshot")
                name = _member_name(archive, m.name)
                if not (m.isfile() or m.isdir() or m.issym()):
                    raise SnapshotError(
                        f"{archive}: entry {m.name!r} is a device, fifo or hard link: refused, nothing read"
                    )
                if not name:
                    if not m.isdir():
                        raise SnapshotError(f"{archive}: entry {m.name!r} is the top but not a directory")
                    continue
                if name in names:
                    raise SnapshotError(f"{archive}: entry {m.name!r} appears twice: refused, nothing read")
                names.add(name)
                if m.issym():
                    links[name] = m.linkname
                total += m.size
                if total > _MAX_UNPACKED:
                    raise SnapshotError(
                        f"{archive}: unpacks to more than {_MAX_UNPACKED >> 20} MiB: not a snapshot"
                    )
                members.append((m, name))
            for name, target in links.items():
                if _link_leaves(links, name):
                    raise SnapshotError(
                        f"{archive}: symlink {name!r} -> {target!r} leaves the snapshot: refused, nothing read"
                    )
            for _m, name in members:
                parent = PurePosixPath(name).parent
                for up in (parent, *parent.parents):
                    if str(up) in links:
                        raise SnapshotError(
                            f"{archive}: entry {name!r} lies below the symlink {str(up)!r}: refused, nothing read"
                        )
            if hasattr(tarfile, "data_filter"):
                for m, name in members:
                    m.name = name  # the checked name (leading "./" dropped)
                tar.extractall(dest, members=[m for m, _ in members], filter="data")
            else:  # Python 3.11.0-3.11.3: no extraction filters
                _extract(tar, members, dest)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise SnapshotError(f"{archive}: corrupt archive: {exc}") from None
    if (dest / MANIFEST).exists():
        return dest
    tops = [p for p in dest.iterdir()]
    if len(tops) == 1 and tops[0].is_dir() and not tops[0].is_symlink() and (tops[0] / MANIFEST).exists():
        return tops[0]
    raise SnapshotError(f"{archive}: no {MANIFEST} at the top of the archive: not a rigcheck snapshot")


def _extract(tar: tarfile.TarFile, members: list[tuple[tarfile.TarInfo, str]], dest: Path) -> None:
    """Write checked members below ``dest`` without ``tarfile``'s filters: no path component is a link
    (checked), files are created new with ``O_NOFOLLOW``, and nothing keeps owners or special modes."""
    for m, name in members:
        target = os.path.join(dest, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if m.isdir():
            os.makedirs(target, exist_ok=True)
        elif m.issym():
            os.symlink(m.linkname, target)
        else:
            src = tar.extractfile(m)
            if src is None:
                raise tarfile.TarError(f"entry {m.name!r} has no data")
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            with src, os.fdopen(fd, "wb") as out:
                left = m.size
                while left > 0:
                    chunk = src.read(min(left, 1 << 16))
                    if not chunk:
                        raise tarfile.TarError(f"entry {m.name!r} is truncated")
                    out.write(chunk)
                    left -= len(chunk)


def _link_leaves(links: dict[str, str], name: str) -> bool:
    """Whether the archive's symlink ``name`` points outside the snapshot (or loops), resolved through
    the archive's other links exactly as ``Source`` will resolve it at read time."""
    done = [p for p in PurePosixPath(name).parent.parts if p != "."]
    todo = links[name].split("/")
    if links[name].startswith("/"):
        return True
    hops = 0
    while todo:
        part = todo.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not done:
                return True
            done.pop()
            continue
        here = "/".join([*done, part])
        if here in links:
            hops += 1
            if hops > 40 or links[here].startswith("/"):
                return True
            todo = links[here].split("/") + todo
            continue
        done.append(part)
    return False


def pack(directory: Path, archive: Path) -> None:
    """Write ``directory`` as a .tar.gz snapshot, links kept as links."""
    with tarfile.open(archive, "w:gz") as tar:
        for p in sorted(directory.rglob("*")):
            tar.add(p, arcname=str(p.relative_to(directory)), recursive=False)


def copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, symlinks=True)
