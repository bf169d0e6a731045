"""Build sysfs trees in code: for the project's tests, the shipped modelled snapshots, and users' own checks.

The trees have the same layout a capture has (``sys/devices/pci.../BDF`` directories, the kernel's
relative symlinks under ``sys/bus/pci/devices``, binary ``config`` files with real capability
layouts), so they replay through exactly the code a live rig does.

Example::

    from pytest_rigcheck.testing import RigBuilder, GPU_MODELS

    b = RigBuilder(name="my-rig")
    host = b.host_bridge()
    rp = b.root_port(host, "0000:00:01.1", cap=(4, 16))
    b.gpu(rp, "0000:01:00.0", GPU_MODELS["rtx3090"])
    b.write(tmp_path / "my-rig")
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .pcie import ECAP_ID_ACS, ECAP_ID_AER, SPEED_GT, PortType

SPEED_TEXT = {g: f"{r:.1f} GT/s PCIe" for g, r in SPEED_GT.items()}


@dataclass(frozen=True)
class GpuModel:
    vendor: int
    device: int
    class_code: int
    cap: tuple[int, int]  # (gen, width) the card can do
    audio_device: int | None = None  # HDMI audio function .1 of consumer and workstation cards
    subsystem: tuple[int, int] = (0x10DE, 0x0000)


GPU_MODELS = {
    "rtx3090": GpuModel(0x10DE, 0x2204, 0x030000, (4, 16), 0x1AEF, (0x1043, 0x87B3)),
    "rtx3080": GpuModel(0x10DE, 0x2206, 0x030000, (4, 16), 0x1AEF, (0x3842, 0x3897)),
    "rtx3070": GpuModel(0x10DE, 0x2484, 0x030000, (4, 16), 0x228B, (0x1458, 0x404C)),
    "rtx3060": GpuModel(0x10DE, 0x2503, 0x030000, (4, 16), 0x228E, (0x1462, 0x397D)),
    "rtxpro6000": GpuModel(0x10DE, 0x2BB1, 0x030000, (5, 16), 0x22E8, (0x10DE, 0x204B)),
    "h100": GpuModel(0x10DE, 0x2330, 0x030200, (5, 16), None, (0x10DE, 0x16C1)),
    "h200": GpuModel(0x10DE, 0x2335, 0x030200, (5, 16), None, (0x10DE, 0x18BF)),
}


@dataclass
class Node:
    """A PCI function in the tree being built."""

    bdf: str
    vendor: int
    device: int
    class_code: int
    parent: Node | None
    host: str
    port_type: PortType | None = None
    cap: tuple[int, int] | None = None  # LnkCap (gen, width)
    link: tuple[int, int] | None = None  # LnkSta (gen, width)
    target: int | None = None  # LnkCtl2 target speed
    lbms: bool = False
    labs: bool = False
    hasd: bool = False  # LnkCtl2 Hardware Autonomous Speed Disable
    acs: tuple[int, int, int] | None = None  # (offset, cap, ctrl)
    slot: int | None = None
    subsystem: tuple[int, int] = (0, 0)
    driver: str | None = None
    numa: int = -1
    config_size: int = 4096
    secondary: int = 0
    subordinate: int = 0
    iommu_group: int | None = None
    bar1: int | None = None  # GPU BAR1 size in bytes: writes the function's sysfs ``resource`` file
    aspm: int = 0  # LnkCtl ASPM Control bits 1:0 (0x1 L0s, 0x2 L1)
    aer: dict[str, int] | None = None  # AER totals {"correctable": n, ...}: aer_dev_* files written when set
    children: list[Node] = field(default_factory=list)


@dataclass
class Host:
    name: str  # "pci0000:00"
    numa: int


class RigBuilder:
    """Assemble a rig's PCIe tree and OS state, then write it as a snapshot directory.

    Args:
        name: the snapshot's name (its MANIFEST ``name``).
        cpu: ``amd`` or ``intel`` (``/proc/cpuinfo``).
        cmdline: the kernel command line (``/proc/cmdline``).
        iommu: ``off`` (no groups), ``identity`` (passthrough) or ``DMA``/``DMA-FQ`` (translating).
        root: whether the snapshot was read as root; ``False`` cuts every config file to 64 bytes.
    """

    def __init__(
        self,
        name: str,
        *,
        cpu: str = "amd",
        kernel: str = "6.8.0-49-generic",
        driver: str = "570.133.07",
        cmdline: str | None = None,
        iommu: str = "off",
        root: bool = True,
    ) -> None:
        self.name = name
        self.cpu = cpu
        self.kernel = kernel
        self.driver = driver
        self.iommu = iommu
        self.root = root
        off = "amd_iommu=off iommu=off" if cpu == "amd" else "intel_iommu=off"
        default = {"off": off, "identity": "iommu=pt"}.get(iommu, "")
        self.cmdline = (
            cmdline
            if cmdline is not None
            else f"BOOT_IMAGE=/boot/vmlinuz-{kernel} root=/dev/nvme0n1p2 ro {default}".strip()
        )
        self.nodes: dict[str, Node] = {}
        self.hosts: list[Host] = []
        self.slots: dict[str, str] = {}
        self.files: dict[str, str | bytes] = {}

    # -- topology ----------------------------------------------------------------------------

    def host_bridge(self, domain: int = 0, bus: int = 0, numa: int = 0, *, vendor: int | None = None) -> Host:
        """A PCI host bridge (root complex), with its own host-bridge function at ``dd:bb:00.0``."""
        host = Host(f"pci{domain:04x}:{bus:02x}", numa)
        self.hosts.append(host)
        amd = self.cpu == "amd"
        v = vendor or (0x1022 if amd else 0x8086)
        self._add(
            Node(
                f"{domain:04x}:{bus:02x}:00.0",
                v,
                0x1480 if amd else 0x09A2,
                0x060000,
                None,
                host.name,
                numa=numa,
                config_size=256,
            )
        )
        return host

    def root_port(
        self,
        host: Host,
        bdf: str,
        *,
        cap: tuple[int, int] = (4, 16),
        link: tuple[int, int] | None = None,
        acs_ctrl: int | None = 0,
        slot: int | None = None,
        target: int | None = None,
        lbms: bool = False,
        vendor: int | None = None,
        device: int | None = None,
    ) -> Node:
        """A root port (AMD GPP bridge 1022:1483 by default; ACS at 0x2a0 as on AMD parts)."""
        amd = self.cpu == "amd"
        node = Node(
            bdf,
            vendor or (0x1022 if amd else 0x8086),
            device or (0x1483 if amd else 0x347A),
            0x060400,
            None,
            host.name,
            PortType.ROOT_PORT,
            cap,
            link,
            target or cap[0],
            lbms,
            acs=(0x2A0 if amd else 0x220, 0x005F, acs_ctrl) if acs_ctrl is not None else None,
            slot=slot,
            numa=host.numa,
            driver="pcieport",
        )
        return self._add(node)

    def switch(
        self,
        parent: Node,
        up_bdf: str,
        down_bdfs: list[str],
        *,
        vendor: int = 0x11F8,
        device: int = 0x4084,
        cap: tuple[int, int] = (4, 16),
        up_link: tuple[int, int] | None = None,
        down_cap: tuple[int, int] = (4, 16),
        acs_ctrl: int = 0,
        acs_offset: int = 0x20C,
        mgmt_endpoint: bool = True,
    ) -> tuple[Node, list[Node]]:
        """A PCIe switch: an upstream port and its downstream ports (Microchip Switchtec PFX 84xG4 by default).

        Switchtec parts also expose a management endpoint as function 1 of the upstream port.
        """
        link = up_link or cap
        if parent.cap is not None:  # LnkSta never exceeds either end's LnkCap (PCIe Base Spec 7.5.3.8)
            link = (min(link[0], cap[0], parent.cap[0]), min(link[1], cap[1], parent.cap[1]))
        up = self._add(
            Node(
                up_bdf,
                vendor,
                device,
                0x060400,
                parent,
                parent.host,
                PortType.UPSTREAM,
                cap,
                link,
                cap[0],
                numa=parent.numa,
                driver="pcieport",
            )
        )
        if mgmt_endpoint and vendor == 0x11F8:
            self._add(
                Node(
                    up_bdf[:-1] + "1",
                    vendor,
                    device,
                    0x058000,
                    parent,
                    parent.host,
                    PortType.ENDPOINT,
                    cap,
                    link,
                    cap[0],
                    numa=parent.numa,
                    driver="switchtec",
                )
            )
        downs = [
            self._add(
                Node(
                    b,
                    vendor,
                    device,
                    0x060400,
                    up,
                    parent.host,
                    PortType.DOWNSTREAM,
                    down_cap,
                    None,
                    down_cap[0],
                    acs=(acs_offset, 0x005F, acs_ctrl),
                    slot=i + 1,
                    numa=parent.numa,
                    driver="pcieport",
                )
            )
            for i, b in enumerate(down_bdfs)
        ]
        return up, downs

    def gpu(
        self,
        parent: Node | Host,
        bdf: str,
        model: GpuModel,
        *,
        link: tuple[int, int] | None = None,
        labs: bool = False,
        hasd: bool = False,
        bar1: int | None = None,
    ) -> Node:
        """A GPU (and its audio function, for cards that have one) below ``parent``.

        ``link`` is what LnkSta shows; by default the lesser of the two ends' capability. ``hasd`` sets
        Hardware Autonomous Speed Disable in LnkCtl2 (the GPU may not change link speed on its own).
        ``bar1`` (bytes) writes the GPU's sysfs ``resource`` file: a 32-bit BAR0 of 16 MiB, BAR1 of that
        size and a 32 MiB BAR3, as a GeForce card lays them out.
        """
        if isinstance(parent, Host):
            up, host, numa = None, parent.name, parent.numa
        else:
            up, host, numa = parent, parent.host, parent.numa
        caps = [model.cap] + ([up.cap] if up is not None and up.cap is not None else [])
        best = (min(c[0] for c in caps), min(c[1] for c in caps))
        # LnkSta never exceeds either end's LnkCap (PCIe Base Spec 7.5.3.8): a modelled link above it would be
        # an impossible reading, which the reader refuses
        link = best if link is None else (min(link[0], best[0]), min(link[1], best[1]))
        gpu = self._add(
            Node(
                bdf,
                model.vendor,
                model.device,
                model.class_code,
                up,
                host,
                PortType.ENDPOINT,
                model.cap,
                link,
                model.cap[0],
                hasd=hasd,
                labs=labs,
                subsystem=model.subsystem,
                driver="nvidia",
                numa=numa,
                bar1=bar1,
            )
        )
        if up is not None:
            up.link = link  # both ends of a link show the same LnkSta
        if model.audio_device is not None:
            self._add(
                Node(
                    bdf[:-1] + "1",
                    model.vendor,
                    model.audio_device,
                    0x040300,
                    up,
                    host,
                    PortType.ENDPOINT,
                    model.cap,
                    link,
                    model.cap[0],
                    subsystem=model.subsystem,
                    driver="snd_hda_intel",
                    numa=numa,
                )
            )
        return gpu

    def bmc(self, parent: Node, bdf: str, *, model: str = "ast2600", bridge_bdf: str | None = None) -> Node:
        """A baseboard management controller's display device below ``parent`` (a root port).

        ``ast2500``/``ast2600``: ASPEED's PCIe-to-PCI bridge (1a03:1150, at ``bridge_bdf``, default the
        parent's secondary bus ``bdf`` minus one bus) and the VGA function 1a03:2000 (class 0x0300, driver
        ``ast``) on the conventional PCI bus behind it, as on most server boards. ``g200`` : a Matrox G200eR2
        (102b:0534, class 0x0300, driver ``mgag200``) as on Dell iDRAC boards, directly on the port.
        The suites must not count either as a GPU.
        """
        if model == "g200":
            return self._add(
                Node(
                    bdf,
                    0x102B,
                    0x0534,
                    0x030000,
                    parent,
                    parent.host,
                    PortType.LEGACY_ENDPOINT,
                    (1, 1),
                    (1, 1),
                    1,
                    subsystem=(0x1028, 0x0740),
                    driver="mgag200",
                    numa=parent.numa,
                )
            )
        if model not in ("ast2500", "ast2600"):
            raise ValueError(f"unknown BMC model {model!r}: ast2500, ast2600 or g200")
        bus = int(bdf.split(":")[1], 16)
        bridge = self._add(
            Node(
                bridge_bdf or f"{bdf[:4]}:{bus - 1:02x}:00.0",
                0x1A03,
                0x1150,
                0x060400,
                parent,
                parent.host,
                PortType.PCIE_TO_PCI,
                (2, 1),
                (2, 1),
                2,
                numa=parent.numa,
            )
        )
        return self._add(
            Node(
                bdf,
                0x1A03,
                0x2000,
                0x030000,
                bridge,
                parent.host,
                None,
                None,
                None,
                None,
                subsystem=(0x1A03, 0x2000),
                driver="ast",
                numa=parent.numa,
                config_size=256,
            )
        )

    def slot_name(self, node: Node, name: str) -> None:
        """Name the physical slot ``node`` sits in (``/sys/bus/pci/slots/NAME/address``)."""
        self.slots[name] = node.bdf.rsplit(".", 1)[0]

    def add_file(self, rel: str, content: str | bytes) -> None:
        """Any other file of the snapshot (``proc/driver/nvidia/version``, ``nvml.json``...)."""
        self.files[rel] = content

    def _add(self, node: Node) -> Node:
        if node.bdf in self.nodes:
            raise ValueError(f"{node.bdf} added twice")
        self.nodes[node.bdf] = node
        if node.parent is not None:
            node.parent.children.append(node)
            if (
                node.parent.link is None
                and node.link is not None
                and node.parent.port_type != PortType.UPSTREAM
            ):
                node.parent.link = node.link
        return node

    # -- output ------------------------------------------------------------------------------

    def write(
        self,
        out: Path,
        *,
        kind: str = "modelled",
        description: str = "",
        shows: str = "healthy",
        profile: str | None = None,
        expect_fail: list[str] | None = None,
        extra_manifest: dict[str, Any] | None = None,
    ) -> Path:
        """Write the snapshot directory and its MANIFEST.toml; return ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self._assign_buses()
        self._assign_iommu_groups()
        for node in self.nodes.values():
            self._write_node(out, node)
        empty: list[str] = []
        groups = out / "sys/kernel/iommu_groups"
        groups.mkdir(parents=True, exist_ok=True)
        (out / "sys/class/iommu").mkdir(parents=True, exist_ok=True)
        if self.iommu != "off":
            for node in self.nodes.values():
                if node.iommu_group is None:
                    continue
                g = groups / str(node.iommu_group)
                (g / "devices").mkdir(parents=True, exist_ok=True)
                (g / "type").write_text(self.iommu + "\n")
                _link(g / "devices" / node.bdf, out / self._dev_rel(node))
            unit = out / "sys/class/iommu" / ("ivhd0" if self.cpu == "amd" else "dmar0")
            unit.mkdir(parents=True, exist_ok=True)
        else:
            empty = ["sys/kernel/iommu_groups", "sys/class/iommu"]
        for name, addr in self.slots.items():
            d = out / "sys/bus/pci/slots" / name
            d.mkdir(parents=True, exist_ok=True)
            (d / "address").write_text(addr + "\n")
        proc = out / "proc"
        proc.mkdir(exist_ok=True)
        (proc / "cmdline").write_text(self.cmdline + "\n")
        (proc / "version").write_text(f"Linux version {self.kernel} (modelled by pytest-rigcheck)\n")
        vendor = "AuthenticAMD" if self.cpu == "amd" else "GenuineIntel"
        (proc / "cpuinfo").write_text(f"processor\t: 0\nvendor_id\t: {vendor}\n")
        if any(n.driver == "nvidia" for n in self.nodes.values()):
            (proc / "driver/nvidia").mkdir(parents=True, exist_ok=True)
            (proc / "driver/nvidia/version").write_text(
                f"NVRM version: NVIDIA UNIX x86_64 Kernel Module  {self.driver}  (modelled)\n"
            )
        for rel, content in self.files.items():
            p = out / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(content if isinstance(content, bytes) else content.encode())
        manifest: dict[str, Any] = {
            "format": 1,
            "kind": kind,
            "name": self.name,
            "description": description,
            "shows": shows,
            "kernel": self.kernel,
            "driver": self.driver,
            "date": "2026-11-23",
            "tool": "pytest-rigcheck testing.RigBuilder",
            "root": self.root,
            "empty_dirs": empty,
        }
        if profile:
            manifest["profile"] = profile
        manifest.update(extra_manifest or {})
        if expect_fail is not None:
            manifest["expect"] = {"fail": sorted(expect_fail)}
        (out / "MANIFEST.toml").write_text(dump_toml(manifest))
        return out

    def _assign_buses(self) -> None:
        for node in self.nodes.values():
            if node.port_type in (
                PortType.ROOT_PORT,
                PortType.UPSTREAM,
                PortType.DOWNSTREAM,
                PortType.PCIE_TO_PCI,
            ):
                buses = [int(c.bdf.split(":")[1], 16) for c in self._descendants(node)]
                node.secondary = min(buses) if buses else 0
                node.subordinate = max(buses) if buses else 0

    def _assign_iommu_groups(self) -> None:
        # One group per function, as with ACS isolating every port; good enough for the checks.
        for i, node in enumerate(sorted(self.nodes.values(), key=lambda n: n.bdf)):
            node.iommu_group = i

    def _descendants(self, node: Node) -> list[Node]:
        out: list[Node] = []
        for c in node.children:
            out += [c, *self._descendants(c)]
        return out

    def _dev_rel(self, node: Node) -> str:
        chain = []
        cur: Node | None = node
        while cur is not None:
            chain.append(cur.bdf)
            cur = cur.parent
        return "/".join(["sys/devices", node.host, *reversed(chain)])

    def _write_node(self, out: Path, node: Node) -> None:
        rel = self._dev_rel(node)
        d = out / rel
        d.mkdir(parents=True, exist_ok=True)
        attrs = {
            "vendor": f"{node.vendor:#06x}",
            "device": f"{node.device:#06x}",
            "class": f"{node.class_code:#08x}",
            "subsystem_vendor": f"{node.subsystem[0]:#06x}",
            "subsystem_device": f"{node.subsystem[1]:#06x}",
            "revision": "0xa1",
            "numa_node": str(node.numa),
            "enable": "1",
        }
        if node.cap is not None and node.port_type is not None:
            link = node.link or (node.cap[0], 0)
            attrs.update(
                current_link_speed=SPEED_TEXT[link[0]],
                current_link_width=str(link[1]),
                max_link_speed=SPEED_TEXT[node.cap[0]],
                max_link_width=str(node.cap[1]),
            )
        for name, value in attrs.items():
            (d / name).write_text(value + "\n")
        for kind, total in (node.aer or {}).items():  # the kernel's format (sysfs-bus-pci-devices-aer_stats)
            tag = {"correctable": "COR", "nonfatal": "NONFATAL", "fatal": "FATAL"}[kind]
            first = "RxErr" if kind == "correctable" else "Undefined"
            (d / f"aer_dev_{kind}").write_text(f"{first} {total}\nTOTAL_ERR_{tag} {total}\n")
        cfg = build_config(node)
        (d / "config").write_bytes(cfg if self.root else cfg[:64])
        if node.bar1 is not None:
            (d / "resource").write_text(resource_file(node, sorted(self.nodes).index(node.bdf)))
        if node.driver:
            _link(d / "driver", out / "sys/bus/pci/drivers" / node.driver)
        if node.iommu_group is not None and self.iommu != "off":
            _link(d / "iommu_group", out / "sys/kernel/iommu_groups" / str(node.iommu_group))
        _link(out / "sys/bus/pci/devices" / node.bdf, d)


