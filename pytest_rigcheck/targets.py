"""What the suites are parametrized over: GPUs, GPU pairs, bridges between GPUs, links, lane groups.

Each target knows its rig and gives a test id naming the device by its BDF.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

from .pcie import PortType
from .rig import Rig
from .tree import PciFunction


class _Target:
    rig: Rig

    @property
    def id(self) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:  # short: pytest prints targets in tracebacks
        return f"<{type(self).__name__} {self.rig.name}:{self.id}>"


@dataclass(frozen=True, repr=False)
class GpuTarget(_Target):
    rig: Rig
    gpu: PciFunction

    @property
    def id(self) -> str:
        return self.gpu.bdf

    @property
    def index(self) -> int:
        return self.rig.pcie.gpu_index(self.gpu.bdf)

    @property
    def label(self) -> str:
        return self.rig.pcie.gpu_label(self.gpu)


@dataclass(frozen=True, repr=False)
class PairTarget(_Target):
    rig: Rig
    a: PciFunction
    b: PciFunction

    @property
    def id(self) -> str:
        return f"{self.a.bdf}-{self.b.bdf}"


@dataclass(frozen=True, repr=False)
class BridgeTarget(_Target):
    """A bridge or switch port that some GPU-to-GPU transfer passes."""

    rig: Rig
    bridge: PciFunction
    pairs: tuple[tuple[PciFunction, PciFunction], ...]

    @property
    def id(self) -> str:
        return self.bridge.bdf


@dataclass(frozen=True, repr=False)
class LinkTarget(_Target):
    """A physical link on the way from a root port to a GPU, named by its downstream end."""

    rig: Rig
    up: PciFunction | None
    down: PciFunction
    gpus: tuple[PciFunction, ...]

    @property
    def id(self) -> str:
        return self.down.bdf


@dataclass(frozen=True, repr=False)
class LaneGroupTarget(_Target):
    """Root ports carved from one CPU lane group (same domain:bus:device), at least one feeding a GPU."""

    rig: Rig
    key: str  # "0000:00:03"
    ports: tuple[PciFunction, ...]

    @property
    def id(self) -> str:
        return self.key

    @property
    def slots(self) -> list[str]:
        """Slot names (``/sys/bus/pci/slots``) of the root ports and the devices right below them, sorted."""
        tree = self.rig.pcie
        below = [tree.functions[c] for p in self.ports for c in p.children]
        return sorted({f.slot for f in (*self.ports, *below) if f.slot is not None})

    @property
    def profile_keys(self) -> list[str]:
        """The ``[bifurcation]`` keys that name this group, normalized: its key, its root ports, its slots."""
        return [self.key.lower(), *(p.bdf for p in self.ports), *(s.lower() for s in self.slots)]


def gpus(rig: Rig) -> list[GpuTarget]:
    return [GpuTarget(rig, g) for g in rig.pcie.gpus]


def gpu_pairs(rig: Rig) -> list[PairTarget]:
    return [PairTarget(rig, a, b) for a, b in combinations(rig.pcie.gpus, 2)]


def bridges(rig: Rig) -> list[BridgeTarget]:
    found: dict[str, list[tuple[PciFunction, PciFunction]]] = {}
    tree = rig.pcie
    for a, b in combinations(tree.gpus, 2):
        for br in tree.bridges_between(a.bdf, b.bdf):
            found.setdefault(br.bdf, []).append((a, b))
    return [BridgeTarget(rig, tree.functions[bdf], tuple(pairs)) for bdf, pairs in sorted(found.items())]


def links(rig: Rig) -> list[LinkTarget]:
    tree = rig.pcie
    found: dict[str, tuple[PciFunction | None, PciFunction, list[PciFunction]]] = {}
    for gpu in tree.gpus:
        for up, down in tree.links_to(gpu.bdf):
            entry = found.setdefault(down.bdf, (up, down, []))
            entry[2].append(gpu)
    return [LinkTarget(rig, up, down, tuple(g)) for _, (up, down, g) in sorted(found.items())]


def lane_groups(rig: Rig) -> list[LaneGroupTarget]:
    tree = rig.pcie
    feeding = {tree.root_port(g.bdf).bdf for g in tree.gpus if tree.root_port(g.bdf)}  # type: ignore[union-attr]
    groups: dict[str, list[PciFunction]] = {}
    for fn in tree.functions.values():
        if fn.shape_type == PortType.ROOT_PORT:  # no config read for ports that feed no GPU
            groups.setdefault(fn.bdf.rsplit(".", 1)[0], []).append(fn)
    return [
        LaneGroupTarget(rig, key, tuple(sorted(ports, key=lambda p: p.bdf)))
        for key, ports in sorted(groups.items())
        if any(p.bdf in feeding for p in ports)
    ]
