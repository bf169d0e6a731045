"""The ``rigcheck`` command: capture's destination checked first, what was not captured said, replay hint."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_rigcheck import capture as capture_mod
from pytest_rigcheck.cli import main


def test_capture_into_missing_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch) -> None:
    """gate D11: one line, exit 2, before any capture work, and no rigcheck-capture-* folder left behind."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    worked = []
    monkeypatch.setattr(capture_mod, "_capture", lambda *a: worked.append(a) or [])
    assert main(["capture", "/nonexistent/dir/out.tar.gz"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith("rigcheck: cannot write /nonexistent/dir/out.tar.gz: the folder /nonexistent/dir")
    assert not worked and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["out", "out.tar.gz"])
def test_capture_over_existing_path(capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str) -> None:
    """An existing file (even empty) or a non-empty folder is refused in one line (gate D25)."""
    target = tmp_path / name
    target.write_text("")
    assert main(["capture", str(target)]) == 2
    err = capsys.readouterr().err
    assert err == f"rigcheck: {target} exists and is a file; choose a new path\n"


def test_capture_failure_leaves_no_temp_folder(tmp_path: Path, monkeypatch) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()

    def boom(*a: object) -> list[str]:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(capture_mod, "_capture", boom)
    assert main(["capture", str(tmp_path / "out.tar.gz")]) == 1
    assert list((tmp_path / "tmp").iterdir()) == []


def test_capture_says_what_it_lacks(capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch) -> None:
    """gate D19/D20: what was not captured on stdout (no raw warnings format), and the replay line with '='."""
    gaps = [
        "NVML state (nvml.json: power, clocks, health, versions): NVML bindings not installed",
        "extended PCIe config space (ACS, AER): not running as root",
    ]
    monkeypatch.setattr(capture_mod, "_capture", lambda work, root, name: work.mkdir() or list(gaps))
    out_dir = tmp_path / "snap"
    assert main(["capture", str(out_dir)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.splitlines() == [
        f"rigcheck: snapshot written to {out_dir}",
        f"rigcheck: not captured: {gaps[0]}",
        f"rigcheck: not captured: {gaps[1]}",
        f"rigcheck: replay with: pytest --rig-snapshot={out_dir}",
    ]


def test_nonroot_gap_is_listed(tmp_path: Path, monkeypatch) -> None:
    """As non-root the missing extended config space is a gap line, not a Python warning."""
    from .conftest import SNAPSHOTS

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(capture_mod, "EXTRA_CAPTURERS", ())
    path, gaps = capture_mod.capture_with_gaps(tmp_path / "c", root=SNAPSHOTS / "rtx3090x2-gen4")
    assert path == tmp_path / "c"
    assert any(g.startswith("extended PCIe config space (ACS, AER): not running as root") for g in gaps)
    assert any(g.startswith("NVML state") for g in gaps)