def _link(at: Path, target: Path) -> None:
    """A relative symlink, as the kernel makes them; the target need not exist."""
    at.parent.mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(target, at.parent)
    if at.is_symlink() or at.exists():
        at.unlink()
    at.symlink_to(rel)


def build_config(node: Node) -> bytes:
    """Config space bytes with a real layout: header, PM/MSI/PCIe capabilities, AER and ACS."""
    cfg = bytearray(4096 if node.config_size >= 4096 else node.config_size)
    put16(cfg, 0x00, node.vendor)
    put16(cfg, 0x02, node.device)
    put16(cfg, 0x04, 0x0406)  # Memory, Bus Master, INTx disable
    bridge = node.class_code >> 8 == 0x0604
    has_caps = node.port_type is not None
    put16(cfg, 0x06, 0x0010 if has_caps else 0x0000)
    cfg[0x08] = 0xA1
    cfg[0x09:0x0C] = node.class_code.to_bytes(3, "little")
    cfg[0x0E] = 0x01 if bridge else 0x00
    if bridge:
        cfg[0x18] = int(node.bdf.split(":")[1], 16)
        cfg[0x19], cfg[0x1A] = node.secondary, node.subordinate
    else:
        put16(cfg, 0x2C, node.subsystem[0])
        put16(cfg, 0x2E, node.subsystem[1])
    if not has_caps:
        return bytes(cfg)
    cfg[0x34] = 0x40
    cfg[0x40], cfg[0x41] = 0x01, 0x50  # Power Management
    put16(cfg, 0x42, 0x0003)
    cfg[0x50], cfg[0x51] = 0x05, 0x60  # MSI
    pcie = 0x60
    cfg[pcie], cfg[pcie + 1] = 0x10, 0x00
    flags = 0x0002 | (int(node.port_type or 0) << 4)
    if node.slot is not None:
        flags |= 0x0100
    put16(cfg, pcie + 2, flags)
    gen, width = node.cap or (1, 1)
    put32(cfg, pcie + 0x0C, gen | (width << 4) | (0x3 << 10) | (0x1 << 20 if bridge else 0))
    sta_gen, sta_width = node.link or (gen, 0)
    sta = sta_gen | (sta_width << 4)
    if bridge and sta_width:
        sta |= 0x2000  # Data Link Layer Link Active (downstream-facing ports report it)
    if node.lbms:
        sta |= 0x4000
    if node.labs:
        sta |= 0x8000
    put16(cfg, pcie + 0x10, node.aspm & 0x3)  # LnkCtl: ASPM Control
    put16(cfg, pcie + 0x12, sta)
    if node.slot is not None:
        put32(cfg, pcie + 0x14, node.slot << 19)
    put32(cfg, pcie + 0x2C, sum(1 << i for i in range(1, gen + 1)))  # Supported Link Speeds vector
    put16(cfg, pcie + 0x30, (node.target or gen) | (0x20 if node.hasd else 0))
    if len(cfg) < 4096:
        return bytes(cfg)
    caps = [(0x100, ECAP_ID_AER, 2)]
    if node.acs is not None:
        caps.append((node.acs[0], ECAP_ID_ACS, 1))
    caps.sort()
    for i, (off, cap_id, ver) in enumerate(caps):
        nxt = caps[i + 1][0] if i + 1 < len(caps) else 0
        put32(cfg, off, cap_id | (ver << 16) | (nxt << 20))
    if node.acs is not None:
        off, acap, actrl = node.acs
        put16(cfg, off + 4, acap)
        put16(cfg, off + 6, actrl)
    return bytes(cfg)


