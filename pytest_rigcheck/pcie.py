"""Pure PCIe parsers: BDFs, link speed strings, config space (capabilities, link registers, ACS, AER).

Offsets and bit layouts follow pciutils ``lib/header.h`` and the PCIe Base Specification (section
7.5.3 PCI Express Capability, 7.7.8 ACS Extended Capability, 7.8.4 AER). Nothing here does I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum

from .errors import ConfigSpaceError

# -- BDF ---------------------------------------------------------------------------------------

_BDF = re.compile(
    r"^(?:(?P<dom>[0-9a-fA-F]{1,8}):)?(?P<bus>[0-9a-fA-F]{1,2}):(?P<dev>[0-9a-fA-F]{1,2})\.(?P<fn>[0-7])$"
)


def normalize_bdf(text: str) -> str:
    """Spell a PCI address the way sysfs does: lowercase, 4-digit domain.

    NVML gives an 8-digit domain (``00000000:17:00.0``), lspci may omit it (``17:00.0``).

    Example:
        >>> normalize_bdf("00000000:17:00.0")
        '0000:17:00.0'
    """
    m = _BDF.match(text.strip())
    if not m:
        raise ValueError(f"not a PCI address (domain:bus:device.function): {text!r}")
    dom = int(m["dom"] or "0", 16)
    if dom > 0xFFFF:
        # Domains above 0xffff exist (VMD); sysfs then prints all the digits it has.
        return f"{dom:08x}:{int(m['bus'], 16):02x}:{int(m['dev'], 16):02x}.{m['fn']}"
    dev = int(m["dev"], 16)
    if dev > 0x1F:
        raise ValueError(f"PCI device number above 0x1f in {text!r}")
    return f"{dom:04x}:{int(m['bus'], 16):02x}:{dev:02x}.{m['fn']}"


# -- link speed ---------------------------------------------------------------------------------

# Encoding in LnkCap/LnkSta/LnkCtl2 -> (generation, GT/s). pciutils ls-caps.c link_speed().
SPEED_GT = {1: 2.5, 2: 5.0, 3: 8.0, 4: 16.0, 5: 32.0, 6: 64.0}
# Per-lane data rate in GB/s after line coding (8b/10b for Gen1-2, 128b/130b for Gen3-5, FLIT Gen6).
LANE_GBPS = {1: 0.25, 2: 0.5, 3: 0.985, 4: 1.969, 5: 3.938, 6: 7.563}
PCIE_WIDTHS = (1, 2, 4, 8, 12, 16, 32)  # the link widths PCIe defines (PCI Express Base Spec, 7.5.3.6 LnkCap)


def link_reading_problem(name: str, value: object) -> str | None:
    """Why a recorded link generation (``name`` containing ``gen``) or width cannot be real, or None.

    A generation is one of ``SPEED_GT`` (Gen1-Gen6); a width one of ``PCIE_WIDTHS``; None means not read.

    Example:
        >>> link_reading_problem("gen", 9)
        'gen = 9 is not a PCIe generation (Gen1-Gen6)'
    """
    if value is None:
        return None
    if "gen" in name:
        if isinstance(value, bool) or value not in SPEED_GT:
            return f"{name} = {value!r} is not a PCIe generation (Gen1-Gen{max(SPEED_GT)})"
    elif isinstance(value, bool) or value not in PCIE_WIDTHS:
        return f"{name} = {value!r} is not a PCIe link width ({', '.join(f'x{w}' for w in PCIE_WIDTHS)})"
    return None


def link_above_max(name: str, value: object, max_name: str, maximum: object) -> str | None:
    """Why a link reading above its function's own maximum cannot be real, or None.

    ``name`` is a generation (containing ``gen`` or ``speed``) or a width, ``maximum`` the same function's capability:
    sysfs ``max_link_speed``/``max_link_width`` (its Link Capabilities register) or NVML ``pcie_max_gen``/
    ``pcie_max_width`` (``nvmlDeviceGetMaxPcieLinkGeneration``/``...Width``: the lesser of GPU and system).
    A link trains at most to what both its ends advertise in Link Capabilities (PCI Express Base
    Specification, 7.5.3.6 Link Capabilities and 7.5.3.8 Link Status), so a higher reading is corrupt.
    Either side not an integer (not read, or already refused by ``link_reading_problem``): None.

    Example:
        >>> link_above_max("gen", 5, "pcie_max_gen", 4)
        "gen = 5 (Gen5) is above the link's own maximum pcie_max_gen = 4 (Gen4)"
    """
    nums = [x for x in (value, maximum) if isinstance(x, int | float) and not isinstance(x, bool)]
    if len(nums) != 2 or value <= maximum:  # type: ignore[operator]
        return None
    what = "Gen{:g}" if "gen" in name or "speed" in name else "x{:g}"
    return (
        f"{name} = {value:g} ({what.format(value)}) is above the link's own maximum {max_name} = {maximum:g} "
        f"({what.format(maximum)})"
    )


def link_pair_problem(
    gen: object, width: object, max_gen: object, max_width: object, max_names: tuple[str, str]
) -> str | None:
    """Why a recorded (gen, width) of a link cannot be real, or None: ``link_reading_problem`` for each, then
    ``link_above_max`` against the function's own (``max_gen``, ``max_width``), named ``max_names``.

    Example:
        >>> link_pair_problem(4, 32, 4, 16, ("pcie_max_gen", "pcie_max_width"))
        "width = 32 (x32) is above the link's own maximum pcie_max_width = 16 (x16)"
    """
    for name, value, most, max_name in (
        ("gen", gen, max_gen, max_names[0]),
        ("width", width, max_width, max_names[1]),
    ):
        why = link_reading_problem(name, value) or link_above_max(name, value, max_name, most)
        if why is not None:
            return why
    return None


def link_above_capability(
    cap: tuple[int | None, int | None],
    now: tuple[int | None, int | None],
    now_name: str = "LnkSta",
    cap_name: str = "LnkCap",
) -> str | None:
    """Why a trained link ``now`` = (gen, width) cannot sit under its own capability ``cap``, or None:
    ``link_above_max`` for the width, then for the speed on an up link only (width known: LnkSta's speed is
    undefined while the link is down). ``None`` fields are unknown.

    Example:
        >>> link_above_capability((4, 16), (4, 32))
        "LnkSta width = 32 (x32) is above the link's own maximum LnkCap width = 16 (x16)"
    """
    (cap_gen, cap_w), (now_gen, now_w) = cap, now
    why = link_above_max(f"{now_name} width", now_w, f"{cap_name} width", cap_w)
    if why is None and now_w:
        why = link_above_max(f"{now_name} speed", now_gen, f"{cap_name} speed", cap_gen)
    return why


def gen_from_gts(gts: float) -> int:
    """The PCIe generation of a transfer rate in GT/s."""
    for gen, rate in SPEED_GT.items():
        if abs(rate - gts) < 0.01:
            return gen
    raise ValueError(f"unknown PCIe link speed {gts} GT/s")


def parse_link_speed(text: str) -> int | None:
    """Parse a sysfs ``*_link_speed`` string to a generation; ``None`` for ``Unknown``.

    Accepts the kernel >= 5.7 form (``"16.0 GT/s PCIe"``) and the older one (``"8 GT/s"``,
    NVIDIA/nccl ``src/graph/topo.cc`` kvDictPciGen).

    Example:
        >>> parse_link_speed("32.0 GT/s PCIe")
        5
    """
    s = text.strip()
    if s.lower().startswith("unknown"):
        return None
    m = re.match(r"^(\d+(?:\.\d+)?)\s*GT/s(?:\s+PCIe)?$", s)
    if not m:
        raise ValueError(f"not a PCIe link speed: {text!r}")
    return gen_from_gts(float(m.group(1)))


def link_bandwidth_gbps(gen: int, width: int) -> float:
    """Theoretical one-direction bandwidth of a link in GB/s (1e9 bytes)."""
    return LANE_GBPS[gen] * width


def fmt_link(gen: int | None, width: int | None) -> str:
    """``Gen4 x16 (16.0 GT/s)``, with ``?`` for what is unknown."""
    g = f"Gen{gen}" if gen else "Gen?"
    w = f"x{width}" if width else "x?"
    rate = f" ({SPEED_GT[gen]:.1f} GT/s)" if gen in SPEED_GT else ""
    return f"{g} {w}{rate}"


# -- config space -------------------------------------------------------------------------------


class PortType(IntEnum):
    """PCI Express Capabilities register, Device/Port Type (bits 7:4)."""

    ENDPOINT = 0x0
    LEGACY_ENDPOINT = 0x1
    ROOT_PORT = 0x4
    UPSTREAM = 0x5
    DOWNSTREAM = 0x6
    PCIE_TO_PCI = 0x7
    PCI_TO_PCIE = 0x8
    RC_INTEGRATED = 0x9
    RC_EVENT_COLLECTOR = 0xA

    @property
    def label(self) -> str:
        return _PORT_LABEL[self]


_PORT_LABEL = {
    PortType.ENDPOINT: "endpoint",
    PortType.LEGACY_ENDPOINT: "legacy endpoint",
    PortType.ROOT_PORT: "root port",
    PortType.UPSTREAM: "switch upstream port",
    PortType.DOWNSTREAM: "switch downstream port",
    PortType.PCIE_TO_PCI: "PCIe-to-PCI bridge",
    PortType.PCI_TO_PCIE: "PCI-to-PCIe bridge",
    PortType.RC_INTEGRATED: "root complex integrated endpoint",
    PortType.RC_EVENT_COLLECTOR: "root complex event collector",
}

CAP_ID_PCIE = 0x10
ECAP_ID_AER = 0x01
ECAP_ID_ACS = 0x0D

# ACS Control / Capability bits (PCIe Base Spec 7.7.8.2-3; pciutils PCI_ACS_*).
ACS_BITS = (
    (0x0001, "SrcValid", "Source Validation"),
    (0x0002, "TransBlk", "Translation Blocking"),
    (0x0004, "ReqRedir", "P2P Request Redirect"),
    (0x0008, "CmpltRedir", "P2P Completion Redirect"),
    (0x0010, "UpstreamFwd", "Upstream Forwarding"),
    (0x0020, "EgressCtrl", "P2P Egress Control"),
    (0x0040, "DirectTrans", "Direct Translated P2P"),
)
# Bits that send peer-to-peer traffic up to the root complex (or block it) instead of routing it
# inside the switch: what NCCL hangs and slow P2P come from (NVIDIA/nccl#2079, #304).
ACS_P2P_BLOCKING = 0x0004 | 0x0008 | 0x0010 | 0x0020


def decode_acs(value: int) -> str:
    """``SrcValid+ TransBlk- ReqRedir+ ...``, as lspci prints ACSCtl."""
    return " ".join(f"{short}{'+' if value & bit else '-'}" for bit, short, _ in ACS_BITS)


@dataclass(frozen=True)
class LinkRegs:
    """The link registers of a PCI Express capability, raw fields decoded."""

    cap_speed: int
    cap_width: int
    sta_speed: int
    sta_width: int
    target_speed: int | None  # LnkCtl2 bits 3:0; None on capability version 1
    hw_autonomous_speed_disable: bool
    training: bool
    dl_active: bool
    bw_mgmt_status: bool  # LBMS: retrained for reliability, or by software
    autonomous_bw_status: bool  # LABS: hardware changed speed/width on its own (power saving)
    slot: int | None  # Physical Slot Number from SltCap, when the port implements a slot


@dataclass(frozen=True)
class AcsRegs:
    offset: int
    cap: int
    ctrl: int


@dataclass(frozen=True)
class AerRegs:
    offset: int
    uncor_status: int
    cor_status: int


@dataclass(frozen=True)
class ConfigSpace:
    """Parsed PCI config space of one function.

    ``size`` tells what could be read: 64 bytes to non-root (header only), 256 for conventional
    config space, 4096 with extended capabilities.
    """

    bdf: str
    size: int
    header_type: int
    port_type: PortType | None
    pcie_version: int | None
    link: LinkRegs | None
    acs: AcsRegs | None
    aer: AerRegs | None
    secondary_bus: int | None
    subordinate_bus: int | None
    vendor_id: int = 0
    device_id: int = 0

    @property
    def has_extended(self) -> bool:
        return self.size >= 4096

    @property
    def has_capabilities(self) -> bool:
        return self.size > 64


def _u16(data: bytes, off: int) -> int:
    return int.from_bytes(data[off : off + 2], "little")


def _u32(data: bytes, off: int) -> int:
    return int.from_bytes(data[off : off + 4], "little")


def parse_config(bdf: str, data: bytes, pcie_port: bool = False) -> ConfigSpace:
    """Parse raw config space bytes as read from sysfs ``config``.

    Any byte string either parses or raises ``ConfigSpaceError`` naming the device and the flaw
    (a capability pointer out of range, a loop in the list). ``pcie_port``: other evidence (sysfs) shows
    the function is a PCI Express port even where its PCIe capability is not in ``data``, so its
    extended space is held to a port's rule (``_walk_ext_caps``).
    """
    size = len(data)
    if size < 64:
        raise ConfigSpaceError(bdf, f"config space is {size} bytes, shorter than the 64-byte header")
    if _u16(data, 0) in (0xFFFF, 0x0000):
        raise ConfigSpaceError(bdf, f"vendor ID {_u16(data, 0):#06x}: device absent or fallen off the bus")
    header_type = data[0x0E] & 0x7F
    secondary = subordinate = None
    if header_type == 1:
        secondary, subordinate = data[0x19], data[0x1A]

    port_type = version = None
    link = None
    if size > 64:
        pcie = _find_cap(bdf, data, CAP_ID_PCIE)  # none unless Status bit 4 (Capabilities List) is set
        if pcie is not None:
            if pcie + 0x14 > size:
                raise ConfigSpaceError(bdf, f"PCI Express capability at {pcie:#x} runs past config space")
            flags = _u16(data, pcie + 2)
            version = flags & 0xF
            try:
                port_type = PortType((flags >> 4) & 0xF)
            except ValueError:
                raise ConfigSpaceError(
                    bdf, f"unknown PCIe device/port type {(flags >> 4) & 0xF:#x}"
                ) from None
            link = _parse_link(data, pcie, version, port_type)

    acs = aer = None
    if size >= 4096:
        port = pcie_port or port_type in (PortType.ROOT_PORT, PortType.UPSTREAM, PortType.DOWNSTREAM)
        for cap_id, off in _walk_ext_caps(bdf, data, port):
            seen: AcsRegs | AerRegs | None = (
                acs if cap_id == ECAP_ID_ACS else aer if cap_id == ECAP_ID_AER else None
            )
            if seen is not None:
                # A function has at most one ACS and one AER capability (PCIe Base Spec 7.7.8, 7.8.4): a
                # second is no real config space, and which of the two the hardware obeys is unknown.
                name = "ACS" if cap_id == ECAP_ID_ACS else "AER"
                raise ConfigSpaceError(
                    bdf,
                    f"two {name} extended capabilities (at {seen.offset:#x} and {off:#x}): a function has one",
                )
            if cap_id == ECAP_ID_ACS:
                acs = AcsRegs(off, _u16(data, off + 4), _u16(data, off + 6))
            elif cap_id == ECAP_ID_AER:
                aer = AerRegs(off, _u32(data, off + 4), _u32(data, off + 0x10))
    return ConfigSpace(
        bdf,
        size,
        header_type,
        port_type,
        version,
        link,
        acs,
        aer,
        secondary,
        subordinate,
        _u16(data, 0),
        _u16(data, 2),
    )


def _find_cap(bdf: str, data: bytes, want: int) -> int | None:
    return next((off for cap_id, off in cap_list(bdf, data) if cap_id == want), None)


def cap_list(bdf: str, data: bytes) -> list[tuple[int, int]]:
    """The standard capabilities (ID, offset) from the pointer at 0x34 (PCI Local Bus Spec 6.7); ``[]`` when
    Status bit 4 (Capabilities List) is clear. Raises ``ConfigSpaceError`` on a pointer outside config
    space or a loop."""
    out: list[tuple[int, int]] = []
    if len(data) <= 64 or not data[0x06] & 0x10:
        return out
    ptr = data[0x34] & 0xFC
    seen: set[int] = set()
    while ptr:
        if ptr < 0x40 or ptr + 2 > min(len(data), 256):
            raise ConfigSpaceError(bdf, f"capability pointer {ptr:#x} outside config space")
        if ptr in seen:
            raise ConfigSpaceError(bdf, f"capability list loops at {ptr:#x}")
        seen.add(ptr)
        out.append((data[ptr], ptr))
        ptr = data[ptr + 1] & 0xFC
    return out


def no_pcie_cap_why(bdf: str, data: bytes) -> str:
    """Why config space ``data`` (over 64 bytes) shows no PCI Express capability (ID 0x10): the Status
    register's Capabilities List bit clear, a capabilities pointer of 0, or the list as walked."""
    if not data[0x06] & 0x10:
        return f"Status register (0x06) = {_u16(data, 6):#06x}: bit 4 (Capabilities List) is clear"
    chain = cap_list(bdf, data)
    if not chain:
        return "the capabilities pointer at 0x34 is 0"
    walked = " -> ".join(f"{off:#x} (ID {cap_id:#04x})" for cap_id, off in chain)
    return f"the capability list {walked} ends without a PCI Express capability (ID {CAP_ID_PCIE:#04x})"


