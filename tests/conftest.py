from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SNAPSHOTS = REPO / "fixtures" / "sysfs-snapshots"


@pytest.fixture
def snapshots_dir() -> Path:
    return SNAPSHOTS