def resource_file(node: Node, n: int) -> str:
    """A GPU's sysfs ``resource`` (``start end flags`` per line, 13 lines for an endpoint): BAR0 32-bit 16 MiB,
    BAR1 64-bit prefetchable of ``node.bar1`` bytes, BAR3 64-bit prefetchable 32 MiB, an I/O BAR, the ROM."""
    assert node.bar1 is not None
    mem32, mem64 = 0x40200, 0x14220C  # IORESOURCE_MEM (+ SIZEALIGN); MEM_64 | PREFETCH
    bar0 = 0xF0000000 - (n + 1) * 0x02000000
    bar1 = (n + 1) * 2 * max(node.bar1, 1 << 32) + (1 << 40)
    bar3 = bar1 + node.bar1
    lines = [
        (bar0, bar0 + (16 << 20) - 1, mem32),
        (bar1, bar1 + node.bar1 - 1, mem64),
        (0, 0, 0),
        (bar3, bar3 + (32 << 20) - 1, mem64),
        (0, 0, 0),
        (0xE000 - n * 0x1000, 0xE07F - n * 0x1000, 0x40101),
        (bar0 + (16 << 20), bar0 + (16 << 20) + 0x7FFFF, 0x46200),
    ] + [(0, 0, 0)] * 6
    return "".join(f"{a:#018x} {b:#018x} {f:#018x}\n" for a, b, f in lines)


def put16(buf: bytearray, off: int, value: int) -> None:
    buf[off : off + 2] = value.to_bytes(2, "little")


def put32(buf: bytearray, off: int, value: int) -> None:
    buf[off : off + 4] = value.to_bytes(4, "little")


def dump_toml(data: dict[str, Any]) -> str:
    """A small TOML writer for manifests (scalars, lists of scalars, one level of tables)."""

    def val(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
        if isinstance(v, list):
            if not v:
                return "[]"
            return "[\n" + "".join(f"    {val(x)},\n" for x in v) + "]"
        raise TypeError(f"cannot write {type(v).__name__} to TOML")

    lines = [f"{k} = {val(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for k, v in data.items():
        if isinstance(v, dict):
            lines += ["", f"[{k}]", *(f"{kk} = {val(vv)}" for kk, vv in v.items())]
    return "\n".join(lines) + "\n"
