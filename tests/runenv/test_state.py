"""Reading the run's environment: env.json validation, NCCL's own resolution rules, CUDA_VISIBLE_DEVICES."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from pytest_rigcheck.profile import Profile
from pytest_rigcheck.rig import Rig
from pytest_rigcheck.runenv.capture import capture_env
from pytest_rigcheck.runenv.state import (
    GpuInfo,
    RunEnv,
    RunEnvCorrupt,
    RunEnvMissing,
    Unread,
    container_evidence,
    cuda_visible,
    hidden_gpus,
    parse_meminfo,
    parse_nccl_conf,
    read_live,
    read_recorded,
    run_env,
    selected_env,
)
from pytest_rigcheck.snapshot import open_snapshot
from pytest_rigcheck.source import Source

from ..conftest import SNAPSHOTS
from .variants import H200, H200_GPUS, copy_snapshot, env_record

GPUS = [
    GpuInfo("0000:00:06.0", "GPU-5527a91e-cf4c", 0, True),
    GpuInfo("0000:00:07.0", "GPU-3c059103-4147", 1, True),
]


def replay(path: Path) -> Rig:
    return Rig.replay(open_snapshot(path), Profile())


# -- CUDA_VISIBLE_DEVICES as CUDA reads it -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "visible", "odd"),
    [
        ("0", ["0000:00:06.0"], False),
        ("1,0", ["0000:00:07.0", "0000:00:06.0"], False),
        ("GPU-3c05", ["0000:00:07.0"], False),  # a unique UUID prefix is enough
        ("GPU-", [], True),  # ambiguous prefix: names no one GPU
        ("0,2,1", ["0000:00:06.0"], True),  # CUDA stops at the first entry that names no GPU
        ("", [], True),  # set but empty: no GPU at all
        ("0,0", ["0000:00:06.0"], True),
        ("-1", [], True),
    ],
)
def test_cuda_visible(value: str, visible: list[str], odd: bool) -> None:
    got, note = cuda_visible(value, GPUS)
    assert got == visible
    assert (note is not None) == odd


def test_hidden_by_cuda_visible_devices(tmp_path: Path) -> None:
    rig = replay(copy_snapshot(H200, tmp_path / "s", env_record(env={"CUDA_VISIBLE_DEVICES": "0"})))
    assert hidden_gpus(rig) == {H200_GPUS[1]: "hidden by CUDA_VISIBLE_DEVICES=0"}


def test_hidden_by_uuid(tmp_path: Path) -> None:
    """The capture's information files give each GPU's UUID; CUDA_VISIBLE_DEVICES may name GPUs by it."""
    rig = replay(
        copy_snapshot(H200, tmp_path / "s", env_record(env={"CUDA_VISIBLE_DEVICES": "GPU-3c059103"}))
    )
    assert set(hidden_gpus(rig)) == {H200_GPUS[0]}


def test_hidden_by_container_device_list(tmp_path: Path) -> None:
    """In a container given one GPU, /dev/nvidia1 is absent: GPU1 is hidden, the container's list named."""
    env = env_record(dev_nvidia=[0], container=["/.dockerenv exists (Docker)"])
    rig = replay(copy_snapshot(H200, tmp_path / "s", env))
    assert hidden_gpus(rig) == {H200_GPUS[1]: "no /dev/nvidia1 in the container's device list"}


def test_nothing_hidden_without_a_record() -> None:
    rig = replay(SNAPSHOTS / H200)
    assert hidden_gpus(rig) == {}


# -- NCCL settings, as NCCL resolves them --------------------------------------------------------------


def test_nccl_conf_parse_as_nccl() -> None:
    """NVIDIA/nccl src/misc/param.cc: NAME=value lines, '#' comment lines, lines without '=' ignored."""
    text = "# comment\nNCCL_P2P_LEVEL=NVL\ngarbage\nNCCL_DEBUG=WARN\nNCCL_P2P_LEVEL=SYS\n"
    assert parse_nccl_conf(text) == {"NCCL_P2P_LEVEL": "NVL", "NCCL_DEBUG": "WARN"}


def test_environment_wins_over_files() -> None:
    env = RunEnv(
        "t",
        env={"NCCL_P2P_LEVEL": "SYS", "NCCL_SHM_DISABLE": ""},
        nccl_conf=[
            ("/root/.nccl.conf", {"NCCL_IB_DISABLE": "1"}),
            ("/etc/nccl.conf", {"NCCL_P2P_LEVEL": "PIX", "NCCL_SHM_DISABLE": "1", "NCCL_IB_DISABLE": "0"}),
        ],
    )
    assert env.nccl("NCCL_P2P_LEVEL") == ("SYS", "environment")
    assert env.nccl("NCCL_SHM_DISABLE") == (
        "1",
        "/etc/nccl.conf",
    )  # empty in the environment: NCCL ignores it
    assert env.nccl("NCCL_IB_DISABLE") == ("1", "/root/.nccl.conf")
    assert env.setting_text("NCCL_SHM_DISABLE") == "NCCL_SHM_DISABLE=1 (in /etc/nccl.conf)"
    assert env.nccl("NCCL_P2P_DISABLE") is None


