"""The PCIe tree of a rig, read from sysfs through a ``Source``.

Every function gets its identity (vendor/device/class, driver, NUMA node), its parent chain up to
the root port, link status from sysfs and from config space, and its parsed capabilities. Bridges
are told apart by their PCIe port type, not by name.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from functools import cached_property

from .errors import ConfigSpaceError, SourceError
from .pcie import (
    CLASS_BRIDGE_PCI,
    DEVICES,
    SPEED_GT,
    VENDORS,
    ConfigSpace,
    PortType,
    accelerator_kind,
    fmt_link,
    left_out_reason,
    link_above_capability,
    no_pcie_cap_why,
    normalize_bdf,
    parse_config,
    parse_link_speed,
)
from .source import Source

PCI_DEVICES = "sys/bus/pci/devices"
PCI_SLOTS = "sys/bus/pci/slots"
_BDF_DIR = re.compile(r"^[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
_HOST_DIR = re.compile(r"^pci[0-9a-f]{4,8}:[0-9a-f]{2}$")


@dataclass(frozen=True)
class SysfsLink:
    """Link as sysfs reports it: the kernel reads LnkSta/LnkCap for us (readable without root)."""

    cur_gen: int | None
    cur_width: int | None
    max_gen: int | None
    max_width: int | None
    # Attributes whose text is not what the kernel writes, by field name: raised when that field is
    # used (``PciFunction.link_readings`` for current_*, ``link_cap`` for max_*), so garbage in one
    # attribute does not hide the others.
    bad: dict[str, SourceError] = field(default_factory=dict)
    cur_down: bool = False  # current_link_width read as 0 and current_link_speed Unknown: link down

    def check(self, *names: str) -> None:
        """Raise the ``SourceError`` of the first of ``names`` that held garbage."""
        for name in names:
            if name in self.bad:
                raise self.bad[name]


@dataclass
class PciFunction:
    """One PCI function of the rig. Identity is read at once; the rest on first use (cheap on 300-function servers)."""

    bdf: str
    vendor: int
    device: int
    class_code: int
    host_bridge: str
    parent: str | None  # BDF of the upstream bridge; None on a root bus
    source: Source = field(repr=False)
    base: str = field(repr=False)  # resolved sysfs directory, relative to the root
    slot: str | None = None
    children: list[str] = field(default_factory=list)
    inferred_type: PortType | None = None  # from the tree's shape, when config space was unreadable
    sysfs_depth: int = 0
    # Written by `rigcheck import-lspci`: 4096 bytes may lack the PCIe capability where the paste hid it.
    imported: bool = False

    def _hex(self, attr: str) -> int | None:
        text = self.source.read_optional(f"{self.base}/{attr}")
        if text is None:
            return None
        try:
            return int(text, 16)
        except ValueError:
            raise SourceError(f"{self.base}/{attr}", f"expected a hex number, read {text!r}") from None

    @cached_property
    def subsystem_vendor(self) -> int | None:
        return self._hex("subsystem_vendor")

    @cached_property
    def subsystem_device(self) -> int | None:
        return self._hex("subsystem_device")

    @cached_property
    def driver(self) -> str | None:
        link = self.source.readlink(f"{self.base}/driver")
        return link.rsplit("/", 1)[-1] if link else None

    @cached_property
    def iommu_group(self) -> str | None:
        """The group number the ``iommu_group`` link names (``.../kernel/iommu_groups/6`` -> ``"6"``), ``None``
        without a link. An empty or odd target is returned as it is, and the IOMMU check finds no such group
        (UNREADABLE). A link the reader refuses (it leaves the snapshot) raises ``SourceError``: its target
        is no evidence of anything, and the check that needs it is UNREADABLE saying so."""
        rel = f"{self.base}/iommu_group"
        link = self.source.readlink(rel)
        if link:
            self.source.resolve(rel, link=True)  # RefusedError where the link leaves the snapshot
        return (link.rstrip("/").rsplit("/", 1)[-1] or link) if link else None

    @cached_property
    def numa_node(self) -> int | None:
        return _int_or_none(self.source.read_optional(f"{self.base}/numa_node"))

    @cached_property
    def sysfs_link(self) -> SysfsLink | None:
        return _read_sysfs_link(self.source, self.base)

    @cached_property
    def _config(self) -> tuple[ConfigSpace | None, str | None, bool]:
        """(parsed config, why not, whether the file is corrupt rather than absent or refused)."""
        try:
            data = self.source.read_bytes(f"{self.base}/config", limit=4096)
        except KeyError:
            return None, "config space not readable: the config attribute is absent", False
        except SourceError as exc:
            return None, str(exc), False
        shown = self._pcie_sysfs_attrs() if len(data) > 64 else []
        try:
            cfg = parse_config(self.bdf, data, pcie_port=self.is_bridge and bool(shown))
        except ConfigSpaceError as exc:
            return None, str(exc), True
        if (cfg.vendor_id, cfg.device_id) != (self.vendor, self.device):
            return (
                None,
                (
                    f"config space header says {cfg.vendor_id:04x}:{cfg.device_id:04x}, sysfs says "
                    f"{self.vendor:04x}:{self.device:04x}: the config file is not this device's (corrupt snapshot?)"
                ),
                True,
            )
        if cfg.port_type is None and shown and not (self.imported and cfg.size >= 4096):
            # The kernel shows the link attributes only for a function it found a PCI Express capability
            # in (drivers/pci/pci-sysfs.c pcie_dev_attrs_are_visible: pci_is_pcie), so config space without
            # one is not this function's as the kernel read it, and "no extended config space, so a
            # conventional PCI bridge" would be a guess. A 64-byte (non-root) read has no capability list to
            # look in. `rigcheck import-lspci` writes 4096 bytes without the PCIe capability where a paste
            # hides those registers (``imported``): its extended capabilities, walked as a PCIe port's
            # (``pcie_port``), stand on their own there.
            return (
                None,
                (
                    f"sysfs shows a PCI Express function ({', '.join(shown)} present; the kernel writes them only "
                    f"for PCIe functions: drivers/pci/pci-sysfs.c pcie_dev_attrs_are_visible), but its config "
                    f"space ({cfg.size} bytes) has no reachable PCI Express capability: "
                    f"{no_pcie_cap_why(self.bdf, data)}; the config file is corrupt or was not read whole"
                ),
                True,
            )
        return cfg, None, False

    def _pcie_sysfs_attrs(self) -> list[str]:
        """The PCIe-only link attributes sysfs holds for this function (``current_link_speed``...)."""
        return [a for a in _LINK_ATTRS.values() if self.source.exists(f"{self.base}/{a}")]

    @property
    def config(self) -> ConfigSpace | None:
        return self._config[0]

    @property
    def config_error(self) -> str | None:
        return self._config[1]

    @property
    def config_corrupt(self) -> str | None:
        """Why this function's config file is corrupt (a broken capability list, another device's header,
        no PCIe capability on a function sysfs shows as PCIe); None where it parsed, or was absent/refused."""
        return self._config[1] if self._config[2] else None

    @property
    def name(self) -> str:
        known = DEVICES.get((self.vendor, self.device))
        vendor = VENDORS.get(self.vendor, f"{self.vendor:#06x}")
        return f"{vendor} {known}" if known else f"{vendor} device {self.device:#06x}"

    @property
    def ids(self) -> str:
        return f"{self.vendor:04x}:{self.device:04x}"

    @property
    def is_gpu(self) -> bool:
        """An accelerator the suites judge: NVIDIA or AMD, by vendor and class (``pcie.accelerator_kind``).

        A BMC's display controller (ASPEED, Matrox: class 0x0300 too) is not one; see ``left_out``.
        """
        return accelerator_kind(self.vendor, self.class_code >> 8) is not None

    @property
    def is_display(self) -> bool:
        """Any display controller (class 03xx) or processing accelerator (class 12xx)."""
        return self.class_code >> 16 in (0x03, 0x12)

    def left_out(self) -> str | None:
        """Why a display controller is not counted as a GPU (``None`` for GPUs and non-display functions)."""
        if self.is_gpu or not self.is_display:
            return None
        try:
            driver = self.driver
        except SourceError:
            driver = None
        return left_out_reason(self.vendor, self.class_code >> 8, driver)

    @property
    def is_bridge(self) -> bool:
        return self.class_code >> 8 == CLASS_BRIDGE_PCI

    @property
    def acs_unread(self) -> str | None:
        """Why this bridge's ACS capability could not be read; None where it was, or for a non-bridge.

        ACS is an extended capability (PCIe Base Spec 7.7.8, config offset 0x100 and up): config space
        read short of 4096 bytes (non-root, truncated) or not at all leaves its state unknown.
        """
        if not self.is_bridge:
            return None
        if self.config is None:
            return self.config_error or "config space not readable"
        if self.config.size < 4096:
            return f"config space read to {self.config.size} of 4096 bytes; ACS is in extended config space"
        return None

    @property
    def port_type(self) -> PortType | None:
        if self.config is not None and self.config.port_type is not None:
            return self.config.port_type
        return self.inferred_type

    @property
    def shape_type(self) -> PortType | None:
        """The port type the tree's shape implies, without reading config space."""
        return self.inferred_type

    @property
    def role(self) -> str:
        if self.port_type is not None and self.is_bridge:
            return self.port_type.label
        if self.is_bridge:
            return "PCI bridge"
        if self.is_gpu:
            return "GPU"
        if self.is_display:
            return "display controller"
        return "endpoint"

    def describe(self) -> str:
        slot = f', slot "{self.slot}"' if self.slot else ""
        return f"{self.bdf} {self.role} ({self.name} [{self.ids}]{slot})"

    def link_errors(self) -> list[SourceError]:
        """Current-link readings that are garbage, refused, or cannot be (corrupt).

        Impossible: a reserved LnkSta speed code on an up link (PCIe Base Spec 7.5.3.8: 0 and codes
        above the known rates are reserved), and sysfs and LnkSta disagreeing on whether the link is up
        at all (one says x16, the other width 0 / speed ``Unknown``).
        """
        sl = self.sysfs_link
        out = [sl.bad[n] for n in ("cur_gen", "cur_width") if sl is not None and n in sl.bad]
        lk = self.config.link if self.config else None
        cfg = f"{self.base}/config"
        if self.config_corrupt:
            out.append(SourceError(cfg, self.config_corrupt))
        above = lk and link_above_capability(
            (lk.cap_speed if lk.cap_speed in SPEED_GT else None, lk.cap_width),
            (lk.sta_speed if lk.sta_speed in SPEED_GT else None, lk.sta_width),
        )
        if above:
            sysfs = (
                f"; sysfs current_link_* says {fmt_link(sl.cur_gen, sl.cur_width)}"
                if sl is not None and (sl.cur_gen or sl.cur_width)
                else ""
            )
            out.append(
                SourceError(
                    cfg,
                    f"impossible reading: {above} (a link cannot exceed its own capability: PCIe Base Spec "
                    f"7.5.3.6, 7.5.3.8){sysfs}",
                )
            )
        if lk is not None and lk.sta_width and lk.sta_speed not in SPEED_GT:
            out.append(
                SourceError(
                    cfg,
                    f"impossible LnkSta: link up at x{lk.sta_width} with reserved speed code "
                    f"{lk.sta_speed} (PCIe Base Spec 7.5.3.8)",
                )
            )
        if lk is not None and sl is not None and not sl.bad:
            sys_up = sl.cur_width is not None
            sys_down = sl.cur_down
            if sys_up and not lk.sta_width:
                out.append(
                    SourceError(
                        cfg,
                        f"contradictory readings: LnkSta says the link is down (width 0) but sysfs "
                        f"current_link_width says x{sl.cur_width}",
                    )
                )
            elif sys_down and lk.sta_width:
                out.append(
                    SourceError(
                        f"{self.base}/current_link_width",
                        f"contradictory readings: sysfs says the link is down (width 0) but config "
                        f"LnkSta says {fmt_link(lk.sta_speed if lk.sta_speed in SPEED_GT else None, lk.sta_width)}",
                    )
                )
        return out

    def cap_errors(self) -> list[SourceError]:
        """Capability readings that are garbage or cannot be: width 0 or a reserved speed in LnkCap
        (PCIe Base Spec 7.5.3.6), sysfs ``max_link_width`` 0 or ``max_link_speed`` Unknown."""
        sl = self.sysfs_link
        out = [sl.bad[n] for n in ("max_gen", "max_width") if sl is not None and n in sl.bad]
        lk = self.config.link if self.config else None
        cfg = f"{self.base}/config"
        if self.config_corrupt:
            out.append(SourceError(cfg, self.config_corrupt))
        if lk is not None and not lk.cap_width:
            out.append(SourceError(cfg, "impossible LnkCap: maximum link width 0 (PCIe Base Spec 7.5.3.6)"))
        if lk is not None and lk.cap_speed not in SPEED_GT:
            out.append(
                SourceError(
                    cfg,
                    f"impossible LnkCap: reserved maximum link speed code {lk.cap_speed} (PCIe Base Spec 7.5.3.6)",
                )
            )
        if lk is not None and sl is not None and not out:
            # sysfs max_link_width/max_link_speed are LnkCap read by the kernel (pcie_get_width_cap: its
            # Maximum Link Width field; pcie_get_speed_cap: the Supported Link Speeds up to LnkCap's Max
            # Link Speed, PCIe Base Spec 7.5.3.6/7.5.3.18): one capability read two ways cannot disagree,
            # unlike current readings, taken at different moments (link_now takes the lesser of those)
            for mine, theirs, attr, text in (
                (sl.max_width, lk.cap_width, "max_link_width", "x{}"),
                (sl.max_gen, lk.cap_speed, "max_link_speed", "Gen{}"),
            ):
                if mine is not None and mine != theirs:
                    out.append(
                        SourceError(
                            f"{self.base}/{attr}",
                            f"contradictory readings: sysfs {attr} says {text.format(mine)} but config LnkCap "
                            f"says {text.format(theirs)} (the same register, PCIe Base Spec 7.5.3.6)",
                        )
                    )
        return out

    def link_readings(self, strict: bool = True) -> list[tuple[str, int | None, int | None]]:
        """Every reading of this function's current link: (where, gen, width); ``None`` where unknown.

        sysfs ``current_link_speed``/``current_link_width`` and config-space LnkSta (PCIe Base Spec
        7.5.3.8; pciutils ``lib/header.h`` PCI_EXP_LNKSTA). Garbage sysfs text raises ``SourceError``
        (``strict``), or leaves that field ``None`` for the caller to report (``link_errors``).
        """
        out: list[tuple[str, int | None, int | None]] = []
        sl = self.sysfs_link
        if strict:
            errors = self.link_errors()
            if errors:
                raise errors[0]
        if sl is not None and (sl.cur_gen or sl.cur_width):
            out.append((f"{self.bdf} sysfs current_link_*", sl.cur_gen, sl.cur_width))
        lk = self.config.link if self.config else None
        if lk is not None and lk.sta_width:  # width 0: link down, the speed field is undefined
            sta_gen = lk.sta_speed if lk.sta_speed in SPEED_GT else None
            out.append((f"{self.bdf} LnkSta", sta_gen, lk.sta_width))
        return out

    @property
    def link_now(self) -> tuple[int | None, int | None]:
        """(gen, width) the link trained to, from sysfs and config space LnkSta.

        Where both were read and they differ (two reads of a link that changed between them, or an
        edited snapshot), the lesser of each is taken: a disagreement never hides a narrow or slow link.
        Speed and width are read apart: an unknown speed leaves a known width standing.
        """
        readings = self.link_readings()
        gens = [g for _, g, _ in readings if g]
        widths = [w for _, _, w in readings if w]
        return (min(gens) if gens else None), (min(widths) if widths else None)

    @property
    def link_cap(self) -> tuple[int | None, int | None]:
        """(gen, width) this function can do: the lesser of sysfs max_link_* and config LnkCap."""
        gens: list[int] = []
        widths: list[int] = []
        errors = self.cap_errors()
        if errors:
            raise errors[0]
        if self.sysfs_link:
            gens += [self.sysfs_link.max_gen] if self.sysfs_link.max_gen else []
            widths += [self.sysfs_link.max_width] if self.sysfs_link.max_width else []
        if self.config and self.config.link:
            gens += [self.config.link.cap_speed] if self.config.link.cap_speed in SPEED_GT else []
            widths += [self.config.link.cap_width] if self.config.link.cap_width else []
        return (min(gens) if gens else None), (min(widths) if widths else None)

    def link_text(self) -> str:
        """``Gen4 x16 (16.0 GT/s)``; ``link unreadable (...)`` where a reading is garbage or refused."""
        try:
            return fmt_link(*self.link_now)
        except SourceError as exc:
            return f"link unreadable ({exc})"


