"""NCCL worker: one process per GPU; all-reduce correctness and bus bandwidth, and the CUDA IPC round trip.

Run by the launcher as ``python nccl_worker.py --plan PLAN --run-dir DIR --name nccl.RANK`` with RANK,
WORLD_SIZE, MASTER_ADDR and MASTER_PORT set (stdlib, torch, torch.distributed with NCCL; never
pytest_rigcheck). Timing follows nccl-tests ``all_reduce_perf``: per size, ``warmup`` untimed ops, a
barrier, then ``iters`` back-to-back all-reduces timed on the host clock up to a device synchronize;
the time is averaged over ranks; algbw = bytes / 1e9 / s, busbw = algbw x 2(n-1)/n. Correctness per
size: an all-reduce of ones must give exactly the group size everywhere; after the timed ops no
element may be NaN. The IPC check is vLLM's ``can_actually_p2p``: each rank cudaMalloc's a buffer and
fills it with its own pattern, every other rank opens it by cudaIpcOpenMemHandle and copies it out;
the copy must match. The reader also reads it with a kernel of its own (``_kernel_read.py``, SM loads
through the mapping), as vLLM's custom all-reduce does; that read must match too. Then the write path
of the custom all-reduce: each rank exports an inbox with a slot per rank; every other rank writes its
pattern into its slot with a kernel storing through the IPC mapping (``_kernel_write.py``); after a
barrier the inbox's owner checks each slot (``kernel_write`` in the pair's IPC result, key WRITER->OWNER).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _proto import finish, log, mark_ready, wait_go, write_result  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--plan", required=True)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--phase", required=True)
    args = ap.parse_args()
    parent = os.getppid()
    t0 = time.perf_counter()
    with open(args.plan, encoding="utf-8") as f:
        plan = json.load(f)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])

    import datetime

    import torch
    import torch.distributed as dist
    from _cudart import Cudart

    import_s = round(time.perf_counter() - t0, 3)

    rt = Cudart()
    bdfs = [rt.pci_bus_id(i) for i in range(torch.cuda.device_count())]
    my_bdf = plan["ranks"][rank]
    if my_bdf not in bdfs:  # hidden from CUDA: say so in one line, not a traceback
        log(
            f"rank {rank}: GPU {my_bdf} is not visible to CUDA in this process (CUDA_VISIBLE_DEVICES="
            f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}; visible: {', '.join(bdfs) or 'none'})"
        )
        return 3
    dev = bdfs.index(my_bdf)
    torch.cuda.set_device(dev)
    device = torch.device("cuda", dev)
    dist.init_process_group(
        "nccl",
        rank=rank,
        world_size=world,
        device_id=device,
        timeout=datetime.timedelta(seconds=float(plan["timeout_s"]) + 60),
    )
    groups = []
    for members in plan["groups"]:  # every rank creates every group, in the same order
        pg = None if len(members) == world else dist.new_group(members)
        groups.append((members, pg))
    result: dict[str, Any] = {
        "rank": rank,
        "bdf": my_bdf,
        "cuda_index": dev,
        "torch": torch.__version__,
        "nccl": ".".join(map(str, torch.cuda.nccl.version())),
        "groups": [],
        "ipc": {},
        "import_s": import_s,
    }
    max_bytes = max(plan["sizes"])
    buf = torch.empty(max_bytes // 4, dtype=torch.float32, device=device)
    # Eager NCCL init of each group outside the timed phase: one tiny all-reduce per group.
    for members, pg in groups:
        if rank in members:
            dist.all_reduce(torch.ones(1, device=device), group=pg)
    torch.cuda.synchronize()
    result["setup_s"] = round(time.perf_counter() - t0, 3)
    mark_ready(args.run_dir, args.name)
    wait_go(args.run_dir, args.phase, parent)
    t1 = time.perf_counter()

    def barrier(pg: Any) -> None:
        dist.all_reduce(torch.zeros(1, device=device), group=pg)
        torch.cuda.synchronize()

    for members, pg in groups:
        if rank not in members:
            dist.barrier(device_ids=[dev])  # wait for the group measured now; groups run one at a time
            continue
        n = len(members)
        sweep = []
        for size in plan["sizes"]:
            x = buf[: size // 4]
            x.fill_(1.0)
            dist.all_reduce(x, group=pg)
            torch.cuda.synchronize()
            wrong = int((x != float(n)).sum().item())
            for _ in range(plan["warmup"]):
                dist.all_reduce(x, group=pg)
            barrier(pg)
            t = time.perf_counter()
            for _ in range(plan["iters"]):
                dist.all_reduce(x, group=pg)
            torch.cuda.synchronize()
            dt = torch.tensor([time.perf_counter() - t], dtype=torch.float64, device=device)
            dist.all_reduce(dt, group=pg)
            sec = dt.item() / n / plan["iters"]
            nan = int(torch.isnan(x).sum().item())
            algbw = size / 1e9 / sec
            sweep.append(
                {
                    "bytes": size,
                    "time_us": sec * 1e6,
                    "algbw_gbps": algbw,
                    "busbw_gbps": algbw * 2 * (n - 1) / n,
                    "wrong": wrong,
                    "nan": nan,
                }
            )
        result["groups"].append({"members": members, "sweep": sweep})
        if len(members) < world:
            dist.barrier(device_ids=[dev])

    if plan.get("ipc"):
        result["ipc"] = ipc_check(rt, torch, dist, rank, world, device, plan)
    torch.cuda.synchronize()
    result["measure_s"] = round(time.perf_counter() - t1, 3)
    write_result(args.run_dir, args.name, result)
    return 0  # no destroy_process_group: finish() exits at once and the driver frees what NCCL held


@contextlib.contextmanager
def _peer_mapping(rt: Any, handle: bytes | bytearray) -> Iterator[int]:
    """A peer's buffer mapped into this process (``cudaIpcOpenMemHandle``), unmapped on leaving; an
    error on unmapping after a failure is dropped (the failure is already this pair's result)."""
    remote = rt.ipc_open(handle)
    try:
        yield remote
    finally:
        if remote:
            try:
                rt.ipc_close(remote)
            except Exception:  # noqa: BLE001 - closing after a failure; the failure is already recorded
                pass


def ipc_check(
    rt: Any, torch: Any, dist: Any, rank: int, world: int, device: Any, plan: dict[str, Any]
) -> dict[str, Any]:
    """Each rank exports a cudaMalloc'd buffer; every other rank opens it and copies it out."""
    numel = int(plan.get("ipc_elems", 1 << 20))

    def pattern(seed: int) -> Any:
        x = torch.arange(numel, dtype=torch.int64, device=device)
        return x.mul_(2654435761).add_(seed * 40503).bitwise_and_(0x7FFFFFFF).to(torch.int32)

    out: dict[str, Any] = {}
    ptr = inbox = 0
    inbox_handle = None
    try:
        rt.set_device(device.index)
        ptr = rt.malloc(numel * 4)
        mine = pattern(1000 + rank)
        rt.memcpy(ptr, mine.data_ptr(), numel * 4)
        rt.synchronize()
        handle = rt.ipc_get_handle(ptr)
    except Exception as exc:  # noqa: BLE001 - reported as this rank's IPC export failure
        handle = None
        out["export_error"] = f"{type(exc).__name__}: {exc}"
    try:
        inbox = rt.malloc(numel * 4 * world)
        poison = torch.full((numel * world,), -1, dtype=torch.int32, device=device)
        rt.memcpy(inbox, poison.data_ptr(), numel * 4 * world)
        rt.synchronize()
        inbox_handle = rt.ipc_get_handle(inbox)
    except Exception as exc:  # noqa: BLE001 - recorded on each pair that would have written here
        inbox_handle = f"{type(exc).__name__}: {exc}"
    handles: list[Any] = [None] * world
    dist.all_gather_object(handles, (plan["ranks"][rank], handle))
    inboxes: list[Any] = [None] * world
    dist.all_gather_object(inboxes, inbox_handle)
    for r, (bdf, h) in enumerate(handles):
        if r == rank:
            continue
        key = f"{bdf}->{plan['ranks'][rank]}"  # writer -> reader
        if h is None:
            out[key] = {"ok": False, "error": "the writer could not export its buffer"}
            continue
        try:
            with _peer_mapping(rt, h) as remote:
                local = torch.full((numel,), -1, dtype=torch.int32, device=device)
                rt.memcpy(local.data_ptr(), remote, numel * 4)
                rt.synchronize()
                want = pattern(1000 + r)
                bad = int((local != want).sum().item())
                out[key] = {"ok": bad == 0, "mismatches": bad, "bytes": numel * 4}
                out[key]["kernel_read"] = _kernel_read_check(torch, remote, numel, device, want)
        except Exception as exc:  # noqa: BLE001 - this pair's result
            out[key] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            log("ipc", key, exc)
    dist.barrier(device_ids=[device.index])  # readers are done before writers free
    if ptr:
        rt.free(ptr)
    _kernel_write_check(rt, torch, dist, rank, world, device, plan, numel, pattern, inbox, inboxes, out)
    if inbox:
        rt.free(inbox)
    return out


def _kernel_write_check(
    rt: Any,
    torch: Any,
    dist: Any,
    rank: int,
    world: int,
    device: Any,
    plan: dict[str, Any],
    numel: int,
    pattern: Any,
    inbox: int,
    inboxes: list[Any],
    out: dict[str, Any],
) -> None:
    """Write my pattern into every peer's inbox slot with a kernel; after a barrier, check my inbox."""
    me = plan["ranks"][rank]
    errors: dict[str, str] = {}  # owner BDF -> why this rank's write to it failed
    try:
        from _kernel_write import kernel_write
    except Exception as exc:  # noqa: BLE001 - the worker's own module missing: not run, and said
        kernel_write = None
        not_run = f"not run: {type(exc).__name__}: {exc}"
    src = pattern(3000 + rank)
    for r, h in enumerate(inboxes):
        if r == rank:
            continue
        owner = plan["ranks"][r]
        if kernel_write is None:
            errors[owner] = not_run
            continue
        if not isinstance(h, bytes | bytearray):
            errors[owner] = f"the owner could not export its inbox: {h}"
            continue
        try:
            with _peer_mapping(rt, h) as remote:
                kernel_write(torch, src, remote + rank * numel * 4, device)
        except Exception as exc:  # noqa: BLE001 - a kernel that faults on the mapping is this pair's result
            errors[owner] = f"{type(exc).__name__}: {exc}"
            log("ipc kernel write", me, "->", owner, exc)
    reports: list[Any] = [None] * world
    dist.all_gather_object(reports, errors)  # also the barrier: every write has finished
    dist.barrier(device_ids=[device.index])
    for r in range(world):
        if r == rank:
            continue
        writer = plan["ranks"][r]
        key = f"{writer}->{me}"  # writer -> owner (the data's direction, as the read's key)
        entry = out.setdefault(key, {"ok": False, "error": "no IPC read result"})
        why = (reports[r] or {}).get(me)
        if why is not None:
            entry["kernel_write"] = {"ok": None if why.startswith("not run") else False, "error": why}
            continue
        if not inbox:
            entry["kernel_write"] = {"ok": False, "error": "this rank could not allocate its inbox"}
            continue
        try:
            got = torch.full((numel,), -2, dtype=torch.int32, device=device)
            rt.memcpy(got.data_ptr(), inbox + r * numel * 4, numel * 4)
            rt.synchronize()
            bad = int((got != pattern(3000 + r)).sum().item())
            entry["kernel_write"] = {"ok": bad == 0, "mismatches": bad, "bytes": numel * 4}
        except Exception as exc:  # noqa: BLE001 - this pair's result
            entry["kernel_write"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def _kernel_read_check(torch: Any, remote: int, numel: int, device: Any, want: Any) -> dict[str, Any]:
    """The same buffer read by a kernel on this GPU (SM loads over P2P), or why that was not done."""
    try:
        from _kernel_read import kernel_read
    except Exception as exc:  # noqa: BLE001 - the worker's own module missing: not run, and said
        return {
            "ok": None,
            "error": f"not run: {type(exc).__name__}: {exc}",
        }
    try:
        got = kernel_read(torch, remote, numel, device)
    except Exception as exc:  # noqa: BLE001 - a kernel that faults on the mapping is this pair's result
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    bad = int((got != want).sum().item())
    return {"ok": bad == 0, "mismatches": bad}


if __name__ == "__main__":
    finish(main())
