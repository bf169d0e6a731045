"""Write a snapshot directory from pasted command output (``rigcheck import-lspci``).

What the text shows becomes sysfs attributes and config space bytes (through ``testing.build_config``,
the same writer the modelled snapshots use); what it does not show is left out, so the checks read it
as unreadable:

* link speed/width attributes only from a LnkSta/LnkCap line;
* the PCI Express capability in config space only when the port type, LnkCap, LnkSta with its
  flags and LnkCtl2 are all shown (else a slow GPU link cannot be told from an idle downshift);
* 4096 bytes of config space (so an ACS check can pass for "no ACS capability") only when the
  function's whole extended capability list is shown and, with ACS, its ACSCtl; otherwise 256 bytes
  with a PCIe capability or 64 without, which the ACS check reads as unreadable;
* ``proc/cmdline`` only from ``--cmdline``; IOMMU groups only when the text shows ``IOMMU group``
  lines and the command line says their type (``iommu=pt``: identity); anything else is unknown;
* a function whose parent bridge is not in the text hangs below a placeholder bridge in domain
  ``ffff`` with no config space, so every check through it is unreadable.

The directory is written next to ``out`` under a temporary name and renamed into place at the end;
``out`` must not exist or be an empty directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import ConfigSpaceError
from ..pcie import ECAP_ID_ACS, PortType, link_above_capability, parse_config
from ..snapshot import MANIFEST
from ..testing import SPEED_TEXT, Node, build_config, dump_toml
from .lspci import (
    UNKNOWN_PARENT,
    WIDTHS,
    LspciDevice,
    LspciText,
    PasteError,
    bus_range,
    check_text,
    parse_lspci,
)
from .pciids import PciIds
from .smi import parse_smi_q
from .topo import parse_topo

PLACEHOLDER_DOMAIN = "ffff"


@dataclass
class Inputs:
    """The texts given on the command line, with where each came from."""

    lspci: tuple[str, bytes]
    cmdline: tuple[str, bytes] | None = None
    smi_q: tuple[str, bytes] | None = None
    topo: tuple[str, bytes] | None = None


@dataclass
class Built:
    out: Path
    devices: int
    gpus: int
    unknown: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # how the paste was read (repeated blocks folded)


def import_lspci(inputs: Inputs, out: Path, *, name: str | None = None, ids: PciIds | None = None) -> Built:
    """Parse the inputs and write the snapshot at ``out``; ``PasteError`` on unusable input."""
    out = Path(out)
    if out.is_symlink() or (out.exists() and (not out.is_dir() or any(out.iterdir()))):
        raise PasteError(f"{out} exists and is not an empty directory; choose a new path")
    ids = ids or PciIds()
    text = check_text(inputs.lspci[1], inputs.lspci[0])
    parsed = parse_lspci(text, ids)
    unknown: list[str] = []
    _merge_tree(parsed, ids, unknown)
    if not parsed.devices:
        raise PasteError(
            f"{inputs.lspci[0]}: no PCI device line (BB:DD.F class: name) found: not lspci output, or a grep "
            "that dropped the device lines (keep them: grep -E '^[0-9a-f]|LnkSta|ACSCtl')"
        )
    for dev in parsed.devices.values():
        _apply_dump(dev)
        unknown += [f"{dev.bdf}: {n}" for n in dev.notes]
    _check_links(parsed)
    cmdline = None
    if inputs.cmdline is not None:
        cmdline = check_text(inputs.cmdline[1], inputs.cmdline[0]).strip()
        if "\n" in cmdline or len(cmdline) > 4096:
            raise PasteError(f"{inputs.cmdline[0]}: not one kernel command line (cat /proc/cmdline)")
    smi = None
    if inputs.smi_q is not None:
        smi = parse_smi_q(check_text(inputs.smi_q[1], inputs.smi_q[0]), inputs.smi_q[0])
    topo = None
    if inputs.topo is not None:
        topo = parse_topo(check_text(inputs.topo[1], inputs.topo[0]), inputs.topo[0])

    if topo is not None:
        _numa_from_topo(parsed, smi, topo, unknown)
    parent = out.absolute().parent
    if not parent.is_dir():
        raise PasteError(
            f"{parent}: no such directory (OUT's parent must exist: nothing is made outside OUT)"
        )
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.importing-", dir=parent))
    try:
        built = _write(tmp, parsed, cmdline, smi, topo, unknown)
        manifest = _manifest(inputs, name or out.name, parsed, ids, unknown, built)
        (tmp / MANIFEST).write_text(dump_toml(manifest), encoding="utf-8")
        tmp.chmod(0o755)  # mkdtemp makes it private; a snapshot is meant to be shared
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Built(out, len(parsed.devices), built["gpus"], unknown, parsed.notes)


# -- merging the forms -------------------------------------------------------------------------


def _merge_tree(parsed: LspciText, ids: PciIds, unknown: list[str]) -> None:
    for bdf, node in parsed.tree.items():
        dev = parsed.devices.get(bdf)
        if dev is None:
            dev = parsed.devices[bdf] = LspciDevice(bdf, node.name or "", in_tree_only=True, closed=False)
            if node.secondary is not None:
                dev.class_code = 0x060400
            if node.name:
                nn = re.search(r"\[(?P<v>[0-9a-f]{4}):(?P<d>[0-9a-f]{4})\]", node.name)  # lspci -tvnn
                found = ids.lookup_name(node.name)
                if nn:
                    found = (int(nn["v"], 16), int(nn["d"], 16), "text")
                if found:
                    dev.vendor, dev.device, _ = found
                    dev.ids_from = "tree name (inferred)"
                if dev.class_code is None and found and _looks_like_gpu(found[0], node.name):
                    dev.class_code = 0x030000
                    dev.notes.append(f"class inferred as a GPU from its name in the tree: {node.name!r}")
                elif dev.class_code is None and found:
                    dev.class_code = CLASS_NOT_GPU
                    dev.notes.append(f"class not shown; by its name in the tree not a GPU: {node.name!r}")
            if dev.class_code is None:
                dev.class_code = 0xFF0000
                dev.notes.append("only in the -t tree, class unknown")
            if dev.vendor is None:
                dev.vendor, dev.device = 0xFFFE, 0
                dev.notes.append("only in the -t tree, vendor/device IDs unknown")
        elif node.name and dev.ids_from == "text" and dev.vendor is not None:
            shown = re.findall(r"\[([0-9a-f]{4}):([0-9a-f]{4})\]", node.name)  # lspci -tvnn
            ids_text = f"{dev.vendor:04x}:{dev.device or 0:04x}"
            if shown and ":".join(shown[-1]) != ids_text:
                raise PasteError(
                    f"{bdf}: the -t tree names it {':'.join(shown[-1])} but its block says {ids_text}: "
                    "the tree and the blocks are from two runs or two machines; paste one machine's output"
                )
        dev.tree_parent = node.parent
        if node.secondary is not None and dev.secondary is not None:
            tree_buses = (node.secondary, node.subordinate)
            if tree_buses != (dev.secondary, dev.subordinate):
                raise PasteError(
                    f"{bdf}: the -t tree puts buses {bus_range(*tree_buses)} below it but its block says "
                    f"{bus_range(dev.secondary, dev.subordinate)} (Bus: secondary={dev.secondary:02x}, "
                    f"subordinate={(dev.subordinate or 0):02x}): the tree and the blocks are from two runs "
                    "or two machines; paste one machine's output"
                )
        if node.secondary is not None and dev.secondary is None:
            dev.secondary, dev.subordinate = node.secondary, node.subordinate


def _check_links(parsed: LspciText) -> None:
    """A link never trains wider or faster than its own LnkCap allows (PCIe Base Spec 7.5.3.6 Maximum
    Link Width/Max Link Speed, 7.5.3.8 Negotiated Link Width/Current Link Speed): such a block is
    edited or mixes two devices' lines; ``PasteError``. Speed is compared only on an up link (LnkSta's
    speed is undefined while the link is down). A width PCIe does not define (``x64``) is refused
    too, in LnkCap or LnkSta: taken as unknown it would leave a check judging half a link."""
    for dev in parsed.devices.values():
        cap_w, sta_w = (dev.lnkcap or (None, None))[1], (dev.lnksta or (None, None))[1]
        what = link_above_capability(dev.lnkcap or (None, None), dev.lnksta or (None, None)) or ""
        if what.startswith("LnkSta width") and sta_w not in WIDTHS:
            what += f" (and x{sta_w} is no PCIe link width)"
        for key, width in (("LnkCap", cap_w), ("LnkSta", sta_w)):
            if not what and width is not None and width not in WIDTHS:
                shown = dev.shown.get(key, "?")
                raise PasteError(
                    f"{dev.bdf}: {key} width x{width} is no PCIe link width ({key} {shown!r}; a link is x1, "
                    "x2, x4, x8, x12, x16 or x32: PCIe Base Spec 7.5.3.6, 7.5.3.8): the paste is edited"
                )
        if what:
            raise PasteError(
                f"{dev.bdf}: {what} (LnkCap {dev.shown.get('LnkCap', '?')!r}, LnkSta "
                f"{dev.shown.get('LnkSta', '?')!r}): a link cannot exceed its capability (PCIe Base Spec "
                "7.5.3.6, 7.5.3.8); the paste is edited or mixes two devices' lines"
            )


CLASS_NOT_GPU = 0xFF0001  # "unassigned" class, marked: the tree's name says it is no GPU


def _looks_like_gpu(vendor: int, name: str) -> bool:
    """Whether a -tv name is a GPU's: NVIDIA and AMD/ATI functions other than their audio/USB/bridges,
    Intel's discrete and integrated graphics by their marketing and code names."""
    low = name.lower()
    if vendor == 0x8086:
        words = ("graphics", "arc ", "[arc", "battlemage", "alchemist", "dg1", "dg2", "iris", "uhd")
        return any(w in low for w in words)
    if vendor not in (0x10DE, 0x1002):
        return False
    return not any(w in low for w in ("audio", "usb", "ucsi", "bridge", "switch", "nvswitch", "serial"))


