"""Replayed end to end: the diagnoses fit the rig (issue 8 item 4) and the environment checks run (issue 9 item 5).

The inputs are modelled variants of the shipped 2x H200 NVLink capture and of the 2x RTX 3090 rig
(``variants.py``): NCCL_P2P_DISABLE=1 and CUDA_VISIBLE_DEVICES=0 as seen live on 2x H200 (issue 8: "tells the
user the GPUs are PHB apart and to set NCCL_P2P_LEVEL=SYS", "the NCCL worker dies with ValueError"), and the
seed's container without --ipc=host.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from pytest_rigcheck.profile import Profile
from pytest_rigcheck.rig import Rig
from pytest_rigcheck.snapshot import open_snapshot

from ..conftest import REPO, SNAPSHOTS
from . import variants

ENV_SUITE = str(REPO / "suites" / "test_run_environment.py")
NCCL_SUITE = str(REPO / "suites" / "test_nccl_allreduce.py")
P2P_SUITES = [str(REPO / "suites" / f) for f in ("test_p2p_bandwidth.py", "test_cuda_ipc.py")]


def run(pytester: pytest.Pytester, snapshot: Path, *suites: str) -> tuple[set[str], str, int]:
    result = pytester.runpytest_subprocess(
        f"--rig-snapshot={snapshot}", *suites, "-rfEs", "-p", "no:cacheprovider", "--tb=short"
    )
    out = result.stdout.str()
    failed = {m.group(1) for m in re.finditer(r"^(?:FAILED|ERROR) \S*::(\S+)", out, re.M)}
    return failed, out, int(result.ret)


def test_p2p_disabled_names_the_variable_not_phb(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """2x H200 NVLink with NCCL_P2P_DISABLE=1: NCCL on SHM is blamed on the variable, the GPUs are NVLink
    peers (NV18), and no fix says PHB or NCCL_P2P_LEVEL=SYS."""
    snap = variants.h200_p2p_disabled(tmp_path / "h200-p2p-disabled")
    failed, out, rc = run(pytester, snap, NCCL_SUITE, ENV_SUITE)
    assert {"test_nccl_uses_p2p[all]", "test_nccl_transport_env[h200x2-nvlink]"} <= failed, out
    assert rc == 1
    assert "NCCL connected the GPUs by SHM, not P2P because NCCL_P2P_DISABLE=1 is set" in out
    assert "the GPUs are NVLink peers (NV18)" in out
    assert "fix: unset NCCL_P2P_DISABLE" in out
    assert "PHB" not in out and "NCCL_P2P_LEVEL=SYS" not in out and "REFERENCE" not in out


@pytest.mark.parametrize("record_hidden", [True, False], ids=["p2p.json-names-it", "from-env.json"])
def test_cuda_visible_devices_gives_verdicts_not_tracebacks(
    pytester: pytest.Pytester, tmp_path: Path, record_hidden: bool
) -> None:
    """2x H200 with CUDA_VISIBLE_DEVICES=0: the hidden GPU's checks name the variable and the fix."""
    snap = variants.h200_cuda_visible_0(tmp_path / "h200-cvd0", record_hidden)
    failed, out, rc = run(pytester, snap, NCCL_SUITE, ENV_SUITE, *P2P_SUITES)
    assert "test_gpu_visible[0000:00:07.0]" in failed and "test_gpu_visible[0000:00:06.0]" not in failed
    assert {"test_nccl_uses_p2p[all]", "test_p2p_unidirectional[0000:00:06.0->0000:00:07.0]"} <= failed
    assert "test_host_to_device[0000:00:06.0]" not in failed  # the visible GPU is still measured
    assert "0000:00:07.0 is hidden by CUDA_VISIBLE_DEVICES=0: unset it or list every GPU" in out
    assert "ValueError" not in out and "Traceback" not in out and "PHB" not in out
    assert rc == 1


