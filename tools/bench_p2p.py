"""Benchmark the P2P/NCCL measurement: accuracy against the reference tools, wall time, growth with GPU count.

On a machine with GPUs, after running cuda-samples p2pBandwidthLatencyTest and nccl-tests all_reduce_perf
(``-b 8 -e 512M -f 4 -g N``) and saving their output:

    python tools/bench_p2p.py --p2pblt p2pblt.txt --allreduce allreduce.txt --out bench.json

It measures with pytest-rigcheck exactly as ``pytest --rig`` does (one launch of every worker), then
prints ours vs theirs per figure (ratio ours/theirs; targets: bandwidth within 3 %, latency within 10 %),
the wall time by phase, and a cost model for n GPUs (P2P pairs grow as n(n-1)). With ``--replay FILE``
it reads a saved result instead of measuring (no GPU needed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytest_rigcheck.p2p.measure import JUDGED_BYTES  # noqa: E402
from pytest_rigcheck.p2p.reference import parse_allreduce_perf, parse_p2p_matrices  # noqa: E402

UNI = "Unidirectional P2P=Enabled Bandwidth (P2P Writes) Matrix (GB/s)"
BI = "Bidirectional P2P=Enabled Bandwidth Matrix (GB/s)"
LAT = "P2P=Enabled Latency (P2P Writes) Matrix (us)"
CUNI = "Unidirectional P2P=Disabled Bandwidth Matrix (GB/s)"
CLAT = "P2P=Disabled Latency Matrix (us)"
TARGET = {
    "unidir_gbps": 0.03,
    "bidir_gbps": 0.03,
    "latency_us": 0.10,
    "busbw_gbps": 0.03,
    "control_unidir_gbps": None,
    "control_latency_us": None,
}


def compare(data: dict[str, Any], p2pblt: str | None, allreduce: str | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    order = sorted(data["gpus"], key=lambda b: data["gpus"][b].get("cuda_index", 0))
    if p2pblt:
        m = parse_p2p_matrices(p2pblt)
        for key, p in data["pairs"].items():
            a, b = key.split("->")
            i, j = order.index(a), order.index(b)
            for fig, title in (
                ("unidir_gbps", UNI),
                ("bidir_gbps", BI),
                ("latency_us", LAT),
                ("control_unidir_gbps", CUNI),
                ("control_latency_us", CLAT),
            ):
                ours = p.get(fig)
                ours = ours[0] if isinstance(ours, list) else ours
                if ours is None or title not in m:
                    continue
                ref = m[title][i][j]
                rows.append(
                    {
                        "figure": fig,
                        "what": f"GPU{i}->GPU{j}",
                        "ours": ours,
                        "ref": ref,
                        "ratio": ours / ref,
                        "target": TARGET[fig],
                        "trials": p.get(fig.replace("_gbps", "_trials").replace("_us", "_trials")),
                    }
                )
    if allreduce:
        r = parse_allreduce_perf(allreduce)
        ref_rows = {row["bytes"]: row for row in r["rows"]}  # type: ignore[union-attr]
        for g in data["nccl"]["groups"].values():
            for s in g.get("sweep", []):
                if s["bytes"] in ref_rows and s["bytes"] >= 1 << 20:
                    ref = ref_rows[s["bytes"]]["ip_busbw"]
                    rows.append(
                        {
                            "figure": "busbw_gbps",
                            "what": f"{s['bytes']} B ({len(g['gpus'])} GPUs)",
                            "ours": s["busbw_gbps"],
                            "ref": ref,
                            "ratio": s["busbw_gbps"] / ref if ref else None,
                            "target": TARGET["busbw_gbps"] if s["bytes"] == JUDGED_BYTES else None,
                            "ref_oop": ref_rows[s["bytes"]]["oop_busbw"],
                        }
                    )
    return rows


def cost_model(data: dict[str, Any], n_values: tuple[int, ...] = (2, 4, 8)) -> dict[str, Any]:
    """Wall time for n GPUs from this run's parts: set-up overlaps (all workers start at once), P2P pairs
    cost n(n-1) x the measured per-pair time, host copies n x per-GPU time, NCCL phases scale with
    the all-reduce's 2(n-1)/n traffic factor at constant busbw."""
    runs = data["runs"]
    pairs = [p.get("elapsed_s", 0) + p.get("control_elapsed_s", 0) for p in data["pairs"].values()]
    hosts = [g.get("elapsed_s", 0) for g in data["gpus"].values()]
    per_pair = statistics.mean(pairs) if pairs else 0.0
    per_gpu = statistics.mean(hosts) if hosts else 0.0
    setup = max(runs.get("p2p", {}).get("setup_s") or 0, 0)
    n0 = len(data["gpus"]) or 2
    nccl = runs.get("nccl", {}).get("wall_s", 0) + runs.get("control", {}).get("wall_s", 0)
    # The NCCL phases' wall time includes waiting for set-up to end (ready), so take the measured part only.
    fixed = runs["total_wall_s"] - runs.get("p2p", {}).get("measure_s", 0) - nccl
    out = {
        "measured_n": n0,
        "total_s": runs["total_wall_s"],
        "per_pair_s": per_pair,
        "per_gpu_host_s": per_gpu,
        "setup_and_overhead_s": fixed,
        "nccl_phases_s": nccl,
        "p2p_setup_s": setup,
        "model": {},
    }
    for n in n_values:
        traffic = (2 * (n - 1) / n) / (2 * (n0 - 1) / n0)
        est = fixed * (1 + 0.1 * (n - n0) / 6) + n * (n - 1) * per_pair + n * per_gpu + nccl * traffic
        out["model"][n] = {"pairs": n * (n - 1), "estimate_s": round(est, 2)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--p2pblt", type=Path)
    ap.add_argument("--allreduce", type=Path)
    ap.add_argument("--replay", type=Path, help="a saved result (p2p.json form) instead of measuring")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--logs", type=Path, help="append every worker's log (NCCL_DEBUG=INFO) to this file")
    a = ap.parse_args(argv)
    if a.replay:
        data = json.loads(a.replay.read_text())
    else:
        from pytest_rigcheck.p2p import measure
        from pytest_rigcheck.profile import Profile
        from pytest_rigcheck.rig import Rig

        rig = Rig.live(Profile())
        gpus = [g.bdf for g in rig.pcie.gpus]
        t = time.monotonic()
        data = measure.run(gpus, timeout_s=a.timeout, log_file=a.logs)
        data["bench_wall_s"] = time.monotonic() - t
    rows = compare(
        data, a.p2pblt.read_text() if a.p2pblt else None, a.allreduce.read_text() if a.allreduce else None
    )
    model = cost_model(data)
    if a.out:
        a.out.write_text(json.dumps({"data": data, "rows": rows, "model": model}, indent=1))
    print(f"{'figure':<22}{'what':<28}{'ours':>10}{'ref':>10}{'ratio':>8}  target")
    for r in rows:
        ok = "" if r["target"] is None else ("ok" if abs(r["ratio"] - 1) <= r["target"] else "MISS")
        print(
            f"{r['figure']:<22}{r['what']:<28}{r['ours']:>10.3f}{r['ref']:>10.3f}{r['ratio']:>8.3f}  "
            f"{'' if r['target'] is None else format(r['target'], '.0%')} {ok}"
        )
    for bdf, g in data["gpus"].items():
        print(
            f"host {bdf}: h2d {g.get('h2d_gbps')} d2h {g.get('d2h_gbps')} verified {g.get('h2d_verified')}/{g.get('d2h_verified')}"
        )
    nc = data["nccl"]
    for key, g in nc["groups"].items():
        print(
            f"nccl {key}: busbw {g.get('busbw_gbps')} wrong {g.get('wrong')} nan {g.get('nan')} transports {g.get('transports')}"
        )
    print(
        f"nccl control: {nc.get('control', {}).get('busbw_gbps')} transports {nc.get('control', {}).get('transports')}"
    )
    print(f"ipc: {nc.get('ipc')}")
    print("runs:", json.dumps(data["runs"])[:1500])
    print("cost model:", json.dumps(model))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