def _apply_dump(dev: LspciDevice) -> None:
    """Take identity from a -xxx dump when the text lacks it; cross-check the text against it."""
    data = dev.config_bytes
    if dev.hexdump and data is None:
        dev.notes.append("hex dump incomplete (not 64, 256 or 4096 bytes in order): ignored")
        return
    if data is None:
        return
    try:
        cfg = parse_config(dev.bdf, data)
    except ConfigSpaceError as exc:
        raise PasteError(f"hex dump of {dev.bdf}: {exc.reason if hasattr(exc, 'reason') else exc}") from None
    ids = (cfg.vendor_id, cfg.device_id)
    if dev.ids_from == "text" and dev.vendor is not None and (dev.vendor, dev.device) != ids:
        raise PasteError(
            f"{dev.bdf}: the text says {dev.vendor:04x}:{dev.device:04x}, its hex dump {ids[0]:04x}:{ids[1]:04x}: "
            "the dump is not this device's"
        )
    dev.vendor, dev.device, dev.ids_from = ids[0], ids[1], "hex dump"
    dev.class_code = int.from_bytes(data[0x09:0x0C], "little")
    if cfg.link and dev.lnksta and dev.lnksta != (cfg.link.sta_speed or None, cfg.link.sta_width):
        dev.notes.append(
            f"LnkSta in the text {dev.lnksta} differs from the hex dump's "
            f"{(cfg.link.sta_speed, cfg.link.sta_width)}: the lesser is judged"
        )
    if cfg.acs and dev.acs_ctrl is not None and cfg.acs.ctrl != dev.acs_ctrl:
        dev.notes.append(
            f"ACSCtl in the text {dev.acs_ctrl:#06x} differs from the hex dump's {cfg.acs.ctrl:#06x}"
        )
        dev.acs_ctrl = None  # contradictory: unreadable
    if cfg.secondary_bus is not None and dev.secondary is None:
        dev.secondary, dev.subordinate = cfg.secondary_bus, cfg.subordinate_bus
    if cfg.port_type is not None and dev.port_type is None:
        dev.port_type = cfg.port_type


