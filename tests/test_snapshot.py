"""Snapshots: opening directories and archives, refusing corrupt or hostile ones."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import pytest

from pytest_rigcheck.errors import SnapshotError
from pytest_rigcheck.snapshot import open_snapshot, pack

from .conftest import SNAPSHOTS

GOOD = SNAPSHOTS / "rtx3090x2-gen4"


def _tar_with(tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    out = tmp_path / "bad.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


class TestOpen:
    def test_directory(self) -> None:
        """A shipped snapshot directory opens with its manifest."""
        snap = open_snapshot(GOOD)
        assert snap.manifest.kind == "modelled" and snap.manifest.name == "rtx3090x2-gen4"

    def test_archive_roundtrip(self, tmp_path: Path) -> None:
        """A .tar.gz of a snapshot opens the same, and its temporary copy goes on close."""
        archive = tmp_path / "s.tar.gz"
        pack(GOOD, archive)
        snap = open_snapshot(archive)
        assert (snap.root / "sys/bus/pci/devices/0000:21:00.0").is_symlink()
        root = snap.root
        snap.close()
        assert not root.exists()

    def test_missing(self, tmp_path: Path) -> None:
        """A path that is not there is a clear error."""
        with pytest.raises(SnapshotError, match="no such snapshot"):
            open_snapshot(tmp_path / "nope")

    def test_no_manifest(self, tmp_path: Path) -> None:
        """A directory without MANIFEST.toml is not a snapshot."""
        (tmp_path / "sys/bus/pci/devices").mkdir(parents=True)
        with pytest.raises(SnapshotError, match="no MANIFEST.toml"):
            open_snapshot(tmp_path)

    def test_partial(self, tmp_path: Path) -> None:
        """A snapshot without sys/bus/pci/devices is partial."""
        shutil.copy(GOOD / "MANIFEST.toml", tmp_path / "MANIFEST.toml")
        with pytest.raises(SnapshotError, match="partial snapshot"):
            open_snapshot(tmp_path)

    @pytest.mark.parametrize(
        ("text", "match"),
        [
            ("kind = 'guessed'\nname = 'x'", "kind 'guessed'"),
            ("kind = 'captured'", "'name' must be"),
            ("kind = 'captured'\nname = 'x'\nformat = 9", "format 9"),
            ("not toml [", "corrupt manifest"),
            ("kind = 'captured'\nname = 'x'\nempty_dirs = ['/etc']", "leaves the snapshot"),
        ],
    )
    def test_bad_manifest(self, tmp_path: Path, text: str, match: str) -> None:
        """Bad manifests name the key and what is allowed."""
        (tmp_path / "sys/bus/pci/devices").mkdir(parents=True)
        (tmp_path / "MANIFEST.toml").write_text(text)
        with pytest.raises(SnapshotError, match=match):
            open_snapshot(tmp_path)

    def test_not_an_archive(self, tmp_path: Path) -> None:
        """A file that is no archive is refused."""
        (tmp_path / "x.tar.gz").write_bytes(b"garbage")
        with pytest.raises(SnapshotError, match="neither a directory nor a tar archive"):
            open_snapshot(tmp_path / "x.tar.gz")

    def test_truncated_archive(self, tmp_path: Path) -> None:
        """A truncated archive is reported corrupt."""
        archive = tmp_path / "s.tar.gz"
        pack(GOOD, archive)
        data = archive.read_bytes()
        archive.write_bytes(data[: len(data) // 2])
        with pytest.raises(SnapshotError):
            open_snapshot(archive)


class TestHostileArchives:
    def test_path_traversal(self, tmp_path: Path) -> None:
        """'..' in a member name is refused before anything is written."""
        archive = _tar_with(
            tmp_path, [_file("MANIFEST.toml", b"kind='captured'\nname='x'"), _file("../../evil", b"x")]
        )
        with pytest.raises(SnapshotError, match="unsafe entry"):
            open_snapshot(archive)
        assert not (tmp_path.parent / "evil").exists()

    def test_absolute_member(self, tmp_path: Path) -> None:
        """An absolute member name is refused."""
        archive = _tar_with(tmp_path, [_file("/tmp/evil", b"x")])
        with pytest.raises(SnapshotError, match="unsafe entry"):
            open_snapshot(archive)

    def test_link_to_etc(self, tmp_path: Path) -> None:
        """A symlink to /etc is refused."""
        link = tarfile.TarInfo("sys/bus/pci/devices/0000:00:01.0")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc"
        archive = _tar_with(tmp_path, [_file("MANIFEST.toml", b"kind='captured'\nname='x'"), (link, None)])
        with pytest.raises(SnapshotError, match="leaves the snapshot"):
            open_snapshot(archive)

    def test_relative_link_out(self, tmp_path: Path) -> None:
        """A relative symlink that climbs out of the snapshot is refused."""
        link = tarfile.TarInfo("sys/x")
        link.type, link.linkname = tarfile.SYMTYPE, "../../../../etc/passwd"
        archive = _tar_with(tmp_path, [(link, None)])
        with pytest.raises(SnapshotError, match="leaves the snapshot"):
            open_snapshot(archive)

    def test_device_node(self, tmp_path: Path) -> None:
        """Device nodes are refused."""
        dev = tarfile.TarInfo("sys/dev")
        dev.type = tarfile.CHRTYPE
        archive = _tar_with(tmp_path, [(dev, None)])
        with pytest.raises(SnapshotError, match="device, fifo or hard link"):
            open_snapshot(archive)
