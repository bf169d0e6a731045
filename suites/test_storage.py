"""The disk holding the model reads fast enough to load it in reasonable time (--rig-model-dir)."""

from __future__ import annotations

import pytest

from pytest_rigcheck.soak.plugin import storage_verdict


@pytest.mark.rig_measure
def test_model_storage_read(rig, pytestconfig, rig_check):
    verdict = rig_check(storage_verdict(rig, pytestconfig))
    assert verdict.ok, str(verdict)
