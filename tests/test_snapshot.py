"""Snapshots: opening directories and archives, refusing corrupt or hostile ones."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import threading
import time
from pathlib import Path

import pytest

from pytest_rigcheck import snapshot as snapshot_mod
from pytest_rigcheck.errors import RigcheckError, SnapshotError
from pytest_rigcheck.snapshot import audit, containment, find_snapshot, open_snapshot, pack, shipped

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
            ("kind = 'captured'", "no 'name'"),
            ("kind = 'captured'\nname = 'x'\nformat = 9", "format 9"),
            ("not toml [", "MANIFEST.toml: not valid TOML"),
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


def _copy(tmp_path: Path, name: str = "rtxpro6000x4-switch") -> Path:
    dest = tmp_path / "copy"
    shutil.copytree(SNAPSHOTS / name, dest, symlinks=True)
    return dest


def _set_manifest(root: Path, **values: object) -> None:
    """Rewrite top-level manifest keys (before any table) with TOML literals."""
    lines = (root / "MANIFEST.toml").read_text().splitlines()
    keys = {k for k in values}
    out = [ln for ln in lines if ln.split("=", 1)[0].strip() not in keys]
    first_table = next((i for i, ln in enumerate(out) if ln.startswith("[")), len(out))
    out[first_table:first_table] = [f"{k} = {v}" for k, v in values.items()]
    (root / "MANIFEST.toml").write_text("\n".join(out) + "\n")


def _tar_dir(src: Path, out: Path) -> Path:
    """As `tar czf out -C src .`: member names start with './'."""
    with tarfile.open(out, "w:gz") as tar:
        tar.add(src, arcname=".")
    return out


@pytest.fixture
def no_data_filter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Python 3.11.0-3.11.3 (Debian 12 ships 3.11.2): no tarfile.data_filter, no extractall(filter=)."""
    monkeypatch.delattr(tarfile, "data_filter")
    real = tarfile.TarFile.extractall

    def no_filter(self: tarfile.TarFile, *a: object, **kw: object) -> None:
        if "filter" in kw:
            raise TypeError("extractall() got an unexpected keyword argument 'filter'")
        real(self, *a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(tarfile.TarFile, "extractall", no_filter)


class TestManifestProfile:
    """gate.md D7, D10, D30: the manifest's ``profile`` is a preset or a file inside the snapshot."""

    def _outside(self, tmp_path: Path) -> Path:
        out = tmp_path / "outside"
        out.mkdir()
        (out / "prof.toml").write_text("[rig]\ngpus = 7\n")
        return out / "prof.toml"

    @pytest.mark.parametrize("tarball", [False, True])
    def test_absolute_host_path_refused(self, tmp_path: Path, tarball: bool) -> None:
        """D7: profile = "/abs/host/file" is refused before anything is read, directory or tarball."""
        outside = self._outside(tmp_path)
        copy = _copy(tmp_path)
        _set_manifest(copy, profile=json.dumps(str(outside)))
        target = _tar_dir(copy, tmp_path / "t.tar.gz") if tarball else copy
        with pytest.raises(SnapshotError, match="is an absolute path: refused"):
            open_snapshot(target)

    def test_etc_shadow_refused(self, tmp_path: Path) -> None:
        """D7: profile = "/etc/shadow" is never read (as root it was read and reported as bad TOML)."""
        copy = _copy(tmp_path)
        _set_manifest(copy, profile='"/etc/shadow"')
        with pytest.raises(SnapshotError, match="absolute path: refused") as err:
            open_snapshot(copy)
        assert "TOML" not in str(err.value)

    def test_dotdot_refused(self, tmp_path: Path) -> None:
        """D7: profile = "../outside/prof.toml" in a directory snapshot is refused as leaving it."""
        self._outside(tmp_path)
        copy = _copy(tmp_path)
        _set_manifest(copy, profile='"../outside/prof.toml"')
        with pytest.raises(SnapshotError, match="climbs out with '..': refused"):
            open_snapshot(copy)

    def test_link_out_refused(self, tmp_path: Path) -> None:
        """A profile file inside the snapshot that links out of it is refused, saying so."""
        outside = self._outside(tmp_path)
        copy = _copy(tmp_path)
        os.symlink(outside, copy / "prof.toml")
        _set_manifest(copy, profile='"prof.toml"')
        snap = open_snapshot(copy)
        with pytest.raises(SnapshotError, match=r"symlink prof.toml -> /.* leaves the snapshot"):
            snap.profile()

    def test_fifo_profile_refused(self, tmp_path: Path) -> None:
        """A FIFO as profile is refused, not opened."""
        copy = _copy(tmp_path)
        os.mkfifo(copy / "prof.toml")
        _set_manifest(copy, profile='"prof.toml"')
        with pytest.raises(SnapshotError, match="FIFO"):
            open_snapshot(copy).profile()

    @pytest.mark.parametrize("value", ["5", "[1, 2]", "true", "{ a = 1 }"])
    def test_wrong_type(self, tmp_path: Path, value: str) -> None:
        """D10: a non-string profile is one clean error naming the key."""
        copy = _copy(tmp_path)
        _set_manifest(copy, profile=value)
        with pytest.raises(SnapshotError, match="profile must be a string"):
            open_snapshot(copy)

    @pytest.mark.parametrize("value", ['""', '"  "'])
    def test_empty_refused(self, tmp_path: Path, value: str) -> None:
        """D30: profile = "" is refused as empty, not silently "no profile"."""
        copy = _copy(tmp_path)
        _set_manifest(copy, profile=value)
        with pytest.raises(SnapshotError, match="profile is empty"):
            open_snapshot(copy)

    def test_preset_and_inside_file(self, tmp_path: Path) -> None:
        """A preset name still works; a file inside the snapshot is read from its text, labelled so."""
        snap = open_snapshot(SNAPSHOTS / "rtx3090x2-gen4")
        prof = snap.profile()
        assert prof is not None and prof.source == "profile preset 2x-rtx3090-gen4"
        copy = _copy(tmp_path)
        (copy / "sub").mkdir()
        (copy / "sub/prof.toml").write_text("[rig]\ngpus = 4\n")
        _set_manifest(copy, profile='"sub/prof.toml"')
        prof = open_snapshot(copy).profile()
        assert prof is not None and prof.gpus == 4
        assert prof.source == "profile sub/prof.toml in snapshot rtxpro6000x4-switch"

    def test_inside_file_bad_toml(self, tmp_path: Path) -> None:
        """A profile in the snapshot that is not TOML says so, naming it."""
        copy = _copy(tmp_path)
        (copy / "prof.toml").write_text("[rig\n")
        _set_manifest(copy, profile='"prof.toml"')
        with pytest.raises(SnapshotError, match="prof.toml in snapshot .*: not valid TOML"):
            open_snapshot(copy).profile()

    def test_unknown(self, tmp_path: Path) -> None:
        """Neither a file in the snapshot nor a preset: one line listing the presets."""
        copy = _copy(tmp_path)
        _set_manifest(copy, profile='"no-such"')
        with pytest.raises(
            SnapshotError, match="no such file in the snapshot, and not a preset .*2x-rtx3090"
        ):
            open_snapshot(copy).profile()

    def test_end_to_end_usage_errors(self, pytester: pytest.Pytester, tmp_path: Path) -> None:
        """D7/D10/D30 through pytest: exit 4 with one line, never INTERNALERROR, no host file read."""
        outside = self._outside(tmp_path)
        for value, words in [
            ("5", "profile must be a string"),
            ('""', "profile is empty"),
            (json.dumps(str(outside)), "absolute path: refused"),
        ]:
            copy = _copy(
                tmp_path / value.strip('"/').replace("/", "_")[:20] if value != '""' else tmp_path / "e"
            )
            _set_manifest(copy, profile=value)
            archive = _tar_dir(copy, copy.parent / "t.tar.gz")
            for target in (copy, archive):
                result = pytester.runpytest_subprocess(f"--rig-snapshot={target}", "-p", "no:cacheprovider")
                err = result.stderr.str()
                assert result.ret == pytest.ExitCode.USAGE_ERROR, err
                assert words in err and "INTERNALERROR" not in err + result.stdout.str(), err
                assert "gpus = 7" not in err and "expected: 7" not in result.stdout.str()


class TestJsonFilesContained:
    """gate.md D8, D24: nvml.json and p2p.json are read through Source; a link out is refused, saying so."""

    def test_p2p_json_link_out(self, tmp_path: Path) -> None:
        """D8: a p2p.json linking out of a directory snapshot is refused (it was read and judged)."""
        from pytest_rigcheck.p2p.figures import load

        copy = _copy(tmp_path)
        (tmp_path / "outside.json").write_text((copy / "p2p.json").read_text())
        (copy / "p2p.json").unlink()
        os.symlink(tmp_path / "outside.json", copy / "p2p.json")
        snap = open_snapshot(copy)
        with pytest.raises(
            SnapshotError, match=r"unreadable p2p.json: symlink p2p.json -> /.* leaves the snapshot"
        ):
            load(snap.source, "snapshot x")
        (copy / "p2p.json").unlink()
        with pytest.raises(KeyError):  # absent: the session skips, saying how to get the figures
            load(open_snapshot(copy).source, "snapshot x")

    def test_nvml_json_link_out(self, tmp_path: Path) -> None:
        """D24: a symlinked nvml.json out of the snapshot says refused/leaves, not "not captured"."""
        from pytest_rigcheck.gpu.nvml import RecordedNvml

        copy = _copy(tmp_path)
        (tmp_path / "outside.json").write_text((copy / "nvml.json").read_text())
        (copy / "nvml.json").unlink()
        os.symlink("../outside.json", copy / "nvml.json")
        with pytest.raises(RigcheckError) as err:
            RecordedNvml.open(copy, "copy")
        assert "leaves the snapshot" in str(err.value) and "not captured" not in str(err.value)

    def test_nvml_json_fifo(self, tmp_path: Path) -> None:
        """A FIFO nvml.json is refused as not a regular file."""
        from pytest_rigcheck.gpu.nvml import RecordedNvml

        copy = _copy(tmp_path)
        (copy / "nvml.json").unlink()
        os.mkfifo(copy / "nvml.json")
        with pytest.raises(RigcheckError, match="FIFO .*not a regular file"):
            RecordedNvml.open(copy, "copy")

    def test_p2p_link_out_end_to_end(self, pytester: pytest.Pytester, tmp_path: Path) -> None:
        """D8 through pytest: the P2P checks fail UNREADABLE naming the refused link, not the outside figures."""
        copy = _copy(tmp_path)
        (tmp_path / "outside").mkdir()
        shutil.copy(SNAPSHOTS / "rtxpro6000x4-acs-switch/p2p.json", tmp_path / "outside/p2p.json")
        (copy / "p2p.json").unlink()
        os.symlink(tmp_path / "outside/p2p.json", copy / "p2p.json")
        result = pytester.runpytest_subprocess(
            f"--rig-snapshot={copy}", "-p", "no:cacheprovider", "-k", "p2p_bandwidth", "-q", "--tb=line"
        )
        out = result.stdout.str()
        assert result.ret == 1, out
        assert "leaves the snapshot" in out and "UNREADABLE" in out, out


class TestSpecialFilesEndToEnd:
    def test_fifo_config_writer_stays_blocked(self, pytester: pytest.Pytester, tmp_path: Path) -> None:
        """gate.md D9: a bridge config replaced by a FIFO is UNREADABLE and its writer never unblocks
        (the reader refuses it with lstat before any open)."""
        copy = _copy(tmp_path, "rtx3090x2-acs-root-port")
        config = copy / "sys/devices/pci0000:00/0000:00:01.1/config"
        config.unlink()
        os.mkfifo(config)
        opened = threading.Event()

        def writer() -> None:
            fd = os.open(config, os.O_WRONLY)
            opened.set()
            os.close(fd)

        t = threading.Thread(target=writer, daemon=True)
        t.start()
        result = pytester.runpytest_subprocess(
            f"--rig-snapshot={copy}", "-p", "no:cacheprovider", "-k", "acs or contained"
        )
        out = result.stdout.str()
        time.sleep(0.1)
        assert not opened.is_set(), "the snapshot reader opened the FIFO"
        assert result.ret == 1, out
        assert "not a regular file" in out and "UNREADABLE" in out, out
        assert "test_snapshot_contained" in out, out
        fd = os.open(config, os.O_RDONLY | os.O_NONBLOCK)  # let the writer thread end
        t.join(5)
        os.close(fd)


class TestRefusedEntries:
    """gate.md D18: a GPU ``config`` symlink leaving the snapshot is not refused in silence."""

    @pytest.mark.parametrize("target", ["/etc/passwd", "../../../../../../../../etc/passwd"])
    def test_gpu_config_link_out(self, pytester: pytest.Pytester, tmp_path: Path, target: str) -> None:
        copy = _copy(tmp_path, "rtx3090x2-gen4")
        config = next(copy.glob("sys/devices/pci*/**/0000:4b:00.0/config"))
        config.unlink()
        os.symlink(target, config)
        snap = open_snapshot(copy)
        assert len(snap.refused) == 1 and "0000:4b:00.0/config" in snap.refused[0]
        assert "leaves the snapshot" in snap.refused[0]
        assert containment(snap).status == "unreadable"
        result = pytester.runpytest_subprocess(f"--rig-snapshot={copy}", "-p", "no:cacheprovider", "-rfE")
        out = result.stdout.str()
        assert result.ret == 1, out
        assert "REFUSED (not read)" in out  # the header
        assert "FAILED" in out and "test_snapshot_contained" in out and "leaves the snapshot" in out, out

    def test_shipped_have_none(self) -> None:
        """Every shipped snapshot holds only regular files, directories and links inside it."""
        for name, path in shipped().items():
            assert audit(path) == [], name

    def test_fix_line_for_root_snapshot(self, tmp_path: Path) -> None:
        """D24: a truncated bridge config in a snapshot captured as root does not say "run as root"."""
        from pytest_rigcheck import pcie_checks
        from pytest_rigcheck.profile import Profile
        from pytest_rigcheck.rig import Rig
        from pytest_rigcheck.targets import bridges

        copy = _copy(tmp_path, "rtx3090x2-acs-root-port")
        config = copy / "sys/devices/pci0000:00/0000:00:01.1/config"
        config.write_bytes(config.read_bytes()[:40])
        rig = Rig.replay(open_snapshot(copy), Profile())
        verdict = next(pcie_checks.acs(t) for t in bridges(rig) if t.bridge.bdf == "0000:00:01.1")
        assert verdict.status == "unreadable"
        assert not any("run as root" in f for f in verdict.fix), verdict.fix
        assert any("truncated or corrupt" in f for f in verdict.fix), verdict.fix


class TestArchiveMessages:
    """gate.md D24: each unsafe tar entry is refused early with the right reason."""

    def test_dot_dotdot(self, tmp_path: Path) -> None:
        """'./../../x' is an escape, refused before the extraction filter sees it."""
        archive = _tar_with(
            tmp_path, [_file("MANIFEST.toml", b"kind='captured'\nname='x'"), _file("./../../x", b"x")]
        )
        with pytest.raises(SnapshotError, match=r"unsafe entry './../../x': '..' leaves the snapshot"):
            open_snapshot(archive)

    def test_dot_slash_absolute(self, tmp_path: Path) -> None:
        """'.//abs/path' is an absolute name after its './', refused as such."""
        archive = _tar_with(
            tmp_path, [_file("MANIFEST.toml", b"kind='captured'\nname='x'"), _file(".//abs/path", b"x")]
        )
        with pytest.raises(SnapshotError, match=r"unsafe entry './/abs/path': an absolute path"):
            open_snapshot(archive)

    def test_manifest_not_toml(self, tmp_path: Path) -> None:
        """A MANIFEST.toml that is not TOML says so, in a directory and in an archive."""
        copy = _copy(tmp_path)
        (copy / "MANIFEST.toml").write_text("this is = not [toml\n")
        with pytest.raises(SnapshotError, match="MANIFEST.toml: not valid TOML"):
            open_snapshot(copy)
        with pytest.raises(SnapshotError, match="MANIFEST.toml: not valid TOML"):
            open_snapshot(_tar_dir(copy, tmp_path / "t.tar.gz"))


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        ('profle = "2x-rtx3090-gen4"\n', r"unknown key 'profle' \(did you mean profile\?\)"),
        ("[expect]\nfails = []\n", r"unknown key expect\.'fails' \(did you mean fail\?\)"),
        ('[expect]\nfail = "test_link_trained"\n', r"expect\.fail must be a list of test ids"),
        ('notes = "x"\n', r"\[notes\] must be a table"),
    ],
    ids=["typo-profile", "typo-expect", "expect-fail-string", "notes-not-table"],
)
def test_manifest_key_refused(tmp_path: Path, edit: str, match: str) -> None:
    """A MANIFEST.toml key that is misspelt or of the wrong shape stops the replay (a typo'd ``profile``
    would otherwise replay against hardware defaults without a word)."""
    copy = _copy(tmp_path)
    text = (copy / "MANIFEST.toml").read_text()
    text = text.split("\n[expect]")[0] if "[expect]" in edit else text
    (copy / "MANIFEST.toml").write_text(edit + text if not edit.startswith("[") else text + "\n" + edit)
    with pytest.raises(SnapshotError, match=match):
        open_snapshot(copy)


