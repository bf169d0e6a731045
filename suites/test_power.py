"""Each GPU is capped where the profile says, persistence mode is on, and the caps fit the circuit."""

from __future__ import annotations

from pytest_rigcheck.gpu import power


def test_power_limit(rig_gpu, rig_nvml, rig_check):
    verdict = rig_check(power.power_limit(rig_gpu, rig_nvml.gpu(rig_gpu.gpu.bdf)))
    assert verdict.ok, str(verdict)


def test_persistence_mode(rig_gpu, rig_nvml, rig_check):
    verdict = rig_check(power.persistence(rig_gpu, rig_nvml.gpu(rig_gpu.gpu.bdf)))
    assert verdict.ok, str(verdict)


def test_circuit_budget(rig, rig_gpus, rig_nvml, rig_check):
    verdict = rig_check(power.circuit(rig, rig_gpus, rig_nvml.system.gpus))
    assert verdict.ok, str(verdict)
