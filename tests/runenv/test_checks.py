"""Each run-environment check on the verdicts it promises: device or setting named, measured vs expected, fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_rigcheck.profile import Profile, parse_profile
from pytest_rigcheck.rig import Rig
from pytest_rigcheck.runenv import checks
from pytest_rigcheck.runenv.state import RunEnv, Unread
from pytest_rigcheck.snapshot import open_snapshot
from pytest_rigcheck.targets import GpuTarget
from pytest_rigcheck.verdict import Status

from ..conftest import SNAPSHOTS
from .variants import GIB, H200, MIB, PROFILE_TP2, copy_snapshot, env_record


def rig(name: str, profile: str | None = None) -> Rig:
    import tomllib

    p = parse_profile(tomllib.loads(profile), "rig.toml") if profile else Profile()
    return Rig.replay(open_snapshot(SNAPSHOTS / name), p)


def env(**over: object) -> RunEnv:
    return RunEnv.from_json(env_record(**over), "t")


TP2 = PROFILE_TP2


# -- /dev/shm -------------------------------------------------------------------------------------------


def test_shm_docker_default_fails_at_tp2() -> None:
    """Issue 9 item 5: the seed's container without --ipc=host has Docker's 64 MiB /dev/shm at TP=2."""
    v = checks.shm_size(
        rig("rtx3090x2-gen4", TP2),
        env(shm={"total_b": 64 * MIB, "free_b": 64 * MIB}, container=["/.dockerenv exists (Docker)"]),
    )
    assert v.status == Status.FAIL
    assert "64 MiB" in v.summary and "tensor-parallel size 2" in v.summary
    assert "--ipc=host" in v.fix[0] and "--shm-size=1g" in v.fix[0]
    assert "[vllm] tensor_parallel_size" in v.expected
    assert v.measured_value == 64 * MIB and v.expected_value == checks.shm_needed(2) and v.unit == "B"


def test_shm_host_fix_is_a_remount() -> None:
    v = checks.shm_size(rig("rtx3090x2-gen4"), env(shm={"total_b": 128 * MIB, "free_b": 128 * MIB}))
    assert v.status == Status.FAIL
    assert "mount -o remount,size=1G /dev/shm" in v.fix[0]
    assert "the rig's 2 GPU(s)" in v.expected  # no TP in the profile: sized for all GPUs


def test_shm_large_passes_and_full_warns() -> None:
    r = rig("rtx3090x2-gen4", TP2)
    assert checks.shm_size(r, env()).status == Status.PASS
    full = checks.shm_size(r, env(shm={"total_b": 8 * GIB, "free_b": 10 * MIB}))
    assert full.status == Status.WARN and "only 10 MiB free" in full.summary


def test_shm_not_applicable_at_tp1() -> None:
    v = checks.shm_size(rig("h100x1"), env())
    assert v.status == Status.NOT_APPLICABLE and "tensor-parallel size 1" in v.summary


def test_shm_absent_fails_unreadable_otherwise() -> None:
    r = rig("rtx3090x2-gen4")
    gone = checks.shm_size(r, env(shm={"unavailable": "statvfs /dev/shm: No such file or directory"}))
    assert gone.status == Status.FAIL and "no /dev/shm" in gone.summary
    odd = checks.shm_size(r, env(shm={"unavailable": "statvfs /dev/shm: Permission denied"}))
    assert odd.status == Status.UNREADABLE


def test_tp_size_from_flags_and_groups() -> None:
    assert checks.tp_size(rig("rtx3090x2-gen4", '[vllm]\nflags = ["-tp", "2"]\n'))[0] == 2
    assert checks.tp_size(rig("rtxpro6000x4-switch", "[rig]\ntp_groups = [[0, 1], [2, 3]]\n")) == (
        2,
        "profile rig.toml [rig] tp_groups",
    )
    assert checks.tp_size(rig("rtxpro6000x4-switch"))[0] == 4


# -- memlock --------------------------------------------------------------------------------------------


def test_memlock() -> None:
    r = rig("rtx3090x2-gen4")
    assert checks.memlock(r, env()).status == Status.PASS
    small = {"soft": 64 * 1024, "hard": 64 * 1024}
    no_rdma = checks.memlock(r, env(memlock=small))
    assert no_rdma.status == Status.PASS and "no RDMA device" in no_rdma.summary
    with_rdma = checks.memlock(
        r, env(memlock=small, rdma=["mlx5_0"], container=["/.dockerenv exists (Docker)"])
    )
    assert with_rdma.status == Status.FAIL and "64 KiB" in with_rdma.summary and "mlx5_0" in with_rdma.summary
    assert with_rdma.fix == ["start the container with --ulimit memlock=-1 (NCCL's troubleshooting guide)"]
    assert checks.memlock(r, env(memlock={"unavailable": "x"})).status == Status.UNREADABLE


# -- GPUs visible ---------------------------------------------------------------------------------------


def _gpu(r: Rig, bdf: str) -> GpuTarget:
    return GpuTarget(r, r.pcie.functions[bdf])


def test_gpu_hidden_by_cuda_visible_devices(tmp_path: Path) -> None:
    """Issue 8 item 4: with CUDA_VISIBLE_DEVICES=0 on 2x H200 the hidden GPU's verdict names the variable."""
    r = Rig.replay(open_snapshot(copy_snapshot(H200, tmp_path / "s", None)), Profile())
    e = env(env={"CUDA_VISIBLE_DEVICES": "0"})
    hidden = checks.gpu_visible(_gpu(r, "0000:00:07.0"), e)
    assert hidden.status == Status.FAIL
    assert "hidden by CUDA_VISIBLE_DEVICES=0" in hidden.summary and "see 1 of 2 GPUs" in hidden.summary
    assert hidden.fix == ["unset CUDA_VISIBLE_DEVICES, or list every GPU: export CUDA_VISIBLE_DEVICES=0,1"]
    assert "CUDA_DEVICE_ORDER is not PCI_BUS_ID" in hidden.measured
    assert checks.gpu_visible(_gpu(r, "0000:00:06.0"), e).status == Status.PASS