def _walk_ext_caps(bdf: str, data: bytes, port: bool) -> list[tuple[int, int]]:
    """Extended capabilities (ID, offset) from 0x100 (PCIe Base Spec 7.6.3, Extended Capabilities in
    Configuration Space).

    A device without extended capabilities shows a header of all zeros at 0x100 (same section); a PCIe
    port (``port``) always has some (AER, ACS...), so zeros there mean the extended space was not really
    read. ``0xFFFFFFFF`` is what a failed configuration read returns (Linux ``include/linux/pci.h``
    ``PCI_ERROR_RESPONSE``: "~0", what a device that does not respond reads as). A header of ID 0 with a next pointer is a hidden capability (seen in
    VMs): skip it and follow the pointer, as Linux's ``pci_find_next_ext_capability`` does.
    """
    out: list[tuple[int, int]] = []
    off = 0x100
    seen: set[int] = set()
    while off:
        if off < 0x100 or off + 8 > len(data):
            raise ConfigSpaceError(bdf, f"extended capability pointer {off:#x} outside config space")
        if off in seen:
            raise ConfigSpaceError(bdf, f"extended capability list loops at {off:#x}")
        seen.add(off)
        header = _u32(data, off)
        if header == 0xFFFFFFFF:
            raise ConfigSpaceError(
                bdf,
                f"extended capability header at {off:#x} reads 0xffffffff, the value of a failed config read: "
                "the extended capabilities (ACS, AER) cannot be known",
            )
        if header == 0:
            if off == 0x100 and port:
                raise ConfigSpaceError(
                    bdf,
                    "extended capability header at 0x100 reads 0x00000000 on a PCI Express port with 4096 bytes "
                    "of config space: its extended capabilities (ACS, AER) were not read",
                )
            if off != 0x100:
                raise ConfigSpaceError(
                    bdf, f"extended capability list points to {off:#x}, whose header reads 0x00000000"
                )
            break
        out.append((header & 0xFFFF, off))
        off = (header >> 20) & 0xFFC
    return out


