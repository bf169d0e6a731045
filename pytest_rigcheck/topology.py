"""Topology class of a GPU pair, as ``nvidia-smi topo -m`` prints it, from sysfs (and NVLink peers from the
captured NVML state); ``rigcheck topo`` and ``rigcheck topo --tree``.

PIX: at most one PCIe switch between them; PXB: several switches, no host bridge; PHB: through a
host bridge (different root ports, one root complex); NODE: across host bridges in one NUMA node;
SYS: across NUMA nodes (nvidia-smi topo legend; nvmlGpuTopologyLevel_t).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import SourceError
from .pcie import PortType, fmt_link
from .tree import PcieTree, PciFunction

if TYPE_CHECKING:
    from .rig import Rig


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


# nvidia-smi topo -m's legend, word for word (NVIDIA driver 580, captured on 2x H200 SXM).
LEGEND = """Legend:

  X    = Self
  SYS  = Connection traversing PCIe as well as the SMP interconnect between NUMA nodes (e.g., QPI/UPI)
  NODE = Connection traversing PCIe as well as the interconnect between PCIe Host Bridges within a NUMA node
  PHB  = Connection traversing PCIe as well as a PCIe Host Bridge (typically the CPU)
  PXB  = Connection traversing multiple PCIe bridges (without traversing the PCIe Host Bridge)
  PIX  = Connection traversing at most a single PCIe bridge
  NV#  = Connection traversing a bonded set of # NVLinks"""


def _numa_nodes(rig: Rig) -> list[str]:
    try:
        names = rig.source.listdir("sys/devices/system/node")
    except Exception:  # noqa: BLE001 - not captured: no NUMA fallback
        return []
    return sorted(n for n in names if n.startswith("node") and n[4:].isdigit())


def affinity(rig: Rig, bdf: str) -> tuple[str, str]:
    """(CPU affinity, NUMA affinity) of a device as ``nvidia-smi topo -m`` prints them.

    CPU affinity: sysfs ``local_cpulist`` (the CPUs nearest the device; Linux
    Documentation/ABI/stable/sysfs-bus-pci). NUMA affinity: sysfs ``numa_node``; where the platform
    says -1 (no SRAT proximity for the device) and the machine has one NUMA node, that node, as
    nvidia-smi shows it; else ``N/A``.
    """
    fn = rig.pcie.functions[bdf]
    cpus = (rig.source.read_optional(f"{fn.base}/local_cpulist") or "").strip() or "N/A"
    node = fn.numa_node
    if node is None:
        nodes = _numa_nodes(rig)
        return cpus, nodes[0][4:] if len(nodes) == 1 else ("0" if not nodes and cpus != "N/A" else "N/A")
    return cpus, str(node)


def nvlink_counts(rig: Rig) -> dict[tuple[int, int], int]:
    """NVLinks between GPU index pairs (both orders), from the captured NVML state (``nvml.json``) and the
    P2P figures (``p2p.json``) through ``p2p.nvlink.nvlink_links``; -1 for peers of unknown count."""

    from .p2p.nvlink import nvlink_links

    try:
        data = rig.source.read_json("p2p.json", limit=32 << 20)
    except (KeyError, SourceError):
        data = None
    gpus = rig.pcie.gpus
    out: dict[tuple[int, int], int] = {}
    for i, a in enumerate(gpus):
        for j, b in enumerate(gpus):
            if i < j:
                n = nvlink_links(rig, data if isinstance(data, dict) else None, a.bdf, b.bdf)
                if n:
                    out[(i, j)] = out[(j, i)] = n
    return out