# -- writing -------------------------------------------------------------------------------------


def _bus(bdf: str) -> int:
    return int(bdf.split(":")[1], 16)


def _dom(bdf: str) -> str:
    return bdf.split(":")[0]


def _parents(parsed: LspciText, unknown: list[str]) -> tuple[dict[str, str | None], dict[str, str]]:
    """Parent BDF of every function (None: on a root bus), and placeholder bridges for cut-off parents."""
    devs = parsed.devices
    # secondary=00 is a bridge the firmware/kernel left unconfigured: it forwards to no bus
    bridges = [d for d in devs.values() if d.secondary]
    roots = {
        (_dom(d.bdf), _bus(d.bdf))
        for d in devs.values()
        if d.class_code is not None and d.class_code >> 8 == 0x0600
    }
    roots |= {(_dom(b), _bus(b)) for b, n in parsed.tree.items() if n.parent is None}
    # In a whole listing (00:00.0 there, nothing elided, every bridge's bus numbers shown) a bus no bridge
    # reaches is a root bus: Intel Xeons put root ports on buses such as 16 or 30 with no host bridge
    # function there. In a partial one it may be a bus whose bridge was cut off.
    whole = not _gpu_count_unknown(parsed) and all(
        d.secondary is not None for d in devs.values() if d.is_bridge
    )
    if whole:
        covered = {
            (_dom(b.bdf), bus)
            for b in bridges
            for bus in range(
                b.secondary or 0, (b.subordinate if b.subordinate is not None else b.secondary or 0) + 1
            )
        }
        roots |= {(_dom(d.bdf), _bus(d.bdf)) for d in devs.values()} - covered
    parent: dict[str, str | None] = {}
    placeholders: dict[str, str] = {}  # (dom:bus) -> placeholder BDF
    for d in devs.values():
        key = (_dom(d.bdf), _bus(d.bdf))
        up = [b for b in bridges if b.bdf != d.bdf and _dom(b.bdf) == key[0] and b.secondary == key[1]]
        if len(up) > 1:
            a, b = sorted(x.bdf for x in up)[:2]
            raise PasteError(
                f"{d.bdf}: both {a} and {b} say secondary={key[1]:02x}, so it would have two parents "
                "(one bus hangs below one bridge): two machines' or edited output in one paste"
            )
        if d.bdf in parsed.tree and parsed.tree[d.bdf].parent != UNKNOWN_PARENT:
            parent[d.bdf] = parsed.tree[d.bdf].parent
            if parent[d.bdf] is None and up:
                raise PasteError(
                    f"{d.bdf}: the -t tree puts it on a root bus but {up[0].bdf} says secondary={key[1]:02x}: "
                    "the tree and the blocks are from two runs or two machines; paste one machine's output"
                )
            continue
        if d.bdf in parsed.tree:
            up = []  # the tree says the bridge above was elided
        if up:
            parent[d.bdf] = up[0].bdf
        elif (key[1] == 0 or key in roots) and d.bdf not in parsed.tree:
            parent[d.bdf] = None
        else:
            k = f"{key[0]}:{key[1]:02x}"
            if k not in placeholders:
                placeholders[k] = (
                    f"{PLACEHOLDER_DOMAIN}:00:{len(placeholders) // 8:02x}.{len(placeholders) % 8}"
                )
                unknown.append(
                    f"bus {k}: the bridge above it is not in the text (no bridge with secondary={key[1]:02x}); "
                    f"shown as placeholder {placeholders[k]}, everything through it unreadable"
                )
            parent[d.bdf] = placeholders[k]
    return parent, placeholders