def _parse_link(data: bytes, pcie: int, version: int, port_type: PortType) -> LinkRegs:
    lnkcap = _u32(data, pcie + 0x0C)
    lnksta = _u16(data, pcie + 0x12)
    target = None
    hasd = False
    if version >= 2 and pcie + 0x32 <= len(data):
        lnkctl2 = _u16(data, pcie + 0x30)
        target = lnkctl2 & 0xF or None
        hasd = bool(lnkctl2 & 0x20)
    slot = None
    flags = _u16(data, pcie + 2)
    if flags & 0x0100 and port_type in (PortType.ROOT_PORT, PortType.DOWNSTREAM):  # Slot Implemented
        slot = _u32(data, pcie + 0x14) >> 19
    return LinkRegs(
        cap_speed=lnkcap & 0xF,
        cap_width=(lnkcap >> 4) & 0x3F,
        sta_speed=lnksta & 0xF,
        sta_width=(lnksta >> 4) & 0x3F,
        target_speed=target,
        hw_autonomous_speed_disable=hasd,
        training=bool(lnksta & 0x0800),
        dl_active=bool(lnksta & 0x2000),
        bw_mgmt_status=bool(lnksta & 0x4000),
        autonomous_bw_status=bool(lnksta & 0x8000),
        slot=slot,
    )


