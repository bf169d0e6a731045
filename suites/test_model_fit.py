"""The model-fit gate, before a rollout: the profile's ``[vllm]`` model at its context, concurrency and
tensor-parallel size fits the memory of each GPU of its group. No server needed; works on snapshots.

Each GPU's memory comes from ``--rig-vllm-gpu-memory``, else ``[vllm.gpus]`` in the profile, else NVML
(``rig_gpus``); never one GPU's figures for another (``fitcheck.rig_memory_fit``).
"""

from __future__ import annotations

import pytest

from pytest_rigcheck.vllm import fitcheck
from pytest_rigcheck.vllm.plugin import gpus_from_rig_gpus


def test_tensor_parallel_divides_heads(rig, rig_vllm_settings, rig_check):
    verdict = rig_check(fitcheck.tp_shape(rig_vllm_settings))
    assert verdict.ok, str(verdict)


def test_model_fits_gpus(rig, rig_vllm_settings, rig_check, request):
    def nvml():
        try:
            return gpus_from_rig_gpus(request.getfixturevalue("rig_gpus")), f"NVML ({rig.name})"
        except pytest.FixtureLookupError:
            return [], "none: the GPU plugin (rig_gpus) is not installed"

    verdict = rig_check(
        fitcheck.rig_memory_fit(rig_vllm_settings, len(rig.pcie.gpus), rig.profile.tp_groups, nvml, rig.name)
    )
    assert verdict.ok, str(verdict)
    print(verdict.summary)  # how many full-length sequences fit: shown with -rA (or -s)
