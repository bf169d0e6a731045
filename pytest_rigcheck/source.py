"""One reader for everything a check needs, rooted at ``/`` (live) or at a snapshot.

Live and replayed rigs go through this same class, so a snapshot exercises exactly the code a
live run does. Paths are relative and spelled as on the live machine (``sys/bus/pci/devices``).
Symlinks are resolved by hand, one component at a time, and a link that leaves the root (an
absolute target, or too many ``..``) is refused: a hostile snapshot reads nothing outside itself.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from pathlib import Path

from .errors import SourceError

_MAX_LINKS = 40  # as the kernel's MAXSYMLINKS: a loop is an error, not a hang


class Source:
    """Read files below ``root`` without ever leaving it.

    Args:
        root: ``/`` for the live machine, or a snapshot directory.

    Example:
        >>> Source(Path("/")).read_text("sys/bus/pci/devices/0000:17:00.0/vendor")
        '0x10de'
    """

    def __init__(self, root: Path | str = "/") -> None:
        self.root = Path(root).resolve()
        self.live = self.root == Path("/")
        self._dirs: dict[str, str] = {}  # resolved directories: the tree does not change during a run

    def __repr__(self) -> str:
        return f"Source({str(self.root)!r})"

    # -- path resolution -------------------------------------------------------------------------

    def resolve(self, rel: str) -> str:
        """Resolve ``rel`` through symlinks, staying inside the root; return the clean relative path."""
        parent, _, name = rel.strip("/").rpartition("/")
        if parent and name not in ("", ".", ".."):
            base = self._dirs.get(parent)
            if base is None:
                base = self._dirs[parent] = self._resolve(parent.split("/"), [], parent)
            return self._resolve([name], base.split("/") if base else [], rel)
        return self._resolve(rel.split("/"), [], rel)

    def _resolve(self, todo: list[str], done: list[str], asked: str) -> str:
        # ``done`` is already resolved (no links in it); walk ``todo`` one component at a time.
        parts = [p for p in todo if p not in ("", ".")]
        done = list(done)
        links = 0
        root = str(self.root)
        while parts:
            part = parts.pop(0)
            if part == "..":
                if not done:
                    raise SourceError(asked, "path leaves the rig root")
                done.pop()
                continue
            here = os.path.join(root, *done, part)
            try:
                st = os.lstat(here)
            except FileNotFoundError:
                done.append(part)
                done.extend(p for p in parts if p not in ("", "."))
                return "/".join(done)  # absent: callers report it with the path they asked for
            except OSError as exc:
                raise SourceError(asked, exc.strerror or str(exc)) from exc
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > _MAX_LINKS:
                    raise SourceError(asked, "too many levels of symbolic links")
                target = os.readlink(here)
                if posixpath.isabs(target):
                    if not self.live:
                        raise SourceError(
                            asked, f"symlink {'/'.join([*done, part])} -> {target} leaves the snapshot"
                        )
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

    def read_bytes(self, rel: str, limit: int = 1 << 20) -> bytes:
        """Read a file; absent raises ``KeyError``, unreadable raises ``SourceError``."""
        path = self._path(rel)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
        except FileNotFoundError as exc:
            raise KeyError(rel) from exc
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise SourceError(rel, "is a symlink") from exc
            raise SourceError(rel, exc.strerror or str(exc)) from exc
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise SourceError(rel, "not a regular file")
            chunks: list[bytes] = []
            size = 0
            while size < limit:
                try:
                    chunk = os.read(fd, min(65536, limit - size))
                except OSError as exc:  # sysfs attributes can fail at read time (EIO, EPERM)
                    raise SourceError(rel, exc.strerror or str(exc)) from exc
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

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
        """The raw target of a symlink below the root, or ``None`` if it is not a link."""
        parent, _, name = rel.rstrip("/").rpartition("/")
        base = os.path.join(str(self.root), self.resolve(parent)) if parent else str(self.root)
        try:
            return os.readlink(os.path.join(base, name))
        except (FileNotFoundError, OSError):
            return None