def test_gpu_hidden_by_container(tmp_path: Path) -> None:
    r = rig(H200)
    e = env(dev_nvidia=[0], container=["/.dockerenv exists (Docker)"], env={"NVIDIA_VISIBLE_DEVICES": "0"})
    v = checks.gpu_visible(_gpu(r, "0000:00:07.0"), e)
    assert v.status == Status.FAIL and "no /dev/nvidia1 in the container's device list" in v.summary
    assert "--gpus all" in v.fix[0] and "NVIDIA_VISIBLE_DEVICES=0" in v.fix[0]


def test_gpu_visibility_unknown_is_unreadable() -> None:
    """A modelled rig without the driver's information files: one /dev/nvidia node for two GPUs cannot be
    pinned on either, so neither passes."""
    r = rig("rtx3090x2-gen4")
    v = checks.gpu_visible(
        _gpu(r, "0000:21:00.0"), env(dev_nvidia=[0], container=["/.dockerenv exists (Docker)"])
    )
    assert v.status == Status.UNREADABLE
    assert checks.gpu_visible(_gpu(r, "0000:21:00.0"), env()).status == Status.PASS


# -- NCCL transport variables ---------------------------------------------------------------------------


def test_p2p_disable_named_with_what_it_changes() -> None:
    v = checks.nccl_transport_env(rig(H200), env(env={"NCCL_P2P_DISABLE": "1"}))
    assert v.status == Status.FAIL
    assert "NCCL_P2P_DISABLE=1 turns off NCCL's P2P transport" in v.summary
    assert v.fix == ["unset NCCL_P2P_DISABLE"]


def test_p2p_disable_not_a_number_changes_nothing() -> None:
    """NCCL reads the value with strtoll: "true" is 0, P2P stays on (NVIDIA/nccl src/misc/param.cc)."""
    v = checks.nccl_transport_env(rig(H200), env(env={"NCCL_P2P_DISABLE": "true"}))
    assert v.status == Status.PASS
    assert any("reads it as the number 0" in n for n in v.notes)