def _write(
    root: Path,
    parsed: LspciText,
    cmdline: str | None,
    smi: dict[str, Any] | None,
    topo: dict[str, Any] | None,
    unknown: list[str],
) -> dict[str, Any]:
    parent, placeholders = _parents(parsed, unknown)
    chains: dict[str, str] = {}

    def chain(bdf: str) -> str:
        if bdf in chains:
            return chains[bdf]
        seen: set[str] = set()
        parts: list[str] = []
        cur: str | None = bdf
        while cur is not None:
            if cur in seen:
                raise PasteError(f"{bdf}: bridge bus numbers loop (secondary/subordinate inconsistent)")
            seen.add(cur)
            parts.append(cur)
            nxt = parent.get(cur)
            if nxt is None and cur.startswith(PLACEHOLDER_DOMAIN + ":"):
                break
            cur = nxt
        top = parts[-1]
        host = f"pci{_dom(top)}:{_bus(top):02x}"
        chains[bdf] = "/".join(["sys/devices", host, *reversed(parts)])
        return chains[bdf]

    (root / "sys/bus/pci/devices").mkdir(parents=True)
    for _k, pbdf in placeholders.items():
        d = root / chain(pbdf)
        d.mkdir(parents=True, exist_ok=True)
        for attr, val in (("vendor", "0xfffe"), ("device", "0x0000"), ("class", "0x060400")):
            (d / attr).write_text(val + "\n")
        _symlink(root / "sys/bus/pci/devices" / pbdf, d)
    _cross_check_link_ends(parsed, parent, unknown)
    groups_known = _iommu_types(parsed, cmdline, unknown)
    gpus = 0
    for dev in parsed.devices.values():
        d = root / chain(dev.bdf)
        d.mkdir(parents=True, exist_ok=True)
        if (
            dev.vendor == 0x1002
            and dev.class_code is not None
            and dev.class_code >> 16 == 0x03
            and parent.get(dev.bdf) in placeholders.values()
            and dev.lnksta is not None
        ):
            # AMD GPUs (RDNA) sit behind a switch of their own: the link their display function shows
            # is that switch's internal one; the slot's link is on the switch's upstream port, which
            # the text leaves out (LACT maintainers, github.com/ilya-zlobintsev/LACT/issues/334).
            dev.lnksta = dev.lnkcap = None
            unknown.append(
                f"{dev.bdf}: AMD GPU without its upstream ports in the text: the slot's link is not shown"
            )
        _write_function(d, dev, unknown)
        _symlink(root / "sys/bus/pci/devices" / dev.bdf, d)
        if dev.driver:
            _symlink(d / "driver", root / "sys/bus/pci/drivers" / dev.driver)
        if dev.physical_slot and not dev.physical_slot.startswith("-"):
            s = root / "sys/bus/pci/slots" / dev.physical_slot.replace("/", "_")
            s.mkdir(parents=True, exist_ok=True)
            (s / "address").write_text(dev.bdf.rsplit(".", 1)[0] + "\n")
        if groups_known and dev.iommu_group:
            g = root / "sys/kernel/iommu_groups" / dev.iommu_group
            (g / "devices").mkdir(parents=True, exist_ok=True)
            (g / "type").write_text(groups_known + "\n")
            _symlink(g / "devices" / dev.bdf, d)
            _symlink(d / "iommu_group", g)
        if dev.class_code is not None and dev.class_code >> 16 == 0x03:
            gpus += 1
    (root / "proc").mkdir()
    if cmdline is not None:
        (root / "proc/cmdline").write_text(cmdline + "\n")
    else:
        unknown.append("kernel command line: not given (--cmdline): IOMMU state unknown")
    if smi is not None or topo is not None:
        nvml = _nvml_json(parsed, smi, topo, unknown)
        (root / "nvml.json").write_text(json.dumps(nvml, indent=1, sort_keys=True) + "\n")
    else:
        unknown.append("NVML state: no nvidia-smi -q given: GPU power, ECC, clocks and NVLink unknown")
    return {"gpus": gpus, "placeholders": sorted(placeholders.values())}


