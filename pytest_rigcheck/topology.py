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


def matrix(tree: PcieTree, nvlinks: dict[frozenset[str], int] | None = None) -> str:
    """A ``nvidia-smi topo -m``-style matrix of the GPUs' PCIe classes, ``NV#`` where ``nvlinks`` names a pair
    (``{frozenset({a, b}): links}``, -1 for peers whose link count is unknown: ``NV``).

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
                f"NV{max(nvlinks[frozenset((g.bdf, h.bdf))], 0) or ''}"
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