def test_selected_env_keeps_nccl_cuda_and_hides_secrets() -> None:
    got = selected_env(
        {
            "NCCL_P2P_DISABLE": "1",
            "TORCH_NCCL_BLOCKING_WAIT": "1",
            "CUDA_VISIBLE_DEVICES": "0",
            "HOME": "/x",
            "NCCL_IB_KEY": "s3",
        }
    )
    assert got == {
        "CUDA_VISIBLE_DEVICES": "0",
        "NCCL_IB_KEY": "(set, value not recorded)",
        "NCCL_P2P_DISABLE": "1",
        "TORCH_NCCL_BLOCKING_WAIT": "1",
    }


def test_meminfo() -> None:
    text = "MemTotal:       263921008 kB\nMemFree:  1 kB\nMemAvailable:   250000000 kB\n"
    assert parse_meminfo(text) == {"MemTotal": 263921008 * 1024, "MemAvailable": 250000000 * 1024}
    assert isinstance(parse_meminfo("MemTotal: 5 kB\n"), Unread)
    assert isinstance(parse_meminfo("MemTotal: 5 kB\nMemAvailable: 9 kB\n"), Unread)  # impossible


def test_container_evidence(tmp_path: Path) -> None:
    (tmp_path / ".dockerenv").write_text("")
    (tmp_path / "proc/1").mkdir(parents=True)
    (tmp_path / "proc/1/cgroup").write_text("0::/system.slice/docker-0123.scope\n")
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/mountinfo").write_text(
        "512 480 0:91 / / rw,relatime master:1 - overlay overlay rw,lowerdir=/x\n"
        "520 512 0:95 / /dev/shm rw,nosuid - tmpfs shm rw,size=65536k\n"
    )
    got = container_evidence(Source(tmp_path))
    assert got == [
        "/.dockerenv exists (Docker)",
        "/proc/1/cgroup names docker",
        "the root filesystem is overlay (a container image's layers)",
    ]
    bare = tmp_path / "bare"
    (bare / "proc/self").mkdir(parents=True)
    (bare / "proc/self/mountinfo").write_text(
        "22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw\n"
    )
    assert container_evidence(Source(bare)) == []


# -- env.json: recorded, replayed, refused -------------------------------------------------------------


def test_read_live_roundtrips_through_env_json() -> None:
    env = read_live(Source("/"))
    again = RunEnv.from_json(json.loads(json.dumps(env.to_json())), "t")
    assert again.to_json() == env.to_json()
    assert isinstance(env.memlock, dict) and set(env.memlock) == {"soft", "hard"}


def test_capture_writes_env_json_that_replays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NCCL_P2P_DISABLE", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    notes = capture_env(tmp_path)
    assert "env.json" in notes["env"]
    env = RunEnv.from_json(json.loads((tmp_path / "env.json").read_text()), "t")
    assert env.env["NCCL_P2P_DISABLE"] == "1" and env.env["CUDA_VISIBLE_DEVICES"] == "0"
    assert env.origin.startswith("captured live")


def test_missing_env_json_says_not_recorded() -> None:
    with pytest.raises(RunEnvMissing, match="not recorded in this snapshot"):
        run_env(replay(SNAPSHOTS / H200))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"format": 2}, "format"),
        ({"env": {"NCCL_P2P_DISABLE": 1}}, "env.NCCL_P2P_DISABLE"),
        ({"shm": {"total_b": "64M", "free_b": 0}}, "shm.total_b"),
        ({"shm": {"total_b": 1, "free_b": 2}}, "shm.free_b"),
        ({"memlock": {"soft": -5, "hard": -1}}, "memlock.soft"),
        ({"memlock": {"soft": -1, "hard": 65536}}, "memlock.soft"),  # unlimited above a finite hard limit
        ({"memlock": {"soft": 2**70, "hard": 1}}, "memlock.soft"),  # past 64-bit rlim_t
        ({"memlock": {"soft": 2, "hard": 1}}, "memlock.soft"),  # soft above hard: setrlimit(2) EINVAL
        ({"meminfo": {"MemTotal": 1, "MemAvailable": 2}}, "meminfo.MemAvailable"),
        ({"dev_nvidia": ["0"]}, "dev_nvidia"),
        ({"container": "yes"}, "container"),
        ({"nccl_conf": [{"path": "/etc/nccl.conf"}]}, "nccl_conf[0]"),
    ],
)
def test_corrupt_env_json_names_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(RunEnvCorrupt, match=re.escape(f"field '{field}'")):
        RunEnv.from_json(env_record(**change), "snapshot x: env.json")


def test_env_json_not_json(tmp_path: Path) -> None:
    snap = copy_snapshot(H200, tmp_path / "s", None)
    (snap / "env.json").write_text("{not json")
    with pytest.raises(RunEnvCorrupt, match="env.json: not valid JSON"):
        read_recorded(Source(snap), "s")


def test_env_json_link_out_of_snapshot_is_refused(tmp_path: Path) -> None:
    """Containment: an env.json that is a link leaving the snapshot is never followed."""
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(env_record()))
    snap = copy_snapshot(H200, tmp_path / "s", None)
    os.symlink(str(outside), snap / "env.json")
    with pytest.raises(RunEnvCorrupt, match="leaves the snapshot"):
        read_recorded(Source(snap), "s")


def test_env_json_fifo_is_refused(tmp_path: Path) -> None:
    snap = copy_snapshot(H200, tmp_path / "s", None)
    os.mkfifo(snap / "env.json")
    with pytest.raises(RunEnvCorrupt, match="not a regular file"):
        read_recorded(Source(snap), "s")