class PcieTree:
    """All PCI functions of a rig, with their parent chains.

    Args:
        source: where to read (live ``/`` or a snapshot root).

    Example:
        >>> tree = PcieTree.read(Source("/"))
        >>> [g.bdf for g in tree.gpus]
        ['0000:17:00.0', '0000:65:00.0']
    """

    def __init__(self, functions: dict[str, PciFunction]) -> None:
        self.functions = functions
        for fn in functions.values():
            if fn.parent and fn.parent in functions:
                functions[fn.parent].children.append(fn.bdf)
        # Without config space (non-root reads stop at 64 bytes) the port type still follows from
        # the tree's shape: a bridge on a root bus is a root port, one below a root or downstream
        # port is a switch upstream port, one below an upstream port a downstream port.
        for fn in sorted(functions.values(), key=lambda f: f.sysfs_depth):
            if not fn.is_bridge:
                continue
            up = functions.get(fn.parent) if fn.parent else None
            if up is None:
                fn.inferred_type = PortType.ROOT_PORT
            elif up.port_type == PortType.UPSTREAM:
                fn.inferred_type = PortType.DOWNSTREAM
            elif up.port_type in (PortType.ROOT_PORT, PortType.DOWNSTREAM):
                fn.inferred_type = PortType.UPSTREAM

    @classmethod
    def read(cls, source: Source, imported: bool = False) -> PcieTree:
        """``imported``: a snapshot written by ``rigcheck import-lspci`` (``PciFunction.imported``)."""
        slots = _read_slots(source)
        functions: dict[str, PciFunction] = {}
        for name in source.listdir(PCI_DEVICES):
            try:
                bdf = normalize_bdf(name)
            except ValueError:
                raise SourceError(f"{PCI_DEVICES}/{name}", "not a PCI address") from None
            functions[bdf] = _read_function(source, bdf, slots, imported)
        return cls(functions)

    def __getitem__(self, bdf: str) -> PciFunction:
        return self.functions[normalize_bdf(bdf)]

    def __contains__(self, bdf: str) -> bool:
        try:
            return normalize_bdf(bdf) in self.functions
        except ValueError:
            return False

    @cached_property
    def gpus(self) -> list[PciFunction]:
        """GPUs in PCI bus order, which is nvidia-smi's index order (and CUDA's with CUDA_DEVICE_ORDER=PCI_BUS_ID)."""
        return sorted((f for f in self.functions.values() if f.is_gpu), key=lambda f: f.bdf)

    @cached_property
    def left_out(self) -> list[tuple[PciFunction, str]]:
        """Display controllers not counted as GPUs (a BMC's ASPEED or Matrox VGA...), with the reason, bus order."""
        out = []
        for fn in sorted(self.functions.values(), key=lambda f: f.bdf):
            why = fn.left_out()
            if why:
                out.append((fn, why))
        return out

    def left_out_text(self) -> str:
        """One line naming the display devices left out, or ``""``."""
        return "; ".join(f"{fn.bdf} {fn.name} [{fn.ids}]: {why}" for fn, why in self.left_out)

    def gpu_index(self, bdf: str) -> int:
        for i, gpu in enumerate(self.gpus):
            if gpu.bdf == bdf:
                return i
        raise KeyError(bdf)

    def gpu_label(self, fn: PciFunction) -> str:
        """``GPU1 0000:17:00.0 (NVIDIA GeForce RTX 3090)``."""
        return f"GPU{self.gpu_index(fn.bdf)} {fn.bdf} ({fn.name})"

    def ancestors(self, bdf: str) -> list[PciFunction]:
        """Bridges above ``bdf``, from its root port (first) down to its immediate parent (last)."""
        chain: list[PciFunction] = []
        seen = {bdf}
        cur = self.functions[bdf].parent
        while cur and cur in self.functions:
            if cur in seen:  # a loop can only come from a hand-made tree
                raise SourceError(f"{PCI_DEVICES}/{bdf}", "parent chain loops")
            seen.add(cur)
            chain.append(self.functions[cur])
            cur = self.functions[cur].parent
        return chain[::-1]

    def path_text(self, bdf: str) -> str:
        """``0000:00:01.1 root port Gen4 x16 -> 0000:01:00.0 switch upstream port Gen4 x16 -> 0000:03:00.0``."""
        parts = [f"{a.bdf} {a.role} {a.link_text()}" for a in self.ancestors(bdf)]
        fn = self.functions[bdf]
        parts.append(f"{fn.bdf} {fn.role} {fn.link_text()}")
        return " -> ".join(parts) if len(parts) > 1 else f"{parts[0]} (on root bus {fn.host_bridge})"

    def root_port(self, bdf: str) -> PciFunction | None:
        chain = self.ancestors(bdf)
        return chain[0] if chain else None

    def links_to(self, bdf: str) -> list[tuple[PciFunction | None, PciFunction]]:
        """Physical links from the root down to ``bdf`` as (upstream port, downstream device).

        A switch's downstream ports hang on its internal virtual bus, so the hop from an upstream
        port to its downstream ports is no link and is left out. A function on a root bus has no
        upstream port (``None``): its link goes straight into the root complex.
        """
        chain = [*self.ancestors(bdf), self.functions[bdf]]
        links: list[tuple[PciFunction | None, PciFunction]] = []
        for i, fn in enumerate(chain):
            up = chain[i - 1] if i else None
            if up is not None and up.port_type == PortType.UPSTREAM:
                continue
            if up is None and fn.port_type == PortType.ROOT_PORT:
                continue  # a root port's own link is the one below it
            links.append((up, fn))
        return links

    def bridges_between(self, a: str, b: str) -> list[PciFunction]:
        """Bridges a peer-to-peer transfer from ``a`` to ``b`` passes, root ports included."""
        up_a, up_b = self.ancestors(a), self.ancestors(b)
        common = {x.bdf for x in up_a} & {x.bdf for x in up_b}
        out = [x for x in up_a if x.bdf not in common] + [x for x in up_b if x.bdf not in common]
        # The lowest common bridge routes the transfer too (a switch upstream port has no ACS of
        # its own, but a shared root port with ACS redirect would still bounce it).
        lowest = [x for x in up_a if x.bdf in common]
        if lowest:
            out.append(lowest[-1])
        return sorted({x.bdf: x for x in out}.values(), key=lambda f: f.bdf)


