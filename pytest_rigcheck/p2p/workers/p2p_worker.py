"""P2P worker: copy-engine bandwidth and latency for ordered GPU pairs, host bandwidth per GPU.

Run by the launcher as ``python p2p_worker.py --plan PLAN --run-dir DIR --name p2p`` (a script, not a
module: it needs stdlib, torch and optionally pynvml, never pytest_rigcheck). Timing follows cuda-samples
``p2pBandwidthLatencyTest.cu``: ``cudaMemcpyPeerAsync`` of 40,000,000 int32 (160 MB) five times on the
source GPU's stream (P2P writes), queued behind a spin kernel and bracketed by CUDA events, so launch cost
stays out; bidirectional adds the reverse copies on a second stream of the peer and counts both
directions (2 x bytes / time); latency is 100 copies of one int4 (16 B), time / 100. GB = 1e9 bytes.
Each reading is the median of ``trials`` such runs after one untimed warm-up, and every copy's data
is checked against the pattern its source holds. The control (peer access off, staged through host
memory) is measured first, then peer access is enabled.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _proto import finish, log, mark_ready, mark_step, wait_go, write_result  # noqa: E402

NVML_CAPS = {"read": 0, "write": 1, "nvlink": 2, "atomics": 3, "pci": 4}  # nvmlGpuP2PCapsIndex_t
# nvidia-ml-py 12.x/13.x define NVML_P2P_CAPS_INDEX_READ as the tuple (0,) (a stray comma), which ctypes
# cannot pass: that is the "ArgumentError ... parameter 3" of the shared H200 capture. Plain ints here.
NVLINK_MAX_LINKS = 18


def nvml_info(
    bdfs: list[str], pairs: list[tuple[str, str]]
) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    """NVML P2P status per ordered pair and NVLink links per GPU; ({}, {}, why) without NVML."""
    try:
        import pynvml
    except ImportError:
        return {}, {}, "pynvml not installed (pip install 'pytest-rigcheck[nvml]')"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return {}, {}, f"nvmlInit: {exc}"
    try:
        handles = {}
        for b in bdfs:
            try:
                handles[b] = pynvml.nvmlDeviceGetHandleByPciBusId(b.encode())
            except pynvml.NVMLError as exc:
                handles[b] = exc
        caps: dict[str, Any] = {}
        for a, b in pairs:
            ha, hb = handles.get(a), handles.get(b)
            entry: dict[str, Any] = {}
            for name, idx in NVML_CAPS.items():
                if isinstance(ha, Exception) or isinstance(hb, Exception):
                    entry[name] = {"error": f"no NVML handle: {ha if isinstance(ha, Exception) else hb}"}
                    continue
                try:
                    entry[name] = int(pynvml.nvmlDeviceGetP2PStatus(ha, hb, idx))
                except pynvml.NVMLError as exc:
                    entry[name] = {"error": str(exc)}
            try:
                entry["common_ancestor"] = int(pynvml.nvmlDeviceGetTopologyCommonAncestor(ha, hb))
            except (pynvml.NVMLError, TypeError) as exc:
                entry["common_ancestor"] = {"error": str(exc)}
            caps[f"{a}->{b}"] = entry
        links: dict[str, Any] = {}
        for b, h in handles.items():
            if isinstance(h, Exception):
                links[b] = {"error": str(h)}
                continue
            active, versions, remotes = 0, set[int](), dict[str, int]()
            for link in range(NVLINK_MAX_LINKS):
                try:
                    if pynvml.nvmlDeviceGetNvLinkState(h, link) != 1:
                        continue
                except pynvml.NVMLError:
                    continue  # no such link (NOT_SUPPORTED / INVALID_ARGUMENT past the last one)
                active += 1
                try:
                    versions.add(int(pynvml.nvmlDeviceGetNvLinkVersion(h, link)))
                except pynvml.NVMLError:
                    pass
                try:
                    info = pynvml.nvmlDeviceGetNvLinkRemotePciInfo_v2(h, link)
                    rb = info.busId.decode() if isinstance(info.busId, bytes) else str(info.busId)
                    remotes[rb.lower()[-12:]] = remotes.get(rb.lower()[-12:], 0) + 1
                except (pynvml.NVMLError, AttributeError):
                    pass
            links[b] = {"active": active, "version": max(versions) if versions else None, "remotes": remotes}
        return caps, links, None
    finally:
        pynvml.nvmlShutdown()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--plan", required=True)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--name", default="p2p")
    args = ap.parse_args()
    parent = os.getppid()
    t0 = time.perf_counter()
    with open(args.plan, encoding="utf-8") as f:
        plan = json.load(f)

    import torch
    from _cudart import (
        CUDA_DEV_ATTR_CLOCK_RATE,
        CUDA_MEMCPY_DEVICE_TO_HOST,
        CUDA_MEMCPY_HOST_TO_DEVICE,
        Cudart,
    )

    import_s = round(time.perf_counter() - t0, 3)
    torch.cuda.init()
    rt = Cudart()
    count = torch.cuda.device_count()
    bdfs = [rt.pci_bus_id(i) for i in range(count)]
    index = {b: i for i, b in enumerate(bdfs)}
    elems, repeat, trials = int(plan["elems"]), int(plan["repeat"]), int(plan["trials"])
    lat_repeat, lat_elems = int(plan["lat_repeat"]), int(plan["lat_elems"])
    want_pairs = [tuple(p) for p in plan.get("pairs") or [(a, b) for a in bdfs for b in bdfs if a != b]]
    want_gpus = plan.get("gpus")
    want_gpus = bdfs if want_gpus is None else want_gpus
    modes = set(plan.get("modes") or ("unidir", "bidir", "latency", "control"))
    nbytes = elems * 4

    result: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudart": rt.path,
        "devices": {},
        "pairs": {},
        "settings": {k: plan[k] for k in ("elems", "repeat", "trials", "lat_repeat", "lat_elems")},
        "import_s": import_s,
    }
    pairs = []
    for a, b in want_pairs:
        if a not in index or b not in index:
            missing = a if a not in index else b
            result["pairs"][f"{a}->{b}"] = {
                "error": f"{missing} is not visible to CUDA in the worker "
                f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})"
            }
        else:
            pairs.append((a, b))
    used = sorted({index[b] for p in pairs for b in p} | {index[g] for g in want_gpus if g in index})
    caps, links, nvml_error = nvml_info(bdfs, pairs)
    result["nvml_error"] = nvml_error

    def pattern(seed: int, dev: int, numel: int = elems) -> Any:
        x = torch.arange(numel, dtype=torch.int64, device=f"cuda:{dev}" if dev >= 0 else "cpu")
        return x.mul_(2654435761).add_(seed * 40503).bitwise_and_(0x7FFFFFFF).to(torch.int32)

    streams, src, dst, cycles_per_ms = {}, {}, {}, {}
    for d in used:
        with torch.cuda.device(d):
            streams[d] = (torch.cuda.Stream(d), torch.cuda.Stream(d))
            src[d] = pattern(d + 1, d)
            dst[d] = torch.full((elems,), -1, dtype=torch.int32, device=f"cuda:{d}")
            cycles_per_ms[d] = rt.attribute(CUDA_DEV_ATTR_CLOCK_RATE, d)  # kHz = cycles per ms at full clock
            result["devices"][bdfs[d]] = {
                "cuda_index": d,
                "name": torch.cuda.get_device_name(d),
                "nvlink": links.get(bdfs[d]),
            }
    torch.cuda.synchronize()
    result["setup_s"] = round(time.perf_counter() - t0, 3)
    mark_ready(args.run_dir, args.name)
    wait_go(args.run_dir, "p2p", parent)
    t1 = time.perf_counter()

    def spin(dev: int, stream: Any, ms: float) -> None:
        with torch.cuda.device(dev), torch.cuda.stream(stream):
            torch.cuda._sleep(int(cycles_per_ms[dev] * ms))

    def timed(
        dev: int,
        stream: Any,
        enqueue: Callable[[], None],
        spin_ms: float,
        second: Any = None,
        grow: bool = True,
    ) -> float:
        """GPU time (ms) of ``enqueue``'s work, queued behind a spin; ``second`` = (dev, stream) of a
        peer stream that starts with the first and must finish before the stop event. If enqueueing
        outlasted the spin, the spin is made 4x longer and the run repeated (``grow``), at most twice."""
        attempts = 3 if grow else 1
        for attempt in range(attempts):
            ev = [torch.cuda.Event(enable_timing=True) for _ in range(3)]
            ev[0].record(stream)
            spin(dev, stream, spin_ms)
            ev[1].record(stream)
            if second is not None:
                second[1].wait_event(ev[1])
            t = time.perf_counter()
            enqueue()
            enq_ms = (time.perf_counter() - t) * 1e3
            if second is not None:
                done = torch.cuda.Event()
                done.record(second[1])
                stream.wait_event(done)
            ev[2].record(stream)
            ev[2].synchronize()
            spun = ev[0].elapsed_time(ev[1])
            if enq_ms < spun or attempt == attempts - 1:
                if enq_ms >= spun and grow:
                    result.setdefault("notes", []).append(
                        f"spin {spun:.2f} ms shorter than enqueue {enq_ms:.2f} ms on GPU {dev}: launch cost may be in a figure"
                    )
                return float(ev[1].elapsed_time(ev[2]))
            spin_ms *= 4
        raise AssertionError("unreachable")

    def reading(run: Callable[[], float], n: int = trials) -> tuple[float, list[float]]:
        run()  # warm-up, untimed
        got = [run() for _ in range(n)]
        return statistics.median(got), got

    def verify(dev: int, seed: int, numel: int = elems) -> bool:
        return bool(torch.equal(dst[dev][:numel], pattern(seed, dev, numel)))

    def poison(dev: int) -> None:
        dst[dev].fill_(-1)
        torch.cuda.synchronize(dev)

    def uni(i: int, j: int, numel: int, reps: int, spin_ms: float, grow: bool = True) -> float:
        s = streams[i][0]

        def enqueue() -> None:
            for _ in range(reps):
                rt.memcpy_peer_async(dst[j].data_ptr(), j, src[i].data_ptr(), i, numel * 4, s.cuda_stream)

        return timed(
            i,
            s,
            enqueue,
            spin_ms,
            grow=grow,
        )

    def bidir(i: int, j: int) -> float:
        s0, s1 = streams[i][0], streams[j][1]

        def enqueue() -> None:
            for _ in range(repeat):
                rt.memcpy_peer_async(dst[i].data_ptr(), i, src[j].data_ptr(), j, nbytes, s1.cuda_stream)
            for _ in range(repeat):
                rt.memcpy_peer_async(dst[j].data_ptr(), j, src[i].data_ptr(), i, nbytes, s0.cuda_stream)

        return timed(i, s0, enqueue, 2.0, second=(j, s1))

    gb = nbytes * repeat / 1e9
    access = {(a, b): rt.can_access_peer(index[a], index[b]) for a, b in pairs}
    out: dict[str, dict[str, Any]] = {}
    for a, b in pairs:
        out[f"{a}->{b}"] = {"can_access_peer": access[(a, b)], "nvml": caps.get(f"{a}->{b}")}

    def guarded(key: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - one pair's CUDA error is that pair's result, not the run's end
            out[key].setdefault("errors", []).append(f"{type(exc).__name__}: {exc}")
            log("error", key, exc)

    # 1. Control: peer access off, so cudaMemcpyPeerAsync stages through host memory.
    if "control" in modes:
        for a, b in pairs:
            i, j, key = index[a], index[b], f"{a}->{b}"

            def control(i: int = i, j: int = j, key: str = key) -> None:
                rt.disable_peer(i, j)
                rt.disable_peer(j, i)
                poison(j)
                # One timed run each, as p2pBandwidthLatencyTest does: the control only shows which path is taken.
                # Staged copies block the host while they run (the sample's "DANGER" note), so the spin cannot
                # cover their enqueueing; it is not lengthened for them.
                med, got = reading(lambda: gb / (uni(i, j, elems, repeat, 1.0, grow=False) / 1e3), 1)
                out[key]["control_unidir_gbps"], out[key]["control_unidir_trials"] = med, got
                out[key]["control_verified"] = verify(j, i + 1)
                med, got = reading(
                    lambda: uni(i, j, lat_elems, lat_repeat, 3.0, grow=False) * 1e3 / lat_repeat, 1
                )
                out[key]["control_latency_us"], out[key]["control_latency_trials"] = med, got

            mark_step(args.run_dir, args.name, f"control (peer access off) {a[-7:]}->{b[-7:]}")
            started = time.perf_counter()
            guarded(key, control)
            out[key]["control_elapsed_s"] = round(time.perf_counter() - started, 4)

    # 2. Peer access on, both ways, for every pair that can.
    def enable_both(i: int, j: int) -> None:
        rt.enable_peer(i, j)
        rt.enable_peer(j, i)

    for a, b in pairs:
        if access[(a, b)]:
            guarded(f"{a}->{b}", partial(enable_both, index[a], index[b]))
    for a, b in pairs:
        i, j, key = index[a], index[b], f"{a}->{b}"

        def measure(i: int = i, j: int = j, key: str = key) -> None:
            r = out[key]
            started = time.perf_counter()
            if "unidir" in modes:
                poison(j)
                r["unidir_gbps"], r["unidir_trials"] = reading(
                    lambda: gb / (uni(i, j, elems, repeat, 1.0) / 1e3)
                )
                r["unidir_verified"] = verify(j, i + 1)
            if "bidir" in modes:
                poison(i)
                poison(j)
                r["bidir_gbps"], r["bidir_trials"] = reading(lambda: 2 * gb / (bidir(i, j) / 1e3))
                r["bidir_verified"] = verify(j, i + 1) and verify(i, j + 1)
            if "latency" in modes:
                poison(j)
                r["latency_us"], r["latency_trials"] = reading(
                    lambda: uni(i, j, lat_elems, lat_repeat, 3.0) * 1e3 / lat_repeat
                )
                r["latency_verified"] = verify(j, i + 1, lat_elems)
            r["elapsed_s"] = round(time.perf_counter() - started, 4)

        mark_step(
            args.run_dir,
            args.name,
            f"pair {a[-7:]}->{b[-7:]} ({', '.join(sorted(m for m in modes if m != 'control'))})",
        )
        guarded(key, measure)
    result["pairs"].update(out)

    def host_copy_gbps(dev: int, stream: Any, dst_ptr: int, src_ptr: int, kind: int) -> float:
        def enqueue() -> None:
            for _ in range(repeat):
                rt.memcpy_async(dst_ptr, src_ptr, nbytes, kind, stream.cuda_stream)

        return gb / (timed(dev, stream, enqueue, 1.0) / 1e3)

    # 3. Host <-> device per GPU, pinned host memory, same timing.
    if want_gpus:
        host_src = pattern(7, -1).pin_memory()
        host_dst = torch.empty(elems, dtype=torch.int32).pin_memory()
        for g in want_gpus:
            if g not in index:
                result["devices"][g] = {"error": "not visible to CUDA in the worker"}
                continue
            d = index[g]
            mark_step(args.run_dir, args.name, f"host link {g[-7:]}")
            info = result["devices"][g]
            s = streams[d][0]
            started = time.perf_counter()
            try:
                poison(d)
                info["h2d_gbps"], info["h2d_trials"] = reading(
                    partial(
                        host_copy_gbps,
                        d,
                        s,
                        dst[d].data_ptr(),
                        host_src.data_ptr(),
                        CUDA_MEMCPY_HOST_TO_DEVICE,
                    )
                )
                info["h2d_verified"] = verify(d, 7)
                dst[d].copy_(pattern(7, d))
                host_dst.fill_(-1)
                info["d2h_gbps"], info["d2h_trials"] = reading(
                    partial(
                        host_copy_gbps,
                        d,
                        s,
                        host_dst.data_ptr(),
                        dst[d].data_ptr(),
                        CUDA_MEMCPY_DEVICE_TO_HOST,
                    )
                )
                info["d2h_verified"] = bool(torch.equal(host_dst, host_src))
                info["elapsed_s"] = round(time.perf_counter() - started, 4)
            except Exception as exc:  # noqa: BLE001 - recorded per GPU
                info.setdefault("errors", []).append(f"{type(exc).__name__}: {exc}")
    torch.cuda.synchronize()
    result["measure_s"] = round(time.perf_counter() - t1, 3)
    write_result(args.run_dir, args.name, result)
    return 0


if __name__ == "__main__":
    finish(main())
