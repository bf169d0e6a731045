from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SNAPSHOTS = REPO / "fixtures" / "sysfs-snapshots"


@pytest.fixture
def snapshots_dir() -> Path:
    return SNAPSHOTS


@pytest.fixture(autouse=True)
def _not_on_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inner pytest runs print the same on CI as here.

    pytest stops truncating the short summary when CI or BUILD_NUMBER is set,
    which would change what tests count in the output.
    """
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("BUILD_NUMBER", raising=False)