# -- names --------------------------------------------------------------------------------------

VENDORS = {
    0x10DE: "NVIDIA",
    0x1022: "AMD",
    0x8086: "Intel",
    0x11F8: "Microchip",
    0x10B5: "PLX/Broadcom",
    0x1000: "Broadcom/LSI",
    0x1AF4: "Red Hat virtio",
    0x15B3: "Mellanox",
    0x1002: "AMD/ATI",
    0x1A03: "ASPEED",
    0x102B: "Matrox",
    0x1414: "Microsoft",
}

# Device names for the parts the shipped snapshots use (a subset of pci.ids).
DEVICES = {
    (0x10DE, 0x2204): "GeForce RTX 3090",
    (0x10DE, 0x2206): "GeForce RTX 3080",
    (0x10DE, 0x2484): "GeForce RTX 3070",
    (0x10DE, 0x2503): "GeForce RTX 3060",
    (0x10DE, 0x2B85): "GeForce RTX 5090",
    (0x10DE, 0x1AEF): "GA102 High Definition Audio Controller",
    (0x10DE, 0x2BB1): "RTX PRO 6000 Blackwell Workstation Edition",
    (0x10DE, 0x22E8): "GB202 High Definition Audio Controller",
    (0x10DE, 0x2330): "H100 SXM5 80GB",
    (0x10DE, 0x2335): "H200",
    (0x1022, 0x1480): "Starship/Matisse Root Complex",
    (0x1022, 0x1482): "Starship/Matisse PCIe Dummy Host Bridge",
    (0x1022, 0x1483): "Starship/Matisse GPP Bridge",
    (0x11F8, 0x4028): "PM40028 Switchtec PFX 28xG4 Fanout PCIe Switch",
    (0x11F8, 0x4036): "PM40036 Switchtec PFX 36xG4 Fanout PCIe Switch",
    (0x1000, 0xC030): "PEX89000 PCIe Gen5 Switch",
    (0x8086, 0x0D57): "Host bridge",
    (0x1A03, 0x1150): "AST1150 PCI-to-PCI Bridge",
    (0x1A03, 0x2000): "ASPEED Graphics Family",
    (0x102B, 0x0522): "MGA G200e [Pilot] ServerEngines (SEP1)",
    (0x102B, 0x0534): "G200eR2",
    (0x102B, 0x0536): "Integrated Matrox G200eW3 Graphics Controller",
}

