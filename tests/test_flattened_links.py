"""Snapshots whose symlinks were packed as text files holding their target ("flattened").

The public failure cases (/work/shared/cases/public/{01,03,04,09}-*) were handed over that way:
``sys/bus/pci/devices/0000:00:01.1`` is a 40-byte file reading ``../../../devices/pci0000:00/0000:00:01.1``
(no newline), and ``driver`` links likewise. They are kept in tests/data/flattened AS HANDED, and must
replay with the verdict each CASE.md gives, while a hostile text file never makes the reader leave the
snapshot.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from pytest_rigcheck.errors import RefusedError, SourceError
from pytest_rigcheck.snapshot import open_snapshot
from pytest_rigcheck.source import Source, flat_target

FLAT = Path(__file__).parent / "data" / "flattened"
NOTE = "links were stored as text files (flattened) and read as links"
DEV = "sys/bus/pci/devices/0000:01:00.0"


def _run(pytester: pytest.Pytester, *args: str) -> tuple[set[str], str, int]:
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rfE", "--tb=short", "--rig", *args)
    out = result.stdout.str() + result.stderr.str()
    failed = {m.group(1) for m in re.finditer(r"^(?:FAILED|ERROR) \S*::(\S+)", out, re.M)}
    return failed, out, int(result.ret)


def _loads(out: str) -> None:
    assert "resolves to" not in out and "Traceback" not in out, out
    assert NOTE in out, out  # the header tells the user


# -- the public cases as handed ----------------------------------------------------------------------


def test_handed_cases_are_flattened() -> None:
    """Guard: the copies really are flattened (no symlink anywhere), as handed."""
    assert not [p for p in FLAT.rglob("*") if p.is_symlink()]
    dev = FLAT / "04-kv-fit-one-sequence/snapshot/sys/bus/pci/devices/0000:00:01.1"
    assert dev.is_file() and dev.read_bytes() == b"../../../devices/pci0000:00/0000:00:01.1"


def test_case01_xid95(pytester: pytest.Pytester) -> None:
    """01-xid95-reset-required: GPU 0000:20:00.0 fails naming Xid 95 and the reset; nothing else fails."""
    failed, out, ret = _run(pytester, f"--rig-snapshot={FLAT / '01-xid95-reset-required/snapshot'}")
    _loads(out)
    assert failed == {"test_no_fatal_xid[0000:20:00.0]"}, out
    assert ret == 1
    assert "Xid 95 (ROBUST_CHANNEL_UNCONTAINED_ERROR: Uncontained memory error; uncontained ECC error)" in out
    assert "RESET_GPU: reset the GPU" in out and "nvidia-smi -r -i 1" in out


@pytest.mark.parametrize(("snapshot", "nfailed"), [("snapshot-caps-set", 0), ("snapshot-caps-lost", 2)])
def test_case03_per_device_caps(pytester: pytest.Pytester, snapshot: str, nfailed: int) -> None:
    """03-mixed-power-caps: caps set, both cards pass; caps lost, both fail, each with its own cap and fix."""
    case = FLAT / "03-mixed-power-caps"
    failed, out, ret = _run(
        pytester,
        f"--rig-snapshot={case / snapshot}",
        f"--rig-profile={case / 'profile-per-device.toml'}",
        "-k",
        "power_limit",
    )
    _loads(out)
    assert len(failed) == nfailed and ret == (1 if nfailed else 0), out
    assert re.search(r"\b2 passed\b" if not nfailed else r"\b2 failed\b", out), out
    if nfailed:
        assert "power limit 600 W (the card's default" in out and "expected 400 W" in out
        assert '400 W +/- 5 W ([power.device."0000:01:00.0"] cap_w' in out
        assert "sudo nvidia-smi -i 0 -pl 400" in out
        assert "power limit 450 W" in out and "expected 290 W" in out
        assert '290 W +/- 5 W ([power.device."0000:03:00.0"] cap_w' in out
        assert "sudo nvidia-smi -i 1 -pl 290" in out


def test_case04_one_sequence_fits(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """04-kv-fit-one-sequence (vllm-project/vllm#10517): fits, holding about 1.5 full-length sequences."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "no-cache"))
    case = FLAT / "04-kv-fit-one-sequence"
    failed, out, ret = _run(
        pytester,
        f"--rig-snapshot={case / 'snapshot'}",
        f"--rig-profile={case / 'profile-20k.toml'}",
        "-k",
        "model_fit",
        "-rA",
    )
    _loads(out)
    assert failed == set() and ret == 0, out
    assert "maximum concurrency for 20,000 tokens per request 1.53x" in out, out


def test_case09_small_bar1(pytester: pytest.Pytester) -> None:
    """09-small-bar1 (tinygrad/open-gpu-kernel-modules#13): both GPUs flagged, fix Resizable BAR + Above 4G."""
    case = FLAT / "09-small-bar1"
    failed, out, ret = _run(
        pytester,
        f"--rig-snapshot={case / 'snapshot'}",
        f"--rig-profile={case / 'profile.toml'}",
        "-k",
        "bar1",
    )
    _loads(out)
    assert failed == {"test_bar1_aperture[0000:01:00.0]", "test_bar1_aperture[0000:02:00.0]"}, out
    assert ret == 1 and "BAR1 256 MiB" in out and "BAR1 512 MiB" in out
    assert "Above 4G Decoding" in out and "Resizable BAR" in out


def test_open_snapshot_counts_them() -> None:
    """open_snapshot finds the flattened links (4 devices, 3 drivers) and the reader follows them."""
    snap = open_snapshot(FLAT / "04-kv-fit-one-sequence/snapshot")
    assert len(snap.flattened) == 7 and snap.refused == []
    assert snap.flattened_note() == f"7 {NOTE}"
    src = snap.source
    assert src.flattened_links
    assert src.resolve(DEV, link=True) == "sys/devices/pci0000:00/0000:00:01.1/0000:01:00.0"
    assert src.read_text(f"{DEV}/vendor") == "0x10de"  # an attribute stays an attribute
    assert src.readlink(f"{DEV}/driver") == "../../../../bus/pci/drivers/nvidia"


# -- hostile flattened links -------------------------------------------------------------------------


@pytest.fixture
def snap(tmp_path: Path) -> Path:
    """A writable copy of case 04, with a secret beside it that must never be read."""
    root = tmp_path / "snap"
    shutil.copytree(FLAT / "04-kv-fit-one-sequence/snapshot", root)
    (tmp_path / "secret").write_text("outside\n")
    return root


def test_escape_refused(snap: Path, pytester: pytest.Pytester) -> None:
    """``../../../../../etc`` leaves the snapshot: refused, by the reader and in the run's header."""
    (snap / DEV).write_text("../../../../../etc")
    src = Source(snap, flattened_links=True)
    with pytest.raises(RefusedError, match="flattened link .* leaves the snapshot: refused"):
        src.resolve(DEV, link=True)
    with pytest.raises(RefusedError, match="leaves the snapshot"):
        src.read_text(f"{DEV}/passwd")
    assert any("leaves the snapshot" in r for r in open_snapshot(snap).refused)
    _, out, ret = _run(pytester, f"--rig-snapshot={snap}", "-k", "pcie")
    assert ret != 0 and "Traceback" not in out
    line = (
        "flattened link sys/bus/pci/devices/0000:01:00.0 -> ../../../../../etc leaves the snapshot: refused"
    )
    assert line in out and "outside" not in out, out


def test_escape_to_a_sibling_refused(snap: Path) -> None:
    """One ``..`` too many reaches the directory holding the snapshot (where ``secret`` lies): refused."""
    (snap / "sys/peek").write_text("../../secret")
    with pytest.raises(RefusedError, match="leaves the snapshot"):
        Source(snap, flattened_links=True).resolve("sys/peek", link=True)


@pytest.mark.parametrize(
    "content",
    [
        b"/etc/passwd",  # absolute
        b"../" * 1400 + b"etc",  # longer than PATH_MAX
        b"../\x00../etc",  # NUL
        b"\x7fELF\x02\x01\x01\xff\xfe",  # binary
        b"../devices/a b",  # a space: not a sysfs name
        b"0x10de\n",  # an attribute, not a link
        b"devices/pci0000:00",  # not starting with ../
        b"../devices//x",  # an empty component
        b"../devices/./x",
        b"",
    ],
)
def test_not_a_link_stays_a_file(snap: Path, content: bytes) -> None:
    """Anything but a plain relative ``../`` path of sysfs names is a regular file, never followed."""
    assert flat_target(content) is None
    (snap / "sys/odd").write_bytes(content)
    src = Source(snap, flattened_links=True)
    assert src.readlink("sys/odd") is None
    assert src.resolve("sys/odd", link=True) == "sys/odd"
    with pytest.raises(SourceError):
        src.read_text("sys/odd/x")  # a file is no directory
    assert "sys/odd" not in open_snapshot(snap).flattened


def test_absolute_device_entry_is_one_clear_line(snap: Path, pytester: pytest.Pytester) -> None:
    """A device entry holding ``/etc/passwd`` is a plain file, not a device: one line, no traceback."""
    (snap / DEV).write_text("/etc/passwd")
    _, out, ret = _run(pytester, f"--rig-snapshot={snap}", "-k", "pcie")
    assert ret != 0 and "Traceback" not in out
    assert "sys/bus/pci/devices/0000:01:00.0" in out and "not to a device under sys/devices" in out
    assert "root:" not in out


def test_loop_refused(snap: Path) -> None:
    """Two flattened files pointing at each other: too many levels of links, not a hang."""
    (snap / "sys/a").write_text("../sys/b")
    (snap / "sys/b").write_text("../sys/a")
    src = Source(snap, flattened_links=True)
    with pytest.raises(SourceError, match="too many levels of symbolic links"):
        src.resolve("sys/a", link=True)
    with pytest.raises(SourceError, match="too many levels of symbolic links"):
        src.read_text("sys/a/vendor")
    assert any("too many levels" in r for r in open_snapshot(snap).refused)


def test_hard_linked_text_file_not_read(snap: Path, tmp_path: Path) -> None:
    """A text file with another name (perhaps outside) is not read as a link; the audit refuses it."""
    (tmp_path / "outside").write_text("../devices")
    (snap / "sys/hl").hardlink_to(tmp_path / "outside")
    assert Source(snap, flattened_links=True).readlink("sys/hl") is None
    assert any(r.startswith("sys/hl: a hard link") for r in open_snapshot(snap).refused)


def test_only_when_asked_and_never_live(snap: Path) -> None:
    """Off by default (a text file is a file), and never for the live root."""
    assert Source(snap).readlink(DEV) is None
    with pytest.raises(SourceError):
        Source(snap).read_text(f"{DEV}/vendor")
    assert Source("/", flattened_links=True).flattened_links is False


def test_real_links_need_no_note(tmp_path: Path) -> None:
    """A snapshot with real links has nothing flattened and says nothing about it."""
    snap = open_snapshot(Path(__file__).parent / "data/case04-kv-fit-one-sequence/snapshot")
    assert snap.flattened == [] and snap.flattened_note() == "" and not snap.source.flattened_links


def test_tarball_of_flattened_links(tmp_path: Path) -> None:
    """A ``.tar.gz`` of a flattened snapshot is read the same way (found after the safe extraction)."""
    import tarfile

    archive = tmp_path / "case04.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(FLAT / "04-kv-fit-one-sequence/snapshot", arcname="snapshot")
    snap = open_snapshot(archive)
    try:
        assert len(snap.flattened) == 7 and snap.refused == []
        assert snap.source.resolve(DEV, link=True).startswith("sys/devices/pci0000:00/")
    finally:
        snap.close()
