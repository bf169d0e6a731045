"""Helpers for the GPU suites' tests: snapshots with modelled NVML state, one fault injected."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_rigcheck.gpu.models import modelled_nvml

from ..conftest import SNAPSHOTS

DATA = Path(__file__).parent / "data"


def gpu_bdfs(snapshot: Path) -> list[str]:
    devices = snapshot / "sys/bus/pci/devices"
    return sorted(d.name for d in devices.iterdir() if (d / "class").read_text().startswith("0x03"))


@pytest.fixture
def make_snapshot(tmp_path: Path) -> Callable[..., Path]:
    """Copy a shipped snapshot's sysfs and give it modelled NVML state, changed by ``mutate``."""

    def make(base: str, mutate: Callable[[dict[str, Any]], None] | None = None, nvml: bool = True) -> Path:
        dest = tmp_path / base
        shutil.copytree(SNAPSHOTS / base, dest, symlinks=True)
        (dest / "nvml.json").unlink(missing_ok=True)
        if nvml:
            state = modelled_nvml(base, gpu_bdfs(dest))
            assert state is not None
            state.pop("expect_fail", None)
            if mutate:
                mutate(state)
            (dest / "nvml.json").write_text(json.dumps(state))
        return dest

    return make
