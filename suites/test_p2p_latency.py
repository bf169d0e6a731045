"""GPU-to-GPU copy latency is a peer-to-peer latency, not a trip through host memory."""

from __future__ import annotations

from pytest_rigcheck.p2p import checks


def test_p2p_latency(rig_p2p_pair, rig_p2p, rig_check):
    verdict = rig_check(checks.latency(rig_p2p_pair, rig_p2p))
    assert verdict.ok, str(verdict)
