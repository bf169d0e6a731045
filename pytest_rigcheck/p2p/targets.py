"""Targets of the P2P and NCCL suites: ordered GPU pairs, and the GPU groups NCCL all-reduces over."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations

from ..rig import Rig
from ..tree import PciFunction


@dataclass(frozen=True, repr=False)
class RouteTarget:
    """An ordered GPU pair: traffic from ``src`` to ``dst``; id ``SRC->DST``."""

    rig: Rig
    src: PciFunction
    dst: PciFunction

    @property
    def id(self) -> str:
        return f"{self.src.bdf}->{self.dst.bdf}"

    @property
    def label(self) -> str:
        t = self.rig.pcie
        return f"{t.gpu_label(self.src)} -> {t.gpu_label(self.dst)}"

    def __repr__(self) -> str:
        return f"<RouteTarget {self.rig.name}:{self.id}>"


@dataclass(frozen=True, repr=False)
class GroupTarget:
    """GPUs that all-reduce together: every GPU of the rig (``all``) or a tensor-parallel group of the profile."""

    rig: Rig
    name: str  # "all" or "tp0", "tp1", ...
    gpus: tuple[PciFunction, ...]
    problem: str | None = None  # a profile group that names GPUs the rig does not have

    @property
    def id(self) -> str:
        return self.name

    @property
    def bdfs(self) -> list[str]:
        return [g.bdf for g in self.gpus]

    @property
    def label(self) -> str:
        t = self.rig.pcie
        what = "all GPUs" if self.name == "all" else f"tensor-parallel group {self.name}"
        return f"{what}: " + ", ".join(t.gpu_label(g) for g in self.gpus)

    def __repr__(self) -> str:
        return f"<GroupTarget {self.rig.name}:{self.id}>"


def routes(rig: Rig) -> list[RouteTarget]:
    return [RouteTarget(rig, a, b) for a, b in permutations(rig.pcie.gpus, 2)]


def groups(rig: Rig) -> list[GroupTarget]:
    """``all`` (two or more GPUs), then each profile ``tp_groups`` entry that is not the same GPUs."""
    gpus = rig.pcie.gpus
    out: list[GroupTarget] = []
    if len(gpus) > 1:
        out.append(GroupTarget(rig, "all", tuple(gpus)))
    for k, members in enumerate(rig.profile.tp_groups or ()):
        bad = [i for i in members if i >= len(gpus)]
        if bad:
            out.append(
                GroupTarget(
                    rig,
                    f"tp{k}",
                    (),
                    f"profile [rig] tp_groups[{k}] = {list(members)} names GPU "
                    f"index {bad[0]}, but the rig has {len(gpus)} GPU(s)",
                )
            )
            continue
        chosen = tuple(gpus[i] for i in members)
        if len(chosen) > 1 and [g.bdf for g in chosen] != [g.bdf for g in gpus]:
            out.append(GroupTarget(rig, f"tp{k}", chosen))
    return out
