"""GPU-to-GPU copies run peer-to-peer at the path's speed, deliver the right data, and the host links are fast."""

from __future__ import annotations

from pytest_rigcheck.p2p import checks


def test_p2p_capability(rig_p2p_pair, rig_p2p, rig_check):
    verdict = rig_check(checks.capability(rig_p2p_pair, rig_p2p))
    assert verdict.ok, str(verdict)


def test_p2p_unidirectional(rig_p2p_pair, rig_p2p, rig_check):
    verdict = rig_check(checks.unidirectional(rig_p2p_pair, rig_p2p))
    assert verdict.ok, str(verdict)


def test_p2p_bidirectional(rig_p2p_pair, rig_p2p, rig_check):
    verdict = rig_check(checks.bidirectional(rig_p2p_pair, rig_p2p))
    assert verdict.ok, str(verdict)


def test_p2p_not_through_host(rig_p2p_pair, rig_p2p, rig_check):
    verdict = rig_check(checks.peer_path(rig_p2p_pair, rig_p2p))
    assert verdict.ok, str(verdict)


def test_host_to_device(rig_gpu, rig_p2p, rig_check):
    verdict = rig_check(checks.host_bandwidth(rig_gpu, rig_p2p, "h2d"))
    assert verdict.ok, str(verdict)


def test_device_to_host(rig_gpu, rig_p2p, rig_check):
    verdict = rig_check(checks.host_bandwidth(rig_gpu, rig_p2p, "d2h"))
    assert verdict.ok, str(verdict)
