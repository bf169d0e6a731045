"""No display and no other process holds GPU memory before the model arrives."""

from __future__ import annotations

from pytest_rigcheck.gpu import inventory


def test_vram_free(rig_gpu, rig_nvml, rig_check):
    verdict = rig_check(inventory.vram_free(rig_gpu, rig_nvml.gpu(rig_gpu.gpu.bdf)))
    assert verdict.ok, str(verdict)