def test_p2p_disable_from_etc_nccl_conf() -> None:
    v = checks.nccl_transport_env(
        rig(H200), env(nccl_conf=[{"path": "/etc/nccl.conf", "vars": {"NCCL_P2P_DISABLE": "1"}}])
    )
    assert v.status == Status.FAIL and "NCCL_P2P_DISABLE=1 (in /etc/nccl.conf)" in v.summary
    assert v.fix == ["unset NCCL_P2P_DISABLE (remove it from /etc/nccl.conf)"]


def test_p2p_level_nvl_allows_nvlink_peers_but_not_pcie() -> None:
    assert checks.nccl_transport_env(rig(H200), env(env={"NCCL_P2P_LEVEL": "NVL"})).status == Status.PASS
    v = checks.nccl_transport_env(rig("rtxpro6000x4-switch"), env(env={"NCCL_P2P_LEVEL": "NVL"}))
    assert v.status == Status.FAIL and "PIX apart" in v.summary


def test_p2p_level_pix_on_root_ports() -> None:
    v = checks.nccl_transport_env(rig("rtxpro6000x4-switch"), env(env={"NCCL_P2P_LEVEL": "PIX"}))
    assert v.status == Status.PASS
    v = checks.nccl_transport_env(rig("rtx3090x2-gen4"), env(env={"NCCL_P2P_LEVEL": "1"}))
    # [p2p] required = false is not set here: P2P is expected, and PIX keeps the PHB pair off it
    assert v.status == Status.FAIL and "PHB apart" in v.summary and "up to PIX" in v.summary
    bad = checks.nccl_transport_env(rig(H200), env(env={"NCCL_P2P_LEVEL": "FAST"}))
    assert bad.status == Status.FAIL and "not a level NCCL accepts" in bad.summary


def test_p2p_disable_where_p2p_is_not_required_is_a_note() -> None:
    r = rig("rtx3090x2-gen4", "[p2p]\nrequired = false\n")
    v = checks.nccl_transport_env(r, env(env={"NCCL_P2P_DISABLE": "1"}))
    assert v.status == Status.PASS and any("NCCL_P2P_DISABLE=1" in n for n in v.notes)


def test_shm_and_ib_disable() -> None:
    shm = checks.nccl_transport_env(rig(H200), env(env={"NCCL_SHM_DISABLE": "1"}))
    assert shm.status == Status.WARN and "over sockets" in shm.summary
    both = checks.nccl_transport_env(rig(H200), env(env={"NCCL_SHM_DISABLE": "1", "NCCL_P2P_DISABLE": "1"}))
    assert both.status == Status.FAIL and "all-reduce over sockets" in both.summary
    ib = checks.nccl_transport_env(rig(H200), env(env={"NCCL_IB_DISABLE": "1"}))
    assert ib.status == Status.PASS and any(
        "changes nothing between the GPUs of one machine" in n for n in ib.notes
    )


# -- swap space -----------------------------------------------------------------------------------------


def test_swap_space() -> None:
    """The seed: --swap-space 16 at TP=2 takes 32 GiB of host memory (vllm CacheConfig rule: >70 % refuses)."""
    r = rig("rtx3090x2-gen4", TP2)
    ok = checks.swap_space(r, env(meminfo={"MemTotal": 128 * GIB, "MemAvailable": 100 * GIB}))
    assert ok.status == Status.PASS and "32.0 GiB" in ok.summary
    warn = checks.swap_space(r, env(meminfo={"MemTotal": 64 * GIB, "MemAvailable": 60 * GIB}))
    assert warn.status == Status.WARN and "Possibly too large swap space" in warn.summary
    refuse = checks.swap_space(r, env(meminfo={"MemTotal": 40 * GIB, "MemAvailable": 38 * GIB}))
    assert refuse.status == Status.FAIL and "Too large swap space" in refuse.summary
    short = checks.swap_space(r, env(meminfo={"MemTotal": 128 * GIB, "MemAvailable": 20 * GIB}))
    assert short.status == Status.FAIL and "only 20.0 GiB available" in short.summary
    assert "--swap-space" in short.fix[0]
    assert checks.swap_space(r, env(meminfo={"unavailable": "x"})).status == Status.UNREADABLE


