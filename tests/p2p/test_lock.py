"""The machine-wide measurement lock: exclusive, never through a planted link, usable on another user's file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pytest_rigcheck.p2p import lock
from pytest_rigcheck.p2p.lock import (
    LOCK_NAME,
    MeasureLockError,
    lock_dir,
    measure_lock,
    read_shared,
    write_shared,
)


class TestMeasureLock:
    def test_exclusive_and_names_the_holder(self, tmp_path: Path) -> None:
        """While one measurement holds the lock a second one waits, then times out naming the holder."""
        with measure_lock(directory=tmp_path):
            assert (tmp_path / LOCK_NAME).read_text() == str(os.getpid())
            with pytest.raises(TimeoutError, match=f"pid {os.getpid()}"), measure_lock(0.2, tmp_path):
                pass
        with measure_lock(0.2, tmp_path):  # released on exit
            pass

    def test_created_for_every_user(self, tmp_path: Path) -> None:
        """A new lock file is readable and writable by every user, whatever the umask."""
        old = os.umask(0o077)
        try:
            with measure_lock(directory=tmp_path):
                pass
        finally:
            os.umask(old)
        assert stat.S_IMODE((tmp_path / LOCK_NAME).stat().st_mode) == 0o666

    @pytest.mark.parametrize("target_exists", [False, True], ids=["dangling", "to-a-file"])
    def test_planted_symlink_not_followed(self, tmp_path: Path, target_exists: bool) -> None:
        """A symbolic link planted at the lock path is refused: its target is neither created nor truncated."""
        victim = tmp_path / "victim"
        if target_exists:
            victim.write_text("precious")
        (tmp_path / LOCK_NAME).symlink_to(victim)
        with pytest.raises(MeasureLockError, match="symbolic link.*rm "), measure_lock(1, tmp_path):
            pass
        assert (victim.read_text() == "precious") if target_exists else not victim.exists()

    def test_planted_hard_link_refused(self, tmp_path: Path) -> None:
        """A hard link to another file (root would truncate it) is refused and left as it was."""
        victim = tmp_path / "victim"
        victim.write_text("precious")
        os.link(victim, tmp_path / LOCK_NAME)
        with pytest.raises(MeasureLockError, match="2 links"), measure_lock(1, tmp_path):
            pass
        assert victim.read_text() == "precious"

    def test_planted_fifo_refused_without_hanging(self, tmp_path: Path) -> None:
        """A FIFO at the lock path is refused at once, not opened and waited on."""
        os.mkfifo(tmp_path / LOCK_NAME)
        with pytest.raises(MeasureLockError, match="not a regular file"), measure_lock(1, tmp_path):
            pass

    def test_lock_dir_a_link_refused(self, tmp_path: Path) -> None:
        """The directory itself must not be a link."""
        (tmp_path / "real").mkdir()
        (tmp_path / "link").symlink_to(tmp_path / "real")
        with pytest.raises(MeasureLockError, match="cannot use"), measure_lock(1, tmp_path / "link"):
            pass

    def test_writable_directory_without_sticky_bit_refused(self, tmp_path: Path) -> None:
        """In a world-writable directory without the sticky bit anyone could swap the lock file."""
        d = tmp_path / "open"
        d.mkdir()
        d.chmod(0o777)
        with pytest.raises(MeasureLockError, match="chmod \\+t"), measure_lock(1, d):
            pass
        d.chmod(0o1777)
        with measure_lock(1, d):
            pass

    def test_file_not_writable_is_locked_read_only(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Another user's lock file (no write access: EACCES, even to root under fs.protected_regular) is
        still locked, through a read-only descriptor, and left unchanged."""
        (tmp_path / LOCK_NAME).write_text("4242")
        real_open = os.open

        def no_write(path: object, flags: int, *args: object, **kw: object) -> int:
            if path == LOCK_NAME and flags & (os.O_RDWR | os.O_WRONLY):
                raise PermissionError(13, "Permission denied")
            return real_open(path, flags, *args, **kw)  # type: ignore[arg-type]

        monkeypatch.setattr(lock.os, "open", no_write)
        with measure_lock(1, tmp_path), pytest.raises(TimeoutError), measure_lock(0.2, tmp_path):
            pass
        assert (tmp_path / LOCK_NAME).read_text() == "4242"

    def test_lock_dir_is_shared(self) -> None:
        """The default directory is the same for every user: a root-owned sticky world-writable one."""
        d = lock_dir()
        st = os.lstat(d)
        if d in lock.SHARED_DIRS:
            assert st.st_uid == 0 and st.st_mode & 0o1002 == 0o1002


class TestSharedResult:
    def test_round_trip(self, tmp_path: Path) -> None:
        path = tmp_path / "rigcheck-p2p-x.json"
        write_shared(path, {"a": 1})
        assert read_shared(path) == {"a": 1}
        assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left

    def test_planted_link_neither_read_nor_written_through(self, tmp_path: Path) -> None:
        """A link at the shared path is not read; writing replaces the link, not its target."""
        victim = tmp_path / "victim"
        victim.write_text('{"planted": true}')
        path = tmp_path / "rigcheck-p2p-x.json"
        path.symlink_to(victim)
        assert read_shared(path) is None
        write_shared(path, {"a": 1})
        assert victim.read_text() == '{"planted": true}'
        assert not path.is_symlink() and read_shared(path) == {"a": 1}
