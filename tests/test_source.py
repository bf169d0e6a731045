"""The one reader: stays inside its root whatever links a snapshot holds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_rigcheck.errors import SourceError
from pytest_rigcheck.source import Source


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "snap"
    (r / "sys/devices/pci0000:00/0000:00:01.0").mkdir(parents=True)
    (r / "sys/devices/pci0000:00/0000:00:01.0/vendor").write_text("0x10de\n")
    (r / "sys/bus/pci/devices").mkdir(parents=True)
    os.symlink("../../../devices/pci0000:00/0000:00:01.0", r / "sys/bus/pci/devices/0000:00:01.0")
    (tmp_path / "secret").write_text("outside\n")
    return r


class TestSource:
    def test_relative_links(self, root: Path) -> None:
        """The kernel's relative links resolve inside the root."""
        src = Source(root)
        assert src.read_text("sys/bus/pci/devices/0000:00:01.0/vendor") == "0x10de"
        assert src.resolve("sys/bus/pci/devices/0000:00:01.0") == "sys/devices/pci0000:00/0000:00:01.0"

    def test_absolute_link_refused(self, root: Path) -> None:
        """A link to an absolute path (say /etc) is refused in a snapshot."""
        os.symlink("/etc/passwd", root / "sys/evil")
        with pytest.raises(SourceError, match="leaves the snapshot"):
            Source(root).read_text("sys/evil")

    def test_dotdot_escape_refused(self, root: Path) -> None:
        """A relative link climbing out of the root is refused."""
        os.symlink("../../secret", root / "sys/evil")
        with pytest.raises(SourceError, match="leaves the rig root"):
            Source(root).read_text("sys/evil")

    def test_dotdot_in_path_refused(self, root: Path) -> None:
        """A path with too many '..' is refused, not read."""
        with pytest.raises(SourceError):
            Source(root).read_text("../secret")

    def test_link_loop(self, root: Path) -> None:
        """A symlink loop is an error, not a hang."""
        os.symlink("b", root / "a")
        os.symlink("a", root / "b")
        with pytest.raises(SourceError, match="too many levels"):
            Source(root).read_text("a")

    def test_absent(self, root: Path) -> None:
        """Absent files raise KeyError; read_optional gives None."""
        src = Source(root)
        with pytest.raises(KeyError):
            src.read_text("sys/nothing")
        assert src.read_optional("sys/nothing") is None
        assert src.listdir("sys/nothing") == []

    def test_read_int(self, root: Path) -> None:
        """Integers parse; junk names the file."""
        (root / "n").write_text("junk\n")
        src = Source(root)
        assert src.read_int("sys/bus/pci/devices/0000:00:01.0/vendor") == 0x10DE
        with pytest.raises(ValueError, match="n: expected an integer"):
            src.read_int("n")