def _gpu_bdfs_by_index(parsed: LspciText, smi: dict[str, Any] | None) -> dict[int, str] | None:
    """nvidia-smi's GPU index -> BDF: from -q when given, else PCI bus order (nvidia-smi's default order),
    which only holds when the paste lists every GPU."""
    if smi is not None:
        return {g["index"]: g["bdf"] for g in smi["gpus"]}
    gpus = sorted(d.bdf for d in parsed.devices.values() if d.class_code and d.class_code >> 16 == 0x03)
    return dict(enumerate(gpus))


def _numa_from_topo(
    parsed: LspciText, smi: dict[str, Any] | None, topo: dict[str, Any], unknown: list[str]
) -> None:
    numa = topo.get("numa") or {}
    index = _gpu_bdfs_by_index(parsed, smi)
    if not numa or index is None:
        return
    if smi is None and (len(index) != len(topo["matrix"]) or _gpu_count_unknown(parsed)):
        unknown.append(
            "topo -m NUMA affinity not used: the GPUs cannot be matched to its rows without nvidia-smi -q"
        )
        return
    for i, node in numa.items():
        dev = parsed.devices.get(index.get(i, ""))
        if dev is not None and dev.numa is None:
            dev.numa = node
            unknown.append(f"{dev.bdf}: NUMA node {node} from nvidia-smi topo -m (GPU{i})")


