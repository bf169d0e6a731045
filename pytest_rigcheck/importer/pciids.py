"""Map the names ``lspci`` prints (without ``-nn``) back to vendor/device IDs and class codes.

The names come from the PCI ID database, pci.ids (https://pci-ids.ucw.cz/), which Debian ships in
package ``pci.ids`` (``/usr/share/misc/pci.ids``) and Fedora/Arch in ``hwdata``
(``/usr/share/hwdata/pci.ids``). Without it, a small built-in table of vendor and class names (the
same strings as pci.ids) still tells a GPU from a bridge; device IDs then stay unknown and the
manifest says so.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

SEARCH = (
    "/usr/share/misc/pci.ids",
    "/usr/share/hwdata/pci.ids",
    "/usr/share/pci.ids",
    "/usr/share/misc/pci.ids.gz",
    "/usr/share/hwdata/pci.ids.gz",
)

# Vendor names as pci.ids spells them (so as lspci prints them).
BUILTIN_VENDORS = {
    "NVIDIA Corporation": 0x10DE,
    "Advanced Micro Devices, Inc. [AMD/ATI]": 0x1002,
    "Advanced Micro Devices, Inc. [AMD]": 0x1022,
    "Intel Corporation": 0x8086,
    "PLX Technology, Inc.": 0x10B5,
    "Broadcom / LSI": 0x1000,
    "Mellanox Technologies": 0x15B3,
    "Microsemi / PMC / IDT": 0x11F8,
    "ASPEED Technology, Inc.": 0x1A03,
    "Samsung Electronics Co Ltd": 0x144D,
    "Red Hat, Inc.": 0x1AF4,
    "Huawei Technologies Co., Ltd.": 0x19E5,
    "Microsoft Corporation": 0x1414,
    "Broadcom Inc. and subsidiaries": 0x14E4,
    "Xilinx Corporation": 0x10EE,
    "Marvell Technology Group Ltd.": 0x1B4B,
    "Micron Technology Inc": 0x1344,
    "Habana Labs Ltd.": 0x1DA3,
}

# Subclass names (pci.ids "C" section, 2023-04 snapshot; names used by two classes left out) -> class << 8 | subclass.
BUILTIN_CLASSES = {
    "Non-VGA unclassified device": 0x0000,
    "VGA compatible unclassified device": 0x0001,
    "Image coprocessor": 0x0005,
    "SCSI storage controller": 0x0100,
    "IDE interface": 0x0101,
    "Floppy disk controller": 0x0102,
    "IPI bus controller": 0x0103,
    "RAID bus controller": 0x0104,
    "ATA controller": 0x0105,
    "SATA controller": 0x0106,
    "Serial Attached SCSI controller": 0x0107,
    "Non-Volatile memory controller": 0x0108,
    "Universal Flash Storage controller": 0x0109,
    "Mass storage controller": 0x0180,
    "Ethernet controller": 0x0200,
    "Token ring network controller": 0x0201,
    "FDDI network controller": 0x0202,
    "ATM network controller": 0x0203,
    "ISDN controller": 0x0204,
    "WorldFip controller": 0x0205,
    "PICMG controller": 0x0206,
    "Infiniband controller": 0x0207,
    "Fabric controller": 0x0208,
    "Network controller": 0x0280,
    "VGA compatible controller": 0x0300,
    "XGA compatible controller": 0x0301,
    "3D controller": 0x0302,
    "Display controller": 0x0380,
    "Multimedia video controller": 0x0400,
    "Multimedia audio controller": 0x0401,
    "Computer telephony device": 0x0402,
    "Audio device": 0x0403,
    "Multimedia controller": 0x0480,
    "RAM memory": 0x0500,
    "FLASH memory": 0x0501,
    "CXL": 0x0502,
    "Memory controller": 0x0580,
    "Host bridge": 0x0600,
    "ISA bridge": 0x0601,
    "EISA bridge": 0x0602,
    "MicroChannel bridge": 0x0603,
    "PCI bridge": 0x0604,
    "PCMCIA bridge": 0x0605,
    "NuBus bridge": 0x0606,
    "CardBus bridge": 0x0607,
    "RACEway bridge": 0x0608,
    "Semi-transparent PCI-to-PCI bridge": 0x0609,
    "InfiniBand to PCI host bridge": 0x060A,
    "Bridge": 0x0680,
    "Serial controller": 0x0700,
    "Parallel controller": 0x0701,
    "Multiport serial controller": 0x0702,
    "Modem": 0x0703,
    "GPIB controller": 0x0704,
    "Smard Card controller": 0x0705,
    "Communication controller": 0x0780,
    "PIC": 0x0800,
    "DMA controller": 0x0801,
    "Timer": 0x0802,
    "RTC": 0x0803,
    "PCI Hot-plug controller": 0x0804,
    "SD Host controller": 0x0805,
    "IOMMU": 0x0806,
    "System peripheral": 0x0880,
    "Timing Card": 0x0899,
    "Keyboard controller": 0x0900,
    "Digitizer Pen": 0x0901,
    "Mouse controller": 0x0902,
    "Scanner controller": 0x0903,
    "Gameport controller": 0x0904,
    "Input device controller": 0x0980,
    "Generic Docking Station": 0x0A00,
    "Docking Station": 0x0A80,
    "386": 0x0B00,
    "486": 0x0B01,
    "Pentium": 0x0B02,
    "Alpha": 0x0B10,
    "Power PC": 0x0B20,
    "MIPS": 0x0B30,
    "Co-processor": 0x0B40,
    "FireWire (IEEE 1394)": 0x0C00,
    "ACCESS Bus": 0x0C01,
    "SSA": 0x0C02,
    "USB controller": 0x0C03,
    "Fibre Channel": 0x0C04,
    "SMBus": 0x0C05,
    "InfiniBand": 0x0C06,
    "IPMI Interface": 0x0C07,
    "SERCOS interface": 0x0C08,
    "CANBUS": 0x0C09,
    "Serial bus controller": 0x0C80,
    "IRDA controller": 0x0D00,
    "Consumer IR controller": 0x0D01,
    "RF controller": 0x0D10,
    "Bluetooth": 0x0D11,
    "Broadband": 0x0D12,
    "802.1a controller": 0x0D20,
    "802.1b controller": 0x0D21,
    "Wireless controller": 0x0D80,
    "I2O": 0x0E00,
    "Satellite TV controller": 0x0F01,
    "Satellite audio communication controller": 0x0F02,
    "Satellite voice communication controller": 0x0F03,
    "Satellite data communication controller": 0x0F04,
    "Network and computing encryption device": 0x1000,
    "Entertainment encryption device": 0x1010,
    "Encryption controller": 0x1080,
    "DPIO module": 0x1100,
    "Performance counters": 0x1101,
    "Communication synchronizer": 0x1110,
    "Signal processing management": 0x1120,
    "Signal processing controller": 0x1180,
    "Processing accelerators": 0x1200,
    "SNIA Smart Data Accelerator Interface (SDXI) controller": 0x1201,
}


class PciIds:
    """The pci.ids database, or the built-in fallback when no copy is installed."""

    def __init__(self, path: str | None = None) -> None:
        self.vendors: dict[str, int] = dict(BUILTIN_VENDORS)
        self.devices: dict[int, dict[str, int | None]] = {}
        self.classes: dict[str, int | None] = dict(BUILTIN_CLASSES)
        self.path: str | None = None
        for p in [path] if path else [os.environ.get("RIGCHECK_PCI_IDS"), *SEARCH]:
            if p and Path(p).is_file():
                self._load(Path(p))
                self.path = p
                break

    @property
    def where(self) -> str:
        return f"pci.ids ({self.path})" if self.path else "the built-in name table (no pci.ids installed)"

    def _load(self, path: Path) -> None:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        vendor: int | None = None
        cls: int | None = None
        for line in raw.decode("utf-8", "replace").splitlines():
            if not line or line.startswith("#"):
                continue
            if line.startswith("C "):
                cls, vendor = int(line[2:4], 16), None
                continue
            if line.startswith("\t\t"):
                continue  # subsystems and prog-ifs
            if line.startswith("\t"):
                code, _, name = line[1:].partition("  ")
                try:
                    num = int(code, 16)
                except ValueError:
                    continue
                if cls is not None:
                    key = name.strip()
                    value = (cls << 8) | num
                    # a subclass name used by two classes (``Other``...) cannot be mapped back
                    self.classes[key] = value if self.classes.get(key, value) == value else None
                elif vendor is not None:
                    devs = self.devices.setdefault(vendor, {})
                    key = name.strip()
                    devs[key] = num if devs.get(key, num) == num else None
                continue
            code, _, name = line.partition("  ")
            try:
                vendor, cls = int(code, 16), None
            except ValueError:
                vendor = None
                continue
            self.vendors.setdefault(name.strip(), vendor)

    def lookup_name(self, name: str) -> tuple[int, int, str] | None:
        """``NVIDIA Corporation GA102 [GeForce RTX 3090]`` -> (0x10de, 0x2204, source) or ``None``.

        The device ID is 0 (and the source says ``vendor only``) when only the vendor is known.
        """
        best = None
        for vname, vid in self.vendors.items():
            if name.startswith(vname) and (best is None or len(vname) > len(best[0])):
                best = (vname, vid)
        if best is None:
            return None
        rest = name[len(best[0]) :].strip()
        if rest.startswith("Device "):
            word = rest.split()[1] if len(rest.split()) > 1 else ""
            if len(word) == 4 and all(c in "0123456789abcdefABCDEF" for c in word):
                return best[1], int(word, 16), "text"
        dev = self.devices.get(best[1], {}).get(rest)
        src = "pci.ids" if self.path else "builtin"
        if dev is None:
            return best[1], 0, f"{src} (vendor only)"
        return best[1], dev, src

    def class_code(self, name: str) -> int | None:
        """``VGA compatible controller`` -> 0x0300; ``None`` when unknown or ambiguous."""
        return self.classes.get(name)
