"""The ``p2p.json`` format: what each figure means, keys for pairs and groups, loading with checks.

``p2p.json`` sits in a snapshot beside ``nvml.json``. Top-level keys: ``format``, ``origin`` (how the
figures were obtained: captured, transcribed or modelled), ``definitions`` (each figure's meaning),
``gpus`` (per BDF: ``h2d_gbps``/``d2h_gbps`` readings, ``nvlink``), ``pairs`` (per ``"SRC->DST"``:
NVML P2P status, ``can_access_peer``, ``unidir_gbps``/``bidir_gbps``/``latency_us`` readings, the
peer-access-off control, data checks), ``nccl`` (``groups`` per ``"BDF+BDF"``, each with its ``control``;
``control`` of all GPUs, ``ipc``)
and ``runs`` (timings, hangs). A figure is a list of readings: the first, then any retry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import SnapshotError, SourceError

if TYPE_CHECKING:
    from ..source import Source

P2P_JSON = "p2p.json"
FORMAT = 1
GB = "GB = 1e9 bytes"
DEFINITIONS = {
    "unidir_gbps": "P2P write bandwidth SRC->DST: 5 x cudaMemcpyPeerAsync of 160 MB (40,000,000 int32) on the source "
    "GPU's stream with peer access on, queued behind a spin kernel, timed by CUDA events; bytes / time; "
    f"{GB}; each reading the median of 3 runs after a warm-up (cuda-samples p2pBandwidthLatencyTest, "
    "'Unidirectional P2P=Enabled Bandwidth (P2P Writes)')",
    "bidir_gbps": "bidirectional P2P bandwidth: SRC->DST on the source's stream and DST->SRC on a second stream of the "
    "peer, both 5 x 160 MB, started together behind a spin kernel; the sum of both directions "
    f"(2 x bytes / time), {GB} (p2pBandwidthLatencyTest 'Bidirectional P2P=Enabled')",
    "latency_us": "P2P latency: 100 x cudaMemcpyPeerAsync of 16 B (one int4) SRC->DST queued behind a spin kernel; "
    "GPU time / 100, launch cost on the GPU timeline included (p2pBandwidthLatencyTest "
    "'P2P=Enabled Latency (P2P Writes)')",
    "control_unidir_gbps": "as unidir_gbps with peer access off: the driver stages the copy through host memory",
    "control_latency_us": "as latency_us with peer access off (staged through host memory)",
    "h2d_gbps": f"host-to-device: 5 x cudaMemcpyAsync of 160 MB from pinned host memory, spin-queued, CUDA events; {GB}",
    "d2h_gbps": f"device-to-host: 5 x cudaMemcpyAsync of 160 MB to pinned host memory, spin-queued, CUDA events; {GB}",
    "busbw_gbps": "NCCL all-reduce (float32 sum, one process per GPU, in place) at the largest size of the sweep up to "
    "512 MiB: 5 warm-up ops, 20 timed back-to-back on the host clock to a device synchronize, averaged "
    f"over ranks; algbw = bytes / time, busbw = algbw x 2(n-1)/n; {GB} (nccl-tests all_reduce_perf)",
    "nccl.control": "the same all-reduce at 512 MiB, per group, in a separate run with NCCL_P2P_DISABLE=1",
    "ipc": "CUDA IPC as vLLM's custom all-reduce uses it: each rank cudaMalloc's 4 MiB with its own pattern; every "
    "other rank opens it with cudaIpcOpenMemHandle and copies it out; the copy must match",
    "verified": "every timed copy's destination was poisoned first and compared element by element with the "
    "source's pattern afterwards",
}


def pair_key(src: str, dst: str) -> str:
    return f"{src}->{dst}"


def group_key(gpus: list[str]) -> str:
    return "+".join(gpus)


def load(source: Source, where: str) -> dict[str, Any]:
    """Read ``p2p.json`` through the rig's ``Source`` and sanity-check it.

    Absent raises ``KeyError``; refused (a link out of the snapshot, not a regular file), not JSON or
    malformed raises ``SnapshotError`` naming the file and the flaw.
    """
    try:
        data = source.read_json(P2P_JSON)
    except SourceError as exc:
        raise SnapshotError(f"{where}: unreadable {P2P_JSON}: {exc.reason}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SnapshotError(
            f"{where}: {P2P_JSON} format {data.get('format') if isinstance(data, dict) else '?'!r} "
            f"is not {FORMAT}"
        )
    for key in ("gpus", "pairs", "nccl"):
        if not isinstance(data.get(key, {}), dict):
            raise SnapshotError(f"{where}: {P2P_JSON} {key!r} must be an object")
    data.setdefault("gpus", {})
    data.setdefault("pairs", {})
    data.setdefault("nccl", {"groups": {}})
    data["nccl"].setdefault("groups", {})
    return data


def readings(entry: dict[str, Any] | None, figure: str) -> list[float]:
    """A figure's readings as floats (a bare number counts as one reading); [] if absent or malformed."""
    if not entry:
        return []
    v = entry.get(figure)
    if isinstance(v, int | float) and not isinstance(v, bool):
        return [float(v)]
    if isinstance(v, list) and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v):
        return [float(x) for x in v]
    return []