# Words of a GPU name that hold a digit but are no model: memory size, memory type, form factor, PCIe.
_NOT_MODEL = re.compile(r"\d+[GMT]B|HBM\d*E?|G?DDR\d*X?|SXM\d*|PCIE|GEN\d+|NVL\d*", re.I)


def model_number(name: str) -> str | None:
    """The model in a GPU name, upper case: its first word holding a digit that is no memory size, memory
    type or form factor. ``"H100"`` for NVML's ``"NVIDIA H100 80GB HBM3"`` and pci.ids' ``"H100 SXM5 80GB"``;
    ``"6000"`` for ``"RTX PRO 6000 Blackwell Workstation Edition"``; ``"A100"`` for ``"NVIDIA A100-SXM4-80GB"``.
    None where no word holds one (``"NVIDIA TITAN V"``)."""
    for word in re.split(r"[\s\-\[\]/(),]+", name):
        if any(c.isdigit() for c in word) and not _NOT_MODEL.fullmatch(word):
            return word.upper()
    return None


def other_model(vendor: int, device: int, name: str) -> str | None:
    """The model a GPU's recorded ``name`` (NVML's or CUDA's) names where the PCI id ``vendor:device``
    (sysfs, config space) says another: the known name (``DEVICES``) of that model, else ``"model X"``.

    None unless both are known and clearly differ: the id is in ``DEVICES`` and both names carry a model
    number (``model_number``) and those differ. NVML and pci.ids spell one model differently
    (``"NVIDIA H100 80GB HBM3"``, ``"H100 SXM5 80GB"``), so names are compared by model number only; an
    unknown id, or a name with no model number, is no contradiction."""
    ours = DEVICES.get((vendor, device))
    mine, theirs = model_number(ours) if ours else None, model_number(name)
    if mine is None or theirs is None or mine == theirs:
        return None
    known = [m for ids, m in DEVICES.items() if ids[0] == vendor and model_number(m) == theirs]
    return max(known, key=len) if known else f"model {theirs}"


