"""Parsers for the reference tools' output: cuda-samples p2pBandwidthLatencyTest and nccl-tests all_reduce_perf.

Pure functions over text, for the benchmark that compares our figures with theirs and for tests.
"""

from __future__ import annotations

import re

_TITLE = re.compile(r"^(Unidirectional|Bidirectional|P2P=)\S*.*Matrix \((GB/s|us)\)\s*$")
_ROW = re.compile(r"^\s*(\d+)\s+([-\d.\s]+)$")


def parse_p2p_matrices(text: str) -> dict[str, list[list[float]]]:
    """Each matrix of p2pBandwidthLatencyTest's output by title; latency matrices give ``TITLE`` (GPU) and
    ``TITLE [CPU]``. Row i, column j is the figure from GPU i to GPU j (P2P writes).

    Example:
        >>> t = "Unidirectional P2P=Enabled Bandwidth (P2P Writes) Matrix (GB/s)\\n   D\\\\D     0      1 \\n     0 10.0 2.5\\n     1 2.6 11.0\\n"
        >>> parse_p2p_matrices(t)["Unidirectional P2P=Enabled Bandwidth (P2P Writes) Matrix (GB/s)"]
        [[10.0, 2.5], [2.6, 11.0]]
    """
    out: dict[str, list[list[float]]] = {}
    title: str | None = None
    key = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if _TITLE.match(line.strip()):
            title, key = line.strip(), line.strip()
            out[key] = []
            continue
        if title is None:
            continue
        head = line.split()
        if head[:1] == ["CPU"]:
            key = f"{title} [CPU]"
            out[key] = []
            continue
        if head[:1] in (["GPU"], ["D\\D"]):
            continue
        m = _ROW.match(line)
        if m:
            out[key].append([float(x) for x in m.group(2).split()])
        elif line.strip():
            title = None
    return {k: v for k, v in out.items() if v}


def parse_allreduce_perf(text: str) -> dict[str, object]:
    """nccl-tests ``*_perf`` rows (out-of-place and in-place time/algbw/busbw/#wrong per size) and footer.

    Example:
        >>> r = parse_allreduce_perf("  536870912  134217728  float  sum  -1  1710.08  313.94  313.94  0  1716.66  312.74  312.74  0\\n# Avg bus bandwidth    : 80.6705 \\n")
        >>> r["rows"][0]["ip_busbw"], r["avg_busbw"]
        (312.74, 80.6705)
    """
    rows = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 13 and parts[0].isdigit() and parts[2].isalpha():
            try:
                nums = [float(p) for p in parts[5:]]
            except ValueError:
                continue
            rows.append(
                {
                    "bytes": int(parts[0]),
                    "count": int(parts[1]),
                    "type": parts[2],
                    "op": parts[3],
                    "oop_time_us": nums[0],
                    "oop_algbw": nums[1],
                    "oop_busbw": nums[2],
                    "oop_wrong": int(nums[3]),
                    "ip_time_us": nums[4],
                    "ip_algbw": nums[5],
                    "ip_busbw": nums[6],
                    "ip_wrong": int(nums[7]),
                }
            )
    avg = re.search(r"# Avg bus bandwidth\s*:\s*([\d.]+)", text)
    oob = re.search(r"# Out of bounds values\s*:\s*(\d+)\s*(OK|FAILED)", text)
    return {
        "rows": rows,
        "avg_busbw": float(avg.group(1)) if avg else None,
        "out_of_bounds": int(oob.group(1)) if oob else None,
        "oob_status": oob.group(2) if oob else None,
    }
