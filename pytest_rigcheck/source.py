"""One reader for everything a check needs, rooted at ``/`` (live) or at a snapshot.

Live and replayed rigs go through this same class, so a snapshot exercises exactly the code a
live run does. Paths are relative and spelled as on the live machine (``sys/bus/pci/devices``).
Symlinks are resolved by hand, one component at a time, and a link that leaves the root (an
absolute target, or too many ``..``) is refused: a hostile snapshot reads nothing outside itself.
"""

from __future__ import annotations

import errno
import json
import os
import posixpath
import re
import stat
from pathlib import Path
from typing import Any

from .errors import RefusedError, SourceError

# A hard link has no direction: another name of the same file may lie outside the snapshot
# (``ln /etc/shadow snap/p2p.json``). Capture, git and tar extraction here never make one.
HARD_LINK = "a hard link ({n} names): the file may also lie outside the snapshot: refused"
_MAX_LINKS = 40  # as the kernel's MAXSYMLINKS: a loop is an error, not a hang
# A symlink stored as a text file by a packer that does not keep links (a zip, a copy through a
# web form): the file's whole content is the link target. Only a relative path of ``..`` and
# sysfs-safe names is read as one; PATH_MAX (4096, include/uapi/linux/limits.h) bounds it.
_FLAT_MAX = 4096
_PLAIN, _FILE, _LINK, _FLAT = range(4)  # Source._steps kinds
_FLAT_NAME = re.compile(r"[A-Za-z0-9_.:+-]+")
FLATTENED = "{n} link{s} stored as text files (flattened) and read as links"


def flat_target(data: bytes) -> str | None:
    """The link target a flattened link's content spells, or ``None`` if it is not one.

    Accepted: a relative path starting with ``../`` (as every sysfs link does), of ``..`` and names of ``[A-Za-z0-9_.:+-]`` (no ``.`` component, no
    empty one, no NUL, not absolute), at most 4096 bytes, with at most one trailing newline.
    """
    if len(data) > _FLAT_MAX or b"\0" in data:
        return None
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return None
    text = text.removesuffix("\n")
    parts = text.split("/")
    if not text.startswith("../") or any(
        p != ".." and (p == "." or not _FLAT_NAME.fullmatch(p)) for p in parts
    ):
        return None
    return text


