"""Modelled variants of shipped snapshots for the run-environment checks, built into a temporary directory.

Each is a shipped snapshot copied whole, plus an ``env.json`` (and, for the P2P cases, a ``p2p.json``
recording what NCCL did in that environment). The cases are issue 8 item 4 and issue 9 item 5: 2x H200
NVLink with ``NCCL_P2P_DISABLE=1`` or ``CUDA_VISIBLE_DEVICES=0`` in the environment, and the seed's
``docker run`` without ``--ipc=host`` (Docker's 64 MiB ``/dev/shm``) at tensor-parallel size 2.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

from ..conftest import SNAPSHOTS

H200 = "h200x2-nvlink"
H200_GPUS = ["0000:00:06.0", "0000:00:07.0"]
MIB, GIB = 1 << 20, 1 << 30


def env_record(**over: Any) -> dict[str, Any]:
    """A healthy bare-metal environment record (``env.json``), with ``over`` replacing fields."""
    base: dict[str, Any] = {
        "format": 1,
        "origin": "modelled for the run-environment tests",
        "env": {},
        "nccl_conf": [],
        "shm": {"total_b": 64 * GIB, "free_b": 64 * GIB},
        "memlock": {"soft": -1, "hard": -1},
        "meminfo": {"MemTotal": 256 * GIB, "MemAvailable": 240 * GIB},
        "container": [],
        "dev_nvidia": [0, 1],
        "rdma": [],
    }
    base.update(over)
    return base


def copy_snapshot(base: str, dest: Path, env: dict[str, Any] | None) -> Path:
    shutil.copytree(SNAPSHOTS / base, dest, symlinks=True)
    if env is not None:
        (dest / "env.json").write_text(json.dumps(env))
    return dest


def h200_p2p_disabled(dest: Path) -> Path:
    """2x H200 NVLink run with NCCL_P2P_DISABLE=1 set: NCCL connects by SHM at host-copy speed.

    The busbw figures follow the capture's NCCL_P2P_DISABLE=1 control on this machine class (about 38 GB/s
    through host memory: the p2p.json ``control_unidir_gbps`` of the shipped capture), transports as NCCL's
    INFO lines name them (``via SHM/direct/direct``).
    """
    snap = copy_snapshot(H200, dest, env_record(env={"NCCL_P2P_DISABLE": "1", "NCCL_DEBUG": "INFO"}))
    data = json.loads((snap / "p2p.json").read_text())
    key = "+".join(H200_GPUS)
    group = data["nccl"]["groups"][key]
    shm = {"SHM/direct/direct": 4}
    group["transports"] = shm
    group["busbw_gbps"] = [38.2]
    group["sweep"] = [dict(s, busbw_gbps=min(s["busbw_gbps"], 38.2)) for s in group["sweep"]]
    control = {
        "gpus": H200_GPUS,
        "env": {"NCCL_P2P_DISABLE": "1"},
        "transports": shm,
        "judged_bytes": group["judged_bytes"],
        "busbw_gbps": 37.9,
        "wrong": 0,
    }
    group["control"] = copy.deepcopy(control)
    data["nccl"]["control"] = control
    data["env"] = {"NCCL_P2P_DISABLE": "1", "NCCL_DEBUG": "INFO"}
    (snap / "p2p.json").write_text(json.dumps(data))
    return snap


def h200_cuda_visible_0(dest: Path, record_hidden: bool = True) -> Path:
    """2x H200 run with CUDA_VISIBLE_DEVICES=0: GPU1 (0000:00:07.0) hidden, so no pair and no group measured.

    ``record_hidden``: the p2p.json names the hidden GPU (as rigcheck's run now records it); without it the
    checks work it out from env.json.
    """
    snap = copy_snapshot(H200, dest, env_record(env={"CUDA_VISIBLE_DEVICES": "0"}))
    data = json.loads((snap / "p2p.json").read_text())
    data["pairs"] = {}
    data["gpus"] = {k: v for k, v in data["gpus"].items() if k == H200_GPUS[0]}
    data["nccl"] = {"groups": {}}
    data["env"] = {"CUDA_VISIBLE_DEVICES": "0"}
    if record_hidden:
        data["hidden"] = {H200_GPUS[1]: "hidden by CUDA_VISIBLE_DEVICES=0"}
    (snap / "p2p.json").write_text(json.dumps(data))
    return snap


PROFILE_TP2 = """\
# The seed's serving rig: docker run --gpus all ... --tensor-parallel-size 2 --swap-space 16
[rig]
name = "2x RTX 3090, vLLM TP=2 in Docker"
gpus = 2

[p2p]
required = false

[vllm]
model = "Qwen/Qwen2.5-7B-Instruct"
tensor_parallel_size = 2
flags = ["--swap-space", "16"]
"""


def docker_small_shm(dest: Path) -> Path:
    """The seed's container started without --ipc=host: Docker's 64 MiB /dev/shm, memlock 64 KiB, TP=2."""
    snap = copy_snapshot(
        "rtx3090x2-gen4",
        dest,
        env_record(
            env={"NVIDIA_VISIBLE_DEVICES": "all"},
            shm={"total_b": 64 * MIB, "free_b": 64 * MIB},
            memlock={"soft": 64 * 1024, "hard": 64 * 1024},
            meminfo={"MemTotal": 128 * GIB, "MemAvailable": 110 * GIB},
            container=[
                "/.dockerenv exists (Docker)",
                "the root filesystem is overlay (a container image's layers)",
            ],
        ),
    )
    (snap / "rig.toml").write_text(PROFILE_TP2)
    manifest = (snap / "MANIFEST.toml").read_text()
    manifest = manifest.replace('profile = "2x-rtx3090-gen4"', 'profile = "rig.toml"')
    (snap / "MANIFEST.toml").write_text(manifest)
    return snap