CLASS_DISPLAY_VGA = 0x0300
CLASS_DISPLAY_3D = 0x0302
CLASS_BRIDGE_HOST = 0x0600
CLASS_BRIDGE_PCI = 0x0604
CLASS_DISPLAY_OTHER = 0x0380
CLASS_PROCESSING_ACCEL = 0x1200

# What the suites count as a GPU: vendor -> (what it is, PCI classes). NVIDIA GPUs are VGA (0x0300) or 3D
# controllers (0x0302, the data-centre parts); AMD Radeon is VGA, AMD Instinct is "display controller" (0x0380,
# MI100/MI200) or "processing accelerator" (0x1200, MI300). Class codes: PCI Code and ID Assignment
# Specification, base class 03h and 12h; pci.ids (https://pci-ids.ucw.cz) lists the parts.
ACCELERATORS = {
    0x10DE: ("NVIDIA GPU", (CLASS_DISPLAY_VGA, CLASS_DISPLAY_3D)),
    0x1002: ("AMD Instinct/Radeon GPU", (CLASS_DISPLAY_VGA, CLASS_DISPLAY_OTHER, CLASS_PROCESSING_ACCEL)),
    # WSL2 shows the host's GPU as Microsoft's paravirtual 3D controller (1414:008e "Basic Render Driver",
    # driver dxgkrnl); Hyper-V's synthetic VGA (1414:5353, class 0x0300) is not a GPU.
    0x1414: ("WSL2 paravirtual GPU", (CLASS_DISPLAY_3D,)),
}