def test_swap_space_default_and_not_applicable() -> None:
    r = rig("rtx3090x2-gen4", '[vllm]\nmodel = "m"\n')
    v = checks.swap_space(r, env())
    assert v.status == Status.PASS and "vLLM's default --swap-space 4" in v.expected
    assert checks.swap_space(rig("rtx3090x2-gen4"), env()).status == Status.NOT_APPLICABLE


# -- container ------------------------------------------------------------------------------------------


def test_container_said() -> None:
    inside = checks.container(rig(H200), env(container=["/.dockerenv exists (Docker)"]))
    assert (
        inside.status == Status.PASS and "inside a container: /.dockerenv exists (Docker)" in inside.summary
    )
    outside = checks.container(rig(H200), env())
    assert outside.status == Status.PASS and "not in a container" in outside.summary


@pytest.mark.parametrize("value", [Unread("x")])
def test_unread_is_never_a_pass(value: Unread) -> None:
    e = RunEnv("t", shm=value, memlock=value, meminfo=value, dev_nvidia=value)
    r = rig("rtx3090x2-gen4", TP2)
    assert checks.shm_size(r, e).status == Status.UNREADABLE
    assert checks.memlock(r, e).status == Status.UNREADABLE
    assert checks.swap_space(r, e).status == Status.UNREADABLE
    assert checks.gpu_visible(_gpu(r, "0000:21:00.0"), e).status == Status.UNREADABLE


def _without(key: str, **over: object) -> RunEnv:
    record = env_record(**over)
    del record[key]
    return RunEnv.from_json(record, "snapshot s: env.json")


@pytest.mark.parametrize(
    ("key", "over", "judge"),
    [
        ("env", {}, lambda r, e: checks.nccl_transport_env(r, e)),
        ("nccl_conf", {}, lambda r, e: checks.nccl_transport_env(r, e)),
        ("env", {}, lambda r, e: checks.gpu_visible(_gpu(r, "0000:21:00.0"), e)),
        ("container", {}, lambda r, e: checks.container(r, e)),
        ("rdma", {"memlock": {"soft": 65536, "hard": 65536}}, lambda r, e: checks.memlock(r, e)),
        ("shm", {}, lambda r, e: checks.shm_size(r, e)),
        ("memlock", {}, lambda r, e: checks.memlock(r, e)),
        ("meminfo", {}, lambda r, e: checks.swap_space(r, e)),
        ("dev_nvidia", {}, lambda r, e: checks.gpu_visible(_gpu(r, "0000:21:00.0"), e)),
    ],
)
def test_a_key_missing_from_env_json_is_unreadable_naming_it(
    key: str, over: dict[str, Any], judge: Any
) -> None:
    """FRESH4 finding 2: env.json without `env` or `nccl_conf` passed "none of NCCL_P2P_DISABLE, ... set" and
    "visible to CUDA"; without `container` it passed "not in a container"; without `rdma` a finite memlock
    limit passed "no RDMA device". A key the record lacks is a reading never taken: UNREADABLE, naming
    env.json and the key, the one way a missing `shm` or `memlock` already was."""
    r = rig("rtx3090x2-gen4", TP2)
    assert judge(r, env(**over)).status != Status.UNREADABLE  # the whole record is judged
    v = judge(r, _without(key, **over))
    assert v.status == Status.UNREADABLE, v.summary
    assert f"env.json has no {key!r}" in v.summary
    assert "rigcheck capture" in " ".join(v.fix)


def test_unavailable_env_is_unreadable_and_round_trips() -> None:
    """``{"unavailable": why}`` stands in for any key, env/nccl_conf/container/rdma included, and to_json
    writes it back the same way (what `rigcheck capture` would write of a reading it could not take)."""
    e = env(env={"unavailable": "x"}, container={"unavailable": "y"})
    assert e.env == Unread("x") and e.container == Unread("y")
    assert RunEnv.from_json(e.to_json(), "t").to_json() == e.to_json()
    assert checks.container(rig(H200), e).status == Status.UNREADABLE
