"""Helpers for the GPU suites' tests: snapshots with modelled NVML state, one fault injected."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_rigcheck.gpu.models import modelled_nvml
from pytest_rigcheck.pcie import DEVICES, model_number, other_model

from ..conftest import SNAPSHOTS

DATA = Path(__file__).parent / "data"


def gpu_bdfs(snapshot: Path) -> list[str]:
    devices = snapshot / "sys/bus/pci/devices"
    return sorted(d.name for d in devices.iterdir() if (d / "class").read_text().startswith("0x03"))


@pytest.fixture
def make_snapshot(tmp_path: Path) -> Callable[..., Path]:
    """Copy a shipped snapshot's sysfs and give it modelled NVML state, changed by ``mutate``; ``swap_cards``:
    GPUs ``mutate`` renamed get the PCI device id of that card (else the names contradict the bus)."""

    def make(
        base: str,
        mutate: Callable[[dict[str, Any]], None] | None = None,
        nvml: bool = True,
        swap_cards: bool = False,
    ) -> Path:
        dest = tmp_path / base
        shutil.copytree(SNAPSHOTS / base, dest, symlinks=True)
        (dest / "nvml.json").unlink(missing_ok=True)
        if nvml:
            state = modelled_nvml(base, gpu_bdfs(dest))
            assert state is not None
            state.pop("expect_fail", None)
            if mutate:
                mutate(state)
            if swap_cards:  # the mutation put other cards in the slots: their PCI ids follow
                _pci_ids_as_named(dest, state)
            (dest / "nvml.json").write_text(json.dumps(state))
        return dest

    return make


def _pci_ids_as_named(dest: Path, state: dict[str, Any]) -> None:
    """A mutation that renames a GPU (another card in the slot) changes its PCI device id too, in sysfs and
    config space: NVML naming one model where the PCI id says another is a contradiction the tool refuses."""
    for g in state.get("gpus", []):
        base = dest / "sys/bus/pci/devices" / g["bdf"]
        vendor, device = (int((base / f).read_text(), 16) for f in ("vendor", "device"))
        if other_model(vendor, device, g.get("name", "")) is None:
            continue
        want = model_number(g["name"])
        new = next(d for (v, d), m in DEVICES.items() if v == vendor and model_number(m) == want)
        (base / "device").write_text(f"0x{new:04x}\n")
        config = bytearray((base / "config").read_bytes())
        config[2:4] = new.to_bytes(2, "little")
        (base / "config").write_bytes(bytes(config))
