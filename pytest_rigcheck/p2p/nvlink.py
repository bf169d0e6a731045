"""Which GPU pairs are NVLink peers, from what was recorded: so a diagnosis never calls them "PHB apart".

Evidence, strongest first:
1. the P2P figures' per-GPU NVLink readings (``p2p.json`` ``gpus[BDF].nvlink.remotes``: NVML's
   ``nvmlDeviceGetNvLinkRemotePciInfo`` per active link, so the count of links to that peer);
2. NVML's P2P status for the pair's NVLink capability (``pairs["A->B"].nvml.nvlink``, or a snapshot's
   ``nvml.json`` ``p2p["i-j"].caps.NVLINK``; 0 is ``NVML_P2P_STATUS_OK``);
the link count is then the GPUs' active links when the rig has just those two NVLink GPUs (as
``nvidia-smi topo -m`` shows NV18 for 2x H200 SXM).
"""

from __future__ import annotations

from typing import Any

from ..errors import SourceError
from ..rig import Rig

NVML_JSON = "nvml.json"


def _active(entry: Any) -> int | None:
    n = entry.get("active") if isinstance(entry, dict) else None
    return n if isinstance(n, int) and not isinstance(n, bool) and n >= 0 else None


def _recorded_nvml(rig: Rig) -> dict[str, Any]:
    """A snapshot's ``nvml.json``, read through its source (nothing outside it); {} live or when absent."""
    if rig.is_live:
        return {}
    kept = rig.extras.get("nvlink_nvml")
    if isinstance(kept, dict):
        return kept
    try:
        data = rig.source.read_json(NVML_JSON, limit=32 << 20)
    except (KeyError, SourceError):
        data = {}
    data = data if isinstance(data, dict) else {}
    rig.extras["nvlink_nvml"] = data
    return data


def _live_states(rig: Rig) -> dict[str, int]:
    """Active NVLinks per GPU from the GPU suites' NVML state, where that session is already open (live)."""
    session = rig.extras.get("gpu")
    if session is None or not rig.is_live:
        return {}
    try:
        gpus = session.system.gpus  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - no NVML here: no evidence, not an error of the diagnosis
        return {}
    out = {}
    for g in gpus:
        states = g.values.get("nvlink_states")
        if isinstance(states, dict):
            out[g.bdf.lower()[-12:]] = sum(1 for v in states.values() if v == 1)
    return out


def _nvml_tables(rig: Rig) -> tuple[dict[str, Any], dict[str, int], dict[str, Any]]:
    """The snapshot's nvml.json, active NVLinks per GPU and NVML index per GPU (keyed by bus id), once per rig."""
    kept = rig.extras.get("nvlink_tables")
    if isinstance(kept, tuple):
        return kept
    nvml = _recorded_nvml(rig)
    states: dict[str, int] = {}
    idx: dict[str, Any] = {}
    for g in nvml.get("gpus") or []:
        if not isinstance(g, dict):
            continue
        key = str(g.get("bdf", "")).lower()[-12:]
        idx[key] = g.get("index")
        if isinstance(g.get("nvlink_states"), dict):
            states[key] = sum(1 for s in g["nvlink_states"].values() if s == 1)
    out = (nvml, states, idx)
    rig.extras["nvlink_tables"] = out
    return out


def nvlink_links(rig: Rig, data: dict[str, Any] | None, a: str, b: str) -> int | None:
    """NVLinks between GPUs ``a`` and ``b``: a count > 0 for peers (-1 for peers of unknown count),
    0 when the record says they are not NVLink peers, None when nothing recorded says."""
    data = data or {}
    gpus = raw if isinstance(raw := data.get("gpus"), dict) else {}
    na, nb = (gpus.get(a) or {}).get("nvlink"), (gpus.get(b) or {}).get("nvlink")
    gpu_keys = {g.bdf[-12:] for g in rig.pcie.gpus}
    for x, y in ((na, b), (nb, a)):
        remotes = x.get("remotes") if isinstance(x, dict) else None
        if isinstance(remotes, dict) and remotes:
            n = remotes.get(y[-12:])
            if isinstance(n, int) and n > 0:
                return n
            if set(remotes) & gpu_keys:
                return 0  # its links end at other GPUs, not this one
            # links that end at NVSwitches: the pair's status below says whether they reach each other
    status = None
    pairs = raw if isinstance(raw := data.get("pairs"), dict) else {}
    for key in (f"{a}->{b}", f"{b}->{a}"):
        v = ((pairs.get(key) or {}).get("nvml") or {}).get("nvlink")
        if isinstance(v, int) and not isinstance(v, bool):
            status = v
            break
    nvml, states, idx = _nvml_tables(rig)
    if status is None:
        ia, ib = idx.get(a[-12:]), idx.get(b[-12:])
        p2p = raw if isinstance(raw := nvml.get("p2p"), dict) else {}
        for key in (f"{ia}-{ib}", f"{ib}-{ia}"):
            v = ((p2p.get(key) or {}).get("caps") or {}).get("NVLINK")
            if isinstance(v, int) and not isinstance(v, bool):
                status = v
                break
    states = dict(states) or _live_states(rig)
    with_links = [k for k, n in states.items() if n > 0]
    if status is None and sorted(with_links) == sorted({a[-12:], b[-12:]}):
        # Only these two GPUs have active NVLinks: their links can only join each other.
        status = 0
    if status is None:
        return None
    if status != 0:
        return 0
    counts = [_active(na), _active(nb)]
    if None in counts:
        counts = [states.get(a[-12:]), states.get(b[-12:])]
    if 0 in counts:
        # A link has two ends: with every NVLink of one GPU down, the pair cannot use NVLink whatever the
        # P2P status says; its traffic takes the PCIe path (and test_nvlinks_up names the dead links).
        return 0
    with_links = [bdf for bdf, g in gpus.items() if (_active((g or {}).get("nvlink")) or 0) > 0] or with_links
    if all(isinstance(c, int) and c > 0 for c in counts) and counts[0] == counts[1] and len(with_links) == 2:
        return int(counts[0])  # type: ignore[arg-type]
    return -1


def nvlink_text(n: int | None) -> str | None:
    """``NVLink peers (NV18)`` for a link count from ``nvlink_links``; None when not peers or unknown."""
    if n is None or n == 0:
        return None
    return f"NVLink peers (NV{n})" if n > 0 else "NVLink peers"