def _cross_check_link_ends(parsed: LspciText, parent: dict[str, str | None], unknown: list[str]) -> None:
    """Both ends of a link show one LnkSta; where the text shows two, the lesser of each is judged."""
    devs = parsed.devices
    for d in devs.values():
        up = devs.get(parent.get(d.bdf) or "")
        if up is None or up.port_type == PortType.UPSTREAM or d.lnksta is None or up.lnksta is None:
            continue
        if d.port_type == PortType.DOWNSTREAM:
            continue  # a switch's internal bus: no link between the upstream and downstream ports
        a, b = d.lnksta, up.lnksta
        if a != b:
            gens = [g for g in (a[0], b[0]) if g]
            widths = [w for w in (a[1], b[1]) if w is not None]
            d.lnksta = (min(gens) if gens else None, min(widths) if widths else None)
            unknown.append(
                f"{d.bdf}: LnkSta {a} but {up.bdf} above it shows {b} for the same link: the lesser is judged"
            )


def _iommu_types(parsed: LspciText, cmdline: str | None, unknown: list[str]) -> str | None:
    shown = any(d.iommu_group for d in parsed.devices.values())
    if not shown:
        return None
    args = (cmdline or "").split()
    if "iommu=pt" in args:
        return "identity"
    unknown.append(
        "IOMMU groups shown by lspci, but their type (translated or passthrough) is not: "
        + ("no --cmdline given" if cmdline is None else "the command line has no iommu=pt")
    )
    return None


def _write_function(d: Path, dev: LspciDevice, unknown: list[str]) -> None:
    vendor = dev.vendor if dev.vendor is not None else 0xFFFE
    device = dev.device if dev.device is not None else 0
    cls = dev.class_code if dev.class_code is not None else 0xFF0000
    if dev.vendor is None or dev.class_code is None:
        unknown.append(f"{dev.bdf}: vendor or class unknown (written as {vendor:04x}, class {cls:06x})")
    attrs = {"vendor": f"{vendor:#06x}", "device": f"{device:#06x}", "class": f"{cls:#08x}"}
    if dev.numa is not None:
        attrs["numa_node"] = str(dev.numa)
    if dev.lnksta is not None:
        g, w = dev.lnksta
        attrs["current_link_speed"] = SPEED_TEXT[g] if g else "Unknown"
        if w is not None:
            attrs["current_link_width"] = str(w)
    if dev.lnkcap is not None:
        g, w = dev.lnkcap
        attrs["max_link_speed"] = SPEED_TEXT[g] if g else "Unknown"
        if w is not None:
            attrs["max_link_width"] = str(w)
    if dev.regions and dev.regions_complete:
        # sysfs resource: one "start end flags" line per BAR 0-5, the ROM, then the bridge windows
        rows = [dev.regions.get(i, (0, 0, 0)) for i in range(13)]
        attrs["resource"] = "\n".join(f"{a:#018x} {b:#018x} {c:#018x}" for a, b, c in rows)
    for k, v in attrs.items():
        (d / k).write_text(v + "\n")
    dump = dev.config_bytes
    cfg = _config(dev, dump, vendor, device, cls)
    if cfg is not None:
        (d / "config").write_bytes(cfg)
    else:
        unknown.append(f"{dev.bdf}: no config space at all (only in the tree)")


