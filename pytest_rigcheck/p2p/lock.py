"""One GPU measurement at a time on a machine, and one measurement per test run shared by xdist workers.

``measure_lock()`` is an exclusive ``flock`` (flock(2)) on ``rigcheck-gpu-measure.lock`` in a directory
every user of the machine shares (``lock_dir``: ``/run/lock`` or ``/tmp``, the FHS places for lock files
and temporary files, each root-owned, world-writable and sticky), held while measuring: the P2P/NCCL
workers and the GPU load, of xdist workers of one run, of other pytest runs, of root and of other users,
wait their turn. The lock file is opened without following a link (``O_NOFOLLOW``, relative to an
``O_DIRECTORY`` descriptor of the checked directory) and without creating over someone else's file
(fs.protected_regular refuses ``O_CREAT`` there, even to root), and is refused unless ``fstat`` shows a
regular file with one link: a planted symbolic link, hard link, FIFO or device is never opened for
writing, created through or truncated. A file another user created is locked through a read-only
descriptor (``flock`` does not need write access).

With xdist, the first worker to take the lock measures and leaves the figures in a file named by the
run's ``testrunuid``; the others read them instead of measuring again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import RigcheckError

LOCK_NAME = "rigcheck-gpu-measure.lock"
SHARED_DIRS = (Path("/run/lock"), Path("/tmp"))  # noqa: S108 - shared on purpose: every user must see one lock
_OPEN = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # NONBLOCK: a planted FIFO must not hang the open


class MeasureLockError(RigcheckError):
    """The machine-wide measurement lock cannot be used safely (a planted link, an unsafe directory)."""


def lock_dir() -> Path:
    """The first of ``/run/lock`` and ``/tmp`` that is a real directory owned by root, world-writable and
    sticky (the same answer for every user of the machine); else the user's temporary directory."""
    for d in SHARED_DIRS:
        try:
            st = os.lstat(d)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid == 0 and st.st_mode & 0o1002 == 0o1002:
            return d
    return Path(tempfile.gettempdir())


def _open_dir(directory: Path) -> int:
    """An ``O_DIRECTORY`` descriptor of ``directory`` after checking that no other user can swap its
    entries: sticky if others may write to it, and owned by root or by this user."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise MeasureLockError(
            f"cannot use {directory} for the GPU measurement lock: {exc.strerror}"
        ) from None
    st = os.fstat(fd)
    writable_by_others = st.st_mode & 0o022
    if st.st_uid not in (0, os.geteuid()) or (writable_by_others and not st.st_mode & stat.S_ISVTX):
        os.close(fd)
        raise MeasureLockError(
            f"refusing {directory} for the GPU measurement lock: owned by uid {st.st_uid}, mode "
            f"{stat.filemode(st.st_mode)}; another user could replace the lock file there "
            "(fix: point TMPDIR at a directory of your own, or make it sticky: chmod +t)"
        )
    return fd


def _open_lock(dir_fd: int, where: Path) -> int:
    """Open (creating if absent) the lock file in ``dir_fd``; see the module docstring for the rules."""
    path = where / LOCK_NAME
    for _ in range(10):
        try:
            try:
                fd = os.open(LOCK_NAME, os.O_RDWR | _OPEN, dir_fd=dir_fd)
            except FileNotFoundError:
                try:
                    fd = os.open(LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_EXCL | _OPEN, 0o666, dir_fd=dir_fd)
                except FileExistsError:
                    continue  # another run created it meanwhile: open theirs
                os.fchmod(fd, 0o666)  # despite the umask: every user of the machine opens this one file
            except PermissionError:
                fd = os.open(LOCK_NAME, os.O_RDONLY | _OPEN, dir_fd=dir_fd)  # another user's file
        except OSError as exc:
            what = "a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
            raise MeasureLockError(
                f"refusing the GPU measurement lock {path}: {what}; rigcheck never follows a link there "
                f"(fix: remove it if no measurement is running: rm {path})"
            ) from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            os.close(fd)
            kind = (
                "not a regular file" if not stat.S_ISREG(st.st_mode) else f"a file with {st.st_nlink} links"
            )
            raise MeasureLockError(
                f"refusing the GPU measurement lock {path}: {kind} (planted?); "
                f"fix: remove it if no measurement is running: rm {path}"
            )
        return fd
    raise MeasureLockError(f"the GPU measurement lock {path} keeps appearing and vanishing; try again")


@contextlib.contextmanager
def measure_lock(timeout_s: float = 1800.0, directory: Path | None = None) -> Iterator[None]:
    """Hold the machine-wide measurement lock (``directory`` default: ``lock_dir()``).

    Raises:
        TimeoutError: another measurement held it for ``timeout_s``; names the holder's pid.
        MeasureLockError: the lock file or its directory is unsafe (a planted link); says what to remove.
    """
    where = directory or lock_dir()
    dir_fd = _open_dir(where)
    try:
        fd = _open_lock(dir_fd, where)
    finally:
        os.close(dir_fd)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                    raise TimeoutError(
                        f"another GPU measurement (pid {holder}) has held {where / LOCK_NAME} for over "
                        f"{timeout_s:.0f} s"
                    ) from None
                time.sleep(0.05)
        with contextlib.suppress(OSError):  # read-only (another user's file): the holder stays unnamed
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def shared_result_path(testrunuid: str | None, rig_name: str, directory: Path | None = None) -> Path | None:
    """Where xdist workers of one run share a rig's figures; None outside xdist."""
    if not testrunuid:
        return None
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{testrunuid}-{rig_name}")
    return (directory or Path(tempfile.gettempdir())) / f"rigcheck-p2p-{safe}.json"


def read_shared(path: Path | None) -> dict[str, Any] | None:
    """The figures another xdist worker of this run left, or None. Not through a link, and only a regular
    file of this user (anyone can create files in the temporary directory)."""
    if path is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | _OPEN)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            return None
        return json.loads(f.read().decode("utf-8"))  # type: ignore[no-any-return]


def write_shared(path: Path | None, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically, through a new file of a random name (never a planted one)."""
    if path is None:
        return
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)  # O_EXCL: never an existing file
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