# Baseboard management controllers put a small VGA device (class 0x0300) on nearly every server: ASPEED
# AST2400/2500/2600 (1a03:2000, Linux driver ``ast``), Matrox G200e* on HPE iLO and Dell iDRAC (102b:05xx,
# driver ``mgag200``). They are the server's console, not accelerators. Any other display controller that
# is not an NVIDIA or AMD GPU is left out too, with its reason.
BMC_DISPLAY_VENDORS = {0x1A03: "ASPEED", 0x102B: "Matrox"}
BMC_DISPLAY_DRIVERS = {"ast": "ASPEED", "mgag200": "Matrox"}


def accelerator_kind(vendor: int, class16: int) -> str | None:
    """``"NVIDIA GPU"``/``"AMD Instinct/Radeon GPU"`` when (vendor, class) is an accelerator the suites judge, else None.

    ``class16`` is the base class and subclass (``0x0302``), the first two bytes of the sysfs ``class``.
    """
    kind = ACCELERATORS.get(vendor)
    return kind[0] if kind is not None and class16 in kind[1] else None


def left_out_reason(vendor: int, class16: int, driver: str | None) -> str | None:
    """Why a display controller or processing accelerator is not counted as a GPU; None if it is one."""
    if accelerator_kind(vendor, class16) is not None:
        return None
    bound = f"driver {driver}" if driver else "no driver bound"
    bmc = (
        BMC_DISPLAY_VENDORS.get(vendor) if class16 == CLASS_DISPLAY_VGA else None
    ) or BMC_DISPLAY_DRIVERS.get(driver or "")
    if bmc:
        return f"{bmc} BMC display controller (class {class16:#06x}, {bound}): the server's console, not an accelerator"
    if vendor in ACCELERATORS:
        return f"class {class16:#06x} ({bound}) is not one of this vendor's GPU classes"
    name = VENDORS.get(vendor, f"vendor {vendor:#06x}")
    what = "processing accelerator" if class16 >> 8 == 0x12 else "display controller"
    return f"{name} {what} (class {class16:#06x}, {bound}): only NVIDIA and AMD accelerators are counted and judged"
