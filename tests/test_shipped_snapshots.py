"""Every shipped snapshot gives the verdicts its manifest promises, with the device and fix named."""

from __future__ import annotations

import re
import tomllib

import pytest

from .conftest import SNAPSHOTS

ALL = sorted(p.name for p in SNAPSHOTS.iterdir() if (p / "MANIFEST.toml").is_file())


def _failed_ids(stdout: str) -> set[str]:
    # An error in setup (UNREADABLE from a fixture) is as much a non-pass as a failure.
    return {m.group(1) for m in re.finditer(r"^(?:FAILED|ERROR) \S*::(\S+)", stdout, re.M)}


@pytest.mark.parametrize("name", ALL)
def test_manifest_promise(pytester: pytest.Pytester, name: str) -> None:
    """Running all suites on the snapshot fails exactly the checks its manifest lists."""
    manifest = tomllib.loads((SNAPSHOTS / name / "MANIFEST.toml").read_text())
    want = set(manifest.get("expect", {}).get("fail", []))
    result = pytester.runpytest_subprocess(
        f"--rig-snapshot={SNAPSHOTS / name}", "-rfE", "-p", "no:cacheprovider", "--tb=short"
    )
    out = result.stdout.str()
    assert _failed_ids(out) == want, out
    assert result.ret == (1 if want else 0), out
    for test_id in want:  # each failure names its device and says what to do
        device = test_id.split("[", 1)[1].rstrip("]")
        if re.match(r"^[0-9a-f]{4}:", device):
            assert device in out
    if want:
        assert "fix: " in out


def test_all_shipped_pass_together(pytester: pytest.Pytester) -> None:
    """All snapshots replay in one run, each test id naming its rig."""
    args = [f"--rig-snapshot={SNAPSHOTS / n}" for n in ALL]
    result = pytester.runpytest_subprocess(*args, "-q", "-p", "no:cacheprovider", "--collect-only")
    out = result.stdout.str()
    for name in ALL:
        assert f"[{name}:" in out or f"[{name}]" in out, name


def test_modelled_manifests_say_so() -> None:
    """Modelled snapshots say modelled; captured ones say captured."""
    for name in ALL:
        m = tomllib.loads((SNAPSHOTS / name / "MANIFEST.toml").read_text())
        assert m["kind"] == ("captured" if name.startswith("h") else "modelled"), name
        assert m["description"] and m["shows"]