def topo_matrix(rig: Rig) -> str:
    """``nvidia-smi topo -m`` for ``rig``: the GPU matrix (NV# for NVLink peers, else the PCIe class),
    CPU affinity, NUMA affinity and GPU NUMA ID columns, then nvidia-smi's legend."""
    tree = rig.pcie
    gpus = tree.gpus
    nv = nvlink_counts(rig)
    head = (
        "\t" + "\t".join(f"GPU{i}" for i in range(len(gpus))) + "\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID"
    )
    rows = [head]
    for i, g in enumerate(gpus):
        cells = []
        for j, h in enumerate(gpus):
            if i == j:
                cells.append(" X ")
            elif (i, j) in nv:
                cells.append(f"NV{nv[(i, j)]}" if nv[(i, j)] > 0 else "NV?")
            else:
                cells.append(pair_class(tree, g.bdf, h.bdf))
        cpus, node = affinity(rig, g.bdf)
        rows.append(f"GPU{i}\t" + "\t".join(cells) + f"\t{cpus}\t{node}\t\tN/A")
    if not gpus:
        return "no GPUs found"
    legend = LEGEND + ("\n  NV?  = NVLink peers, link count not recorded" if -1 in nv.values() else "")
    return "\n".join(rows) + "\n\n" + legend


def _acs_mark(fn: PciFunction) -> str:
    from .pcie import ACS_P2P_BLOCKING

    why = fn.acs_unread
    if why is not None:
        return f" [ACS unknown: {why}]"
    acs = fn.config.acs if fn.config is not None else None
    if acs is None or not fn.is_bridge:
        return ""
    return " [ACS on: P2P redirected]" if acs.ctrl & ACS_P2P_BLOCKING else " [ACS off]"


def hop_tree(rig: Rig) -> str:
    """The hop tree: per host bridge, root port -> switch ports -> GPU, each with its link (trained gen and
    width, and what it can do where less), ACS state on bridges, and each GPU's NVLink peers."""
    tree = rig.pcie
    gpus = tree.gpus
    nv = nvlink_counts(rig)
    keep: set[str] = set()
    for g in gpus:
        keep.add(g.bdf)
        keep.update(a.bdf for a in tree.ancestors(g.bdf))
    children: dict[str | None, list[str]] = {}
    for bdf in sorted(keep):
        parent = tree.functions[bdf].parent
        children.setdefault(parent if parent in keep else None, []).append(bdf)

    def label(bdf: str) -> str:
        fn = tree.functions[bdf]
        try:
            now, cap = fn.link_now, fn.link_cap
        except SourceError:  # link_text says why the link is unreadable
            now = cap = (None, None)
        link = fn.link_text()
        if cap[0] and cap[1] and now[0] and now[1] and (now[0] < cap[0] or now[1] < cap[1]):
            link += f" (can do {fmt_link(*cap)})"
        if fn.is_gpu:
            i = tree.gpu_index(bdf)
            peers = [
                f"GPU{j} NV{n}" if n > 0 else f"GPU{j} NVLink" for (a, j), n in sorted(nv.items()) if a == i
            ]
            extra = f"  NVLink: {', '.join(peers)}" if peers else ""
            return f"{bdf} GPU{i} {fn.name} {link}{extra}"
        return f"{bdf} {fn.role} {link}{_acs_mark(fn)}"

    lines: list[str] = []

    def walk(bdf: str, prefix: str, last: bool) -> None:
        lines.append(f"{prefix}{'`-- ' if last else '|-- '}{label(bdf)}")
        kids = children.get(bdf, [])
        for k, c in enumerate(kids):
            walk(c, prefix + ("    " if last else "|   "), k == len(kids) - 1)

    by_host: dict[str, list[str]] = {}
    for bdf in children.get(None, []):
        by_host.setdefault(tree.functions[bdf].host_bridge, []).append(bdf)
    for host, tops in sorted(by_host.items()):
        lines.append(f"{host} host bridge")
        for k, bdf in enumerate(tops):
            walk(bdf, "", k == len(tops) - 1)
    lines.append(f"IOMMU: {rig.iommu.mode}")
    return "\n".join(lines) if gpus else "no GPUs found"