def _read_slots(source: Source) -> dict[str, str]:
    # /sys/bus/pci/slots/<name>/address holds "dddd:bb:dd" of the device in that slot.
    slots: dict[str, str] = {}
    for name in source.listdir(PCI_SLOTS):
        addr = source.read_optional(f"{PCI_SLOTS}/{name}/address")
        if addr:
            slots[addr.lower()] = name
    return slots


def _read_function(source: Source, bdf: str, slots: dict[str, str], imported: bool = False) -> PciFunction:
    base = f"{PCI_DEVICES}/{bdf}"
    real = source.resolve(base, link=True)
    parts = real.split("/")
    # sys/devices/pci0000:00/0000:00:01.1/0000:01:00.0 -> host bridge pci0000:00, parent 0000:00:01.1
    host = next((p for p in parts if _HOST_DIR.match(p)), None)
    if not real.startswith("sys/devices/") or host is None or parts[-1] != bdf:
        raise SourceError(base, f"resolves to {real!r}, not to a device under sys/devices/pciDDDD:BB")
    parent = parts[-2] if _BDF_DIR.match(parts[-2]) else None

    def hexattr(attr: str) -> int | None:
        text = source.read_optional(f"{real}/{attr}")
        if text is None:
            return None
        try:
            return int(text, 16)
        except ValueError:
            raise SourceError(f"{base}/{attr}", f"expected a hex number, read {text!r}") from None

    vendor = hexattr("vendor")
    device = hexattr("device")
    class_code = hexattr("class")
    if vendor is None or device is None or class_code is None:
        raise SourceError(base, "vendor, device or class attribute missing: partial snapshot?")
    addr = bdf.rsplit(".", 1)[0]
    return PciFunction(
        bdf=bdf,
        vendor=vendor,
        device=device,
        class_code=class_code,
        host_bridge=host,
        parent=parent,
        source=source,
        base=real,
        slot=slots.get(addr),
        sysfs_depth=len(parts),
        imported=imported,
    )