class Source:
    """Read files below ``root`` without ever leaving it.

    Args:
        root: ``/`` for the live machine, or a snapshot directory.
        flattened_links: replaying a snapshot whose symlinks were packed as text files: a regular
            file met as a directory on the way (``sys/bus/pci/devices/BDF/vendor`` where ``BDF``
            is a file), or one asked for as a link (``readlink``, ``resolve(link=True)``), whose
            content is ``flat_target`` is followed as a symlink, with the same containment rules.
            Never for the live root.

    Example:
        >>> Source(Path("/")).read_text("sys/bus/pci/devices/0000:17:00.0/vendor")
        '0x10de'
    """

    def __init__(self, root: Path | str = "/", *, flattened_links: bool = False) -> None:
        self.root = Path(root).resolve()
        self.live = self.root == Path("/")
        self.flattened_links = flattened_links and not self.live
        self._dirs: dict[str, str] = {}  # resolved directories: the tree does not change during a run
        # each component met while resolving, by its link-free path: (_LINK|_FLAT, target), or
        # (_PLAIN|_FILE, None); _FILE (a regular file seen as the last component) is looked at again
        # when met on the way (it may be a flattened link).
        self._steps: dict[str, tuple[int, str | None]] = {}

    def __repr__(self) -> str:
        return f"Source({str(self.root)!r})"

    # -- path resolution -------------------------------------------------------------------------

    def resolve(self, rel: str, *, link: bool = False) -> str:
        """Resolve ``rel`` through symlinks, staying inside the root; return the clean relative path.

        ``link``: ``rel`` names a link (``sys/bus/pci/devices/BDF``): with ``flattened_links``, a
        text file there holding a link target is followed too.
        """
        parent, _, name = rel.strip("/").rpartition("/")
        if parent and name not in ("", ".", ".."):
            base = self._dir(parent)
            return self._resolve([name], base.split("/") if base else [], rel, link)
        return self._resolve(rel.split("/"), [], rel, link)

    def _dir(self, rel: str) -> str:
        """``rel`` resolved as a directory on the way to a file (a flattened link there is followed),
        each directory above it resolved once per run: ``sys/bus/pci/devices`` once, not per device."""
        base = self._dirs.get(rel)
        if base is None:
            parent, _, name = rel.rpartition("/")
            if parent and name not in ("", ".", ".."):
                up = self._dir(parent)
                base = self._resolve([name], up.split("/") if up else [], rel, True)
            else:
                base = self._resolve(rel.split("/"), [], rel, True)
            self._dirs[rel] = base
        return base

    def _flat(self, here: str, st: os.stat_result) -> str | None:
        """The target of the flattened link at ``here`` (already ``lstat``-ed regular), else ``None``."""
        if not self.flattened_links or st.st_size > _FLAT_MAX + 1 or st.st_nlink > 1:
            return None
        try:
            fd = os.open(here, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            return None
        try:
            now = os.fstat(fd)
            if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                return None
            return flat_target(os.read(fd, _FLAT_MAX + 2))
        except OSError:
            return None
        finally:
            os.close(fd)

    def _resolve(self, todo: list[str], done: list[str], asked: str, link: bool = False) -> str:
        # ``done`` is already resolved (no links in it); walk ``todo`` one component at a time.
        parts = [p for p in todo if p not in ("", ".")]
        done = list(done)
        links = 0
        via: str | None = None  # the last link followed, for the message when a ".." climbs out
        root = str(self.root)
        where = "rig root" if self.live else "snapshot"
        while parts:
            part = parts.pop(0)
            if part == "..":
                if not done:
                    raise RefusedError(asked, f"{via or 'path'} leaves the {where}: refused")
                done.pop()
                continue
            key = f"{'/'.join(done)}/{part}" if done else part
            step = self._steps.get(key)
            if step is None or (step[0] == _FILE and (parts or link)):
                here = f"{root}/{key}" if root != "/" else f"/{key}"
                try:
                    st = os.lstat(here)
                except FileNotFoundError:
                    done.append(part)
                    done.extend(p for p in parts if p not in ("", "."))
                    return "/".join(done)  # absent: callers report it with the path they asked for
                except OSError as exc:
                    raise SourceError(asked, exc.strerror or str(exc)) from exc
                if stat.S_ISLNK(st.st_mode):
                    step = (_LINK, os.readlink(here))
                elif stat.S_ISREG(st.st_mode) and (parts or link):
                    flat = self._flat(here, st)
                    step = (_FLAT, flat) if flat is not None else (_PLAIN, None)
                else:
                    step = (_FILE if stat.S_ISREG(st.st_mode) else _PLAIN, None)
                self._steps[key] = step  # the tree does not change during a run (as _dirs)
            kind, target = step
            if kind == _LINK:
                via = f"symlink {key} -> {target}"
            elif kind == _FLAT:
                via = f"flattened link {key} -> {target}"
            if target is not None:
                links += 1
                if links > _MAX_LINKS:
                    raise SourceError(asked, "too many levels of symbolic links")
                if posixpath.isabs(target):
                    if not self.live:
                        raise RefusedError(asked, f"{via} leaves the snapshot: refused")
                    done = []
                parts = [p for p in target.split("/") if p not in ("", ".")] + parts
                continue
            done.append(part)
        return "/".join(done)

    def _path(self, rel: str) -> str:
        return os.path.join(str(self.root), self.resolve(rel))

    # -- reads -----------------------------------------------------------------------------------

    def exists(self, rel: str) -> bool:
        """True if ``rel`` exists below the root (after resolving links inside it)."""
        try:
            return os.path.exists(self._path(rel))
        except SourceError:
            return False

    def read_bytes(self, rel: str, limit: int = 1 << 20, *, whole: bool = False) -> bytes:
        """Read a regular file; absent raises ``KeyError``, unreadable raises ``SourceError``.

        Anything but a regular file (a FIFO, a device node, a socket, a directory) is refused with
        ``RefusedError`` from ``lstat`` *before* any ``open``: opening a FIFO wakes its writer and
        opening some character devices has side effects. In a snapshot, a file with several hard
        links is refused too: one of its names may be outside the snapshot. The file is then opened with
        ``O_NOFOLLOW | O_NONBLOCK`` and ``fstat`` must show the same regular file.

        Args:
            limit: bytes read at most. PCI ``config`` is read up to 4096 bytes (the extended
                configuration space; PCI Express Base Specification 6.0, section 7.2.2).
            whole: the file must fit in ``limit``; a larger one raises ``SourceError`` instead of
                being cut short (for JSON and TOML, which are useless truncated).
        """
        path = self._path(rel)
        try:
            st = os.lstat(path)
        except FileNotFoundError as exc:
            raise KeyError(rel) from exc
        except OSError as exc:
            raise SourceError(rel, exc.strerror or str(exc)) from exc
        if not stat.S_ISREG(st.st_mode):
            raise RefusedError(rel, f"{_kind(st.st_mode)}, not a regular file: refused without opening it")
        if not self.live and st.st_nlink > 1:
            raise RefusedError(rel, HARD_LINK.format(n=st.st_nlink))
        try:
            fd = os.open(
                path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
            )
        except FileNotFoundError as exc:
            raise KeyError(rel) from exc
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise RefusedError(rel, "became a symlink while being read: refused") from exc
            raise SourceError(rel, exc.strerror or str(exc)) from exc
        try:
            now = os.fstat(fd)
            if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                raise RefusedError(rel, "was replaced while being read, not a regular file: refused")
            chunks: list[bytes] = []
            size = 0
            want = limit + 1 if whole else limit
            while size < want:
                try:
                    chunk = os.read(fd, min(65536, want - size))
                except OSError as exc:  # sysfs attributes can fail at read time (EIO, EPERM)
                    raise SourceError(rel, exc.strerror or str(exc)) from exc
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            if whole and size > limit:
                raise SourceError(rel, f"larger than {limit} bytes: not a file rigcheck wrote")
            return b"".join(chunks)
        finally:
            os.close(fd)

    def read_json(self, rel: str, limit: int = 64 << 20, *, finite: bool = False) -> Any:
        """Read a JSON file (``nvml.json``, ``p2p.json``) through the same checks as every read.

        Absent raises ``KeyError``; refused, too large, not UTF-8 or not JSON raises ``SourceError``
        naming the file. Values are not judged here: impossible numbers are the checks' business.
        """
        data = self.read_bytes(rel, limit, whole=True)
        try:
            # NaN and Infinity are read (Python's json writes them, a live run can measure them): the
            # field's own rule calls such a reading impossible, naming the field, not the whole file.
            # ``finite``: refused (RFC 8259 section 6 has no such numbers), for files no measurement writes.
            constant = _no_constant if finite else None
            return json.loads(data.decode("utf-8"), object_pairs_hook=_no_repeats, parse_constant=constant)
        except UnicodeDecodeError as exc:
            raise SourceError(rel, f"not UTF-8 text: {exc}") from None
        except json.JSONDecodeError as exc:
            raise SourceError(rel, f"not valid JSON: {exc}") from None
        except (ValueError, RecursionError) as exc:
            # a repeated key, an integer of thousands of digits (Python's int limit), nesting
            # deeper than the interpreter's stack: no tool of ours writes such a file
            raise SourceError(
                rel, f"not a file rigcheck wrote: {str(exc)[:200] or type(exc).__name__}"
            ) from None

    def read_text(self, rel: str) -> str:
        """Read a text attribute, stripped; absent raises ``KeyError``."""
        try:
            return self.read_bytes(rel).decode("utf-8", "replace").strip()
        except UnicodeDecodeError as exc:  # pragma: no cover - "replace" never raises
            raise SourceError(rel, "not text") from exc

    def read_optional(self, rel: str) -> str | None:
        """Read a text attribute that some devices lack; ``None`` if absent."""
        try:
            return self.read_text(rel)
        except KeyError:
            return None

    def read_int(self, rel: str, base: int = 0) -> int:
        """Read an integer attribute (``0x10de``, ``16``); unparsable raises ``ValueError``."""
        text = self.read_text(rel)
        try:
            return int(text, base)
        except ValueError:
            raise ValueError(f"{rel}: expected an integer, read {text!r}") from None

    def listdir(self, rel: str) -> list[str]:
        """Names in a directory, sorted; absent gives ``[]``."""
        path = self._path(rel)
        try:
            return sorted(os.listdir(path))
        except FileNotFoundError:
            return []
        except NotADirectoryError:
            return []
        except OSError as exc:
            raise SourceError(rel, exc.strerror or str(exc)) from exc

    def readlink(self, rel: str) -> str | None:
        """The raw target of a symlink below the root, or ``None`` if it is not a link.

        With ``flattened_links``, a text file holding a link target (``flat_target``) is one too.
        """
        parent, _, name = rel.rstrip("/").rpartition("/")
        base = os.path.join(str(self.root), self.resolve(parent, link=True)) if parent else str(self.root)
        path = os.path.join(base, name)
        try:
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                return self._flat(path, st)
            return os.readlink(path)
        except (FileNotFoundError, OSError):
            return None


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refusing a key given twice (which of the two values is the reading?)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} appears twice in one object")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    """NaN, Infinity and -Infinity are not JSON numbers (RFC 8259 section 6); Python's json accepts them."""
    raise ValueError(f"{name} is not a JSON number (RFC 8259 section 6)")


def _kind(mode: int) -> str:
    """What a non-regular file is, in words, from its ``lstat`` mode."""
    for test, name in (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISLNK, "a symlink"),
    ):
        if test(mode):
            return name
    return f"a special file (mode {mode:o})"