def test_container_small_shm(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """The seed's docker run without --ipc=host: 64 MiB /dev/shm at TP=2 fails, with the container fix."""
    snap = variants.docker_small_shm(tmp_path / "docker-64m")
    failed, out, rc = run(pytester, snap, ENV_SUITE)
    assert failed == {"test_shm_size[rtx3090x2-gen4]"}, out
    assert "--ipc=host" in out and "64 MiB" in out
    assert rc == 1


def test_snapshot_without_env_json_says_not_recorded(pytester: pytest.Pytester) -> None:
    """A snapshot captured before the environment was recorded: the checks that need it do not apply, and say why."""
    failed, out, rc = run(pytester, SNAPSHOTS / "h200x2-nvlink", ENV_SUITE)
    assert failed == set() and rc == 0
    assert "not recorded in this snapshot" in out


def test_corrupt_env_json_is_unreadable(pytester: pytest.Pytester, tmp_path: Path) -> None:
    snap = variants.copy_snapshot(
        "h200x2-nvlink", tmp_path / "s", variants.env_record(shm={"total_b": -1, "free_b": 0})
    )
    failed, out, rc = run(pytester, snap, ENV_SUITE)
    assert "test_shm_size[h200x2-nvlink]" in failed and rc == 1
    assert "UNREADABLE, not a pass" in out and "'shm.total_b'" in out
    assert "Traceback" not in out


def test_live_run_leaves_hidden_gpus_out(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The measuring run never starts a worker for a GPU CUDA cannot see, and records why it is missing."""
    from pytest_rigcheck.p2p import lock, measure
    from pytest_rigcheck.p2p.session import P2pSession
    from pytest_rigcheck.runenv.state import EXTRAS_KEY, RunEnv

    snap = variants.copy_snapshot("h200x2-nvlink", tmp_path / "s", None)
    rig = Rig.replay(open_snapshot(snap), Profile())
    rig.extras[EXTRAS_KEY] = RunEnv("t", env={"CUDA_VISIBLE_DEVICES": "0"}, dev_nvidia=[0, 1])
    seen: dict[str, Any] = {}

    def fake_measure(gpus: list[str], groups: list[list[str]], *_: object, **__: object) -> dict[str, Any]:
        seen.update(gpus=gpus, groups=groups)
        return {"pairs": {}, "gpus": {}, "nccl": {"groups": {}}}

    monkeypatch.setattr(measure, "measure", fake_measure)
    monkeypatch.setattr(lock, "shared_result_path", lambda *a: tmp_path / "shared.json")
    data = P2pSession(rig, 10, None, None)._measure()
    assert seen == {"gpus": ["0000:00:06.0"], "groups": []}
    assert data["hidden"] == {"0000:00:07.0": "hidden by CUDA_VISIBLE_DEVICES=0"}
    json.dumps(data)  # shared with xdist workers as JSON


def test_impossible_memlock_fails_unreadable_not_setup_error(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    """env.json memlock soft unlimited above a finite hard limit (cannot be: setrlimit(2)) on an RDMA rig:
    test_memlock_limit FAILS as UNREADABLE naming the field, not a pass and not a pytest setup ERROR."""
    snap = variants.copy_snapshot(
        variants.H200,
        tmp_path / "s",
        variants.env_record(memlock={"soft": -1, "hard": 65536}, rdma=["mlx5_0"]),
    )
    failed, out, rc = run(pytester, snap, ENV_SUITE)
    assert "test_memlock_limit[h200x2-nvlink]" in failed or "test_memlock_limit" in failed, out
    assert re.search(r"^FAILED \S*test_memlock_limit", out, re.M), out
    assert not re.search(r"^ERROR ", out, re.M), out
    assert "UNREADABLE" in out and "memlock.soft" in out
    assert rc == 1


@pytest.mark.parametrize(
    "note",
    [
        "env.json: 0 NCCL/CUDA variable(s), in a container",  # as runenv/capture.py writes it
        "env.json: 3 NCCL/CUDA variable(s), not in a container; not readable: memlock",
    ],
)
def test_env_json_lost_from_a_capture_that_recorded_it_is_unreadable(
    pytester: pytest.Pytester, tmp_path: Path, note: str
) -> None:
    """FRESH3 F-EnvMiss: the seed's container capture (64 MiB /dev/shm: test_shm_size FAILS) with env.json
    deleted, its MANIFEST still noting `[notes] env = "env.json: ..."`, skipped all env checks "captured
    before rigcheck recorded it", exit 0: a false reason. The manifest says env.json was recorded, so the
    checks that need it are UNREADABLE, saying so and how to capture it again."""
    snap = variants.docker_small_shm(tmp_path / "docker-64m")
    with (snap / "MANIFEST.toml").open("a") as f:
        f.write(f'\n[notes]\nenv = "{note}"\n')
    failed, out, rc = run(pytester, snap, ENV_SUITE)
    assert failed == {"test_shm_size[rtx3090x2-gen4]"} and rc == 1, out  # judged while env.json is there
    (snap / "env.json").unlink()
    failed, out, rc = run(pytester, snap, ENV_SUITE)
    assert rc == 1 and "test_shm_size[rtx3090x2-gen4]" in failed and len(failed) >= 5, out
    assert "env.json missing from a capture that recorded it" in out and "[notes] env" in out, out
    assert "rigcheck capture DIR" in out and "captured before" not in out, out


def test_env_json_absent_from_a_capture_that_never_noted_it_still_skips(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    """env.json was added to `rigcheck capture` after the first version (same tool version string), so a
    capture whose notes do not mention it may predate it: the checks do not apply, saying so."""
    snap = variants.copy_snapshot("rtxpro6000x4-switch", tmp_path / "s", None)
    manifest = (snap / "MANIFEST.toml").read_text()
    manifest = manifest.replace('kind = "modelled"', 'kind = "captured"')
    manifest = re.sub(r'^tool = ".*"$', 'tool = "pytest-rigcheck 0.1.0"', manifest, flags=re.M)
    (snap / "MANIFEST.toml").write_text(manifest + '\n[notes]\np2p = "p2p.json: 12 GPU pair(s)"\n')
    failed, out, rc = run(pytester, snap, ENV_SUITE)
    assert failed == set() and rc == 0, out
    assert "not recorded in this snapshot" in out


FRESH4_ENV = {
    "format": 1,
    "env": {},
    "nccl_conf": [],
    "container": [],
    "dev_nvidia": [0, 1, 2, 3],
    "rdma": [],
    "shm": {"free_b": 17179869184, "total_b": 17179869184},
    "memlock": {"hard": -1, "soft": -1},
    "meminfo": {"MemAvailable": 214748364800, "MemTotal": 274877906944},
}


@pytest.mark.parametrize(
    ("key", "checks"),
    [
        ("env", {"test_nccl_transport_env[rtxpro6000x4-switch]", "test_gpu_visible[0000:03:00.0]"}),
        ("nccl_conf", {"test_nccl_transport_env[rtxpro6000x4-switch]"}),
        ("container", {"test_container[rtxpro6000x4-switch]"}),
    ],
)
def test_env_json_key_missing_fails_unreadable(
    pytester: pytest.Pytester, tmp_path: Path, key: str, checks: set[str]
) -> None:
    """FRESH4 finding 2, its reproduction: rtxpro6000x4-switch plus env.json as `rigcheck capture` writes it
    passes the environment checks; with `env`, `nccl_conf` or `container` deleted they still passed ("none
    of NCCL_P2P_DISABLE ... set", "visible to CUDA (4 of 4)", "not in a container"), exit 0. Now each check
    that needs the key FAILS as UNREADABLE naming env.json and the key."""
    record = dict(FRESH4_ENV)
    snap = variants.copy_snapshot("rtxpro6000x4-switch", tmp_path / "s", record)
    failed, out, rc = run(pytester, snap, ENV_SUITE)
    assert failed == set() and rc == 0, out
    del record[key]
    (snap / "env.json").write_text(json.dumps(record))
    failed, out, rc = run(pytester, snap, ENV_SUITE)
    assert checks <= failed and rc == 1, out
    assert f"env.json has no {key!r} (not recorded)" in out and "UNREADABLE" in out, out
    assert "Traceback" not in out
