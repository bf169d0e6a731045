"""The one reader: stays inside its root whatever links a snapshot holds."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from pytest_rigcheck.errors import RefusedError, SourceError
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
        with pytest.raises(RefusedError, match=r"symlink sys/evil -> \.\./\.\./secret leaves the snapshot"):
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


class TestSpecialFiles:
    """gate.md D9: a FIFO or device node in a directory snapshot is refused with ``lstat`` before any
    ``open`` (opening a FIFO wakes its writer; opening some character devices has side effects)."""

    def test_fifo_never_opened(self, root: Path) -> None:
        """A writer blocked in open(O_WRONLY) on the FIFO must stay blocked: the reader never opens it."""
        fifo = root / "sys/devices/pci0000:00/0000:00:01.0/config"
        os.mkfifo(fifo)
        opened = threading.Event()

        def writer() -> None:
            fd = os.open(fifo, os.O_WRONLY)  # blocks until a reader opens the FIFO
            opened.set()
            os.close(fd)

        t = threading.Thread(target=writer, daemon=True)
        t.start()
        time.sleep(0.05)
        src = Source(root)
        for read in (src.read_bytes, src.read_text, src.read_optional, src.read_json):
            with pytest.raises(RefusedError, match="FIFO .*not a regular file: refused without opening it"):
                read("sys/bus/pci/devices/0000:00:01.0/config")
        time.sleep(0.2)
        assert not opened.is_set(), "the reader opened the FIFO"
        # unblock the writer ourselves so the thread ends
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        t.join(5)
        os.close(fd)

    @pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a character device needs root")
    def test_device_node_refused(self, root: Path) -> None:
        """A character device (/dev/null's 1:3) is refused as a device, not opened."""
        node = root / "sys/null"
        os.mknod(node, stat.S_IFCHR | 0o600, os.makedev(1, 3))
        with pytest.raises(RefusedError, match="a character device, not a regular file"):
            Source(root).read_bytes("sys/null")

    def test_socket_and_directory_refused(self, root: Path, tmp_path: Path) -> None:
        """A socket or a directory read as a file is refused by kind."""
        import socket

        sock = socket.socket(socket.AF_UNIX)
        path = root / "sock"
        try:
            sock.bind(str(path))
            with pytest.raises(RefusedError, match="a socket, not a regular file"):
                Source(root).read_bytes("sock")
        finally:
            sock.close()
        with pytest.raises(RefusedError, match="a directory, not a regular file"):
            Source(root).read_bytes("sys")


class TestReadJson:
    def test_json(self, root: Path) -> None:
        """JSON reads through the same checks; bad JSON and oversize files name the file."""
        (root / "a.json").write_text(json.dumps({"x": 1}))
        (root / "bad.json").write_text("{nope")
        (root / "big.json").write_text("[" + "0," * 100 + "0]")
        src = Source(root)
        assert src.read_json("a.json") == {"x": 1}
        with pytest.raises(SourceError, match="bad.json: not valid JSON"):
            src.read_json("bad.json")
        with pytest.raises(SourceError, match="big.json: larger than 64 bytes"):
            src.read_json("big.json", limit=64)
        with pytest.raises(KeyError):
            src.read_json("none.json")

    def test_json_link_out_refused(self, root: Path, tmp_path: Path) -> None:
        """gate.md D8: a JSON file that is a link out of the snapshot is refused, saying so."""
        (tmp_path / "p2p.json").write_text("{}")
        os.symlink(str(tmp_path / "p2p.json"), root / "p2p.json")
        os.symlink("../p2p.json", root / "nvml.json")
        src = Source(root)
        with pytest.raises(RefusedError, match=r"symlink p2p.json -> /.*leaves the snapshot"):
            src.read_json("p2p.json")
        with pytest.raises(RefusedError, match=r"symlink nvml.json -> \.\./p2p.json leaves the snapshot"):
            src.read_json("nvml.json")


def test_hard_link_refused_in_snapshot(root: Path, tmp_path: Path) -> None:
    """A hard link has no direction: `ln /etc/shadow snap/p2p.json` would read a host file. A snapshot
    file with more than one name is refused (capture, git and our tar extraction never make one)."""
    os.link(tmp_path / "secret", root / "p2p.json")
    with pytest.raises(RefusedError, match=r"a hard link \(2 names\)"):
        Source(root).read_json("p2p.json")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('{"a": 1, "a": 2}', "key 'a' appears twice"),
        ('{"a": ' + "1" * 5001 + "}", "Exceeds the limit"),
        ("[" * 100000 + "]" * 100000, "not a file rigcheck wrote"),
    ],
)
def test_read_json_refuses_what_no_tool_writes(tmp_path: Path, text: str, why: str) -> None:
    """Fresh-user findings: a repeated key passed with its last value; a 5001-digit integer and 100,000
    nested arrays ended in ValueError and RecursionError tracebacks. Each is one SourceError naming the file."""
    from pytest_rigcheck.errors import SourceError

    (tmp_path / "nvml.json").write_text(text)
    with pytest.raises(SourceError, match=why):
        Source(tmp_path).read_json("nvml.json")
