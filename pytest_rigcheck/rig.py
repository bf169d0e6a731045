"""A rig: one source (live ``/`` or a snapshot), its manifest, profile and the models read from it."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from .errors import RefusedError, SourceError
from .iommu import IommuState, read_iommu
from .profile import Profile
from .snapshot import Manifest, Snapshot
from .source import Source
from .tree import PcieTree, PciFunction


@dataclass(repr=False)
class Rig:
    """Everything the suites read about one rig.

    Args:
        name: the rig's name in test ids and the header (hostname live, manifest name replayed).
        source: the one reader everything goes through.
        profile: the expectations.
        manifest: the snapshot's manifest; ``None`` live.
    """

    name: str
    source: Source
    profile: Profile
    manifest: Manifest | None = None
    snapshot: Snapshot | None = field(default=None, repr=False)
    # Feature plugins keep their per-rig state here (NVML handles, measurements), keyed by name.
    extras: dict[str, object] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        return f"<Rig {self.name}>"

    @classmethod
    def live(cls, profile: Profile) -> Rig:
        return cls(socket.gethostname(), Source("/"), profile)

    @classmethod
    def replay(cls, snapshot: Snapshot, profile: Profile) -> Rig:
        return cls(snapshot.manifest.name, snapshot.source, profile, snapshot.manifest, snapshot)

    @property
    def is_live(self) -> bool:
        return self.snapshot is None

    @property
    def root(self) -> Path:
        return self.source.root

    @cached_property
    def pcie(self) -> PcieTree:
        return PcieTree.read(
            self.source, imported=self.manifest is not None and self.manifest.kind == "imported"
        )

    @cached_property
    def iommu(self) -> IommuState:
        empty = self.manifest.empty_dirs if self.manifest else frozenset()
        return read_iommu(self.source, empty, self.cpu_vendor)

    @cached_property
    def cpu_vendor(self) -> str | None:
        """``amd`` or ``intel``: from /proc/cpuinfo, else from the host bridges' vendor."""
        info = self.source.read_optional("proc/cpuinfo") or ""
        if "AuthenticAMD" in info:
            return "amd"
        if "GenuineIntel" in info:
            return "intel"
        vendors = {f.vendor for f in self.pcie.functions.values() if f.class_code >> 8 == 0x0600}
        return "amd" if 0x1022 in vendors else "intel" if 0x8086 in vendors else None

    @property
    def can_read_extended_config(self) -> bool:
        """Whether config space past 64 bytes was readable (root live, ``root = true`` captured)."""
        if self.manifest is not None and not self.manifest.root:
            return False
        return any(f.config is not None and f.config.size > 64 for f in self.pcie.functions.values())

    def config_fix(self, fn: PciFunction | None = None) -> str:
        """The fix line for config space that was unreadable or short, fitted to where it was read.

        Live: run as root. A snapshot captured without root: replay one captured as root. A snapshot
        captured as root (``root = true``) already had all of it, so its file is truncated or corrupt;
        a ``config`` the snapshot reader refused (a link out, a FIFO) says so.
        """
        if self.manifest is None:
            return "run as root (sudo pytest --rig ...)"
        if fn is not None:
            try:
                self.source.read_bytes(f"{fn.base}/config", 1)
            except RefusedError as exc:
                return (
                    f"the snapshot's {exc.path} was refused ({exc.reason}): capture the rig again "
                    "(sudo rigcheck capture DIR)"
                )
            except (KeyError, SourceError):
                pass
        if not self.manifest.root:
            return "replay a snapshot captured as root (sudo rigcheck capture DIR), or run as root on the rig"
        return (
            "this snapshot was captured as root (root = true), so its config file is truncated or corrupt: "
            "capture the rig again (sudo rigcheck capture DIR)"
        )

    def header(self) -> str:
        n = len(self.pcie.gpus)
        gpus = f"{n} GPU{'s' if n != 1 else ''}{self._left_out_text()}"
        if self.manifest is None:
            return f"live {self.name}, {gpus}, {self.profile.source}"
        m = self.manifest
        bits = [
            b
            for b in (f"kernel {m.kernel}" if m.kernel else "", f"driver {m.driver}" if m.driver else "")
            if b
        ]
        extra = f" ({', '.join(bits)})" if bits else ""
        refused = self.snapshot.refused if self.snapshot is not None else []
        warn = f"; REFUSED (not read): {'; '.join(refused)}" if refused else ""
        flat = self.snapshot.flattened_note() if self.snapshot is not None else ""
        flat = f"; {flat}" if flat else ""
        return f"snapshot {m.name} [{m.kind}]{extra}, {gpus}, {self.profile.source}{flat}{warn}"

    def _left_out_text(self) -> str:
        """`` (+1 display device not counted: 0000:03:00.0 ASPEED BMC)``, or ``""``."""
        left = self.pcie.left_out
        if not left:
            return ""
        names = ", ".join(
            f"{fn.bdf} {fn.name.split()[0]}{' BMC' if 'BMC' in why else ''}" for fn, why in left
        )
        return f" (+{len(left)} display device{'s' if len(left) != 1 else ''} not counted: {names})"

    def close(self) -> None:
        if self.snapshot is not None:
            self.snapshot.close()
