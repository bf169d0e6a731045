"""Multi-node all-reduce: judge the ranks' results of ``allreduce_worker.py`` per node, as rig reports.

Run the worker on every node through torch.distributed's rendezvous (``torchrun --nnodes``; under Slurm
one ``srun --ntasks-per-node 1`` task per node does it), all writing into one shared folder, then::

    python -m pytest_rigcheck.fleet.multinode collect RESULTS --out DIR --nodes a,b,... --world W \\
        [--min-busbw GB/s]

writes DIR/NODE.multinode.json per node that took part, in ``--rig-report`` format 1, with two checks:

- ``test_multinode_allreduce_correct``: every rank of the node finished, and the all-reduce of ones gave
  exactly the world size everywhere, no NaN (the single-node NCCL check's rule);
- ``test_multinode_busbw``: the bus bandwidth at the largest size (nccl-tests' busbw: algbw x 2(n-1)/n)
  against ``--min-busbw``; the per-rank times of this node's ranks as figures (``rank_time_us_LR``).

A rank that hit the worker's hang timeout, failed, or was killed after joining (its result still says
"running") makes its node's checks UNREADABLE ("did not finish"); a node
of ``--nodes`` with no rank results at all gets no report, so ``rigcheck merge`` names it missing (exit 2).
Without ``--min-busbw`` the busbw is a WARN (measured, nothing to judge it against), never a silent pass.
Exit status: 0 all nodes pass, 1 a node fails, 2 a node is missing or unreadable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

WORKER = Path(__file__).with_name("allreduce_worker.py")
CHECKS = "multinode/test_multinode.py::"


def read_ranks(folder: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The rank results (``rank-R.json``) in ``folder``, and the lines saying which could not be read."""
    ranks, bad = [], []
    for path in sorted(folder.glob("rank-*.json")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            int(doc["rank"])
            str(doc["host"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            bad.append(f"{path.name}: unreadable ({exc})")
            continue
        ranks.append(doc)
    return ranks, bad


def judge(
    ranks: list[dict[str, Any]], world: int, min_busbw: float | None
) -> dict[str, list[dict[str, Any]]]:
    """Per node (host): the two results, in the report's result shape."""
    by_node: dict[str, list[dict[str, Any]]] = {}
    for r in ranks:
        by_node.setdefault(str(r["host"]), []).append(r)
    seen = {int(r["rank"]) for r in ranks}
    absent = sorted(set(range(world)) - seen)
    out = {}
    for host, rs in sorted(by_node.items()):
        rs.sort(key=lambda r: int(r["local_rank"]) if "local_rank" in r else int(r["rank"]))
        errors = [f"rank {r['rank']}: {r['error']}" for r in rs if r.get("error")]
        done = [r for r in rs if not r.get("error") and r.get("sweep")]
        ids = ", ".join(f"rank {r['rank']} (local {r.get('local_rank')}, {r.get('device', '?')})" for r in rs)
        target = {"id": "all", "node": host, "ranks": [int(r["rank"]) for r in rs]}
        if errors or not done:
            why = "; ".join(errors) or "no result (the rank joined, then stopped: killed or hung)"
            msg = f"{host}: multi-node all-reduce did not finish: {why}"
            unread = {
                "status": "unreadable",
                "message": msg,
                "summary": msg,
                "target": target,
                "fix": [
                    "check the network between the nodes (NCCL_SOCKET_IFNAME, firewall) and that "
                    "every node joined the rendezvous; rerun with NCCL_DEBUG=INFO"
                ],
            }
            out[host] = [
                {"nodeid": f"{CHECKS}test_multinode_allreduce_correct[all]", **unread},
                {"nodeid": f"{CHECKS}test_multinode_busbw[all]", **unread},
            ]
            continue
        wrong = sum(p["wrong"] + p["nan"] for r in done for p in r["sweep"])
        correct: dict[str, Any]
        if wrong:
            correct = {
                "status": "fail",
                "measured": wrong,
                "expected": 0,
                "unit": "wrong elements",
                "message": f"{host}: all-reduce of ones across {world} ranks gave {wrong} elements "
                f"other than {world} (or NaN) on {ids}",
            }
        else:
            correct = {
                "status": "pass",
                "measured": 0,
                "expected": 0,
                "unit": "wrong elements",
                "message": f"{host}: all-reduce of ones gave exactly {world} everywhere on {ids}",
            }
        if absent:
            correct["message"] += f"; ranks {absent} of {world} wrote nothing (another node)"
        last = done[0]["sweep"][-1]
        busbw = float(last["busbw_gbps"])
        props: dict[str, Any] = {
            "busbw_gbps": round(busbw, 4),
            "bytes": last["bytes"],
            "world": world,
            "backend": done[0].get("backend"),
            "definition": "nccl-tests all_reduce_perf busbw = algbw x 2(n-1)/n, GB = 1e9 B",
        }
        for r in done:
            props[f"rank_time_us_{r.get('local_rank', r['rank'])}"] = round(
                float(r["sweep"][-1]["rank_time_us"]), 2
            )
        text = f"multi-node all-reduce busbw {busbw:.3g} GB/s at {last['bytes']} B across {world} ranks"
        bw: dict[str, Any]
        if min_busbw is None:
            bw = {"status": "warn", "message": f"{host}: {text}: no expected busbw given (--min-busbw)"}
        elif busbw >= min_busbw:
            bw = {"status": "pass", "message": f"{host}: {text} (>= {min_busbw:g} GB/s)"}
        else:
            bw = {
                "status": "fail",
                "message": f"{host}: {text}, below {min_busbw:g} GB/s",
                "fix": ["check the inter-node links (NCCL_DEBUG=INFO shows the transport: NET/IB vs Socket)"],
            }
        bw.update({"measured": round(busbw, 4), "expected": min_busbw, "unit": "GB/s", "properties": props})
        out[host] = [
            {"nodeid": f"{CHECKS}test_multinode_allreduce_correct[all]", "target": target, **correct},
            {"nodeid": f"{CHECKS}test_multinode_busbw[all]", "target": target, **bw},
        ]
    return out


def write_reports(results: dict[str, list[dict[str, Any]]], out: Path) -> list[Path]:
    """One format-1 report per node: ``out/NODE.multinode.json``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for host, rs in results.items():
        for r in rs:
            r.setdefault("summary", r["message"])
            r["outcome"] = "failed" if r["status"] in ("fail", "unreadable") else "passed"
        bad = any(r["status"] in ("fail", "unreadable") for r in rs)
        counts: dict[str, int] = {}
        for r in rs:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        doc = {
            "format": 1,
            "tool": "pytest-rigcheck multinode",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": host,
            "rigs": [],
            "exit_status": int(bad),
            "counts": counts,
            "results": rs,
        }
        path = out / f"{host}.multinode.json"
        tmp = out / f".{path.name}.tmp"
        tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pytest_rigcheck.fleet.multinode")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect", help="Judge the ranks' results per node and write NODE.multinode.json")
    c.add_argument("results", type=Path, help="The folder the workers wrote rank-R.json into")
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--world", type=int, required=True, help="Ranks expected in all (nodes x GPUs per node)")
    c.add_argument("--nodes", default="", help="Comma-separated node names expected (missing ones are named)")
    c.add_argument("--min-busbw", type=float, default=None, help="Expected busbw in GB/s (1e9 B/s)")
    sub.add_parser("worker-path", help="Print the worker script's path (for torchrun)")
    args = ap.parse_args(argv)
    if args.cmd == "worker-path":
        print(WORKER)
        return 0
    if not args.results.is_dir():
        print(f"rigcheck multinode: {args.results}: no such folder", file=sys.stderr)
        return 2
    ranks, bad = read_ranks(args.results)
    for line in bad:
        print(f"rigcheck multinode: {line}", file=sys.stderr)
    results = judge(ranks, args.world, args.min_busbw)
    paths = write_reports(results, args.out)
    from .merge import run_merge

    expected = [n for n in args.nodes.split(",") if n]
    reports = paths + [args.out / f"{n}.multinode.json" for n in expected if n not in results]
    return run_merge(reports, args.out / "fleet")


if __name__ == "__main__":
    raise SystemExit(main())