def _link_regs_complete(dev: LspciDevice) -> bool:
    if dev.port_type is None or dev.lnkcap is None or dev.lnksta is None:
        return False
    if None in dev.lnkcap or None in dev.lnksta:
        return False
    if not {"BWMgmt", "ABWMgmt"} <= set(dev.lnksta_flags):
        return False
    return not ((dev.pcie_version or 1) >= 2 and (dev.lnkctl2_target is None or dev.hasd is None))


def _config(dev: LspciDevice, dump: bytes | None, vendor: int, device: int, cls: int) -> bytes | None:
    if dev.in_tree_only and dump is None:
        return None
    with_pcie = _link_regs_complete(dev)
    # ACSCtl shown: ACS is known even where the rest of the extended list is not (a grep kept only it)
    acs_known = dev.acs_offset is not None and dev.acs_ctrl is not None
    size = 4096 if dev.ext_known or acs_known else (256 if with_pcie else 64)
    acs = None
    if dev.acs_offset is not None and dev.acs_ctrl is not None:
        off = dev.acs_offset if dev.acs_offset >= 0x104 else 0x2A0
        acs = (off, dev.acs_cap if dev.acs_cap is not None else dev.acs_ctrl, dev.acs_ctrl)
    node = Node(
        dev.bdf,
        vendor,
        device,
        cls,
        None,
        "",
        # build_config writes extended capabilities only behind a PCIe capability: give it one, then
        # unlink the capability list below when the text does not show the PCIe registers
        dev.port_type if with_pcie else (PortType.ENDPOINT if size == 4096 else None),
        cap=dev.lnkcap if with_pcie else None,  # type: ignore[arg-type]
        link=dev.lnksta if with_pcie else None,  # type: ignore[arg-type]
        target=dev.lnkctl2_target,
        lbms=bool(dev.lnksta_flags.get("BWMgmt")),
        labs=bool(dev.lnksta_flags.get("ABWMgmt")),
        hasd=bool(dev.hasd),
        acs=acs,
        slot=None,
        config_size=size,
        secondary=dev.secondary or 0,
        subordinate=dev.subordinate or 0,
    )
    built = bytearray(build_config(node))
    if not with_pcie and size == 4096:
        # the extended capabilities are known but the PCIe capability is not: no capability list
        built[0x06] &= 0xEF
        built[0x34] = 0
    if size == 4096:
        # build_config always puts an AER capability (all status bits clear) at 0x100; the text's AER
        # registers are not carried over, so hide it (ID 0 keeps the pointer on to ACS, as Linux skips
        # such a header): no error status is claimed that the paste did not show. The version (bits
        # 19:16) stays, so the header is not all zeros, which on a PCIe port means "not read".
        hdr = int.from_bytes(built[0x100:0x104], "little")
        built[0x100:0x104] = (hdr & 0xFFFF0000).to_bytes(4, "little")
    if dump is None:
        return bytes(built)
    if len(dump) == 4096:
        return dump
    if len(dump) == 256:
        if size == 4096:
            built[:256] = dump  # the dump's first 256 bytes, the text's extended capabilities
            return bytes(built)
        return dump
    return dump if size == 64 else bytes(built)  # a 64-byte dump adds nothing to what the text shows


def _symlink(at: Path, target: Path) -> None:
    at.parent.mkdir(parents=True, exist_ok=True)
    if at.is_symlink() or at.exists():
        return
    at.symlink_to(os.path.relpath(target, at.parent))