@pytest.mark.parametrize("filtered", [True, False], ids=["data-filter", "python-3.11.2"])
class TestArchivesEveryPython:
    """Issue 8 item 3: .tar.gz replay works and stays safe on Python 3.11.0-3.11.3, which lack
    ``tarfile.data_filter`` and ``extractall(filter=)`` (PEP 706 landed in 3.11.4)."""

    @pytest.fixture(autouse=True)
    def _python(self, filtered: bool, request: pytest.FixtureRequest) -> None:
        if not filtered:
            request.getfixturevalue("no_data_filter")

    def test_roundtrip(self, tmp_path: Path) -> None:
        """A shipped snapshot packed as tar czf -C DIR . replays with its links."""
        snap = open_snapshot(_tar_dir(GOOD, tmp_path / "s.tar.gz"))
        assert (snap.root / "sys/bus/pci/devices/0000:21:00.0").is_symlink()
        assert snap.manifest.name == "rtx3090x2-gen4" and snap.refused == []
        snap.close()

    @pytest.mark.parametrize(
        ("members", "match"),
        [
            ([("../../evil", "f", "")], "'..' leaves the snapshot"),
            ([("/tmp/evil", "f", "")], "an absolute path"),
            ([("./../x", "f", "")], "'..' leaves the snapshot"),
            ([(".//etc/x", "f", "")], "an absolute path"),
            ([("sys/x", "l", "/etc")], "leaves the snapshot"),
            ([("sys/x", "l", "../../etc/passwd")], "leaves the snapshot"),
            ([("a", "l", "."), ("b", "l", "a/..")], "'b' -> 'a/..' leaves the snapshot"),  # through a link
            ([("sys", "l", "elsewhere"), ("sys/x", "f", "")], "lies below the symlink 'sys'"),
            ([("x", "f", ""), ("x", "f", "")], "appears twice"),
            ([("dev", "c", "")], "device, fifo or hard link"),
            ([("fifo", "p", "")], "device, fifo or hard link"),
            ([("hard", "h", "MANIFEST.toml")], "device, fifo or hard link"),
        ],
    )
    def test_hostile(self, tmp_path: Path, members: list[tuple[str, str, str]], match: str) -> None:
        entries: list[tuple[tarfile.TarInfo, bytes | None]] = [
            _file("MANIFEST.toml", b"kind='captured'\nname='x'")
        ]
        kinds = {"l": tarfile.SYMTYPE, "c": tarfile.CHRTYPE, "p": tarfile.FIFOTYPE, "h": tarfile.LNKTYPE}
        for name, kind, link in members:
            if kind == "f":
                entries.append(_file(name, b"x"))
            else:
                info = tarfile.TarInfo(name)
                info.type, info.linkname = kinds[kind], link
                entries.append((info, None))
        with pytest.raises(SnapshotError, match=match):
            open_snapshot(_tar_with(tmp_path, entries))
        assert not (tmp_path.parent / "evil").exists() and not Path("/tmp/evil").exists()

    def test_limits(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Archive bombs: too many entries or too many bytes are refused before extraction."""
        archive = _tar_dir(GOOD, tmp_path / "s.tar.gz")
        monkeypatch.setattr(snapshot_mod, "_MAX_MEMBERS", 10)
        with pytest.raises(SnapshotError, match="more than 10 entries"):
            open_snapshot(archive)
        monkeypatch.setattr(snapshot_mod, "_MAX_MEMBERS", 200_000)
        monkeypatch.setattr(snapshot_mod, "_MAX_UNPACKED", 1000)
        with pytest.raises(SnapshotError, match="unpacks to more than"):
            open_snapshot(archive)


class TestShippedByName:
    """Issue 8 item 5: ``--rig-snapshot=NAME`` finds a shipped snapshot as ``--rig-profile`` finds presets."""

    def test_lookup(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        names = shipped()
        assert "rtxpro6000x4-switch" in names and "rtx3090x2-gen4" in names
        monkeypatch.chdir(tmp_path)
        assert find_snapshot("rtxpro6000x4-switch") == names["rtxpro6000x4-switch"]
        (tmp_path / "rtxpro6000x4-switch").mkdir()  # an existing path wins over a name
        assert find_snapshot("rtxpro6000x4-switch") == Path("rtxpro6000x4-switch")
        with pytest.raises(SnapshotError, match="not a shipped snapshot: .*rtxpro6000x4-switch"):
            find_snapshot("no-such-rig")

    def test_end_to_end(self, pytester: pytest.Pytester) -> None:
        """From an empty directory, by name; an unknown name is a usage error listing the names."""
        result = pytester.runpytest_subprocess(
            "--rig-snapshot=rtx3090x2-gen4", "-p", "no:cacheprovider", "-q"
        )
        assert result.ret == 0, result.stdout.str()
        result = pytester.runpytest_subprocess("--rig-snapshot=no-such-rig", "-p", "no:cacheprovider")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        assert "not a shipped snapshot: " in result.stderr.str() and "rtx3090x2-gen4" in result.stderr.str()

    def test_wheel_tarball(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """In a wheel the snapshots are pytest_rigcheck/snapshots/NAME.tar.gz; they open like the directories."""
        pkg = tmp_path / "pytest_rigcheck"
        (pkg / "snapshots").mkdir(parents=True)
        pack(GOOD, pkg / "snapshots/rtx3090x2-gen4.tar.gz")
        monkeypatch.setattr(snapshot_mod, "__file__", str(pkg / "snapshot.py"))
        assert shipped() == {"rtx3090x2-gen4": pkg / "snapshots/rtx3090x2-gen4.tar.gz"}
        snap = open_snapshot("rtx3090x2-gen4")
        assert snap.manifest.name == "rtx3090x2-gen4"
        snap.close()


def test_same_snapshot_twice_ids(pytester: pytest.Pytester) -> None:
    """gate.md D26: one snapshot passed twice gets ids NAME and NAME#2, without pytest's _0/_1."""
    args = [f"--rig-snapshot={GOOD}"] * 2
    result = pytester.runpytest_subprocess(*args, "-p", "no:cacheprovider", "--collect-only", "-q")
    out = result.stdout.str()
    assert "[rtx3090x2-gen4:" in out and "[rtx3090x2-gen4#2:" in out, out
    assert "#1" not in out and "_0]" not in out and "_1]" not in out, out


def test_capture_onto_a_file_says_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """gate.md D25: `rigcheck capture EMPTYFILE` says the path is a file (it said "is not empty")."""
    from pytest_rigcheck.cli import main

    empty = tmp_path / "EMPTYFILE"
    empty.touch()
    assert main(["capture", str(empty)]) == 2
    err = capsys.readouterr().err
    assert f"{empty} exists and is a file; choose a new path" in err and "not empty" not in err
    (tmp_path / "full").mkdir()
    (tmp_path / "full/x").touch()
    assert main(["capture", str(tmp_path / "full")]) == 2
    assert "is a folder that is not empty" in capsys.readouterr().err


def test_wheel_carries_snapshots_suites_and_license(tmp_path: Path) -> None:
    """The built wheel holds every shipped snapshot as pytest_rigcheck/snapshots/NAME.tar.gz (a wheel
    keeps no symlinks), the suites, the presets and the LICENSE; each packed snapshot opens and holds
    nothing replay refuses. Builds in-process with hatchling (a dev dependency), no network."""
    import zipfile

    hatchling = pytest.importorskip("hatchling.builders.wheel")
    from .conftest import REPO

    wheel = Path(
        next(hatchling.WheelBuilder(str(REPO)).build(directory=str(tmp_path), versions=["standard"]))
    )
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        want = sorted(p.name for p in SNAPSHOTS.iterdir() if (p / "MANIFEST.toml").is_file())
        packed = sorted(
            n.removeprefix("pytest_rigcheck/snapshots/").removesuffix(".tar.gz")
            for n in names
            if n.startswith("pytest_rigcheck/snapshots/")
        )
        assert packed == want
        assert "pytest_rigcheck/suites/test_acs.py" in names
        assert "pytest_rigcheck/presets/2x-rtx3090-gen4.toml" in names
        assert any(n.endswith("/LICENSE") and ".dist-info/" in n for n in names), sorted(names)
        assert not any(n.startswith("fixtures/") for n in names)
        size = sum(i.file_size for i in z.infolist() if i.filename.startswith("pytest_rigcheck/snapshots/"))
        assert size < 1 << 20, size  # they pack to about 100 KB
        z.extract("pytest_rigcheck/snapshots/rtxpro6000x4-switch.tar.gz", tmp_path)
    snap = open_snapshot(tmp_path / "pytest_rigcheck/snapshots/rtxpro6000x4-switch.tar.gz")
    try:
        assert snap.manifest.name == "rtxpro6000x4-switch" and audit(snap.root) == []
        assert len(list((snap.root / "sys/bus/pci/devices").iterdir())) == len(
            list((SNAPSHOTS / "rtxpro6000x4-switch/sys/bus/pci/devices").iterdir())
        )
    finally:
        snap.close()


def test_hard_link_listed_as_refused(tmp_path: Path) -> None:
    """A GPU config hard-linked to a file outside the snapshot is refused and listed (a variant of D18)."""
    copy = _copy(tmp_path, "rtx3090x2-gen4")
    config = next(copy.glob("sys/devices/pci*/**/0000:4b:00.0/config"))
    outside = tmp_path / "outside-config"
    shutil.copy(config, outside)
    config.unlink()
    os.link(outside, config)
    snap = open_snapshot(copy)
    assert len(snap.refused) == 1 and "0000:4b:00.0/config: a hard link" in snap.refused[0]


def test_sdist_carries_snapshots_as_tarballs(tmp_path: Path) -> None:
    """The sdist carries the snapshots as the same tarballs, not as directories (its tar writer keeps no
    links), so a wheel built from it (`python -m build`) has them too."""
    hatchling = pytest.importorskip("hatchling.builders.sdist")
    from .conftest import REPO

    sdist = Path(next(hatchling.SdistBuilder(str(REPO)).build(directory=str(tmp_path))))
    with tarfile.open(sdist) as tar:
        names = [m.name.split("/", 1)[1] for m in tar.getmembers()]
    want = sorted(p.name for p in SNAPSHOTS.iterdir() if (p / "MANIFEST.toml").is_file())
    assert (
        sorted(
            n.removeprefix("pytest_rigcheck/snapshots/").removesuffix(".tar.gz")
            for n in names
            if n.startswith("pytest_rigcheck/snapshots/")
        )
        == want
    )
    assert not any(n.startswith("fixtures/") for n in names)
    assert "LICENSE" in names and "hatch_build.py" in names and "suites/test_acs.py" in names
