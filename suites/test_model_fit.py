"""The model-fit gate, before a rollout: the profile's ``[vllm]`` model at its context, concurrency and
tensor-parallel size fits the memory of each GPU of its group. No server needed; works on snapshots.

GPU memory comes from ``--rig-vllm-gpu-memory``, else ``[vllm.gpus]`` in the profile, else NVML
(``rig_gpus``).
"""

from __future__ import annotations

import pytest

from pytest_rigcheck.vllm import fitcheck
from pytest_rigcheck.vllm.plugin import gpus_from_rig_gpus


def test_tensor_parallel_divides_heads(rig, rig_vllm_settings, rig_check):
    verdict = rig_check(fitcheck.tp_shape(rig_vllm_settings))
    assert verdict.ok, str(verdict)


def test_model_fits_gpus(rig, rig_vllm_settings, rig_check, request):
    settings = rig_vllm_settings
    gpus, source = list(settings.gpus), f"[vllm.gpus] or --rig-vllm-gpu-memory ({settings.where})"
    spec = fitcheck.resolve_model(settings)
    if not gpus and not isinstance(spec, fitcheck.Verdict):
        try:
            gpus, source = gpus_from_rig_gpus(request.getfixturevalue("rig_gpus")), f"NVML ({rig.name})"
        except pytest.FixtureLookupError:
            source = "none: the GPU plugin (rig_gpus) is not installed"
    verdict = rig_check(fitcheck.memory_fit(settings, gpus, source, rig.profile.tp_groups))
    assert verdict.ok, str(verdict)
    print(verdict.summary)  # how many full-length sequences fit: shown with -rA (or -s)