# -- NVML ----------------------------------------------------------------------------------------


def _nvml_json(
    parsed: LspciText, smi: dict[str, Any] | None, topo: dict[str, Any] | None, unknown: list[str]
) -> dict[str, Any]:
    gpus: list[dict[str, Any]] = []
    if smi is not None:
        gpus = smi["gpus"]
    elif topo is not None:
        bdfs = sorted(d.bdf for d in parsed.devices.values() if d.class_code and d.class_code >> 16 == 0x03)
        gpus = [{"index": i, "bdf": b} for i, b in enumerate(bdfs)]
    if topo is not None:
        links = topo.get("nvlinks", {})
        for g in gpus:
            states = links.get(g["index"])
            if states is not None:
                g["nvlink_states"] = states
            else:
                g["nvlink_states"] = {
                    "unavailable": "nvidia-smi topo -m shows NV# per peer, not each link's state (no NVSwitch pattern)",
                    "code": "not_captured",
                }
    out: dict[str, Any] = {
        "format": 1,
        "origin": "rigcheck import-lspci (nvidia-smi -q / topo -m text)",
        "driver": (smi or {}).get("driver") or {"unavailable": "not in the text", "code": "not_captured"},
        "cuda": (smi or {}).get("cuda") or {"unavailable": "not in the text", "code": "not_captured"},
        "nvml": {"unavailable": "not in the text", "code": "not_captured"},
        "gpus": gpus,
    }
    if topo is not None:
        out["topo_matrix"] = topo.get("matrix", {})
    return out


def _gpu_count_unknown(parsed: LspciText) -> str:
    """Why the text cannot tell how many GPUs there are ("" when it can)."""
    why = []
    if not any(d.bdf.endswith(":00:00.0") for d in parsed.devices.values()):
        why.append("no 00:00.0 host bridge in it (a filtered or single-device listing)")
    if parsed.elided:
        why.append("parts of it are elided")
    unknown = sorted(
        d.bdf for d in parsed.devices.values() if d.class_code is None or d.class_code == 0xFF0000
    )
    if unknown:
        why.append(f"the class of {', '.join(unknown[:8])}{' ...' if len(unknown) > 8 else ''} is not shown")
    return "; ".join(why)


def _manifest(
    inputs: Inputs, name: str, parsed: LspciText, ids: PciIds, unknown: list[str], built: dict[str, Any]
) -> dict[str, Any]:
    def h(item: tuple[str, bytes] | None) -> str:
        return "" if item is None else "sha256:" + hashlib.sha256(item[1]).hexdigest()

    root = any(d.ext_caps and not d.access_denied for d in parsed.devices.values())
    partial = _gpu_count_unknown(parsed)
    shown = sorted({d.ids_from for d in parsed.devices.values()})
    return {
        "format": 1,
        "kind": "imported",
        "name": name,
        "description": f"imported from pasted lspci text ({len(parsed.devices)} functions, {built['gpus']} GPU(s))",
        "shows": "what the pasted text shows; everything listed under unknown is unreadable",
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "tool": f"pytest-rigcheck {__version__} rigcheck import-lspci",
        "root": root,
        "empty_dirs": [],
        "imported": {
            "lspci": inputs.lspci[0],
            "lspci_sha256": h(inputs.lspci),
            "cmdline": inputs.cmdline[0] if inputs.cmdline else "",
            "cmdline_sha256": h(inputs.cmdline),
            "nvidia_smi_q": inputs.smi_q[0] if inputs.smi_q else "",
            "nvidia_smi_q_sha256": h(inputs.smi_q),
            "topo": inputs.topo[0] if inputs.topo else "",
            "topo_sha256": h(inputs.topo),
            "ids_from": shown,
            "pci_ids": ids.where,
            "unknown": unknown,
            "notes": parsed.notes,
            "gpu_count_unknown": partial,
            "placeholders": built["placeholders"],
        },
    }


__all__ = ["Built", "Inputs", "import_lspci", "ECAP_ID_ACS", "PortType"]