def _int_or_none(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return None if value < 0 else value  # numa_node -1: the platform did not say


_LINK_ATTRS = {
    "cur_gen": "current_link_speed",
    "cur_width": "current_link_width",
    "max_gen": "max_link_speed",
    "max_width": "max_link_width",
}


def _read_sysfs_link(source: Source, base: str) -> SysfsLink | None:
    bad: dict[str, SourceError] = {}
    texts: list[str | None] = []
    for name, attr in _LINK_ATTRS.items():
        try:
            texts.append(source.read_optional(f"{base}/{attr}"))
        except SourceError as exc:  # refused (a link out of the snapshot, a FIFO) or unreadable
            bad[name] = exc
            texts.append(None)
    if all(t is None for t in texts) and not bad:
        return None  # conventional PCI and some virtual functions have no link attributes
    cs, cw, ms, mw = texts

    def gen(t: str | None, attr: str, name: str) -> int | None:
        if t is None:
            return None
        try:
            return parse_link_speed(t)
        except ValueError:
            bad[name] = SourceError(f"{base}/{attr}", f"unreadable link speed {t!r}")
            return None

    def width(t: str | None, attr: str, name: str) -> int | None:
        if t is None:
            return None
        try:
            w = int(t)
        except ValueError:
            bad[name] = SourceError(f"{base}/{attr}", f"unreadable link width {t!r}")
            return None
        if not 0 <= w <= 32:  # LnkSta/LnkCap width: x1..x32 (PCIe Base Spec 7.5.3.6); 0 when the link is down
            bad[name] = SourceError(
                f"{base}/{attr}", f"impossible link width {t!r} (PCIe links are x1 to x32)"
            )
            return None
        return w or None  # 0: link down

    link = SysfsLink(
        gen(cs, "current_link_speed", "cur_gen"),
        width(cw, "current_link_width", "cur_width"),
        gen(ms, "max_link_speed", "max_gen"),
        width(mw, "max_link_width", "max_width"),
        bad,
    )
    # Readings that cannot be: the kernel reads both current_* from one LnkSta, so a known speed
    # with width 0, or speed Unknown with a width, is corrupt (PCIe Base Spec 7.5.3.8); a port
    # always has a maximum width of at least x1 (LnkCap, 7.5.3.6).
    if cs is not None and cw is not None and not bad.keys() & {"cur_gen", "cur_width"}:
        if link.cur_gen is not None and link.cur_width is None:
            bad["cur_width"] = SourceError(
                f"{base}/current_link_width",
                f"impossible link reading: width 0 with current_link_speed {cs.strip()!r}",
            )
        elif link.cur_gen is None and link.cur_width is not None:
            bad["cur_gen"] = SourceError(
                f"{base}/current_link_speed",
                f"impossible link reading: speed {cs.strip()!r} on a link trained to x{link.cur_width}",
            )
    if mw is not None and "max_width" not in bad and link.max_width is None:
        bad["max_width"] = SourceError(
            f"{base}/max_link_width", "impossible link capability: max_link_width 0 (a link is x1 to x32)"
        )
    if ms is not None and "max_gen" not in bad and link.max_gen is None:
        bad["max_gen"] = SourceError(
            f"{base}/max_link_speed", f"impossible link capability: max_link_speed {ms.strip()!r}"
        )
    # LnkSta never exceeds LnkCap (PCIe Base Spec 7.5.3.8 Current Link Speed/Negotiated Link Width are
    # within 7.5.3.6 Max Link Speed/Width): x32 or 64 GT/s on an x16 / 16 GT/s link is no reading.
    for now, most, name, attr, what in (
        (
            link.cur_width,
            link.max_width,
            "cur_width",
            "current_link_width",
            "width x{} above max_link_width x{}",
        ),
        (
            link.cur_gen,
            link.max_gen,
            "cur_gen",
            "current_link_speed",
            "speed Gen{} above max_link_speed Gen{}",
        ),
    ):
        if now is not None and most is not None and now > most and name not in bad:
            bad[name] = SourceError(f"{base}/{attr}", f"impossible link reading: {what.format(now, most)}")
    if cw is not None and "cur_width" not in bad and link.cur_width not in (None, 1, 2, 4, 8, 12, 16, 32):
        bad["cur_width"] = SourceError(
            f"{base}/current_link_width",
            f"impossible link width x{link.cur_width} (x1, x2, x4, x8, x12, x16, x32)",
        )
    down = (
        cw is not None
        and link.cur_width is None
        and link.cur_gen is None
        and not bad.keys() & {"cur_gen", "cur_width"}
    )
    return dataclasses.replace(link, cur_down=down)
