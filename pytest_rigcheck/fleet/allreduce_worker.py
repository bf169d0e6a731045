"""Multi-node all-reduce worker, one process per GPU, started by ``torchrun --nnodes N`` on every node.

    torchrun --nnodes N --nproc-per-node G --rdzv-backend c10d --rdzv-endpoint HOST:PORT --rdzv-id ID \\
        allreduce_worker.py --out DIR [--sizes 1048576,16777216,...] [--timeout 300] [--backend auto]

stdlib, torch and torch.distributed only (never pytest_rigcheck: it runs in whatever Python has torch).
The rendezvous is torch.distributed's (torchrun's c10d store on HOST:PORT). Backend: NCCL where CUDA is
there, gloo otherwise (CPU stand-in for tests). Per size, as nccl-tests ``all_reduce_perf`` times it: an
all-reduce of ones must give exactly the world size everywhere (correctness), then ``warmup`` untimed
ops, a barrier, ``iters`` back-to-back all-reduces timed on the host clock to a device synchronize, the
time averaged over ranks; algbw = bytes / 1e9 / s, busbw = algbw x 2(n-1)/n
(https://github.com/NVIDIA/nccl-tests/blob/master/doc/PERFORMANCE.md). Each rank writes
DIR/rank-RANK.json: host, node rank (GROUP_RANK), local rank, device, the sweep. A watchdog ends the
process (exit 124, ``{"error": "timeout"}`` written) when the whole run passes ``--timeout`` seconds: a
hung peer or link never leaves it waiting for ever.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import threading
import time
from typing import Any


def write(out: str, rank: int, doc: dict[str, Any]) -> None:
    path = os.path.join(out, f"rank-{rank}.json")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f)
    os.replace(tmp, path)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--sizes", default="1048576,16777216,67108864")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--backend", default="auto", choices=["auto", "nccl", "gloo"])
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    base: dict[str, Any] = {
        "rank": rank,
        "world": world,
        "node_rank": int(os.environ.get("GROUP_RANK", "0")),
        "local_rank": local,
        "host": os.environ.get("RIGCHECK_NODE") or socket.gethostname(),
    }

    def watchdog() -> None:
        try:
            write(
                args.out,
                rank,
                {**base, "error": f"timeout: the all-reduce did not finish in {args.timeout:g} s"},
            )
        except OSError:  # the folder went: still end the process
            pass
        os._exit(124)

    timer = threading.Timer(args.timeout, watchdog)
    timer.daemon = True
    timer.start()
    try:
        return run(args, rank, world, local, base, timer)
    except Exception as exc:  # a peer that died mid-way: say so in this rank's result, then fail
        first = (str(exc).splitlines() or [""])[0][:300]
        write(args.out, rank, {**base, "error": f"{type(exc).__name__}: {first}"})
        return 1


def run(args: Any, rank: int, world: int, local: int, base: dict[str, Any], timer: Any) -> int:

    import torch
    import torch.distributed as dist

    backend = args.backend
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
        base["device"] = torch.cuda.get_device_name(local)
        base["pci_bus_id"] = getattr(torch.cuda.get_device_properties(local), "pci_bus_id", None)
    else:
        device = torch.device("cpu")
        base["device"] = "cpu"
    base["backend"] = backend
    base["torch"] = torch.__version__
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=args.timeout))
    # Joined: a node that dies from here on leaves "running" behind, which reads as "did not finish".
    write(args.out, rank, {**base, "state": "running"})

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    sweep = []
    for size in (int(s) for s in args.sizes.split(",") if s):
        x = torch.ones(size // 4, dtype=torch.float32, device=device)
        dist.all_reduce(x)
        sync()
        wrong = int((x != float(world)).sum().item())
        for _ in range(args.warmup):
            dist.all_reduce(x)
        dist.barrier()
        sync()
        t = time.perf_counter()
        for _ in range(args.iters):
            dist.all_reduce(x)
        sync()
        dt = torch.tensor([time.perf_counter() - t], dtype=torch.float64, device=device)
        mine = dt.item() / args.iters
        dist.all_reduce(dt)
        sec = dt.item() / world / args.iters
        algbw = size / 1e9 / sec
        sweep.append(
            {
                "bytes": size,
                "time_us": sec * 1e6,
                "rank_time_us": mine * 1e6,
                "algbw_gbps": algbw,
                "busbw_gbps": algbw * 2 * (world - 1) / world,
                "wrong": wrong,
                "nan": int(torch.isnan(x).sum().item()),
            }
        )
    dist.destroy_process_group()
    timer.cancel()
    write(args.out, rank, {**base, "sweep": sweep})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
