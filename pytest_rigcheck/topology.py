"""Topology class of a GPU pair, as ``nvidia-smi topo -m`` prints it, from sysfs alone.

PIX: at most one PCIe switch between them; PXB: several switches, no host bridge; PHB: through a
host bridge (different root ports, one root complex); NODE: across host bridges in one NUMA node;
SYS: across NUMA nodes (nvidia-smi topo legend; nvmlGpuTopologyLevel_t).
"""

from __future__ import annotations

from .pcie import PortType
from .tree import PcieTree


def pair_class(tree: PcieTree, a: str, b: str) -> str:
    up_a, up_b = tree.ancestors(a), tree.ancestors(b)
    common = [x for x in up_a if x.bdf in {y.bdf for y in up_b}]
    if common:
        # Switches the transfer crosses: upstream ports below the lowest common bridge, plus that
        # bridge itself when it is a switch's upstream port (the pair shares that switch).
        shared = {c.bdf for c in common}
        switches = {x.bdf for x in up_a + up_b if x.bdf not in shared and x.port_type == PortType.UPSTREAM}
        if common[-1].port_type == PortType.UPSTREAM:
            switches.add(common[-1].bdf)
        return "PIX" if len(switches) <= 1 else "PXB"
    fa, fb = tree.functions[a], tree.functions[b]
    if fa.host_bridge == fb.host_bridge:
        return "PHB"
    if fa.numa_node is not None and fb.numa_node is not None and fa.numa_node != fb.numa_node:
        return "SYS"
    return "NODE"


def nvlink_peers(gpus_json: object) -> dict[frozenset[str], int]:
    """NVLink counts between GPU pairs from a recorded ``nvml.json`` ``gpus`` list, where it records them.

    Each GPU entry may carry ``nvlink_remote``: link number -> the remote end's PCI address (NVML
    ``nvmlDeviceGetNvLinkRemotePciInfo_v2`` of an active link). A pair's count is the larger of what its two
    ends record. Returns ``{frozenset({a, b}): links}``; empty when nothing is recorded (then the matrix
    shows the PCIe class only).
    """
    from .pcie import normalize_bdf

    def bdf(text: object) -> str | None:
        try:
            return normalize_bdf(str(text))
        except ValueError:
            return None

    out: dict[frozenset[str], int] = {}
    for g in gpus_json if isinstance(gpus_json, list) else []:
        if not isinstance(g, dict) or not isinstance(g.get("nvlink_remote"), dict):
            continue
        me = bdf(g.get("bdf"))
        counts: dict[str, int] = {}
        for remote in g["nvlink_remote"].values():
            peer = bdf(remote)
            if me and peer and peer != me:
                counts[peer] = counts.get(peer, 0) + 1
        for peer, n in counts.items():
            key = frozenset((me, peer))
            out[key] = max(out.get(key, 0), n)
    return out


def matrix(tree: PcieTree, nvlinks: dict[frozenset[str], int] | None = None) -> str:
    """A ``nvidia-smi topo -m``-style matrix of the GPUs' PCIe classes (``NV#`` where ``nvlinks`` names a pair).

    Raises ``ValueError`` on a rig without a GPU, saying what display devices were left out, if any.
    """
    gpus = tree.gpus
    if not gpus:
        left = tree.left_out_text()
        raise ValueError(
            "no GPU on this rig (no NVIDIA or AMD accelerator in sys/bus/pci/devices): nothing to draw"
            + (f"; display devices not counted: {left}" if left else "")
        )
    nvlinks = nvlinks or {}
    head = "\t" + "\t".join(f"GPU{i}" for i in range(len(gpus))) + "\tNUMA"
    rows = [head]
    for i, g in enumerate(gpus):
        cells = [
            "X"
            if i == j
            else (
                f"NV{nvlinks[frozenset((g.bdf, h.bdf))]}"
                if frozenset((g.bdf, h.bdf)) in nvlinks
                else pair_class(tree, g.bdf, h.bdf)
            )
            for j, h in enumerate(gpus)
        ]
        rows.append(f"GPU{i}\t" + "\t".join(cells) + f"\t{g.numa_node if g.numa_node is not None else 'N/A'}")
    if tree.left_out:
        rows.append("")
        rows += [f"not counted: {fn.bdf} {fn.name} [{fn.ids}]: {why}" for fn, why in tree.left_out]
    return "\n".join(rows)
