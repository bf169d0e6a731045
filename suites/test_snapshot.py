"""A replayed snapshot holds nothing replay must refuse: no link out of it, no FIFO or device node."""

from __future__ import annotations

from pytest_rigcheck import snapshot


def test_snapshot_contained(rig, rig_check):
    verdict = rig_check(snapshot.containment(rig.snapshot))
    assert verdict.ok, str(verdict)
