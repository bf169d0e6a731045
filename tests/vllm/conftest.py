from __future__ import annotations

import os
import shlex
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SUITES = REPO / "suites"
E2E = SUITES / "test_vllm_e2e.py"
FIT = SUITES / "test_model_fit.py"


def fake_launch(mode: str, *extra: str, tag: str = "") -> str:
    """A launch template that starts a fault server of ``pytest_rigcheck.vllm.testing`` on rigcheck's port."""
    words = [sys.executable, "-m", "pytest_rigcheck.vllm.testing", "--port", "{port}", "--mode", mode, *extra]
    if tag:
        words += ["--rigcheck-test-tag", tag]  # ignored by the server; lets the test find its processes
    return shlex.join(words).replace("'{port}'", "{port}")


def processes_with(tag: str) -> list[str]:
    """Command lines of live (non-zombie) processes whose argv or environment contains ``tag``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and (any(tag.encode() in a for a in argv) or tag.encode() in environ):
            found.append(" ".join(a.decode(errors="replace") for a in argv))
    return found


@pytest.fixture
def tag() -> Iterator[str]:
    """A unique word to put on the command line of servers a test starts; asserts none is left after."""
    t = f"rigtest-{uuid.uuid4().hex[:10]}"
    yield t
    left = processes_with(t)
    assert not left, f"processes left behind: {left}"


def toml_value(v: object) -> str:
    """A TOML literal for strings, numbers, booleans, lists and inline tables."""
    import json

    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return json.dumps(v)  # strings, numbers and booleans are spelled alike in JSON and TOML


def write_profile(path: Path, vllm: dict[str, object], extra: str = "") -> Path:
    """A rig profile with a [vllm] table."""
    lines = ["[vllm]"] + [f"{k} = {toml_value(v)}" for k, v in vllm.items()]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path
