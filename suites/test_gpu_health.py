"""Each GPU is healthy: no uncorrected ECC, no memory repair pending, no driver fault needing a reset, no
replays, NVLinks as the rig should have them."""

from __future__ import annotations

from pytest_rigcheck.gpu import bar, health


def test_no_uncorrected_ecc(rig_gpu, rig_nvml, rig_check):
    verdict = rig_check(health.ecc(rig_gpu, rig_nvml.gpu(rig_gpu.gpu.bdf)))
    assert verdict.ok, str(verdict)


def test_no_memory_repair_pending(rig_gpu, rig_nvml, rig_check):
    verdict = rig_check(health.rows_pending(rig_gpu, rig_nvml.gpu(rig_gpu.gpu.bdf)))
    assert verdict.ok, str(verdict)


def test_no_fatal_xid(rig_gpu, rig_nvml, rig_check):
    verdict = rig_check(
        health.xid(rig_gpu, rig_nvml.gpu(rig_gpu.gpu.bdf), rig_nvml.kernel_log(), rig_nvml.log_where)
    )
    assert verdict.ok, str(verdict)


def test_no_pcie_replays_under_load(rig_gpu, rig_nvml, rig_check):
    bdf = rig_gpu.gpu.bdf
    verdict = rig_check(health.replay_growth(rig_gpu, rig_nvml.gpu(bdf), rig_nvml.load_of(bdf)))
    assert verdict.ok, str(verdict)


def test_nvlinks_up(rig_gpu, rig_nvml, rig_check):
    verdict = rig_check(health.nvlink(rig_gpu, rig_nvml.gpu(rig_gpu.gpu.bdf), rig_nvml.gpus()))
    assert verdict.ok, str(verdict)


def test_bar1_aperture(rig_gpu, rig_nvml, rig_check):
    verdict = rig_check(bar.check(rig_gpu, rig_nvml.gpu(rig_gpu.gpu.bdf)))
    assert verdict.ok, str(verdict)
