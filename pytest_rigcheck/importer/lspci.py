"""Parse what people paste of ``lspci``: ``-vvv`` (with or without ``-nn``, ``-D``), ``-t``/``-tv``, ``-xxx``/``-xxxx``.

Every field that the text does not show stays ``None`` (unknown), never a default: the snapshot built
from it then reads as unreadable where the text is silent. Field layouts follow pciutils ``ls-caps.c``
(``Express (v2) Root Port (Slot+)``, ``LnkSta:\\tSpeed 8GT/s (ok), Width x16 (ok)`` and the flags after
it, ``ACSCtl:\\tSrcValid+ ...``) and ``ls-tree.c`` for the tree; the link annotations ``(ok)``,
``(downgraded)`` and their absence (pciutils before 3.6.3, and since 3.8 only on upstream-facing
functions) are ignored: speeds and widths are compared with LnkCap by the checks, never taken from
an annotation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..pcie import ACS_BITS, PortType, gen_from_gts, normalize_bdf
from .pciids import PciIds

MAX_INPUT = 8 << 20  # a -vvvxxxx of a large server is ~2 MB; anything far above is not lspci output


class PasteError(ValueError):
    """Text that cannot be imported; the message is one line for the user."""


_HEADER = re.compile(
    r"^(?:(?P<dom>[0-9a-fA-F]{4,8}):)?(?P<bus>[0-9a-fA-F]{2}):(?P<dev>[0-9a-fA-F]{2})\.(?P<fn>[0-7])"
    r"\s+(?P<rest>\S.*)$"
)
# A line shaped like a device header whose numbers may be out of range ("00:03.9 PCI bridge: ..."), to
# name what is wrong with it instead of reading its lines as the block above's.
_HEADER_LIKE = re.compile(
    r"^(?:(?P<dom>[0-9a-fA-F]{4,8}):)?(?P<bus>[0-9a-fA-F]{2,3}):(?P<dev>[0-9a-fA-F]{2})\.(?P<fn>[0-9a-fA-F])"
    r"\s+(?P<rest>\S.*:.*)$"
)
_HEX_LINE = re.compile(r"^\s*(?P<off>[0-9a-f]{2,3}):(?P<bytes>(?:\s[0-9a-f]{2}){1,16})\s*$")
_FIELD = re.compile(r"^\s*(?P<key>[A-Za-z][A-Za-z0-9 _/.-]{0,40}?):(?:\s|$)(?P<val>.*)$")
_CAP = re.compile(r"^\s*Capabilities:\s*\[(?P<off>[0-9a-f]+)(?:\s+v(?P<ver>\d+))?\]\s*(?P<what>.*)$")
_ELISION = re.compile(r"^\s*(?:\.{3,}|…+|\[\.\.\.\]|<snip>|\[snip\]|\(\.\.\.\))\s*$", re.I)
_IDS = re.compile(r"\[(?P<v>[0-9a-f]{4}):(?P<d>[0-9a-f]{4})\]")
_SPEED = re.compile(r"Speed\s+(?P<s>[0-9.]+GT/s|unknown)", re.I)
_WIDTH = re.compile(r"Width\s+x(?P<w>\d{1,6})\b")
# PCIe link widths (PCIe Base Spec 7.5.3.6 Maximum Link Width, 7.5.3.8 Negotiated Link Width); x0 is a
# link that is down (LnkSta) or a register that reads 0 (an SR-IOV VF's LnkCap).
WIDTHS = (0, 1, 2, 4, 8, 12, 16, 32)
_FLAG = re.compile(r"(?<![A-Za-z])(?P<name>[A-Za-z][A-Za-z0-9]*)(?P<v>[+-])(?=[\s,]|$)")

_PORT_TYPES = (
    ("Root Complex Integrated Endpoint", PortType.RC_INTEGRATED),
    ("Root Complex Event Collector", PortType.RC_EVENT_COLLECTOR),
    ("Legacy Endpoint", PortType.LEGACY_ENDPOINT),
    ("Endpoint", PortType.ENDPOINT),
    ("Root Port", PortType.ROOT_PORT),
    ("Upstream Port", PortType.UPSTREAM),
    ("Downstream Port", PortType.DOWNSTREAM),
    ("PCI-Express to PCI/PCI-X Bridge", PortType.PCIE_TO_PCI),
    ("PCI/PCI-X to PCI-Express Bridge", PortType.PCI_TO_PCIE),
)


@dataclass
class LspciDevice:
    """One function as the text shows it; ``None`` means the text does not say."""

    bdf: str
    header: str
    vendor: int | None = None
    device: int | None = None
    class_code: int | None = None  # 24-bit: class, subclass, prog-if
    ids_from: str = "text"  # "text" (-nn), "pci.ids", "builtin", "tree name", "unknown"
    revision: int | None = None
    lines: int = 0
    port_type: PortType | None = None
    pcie_version: int | None = None
    slot_implemented: bool = False
    lnkcap: tuple[int | None, int | None] | None = None  # (gen, width); gen None = unknown speed
    lnksta: tuple[int | None, int | None] | None = None
    lnksta_flags: dict[str, bool] = field(default_factory=dict)
    lnkctl2_target: int | None = None
    lnkctl2_seen: bool = False
    hasd: bool | None = None
    acs_offset: int | None = None
    acs_cap: int | None = None
    acs_ctrl: int | None = None
    caps: list[tuple[int, str]] = field(default_factory=list)
    ext_caps: list[tuple[int, str]] = field(default_factory=list)
    access_denied: bool = False
    elided: bool = False
    closed: bool = False  # a later device header or the driver lines follow: the block is whole
    primary: int | None = None
    secondary: int | None = None
    subordinate: int | None = None
    driver: str | None = None
    numa: int | None = None
    iommu_group: str | None = None
    physical_slot: str | None = None
    hexdump: dict[int, int] = field(default_factory=dict)
    regions: dict[int, tuple[int, int, int]] = field(
        default_factory=dict
    )  # BAR/ROM index -> start, end, flags
    regions_complete: bool = False  # a later field shows the Region list was printed whole
    in_tree_only: bool = False
    tree_parent: str | None = None
    notes: list[str] = field(default_factory=list)
    shown: dict[str, str] = field(default_factory=dict)  # field -> its text as pasted, for messages

    @property
    def is_bridge(self) -> bool:
        return self.class_code is not None and self.class_code >> 8 == 0x0604

    @property
    def config_bytes(self) -> bytes | None:
        """The -xxx/-xxxx dump as bytes (64, 256 or 4096), or ``None`` without a whole dump."""
        if not self.hexdump:
            return None
        top = max(self.hexdump) + 1
        size = 64 if top <= 64 else 256 if top <= 256 else 4096
        if len(self.hexdump) != size:
            return None
        return bytes(self.hexdump[i] for i in range(size))

    @property
    def ext_known(self) -> bool:
        """Whether the text shows this function's whole extended capability list (ACS present or absent)."""
        if self.access_denied or self.elided or not self.closed or not self.ext_caps:
            return False
        return self.acs_offset is None or self.acs_ctrl is not None


@dataclass
class TreeNode:
    bdf: str
    parent: str | None
    secondary: int | None
    subordinate: int | None
    name: str | None


@dataclass
class LspciText:
    devices: dict[str, LspciDevice]
    tree: dict[str, TreeNode]
    has_domain: bool
    notes: list[str]
    elided: bool = False


def check_text(data: bytes, what: str) -> str:
    """Refuse what is not text from lspci/nvidia-smi: binary, huge. Returns the decoded text."""
    if len(data) > MAX_INPUT:
        raise PasteError(f"{what}: {len(data)} bytes, more than {MAX_INPUT >> 20} MiB: not command output")
    if b"\x00" in data:
        raise PasteError(f"{what}: holds NUL bytes: binary, not command output")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    bad = sum(1 for ch in text if ord(ch) < 32 and ch not in "\t\n\r\f")
    if bad > len(text) // 100 + 2:
        raise PasteError(f"{what}: {bad} control characters: binary, not command output")
    return text.replace("\r\n", "\n").replace("\r", "\n").expandtabs(8)


def _gen(text: str) -> int | None:
    if text.lower() == "unknown":
        return None
    try:
        return gen_from_gts(float(text.lower().replace("gt/s", "")))
    except ValueError:
        return None


def _acs_bits(text: str) -> int | None:
    flags = {m["name"]: m["v"] == "+" for m in _FLAG.finditer(text)}
    if not all(short in flags for _, short, _ in ACS_BITS[:5]):
        return None  # a line cut short: do not guess the missing bits
    return sum(bit for bit, short, _ in ACS_BITS if flags.get(short))


def parse_lspci(text: str, ids: PciIds) -> LspciText:
    """Parse lspci output of any of the forms above into devices and (when given) the -t tree.

    A function may be shown in several blocks (``lspci`` then ``lspci -vvv``, a ``-s`` run after the
    full listing, a paste duplicated by accident): blocks with the same lines are read once (noted);
    others are merged field by field, and ``PasteError`` names the function and the first field that
    two blocks show differently (see ``merge_block``).
    """
    text = _dedent_paste(text)
    notes: list[str] = []
    tree_lines: list[str] = []
    blocks: list[tuple[LspciDevice, list[str]]] = []
    cur: LspciDevice | None = None
    cur_lines: list[str] = []
    last_key: str | None = None
    flags: _FlagScope | None = None  # the field whose +/- flags are being read, and those seen
    has_domain = False
    elided = False
    for lineno, raw in enumerate(text.split("\n"), 1):
        line = raw.rstrip()
        if not line.strip():
            continue
        if _ELISION.match(line) or "…" in line:
            elided = True
        if _is_tree_line(line):
            tree_lines.append(line)
            cur = None
            continue
        _check_address(line, lineno)
        m = _HEADER.match(line)
        if m:
            if cur is not None:
                cur.closed = True
            has_domain = has_domain or bool(m["dom"])
            try:
                bdf = normalize_bdf(line.split()[0])
            except ValueError as exc:
                raise PasteError(f"line {lineno}: {exc}: not lspci output") from None
            cur = LspciDevice(bdf, m["rest"])
            _identify(cur, m["rest"], ids)
            cur_lines = [" ".join(line.split()[1:])]
            blocks.append((cur, cur_lines))
            last_key, flags = None, None
            continue
        if cur is None:
            continue  # a prompt, a comment, or a grep fragment line with no device header above it
        cur.lines += 1
        if line[0].isspace() or _HEX_LINE.match(line):  # not a prompt or comment between two pastes
            cur_lines.append(" ".join(line.split()))
        h = _HEX_LINE.match(line)
        if h:
            off = int(h["off"], 16)
            for i, b in enumerate(h["bytes"].split()):
                cur.hexdump[off + i] = int(b, 16)
            continue
        if _ELISION.match(line):
            cur.elided = True
            continue
        _field(cur, line, last_key)
        f = _FIELD.match(line)
        if f:
            last_key = f["key"].strip()
        if not line[0].isspace():
            flags = None  # a prompt or a comment between two pastes: no register's line
        elif f or flags is None:
            flags = _FlagScope(last_key or "?", skip=(last_key or "") in _FREE_TEXT or not f)
        flags = _check_flags(cur, flags, line)
    devices = _fold_blocks(blocks, notes)
    tree = parse_tree(tree_lines) if tree_lines else {}
    return LspciText(devices, tree, has_domain, notes, elided)


def _check_address(line: str, lineno: int) -> None:
    """Refuse a device line whose address cannot exist, naming why.

    A PCI address is bus 00-ff (8 bits), device 00-1f (5 bits), function 0-7 (3 bits): Linux
    ``include/uapi/linux/pci.h`` ``PCI_DEVFN``/``PCI_SLOT``/``PCI_FUNC``. (lspci prints an ARI
    function above 7 as device and function of its 8-bit number, ``01:01.1``, never ``01:00.9``.)
    Such a line read as the block above's would blame that block.
    """
    m = _HEADER_LIKE.match(line)
    if m is None:
        return
    bus, dev, fn = (int(m[k], 16) for k in ("bus", "dev", "fn"))
    addr = line.split()[0]
    if fn > 7:
        why = f"function number {m['fn']} does not exist"
    elif dev > 0x1F:
        why = f"device number {m['dev']} ({dev}) does not exist"
    elif bus > 0xFF:
        why = f"bus number {m['bus']} ({bus}) does not exist"
    else:
        return
    raise PasteError(
        f"line {lineno}: {addr}: {why}: a PCI function number is 0-7, a device number 00-1f (0-31), a bus "
        "00-ff (0-255) (Linux include/uapi/linux/pci.h PCI_DEVFN); the line was edited or mistyped, "
        "paste lspci's output as printed"
    )


@dataclass
class _FlagScope:
    key: str  # the field (``ACSCtl``) whose line and continuation lines are read
    skip: bool  # free text (a name, VPD), or a line no field names: no register flags to check
    seen: dict[str, tuple[str, str]] = field(default_factory=dict)  # bit -> (+/-, its line)


# Fields whose text is a name or vendor data, not register bits (pciutils lspci.c, ls-vpd.c)
_FREE_TEXT = (
    "Subsystem",
    "Product Name",
    "Read-only fields",
    "Read/write fields",
    "Kernel driver in use",
    "Kernel modules",
    "Physical Slot",
    "Device tree node",
    "Module",
    "IOMMU group",
    "NUMA node",
)
_FLAG_TOKEN = re.compile(r"^(?P<name>[<>]?[A-Za-z0-9][\w./\-]*[A-Za-z0-9])(?P<v>[+-])$")


def _check_flags(dev: LspciDevice, scope: _FlagScope | None, line: str) -> _FlagScope | None:
    """Refuse a register line (with its continuation lines) naming one bit twice with two values.

    pciutils ``ls-caps.c`` prints each bit of a register once as ``Name+``/``Name-``; ``ReqRedir-``
    and ``ReqRedir+`` in one ACSCtl is an edited or joined line, and no one value of the bit is what
    it shows. Parenthesised lists are left out: ``D1+ ... PME(D0+,D1-,...)`` names two bits ``D1``.
    """
    if scope is None or scope.skip:
        return scope
    text = re.sub(r"\([^()]*\)", " ", line)
    for token in re.split(r"[\s,;]+", text):
        m = _FLAG_TOKEN.match(token)
        if m is None:
            continue
        before = scope.seen.setdefault(m["name"], (m["v"], line.strip()))
        if before[0] != m["v"]:
            name = m["name"]
            where = repr(_clip(line.strip(), 100))
            if before[1] != line.strip():
                where = f"{_clip(before[1], 60)!r} then {_clip(line.strip(), 60)!r}"
            raise PasteError(
                f"{dev.bdf}: {scope.key} shows the bit {name} twice, {name}{before[0]} then {name}{m['v']} "
                f"({where}): one bit has one value, so the line was edited or two lines were joined; "
                "paste lspci's output as printed"
            )
    return scope


def _fold_blocks(blocks: list[tuple[LspciDevice, list[str]]], notes: list[str]) -> dict[str, LspciDevice]:
    """One device per BDF: repeated identical blocks read once, different ones merged (``merge_block``)."""
    devices: dict[str, LspciDevice] = {}
    seen: dict[str, list[list[str]]] = {}
    repeats: dict[str, int] = {}
    merged: set[str] = set()
    for dev, lines in blocks:
        if dev.bdf not in devices:
            devices[dev.bdf], seen[dev.bdf] = dev, [lines]
            continue
        if lines in seen[dev.bdf]:
            repeats[dev.bdf] = repeats.get(dev.bdf, 0) + 1
            continue
        seen[dev.bdf].append(lines)
        merge_block(devices[dev.bdf], dev)
        merged.add(dev.bdf)
    if repeats:
        bdfs = sorted(repeats)
        notes.append(
            f"{len(bdfs)} function(s) shown more than once with the same lines (a paste duplicated?), "
            f"read once: {', '.join(bdfs[:8])}{' ...' if len(bdfs) > 8 else ''}"
        )
    if merged:
        bdfs = sorted(merged)
        notes.append(
            f"{len(bdfs)} function(s) shown in several blocks that agree wherever both show a field, "
            f"merged: {', '.join(bdfs[:8])}{' ...' if len(bdfs) > 8 else ''}"
        )
    return devices


def _clip(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def merge_block(into: LspciDevice, new: LspciDevice) -> None:
    """Fold a second block of the same function into the first, field by field.

    A field that only one block shows is taken from it (``lspci`` then ``lspci -vvv``, a separate
    ``-xxx``, a root run after a non-root one). Where both show a field and the values differ, the
    paste holds two readings of one function, from two moments or two machines, and no single rig
    is what it shows: ``PasteError`` names the function and the first such field in pciutils'
    order. (Marking only that field unreadable would let the other fields of the mixed paste pass
    as if they were one rig's.)
    """

    def clash(label: str, a: object, b: object, key: str | None = None) -> None:
        if a is None or b is None or a == b:
            return
        shown_a = into.shown.get(key or label, str(a))
        shown_b = new.shown.get(key or label, str(b))
        raise PasteError(
            f"{into.bdf} has two blocks that disagree on {label}: {_clip(shown_a)!r} then "
            f"{_clip(shown_b)!r}: two readings (two moments or two machines) cannot be judged as one rig; "
            "paste one lspci run, or import each run on its own"
        )

    def ident(d: LspciDevice) -> str:
        return f"{d.vendor:04x}:{d.device:04x}" if d.vendor is not None and d.device is not None else "?"

    if into.ids_from == "text" and new.ids_from == "text":
        clash("vendor:device ID", ident(into), ident(new))
    elif new.ids_from == "text" or into.vendor is None:
        into.vendor, into.device, into.ids_from = new.vendor, new.device, new.ids_from
    a, b = into.class_code, new.class_code
    clash("class", None if a is None else f"{a >> 8:04x}", None if b is None else f"{b >> 8:04x}")
    if a is None or (b is not None and b & 0xFF and not a & 0xFF):
        into.class_code = b
    clash("revision", into.revision, new.revision)
    into.revision = into.revision if into.revision is not None else new.revision
    for key, attr in (
        ("Physical Slot", "physical_slot"),
        ("NUMA node", "numa"),
        ("IOMMU group", "iommu_group"),
    ):
        clash(key, getattr(into, attr), getattr(new, attr))
        if getattr(into, attr) is None:
            setattr(into, attr, getattr(new, attr))
    bus_a = (into.primary, into.secondary, into.subordinate) if into.secondary is not None else None
    bus_b = (new.primary, new.secondary, new.subordinate) if new.secondary is not None else None
    clash("Bus", bus_a, bus_b)
    if bus_a is None:
        into.primary, into.secondary, into.subordinate = new.primary, new.secondary, new.subordinate
    for i in sorted(into.regions.keys() & new.regions.keys()):
        clash(f"Region {i}" if i < 6 else "Expansion ROM", into.regions[i], new.regions[i])
    into.regions = {**new.regions, **into.regions}
    into.regions_complete = into.regions_complete or new.regions_complete
    express_a = (into.pcie_version, into.port_type, into.slot_implemented) if into.port_type else None
    express_b = (new.pcie_version, new.port_type, new.slot_implemented) if new.port_type else None
    clash("the Express capability", express_a, express_b, "Express")
    if express_a is None:
        into.pcie_version, into.port_type, into.slot_implemented = express_b or (
            into.pcie_version,
            None,
            False,
        )
    for key in ("LnkCap", "LnkSta"):
        attr = key.lower()
        ra, rb = getattr(into, attr), getattr(new, attr)
        if ra is not None and rb is not None:
            for x, y in zip(ra, rb, strict=True):
                clash(key, x, y)
            setattr(into, attr, tuple(x if x is not None else y for x, y in zip(ra, rb, strict=True)))
        elif ra is None:
            setattr(into, attr, rb)
    for flag in sorted(into.lnksta_flags.keys() & new.lnksta_flags.keys()):
        clash(f"LnkSta {flag}", into.lnksta_flags[flag], new.lnksta_flags[flag], "LnkSta flags")
    into.lnksta_flags = {**new.lnksta_flags, **into.lnksta_flags}
    clash("LnkCtl2 Target Link Speed", into.lnkctl2_target, new.lnkctl2_target, "LnkCtl2")
    clash("LnkCtl2 SpeedDis", into.hasd, new.hasd, "LnkCtl2")
    into.lnkctl2_target = into.lnkctl2_target if into.lnkctl2_target is not None else new.lnkctl2_target
    into.hasd = into.hasd if into.hasd is not None else new.hasd
    into.lnkctl2_seen = into.lnkctl2_seen or new.lnkctl2_seen
    caps_a, caps_b = dict(into.caps + into.ext_caps), dict(new.caps + new.ext_caps)
    for off in sorted(caps_a.keys() & caps_b.keys()):
        clash(f"the capability at [{off:x}]", caps_a[off].split(":")[0], caps_b[off].split(":")[0])
    if new.ext_caps and not into.ext_caps:
        into.closed = new.closed
    elif new.ext_caps or not into.ext_caps:
        into.closed = into.closed or new.closed
    into.caps = sorted({**dict(new.caps), **dict(into.caps)}.items())
    into.ext_caps = sorted({**dict(new.ext_caps), **dict(into.ext_caps)}.items())
    into.access_denied = (into.access_denied or new.access_denied) and not (into.ext_caps or into.caps)
    into.elided = into.elided or new.elided
    if (
        into.acs_offset is not None
        and new.acs_offset is not None
        and min(into.acs_offset, new.acs_offset) >= 0
    ):
        clash("the ACS capability offset", into.acs_offset, new.acs_offset)
    if into.acs_offset is None or into.acs_offset < 0:
        into.acs_offset = new.acs_offset if new.acs_offset is not None else into.acs_offset
    clash("ACSCap", into.acs_cap, new.acs_cap)
    clash("ACSCtl", into.acs_ctrl, new.acs_ctrl)
    into.acs_cap = into.acs_cap if into.acs_cap is not None else new.acs_cap
    into.acs_ctrl = into.acs_ctrl if into.acs_ctrl is not None else new.acs_ctrl
    clash("Kernel driver in use", into.driver, new.driver)
    into.driver = into.driver or new.driver
    for off in sorted(into.hexdump.keys() & new.hexdump.keys()):
        clash(
            f"config space byte {off:#05x} of the hex dump",
            f"{into.hexdump[off]:02x}",
            f"{new.hexdump[off]:02x}",
        )
    into.hexdump = {**new.hexdump, **into.hexdump}
    into.lines += new.lines
    into.notes += [n for n in new.notes if n not in into.notes]
    into.shown = {**new.shown, **into.shown}


def _dedent_paste(text: str) -> str:
    """A paste indented as a whole (a Markdown code block, a quoted reply): strip the common indent."""
    lines = text.split("\n")
    heads = [ln for ln in lines if _HEADER.match(ln.lstrip())]
    if not heads or any(_HEADER.match(ln) for ln in lines):
        return text
    k = min(len(ln) - len(ln.lstrip()) for ln in heads)
    if k == 0:
        return text
    return "\n".join(ln[k:] if ln[:k].strip() == "" else ln for ln in lines)


def _identify(dev: LspciDevice, rest: str, ids: PciIds) -> None:
    cls_name, _, name = rest.partition(": ")
    m = re.search(r"(?:^|\s\[)(?P<c>[0-9a-f]{4})\]?$", cls_name)  # "VGA ... [0300]", or lspci -n's "0300"
    cls = int(m["c"], 16) if m else None
    if m:
        cls_name = cls_name[: m.start()]
    numeric = re.match(r"^(?P<v>[0-9a-f]{4}):(?P<d>[0-9a-f]{4})\b", name)  # lspci -n: "10de:2204 (rev a1)"
    if numeric:
        name = f"[{numeric['v']}:{numeric['d']}]" + name[numeric.end() :]
    prog = re.search(r"\(prog-if (?P<p>[0-9a-f]{2})", name)
    rev = re.search(r"\(rev (?P<r>[0-9a-f]{2})\)", name)
    dev.revision = int(rev["r"], 16) if rev else None
    name = re.sub(r"\s*\((?:rev [0-9a-f]{2}|prog-if [^)]*(?:\[[^\]]*\])?[^)]*)\)", "", name).strip()
    idm = list(_IDS.finditer(name))
    if idm:
        dev.vendor, dev.device = int(idm[-1]["v"], 16), int(idm[-1]["d"], 16)
        dev.ids_from = "text"
    else:
        found = ids.lookup_name(name)
        if found is not None:
            dev.vendor, dev.device, dev.ids_from = found
        else:
            dev.ids_from = "unknown"
            dev.notes.append(f"vendor/device IDs not in the text and {name!r} not found in {ids.where}")
    if cls is None:
        cls = ids.class_code(cls_name.strip())
        if cls is None:
            dev.notes.append(f"class {cls_name.strip()!r} unknown to {ids.where}")
    if cls is not None:
        dev.class_code = (cls << 8) | (int(prog["p"], 16) if prog else 0)


def _field(dev: LspciDevice, line: str, last_key: str | None) -> None:
    s = line.strip()
    if dev.regions and s.startswith(("Capabilities:", "Kernel driver in use:", "Kernel modules:")):
        dev.regions_complete = True
    cap = _CAP.match(line)
    if cap:
        off = int(cap["off"], 16)
        what = cap["what"]
        if "<access denied>" in what:
            dev.access_denied = True
        if off >= 0x100:
            dev.ext_caps.append((off, what))
            if what.startswith("Access Control Services"):
                dev.acs_offset = off
        else:
            dev.caps.append((off, what))
            em = re.match(r"Express \(v(?P<v>\d)\) (?P<t>.*)", what)
            if em:
                _shown(dev, "Express", what)
                dev.pcie_version = int(em["v"])
                for label, pt in _PORT_TYPES:
                    if em["t"].startswith(label):
                        dev.port_type = pt
                        break
                dev.slot_implemented = "(Slot+)" in em["t"]
        return
    if s.startswith(("Region ", "Expansion ROM")):
        _region(dev, s)
        return
    if s.startswith("Capabilities:") and "<access denied>" in s:
        dev.access_denied = True
        return
    f = _FIELD.match(line)
    key = f["key"].strip() if f else None
    val = f["val"] if f else s
    if key is None:
        # A continuation line: flags of the field above (LnkSta's TrErr- Train- ... BWMgmt+ on pciutils >= 3.6).
        if last_key == "LnkSta":
            _lnksta_flags(dev, s)
            if _FLAG.search(s):
                dev.shown.setdefault("LnkSta flags", s)
        elif last_key == "LnkCtl2" and "SpeedDis" in s:
            dev.hasd = "SpeedDis+" in s
        return
    if key in _ONCE:
        _shown(dev, key, val)
    if key in ("LnkCap", "LnkSta"):
        sp, wd = _SPEED.search(val), _WIDTH.search(val)
        width = int(wd["w"]) if wd else None  # one no link can have is refused (build._check_links)
        if sp or width is not None:
            reading = (_gen(sp["s"]) if sp else None, width)
            if key == "LnkCap":
                dev.lnkcap = reading
            else:
                dev.lnksta = reading
        _lnksta_flags(dev, val)
        if key == "LnkSta" and _FLAG.search(val):
            dev.shown.setdefault("LnkSta flags", val.strip())
    elif key == "LnkCtl2":
        dev.lnkctl2_seen = True
        tm = re.search(r"Target Link Speed:\s*(?P<s>[0-9.]+GT/s)", val)
        if tm:
            dev.lnkctl2_target = _gen(tm["s"])
        if "SpeedDis" in val:
            dev.hasd = "SpeedDis+" in val
    elif key == "ACSCap":
        dev.acs_cap = _acs_bits(val)
    elif key == "ACSCtl":
        dev.acs_ctrl = _acs_bits(val)
        if dev.acs_offset is None:
            dev.acs_offset = -1  # grep kept ACSCtl but not the capability header: offset unknown
    elif key == "Bus":
        bm = re.search(
            r"primary=(?P<p>[0-9a-f]{2}), secondary=(?P<s>[0-9a-f]{2}), subordinate=(?P<u>[0-9a-f]{2})", val
        )
        if bm:
            dev.primary, dev.secondary, dev.subordinate = (int(bm[k], 16) for k in ("p", "s", "u"))
            _check_bus(dev)
    elif key == "Kernel driver in use":
        dev.driver = val.strip() or None
        dev.closed = True
    elif key == "Kernel modules":
        dev.closed = True
    elif key == "NUMA node":
        try:
            dev.numa = int(val.strip())
        except ValueError:
            pass
    elif key == "IOMMU group":
        dev.iommu_group = val.strip() or None
    elif key == "Physical Slot":
        dev.physical_slot = val.strip() or None


# Fields one function's block shows at most once (pciutils ls-caps.c, lspci.c show_kernel*)
_ONCE = (
    "Physical Slot",
    "NUMA node",
    "IOMMU group",
    "Bus",
    "LnkCap",
    "LnkSta",
    "LnkCtl2",
    "ACSCap",
    "ACSCtl",
    "Kernel driver in use",
)


def _shown(dev: LspciDevice, key: str, val: str) -> None:
    """Remember a field's text; the same field twice in one block with another value is refused."""
    val = " ".join(val.split())
    before = dev.shown.setdefault(key, val)
    if before != val:
        raise PasteError(
            f"{dev.bdf}: two {key} lines in one block ({_clip(before)!r}, then {_clip(val)!r}): a function "
            "shows it once, so a device line was lost (a grep?) or the paste was edited; keep every device "
            "line (grep -E '^[0-9a-f]|...')"
        )


def bus_fault(own: int, primary: int | None, secondary: int, subordinate: int | None) -> str | None:
    """What is impossible in a bridge's bus numbers, or ``None``; ``secondary`` and ``subordinate`` 00
    is a bridge left unconfigured (it forwards to no bus), not a fault.

    Bus numbers are given depth first: a bridge on bus ``own`` forwards buses
    ``secondary..subordinate``, all above its own bus and its primary, ``secondary <= subordinate``
    (Linux drivers/pci/probe.c ``pci_scan_bridge_extend()`` takes any other setting as "bridge
    configuration invalid" and renumbers it, so a booted system does not show one).
    """
    sub = secondary if subordinate is None else subordinate
    if secondary == 0 and sub == 0:
        return None
    if secondary <= own <= sub:
        return (
            f"its buses [{secondary:02x}-{sub:02x}] hold its own bus {own:02x}, a loop "
            "(the bridge would sit below itself)"
        )
    if primary is not None and secondary <= primary:
        return f"secondary={secondary:02x} is not above primary={primary:02x}"
    if sub < secondary:
        return f"subordinate={sub:02x} is below secondary={secondary:02x}"
    if secondary < own:
        return f"its buses [{secondary:02x}-{sub:02x}] lie below its own bus {own:02x}"
    return None


def _check_bus(dev: LspciDevice) -> None:
    assert dev.secondary is not None
    why = bus_fault(int(dev.bdf.split(":")[1], 16), dev.primary, dev.secondary, dev.subordinate)
    if why:
        raise PasteError(
            f"{dev.bdf}: impossible Bus line {dev.shown.get('Bus', '?')!r}: {why}; a bridge's buses lie "
            "above its own and secondary <= subordinate (Linux drivers/pci/probe.c pci_scan_bridge_extend() "
            "renumbers any other setting as invalid): the paste is edited or mixes two machines' lines"
        )


_REGION = re.compile(
    r"^(?:Region (?P<n>[0-5]):|Expansion ROM) (?:(?P<mem>Memory)|I/O ports) at (?P<addr>[0-9a-f]+)"
    r"(?: \((?P<bits>32|64)-bit, (?P<pf>non-prefetchable|prefetchable)\))?.*\[size=(?P<size>\d+)(?P<unit>[KMGT]?)\]"
)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _region(dev: LspciDevice, s: str) -> None:
    """``Region 1: Memory at 10000000000 (64-bit, prefetchable) [size=32G]`` -> the sysfs ``resource`` line.

    Flags as the kernel prints them (include/linux/ioport.h IORESOURCE_*: IO 0x100, MEM 0x200,
    PREFETCH 0x2000, MEM_64 0x100000, SIZEALIGN 0x40000, plus the BAR's low bits).
    """
    m = _REGION.match(s)
    if not m or "[virtual]" in s:
        return
    start = int(m["addr"], 16)
    size = int(m["size"]) * _UNITS[m["unit"]]
    if m["n"] is None:
        index, flags = 6, 0x46200  # expansion ROM
    elif m["mem"]:
        index = int(m["n"])
        flags = 0x40200
        if m["pf"] == "prefetchable":
            flags |= 0x2000 | 0x8
        if m["bits"] == "64":
            flags |= 0x100000 | 0x4
    else:
        index, flags = int(m["n"]), 0x40101
    dev.regions[index] = (start, start + size - 1, flags)


def _lnksta_flags(dev: LspciDevice, text: str) -> None:
    for m in _FLAG.finditer(text):
        if m["name"] in ("TrErr", "Train", "SlotClk", "DLActive", "BWMgmt", "ABWMgmt"):
            dev.lnksta_flags[m["name"]] = m["v"] == "+"


# -- lspci -t / -tv -----------------------------------------------------------------------------

UNKNOWN_PARENT = "?"  # a tree parent that the paste elided
_TREE_START = re.compile(r"^\s*[-+\\| ]*[-+\\]-?\[(?:[0-9a-f]{4,8}:)?[0-9a-f]{2}\]")
_TREE_ROW = re.compile(r"^\s*[| ]*(?:[+\\]-|-)(?:[0-9a-f]{2}\.[0-7]|\[)|^\s*[| ]*[+\\|]-\s*(?:…|\.\.\.)")
_TREE_TOKEN = re.compile(
    r"\[(?:(?P<dom>[0-9a-f]{4,8}):)?(?P<rbus>[0-9a-f]{2})\]"
    r"|(?P<dev>[0-9a-f]{2})\.(?P<fn>[0-7])(?:-\[(?P<sec>[0-9a-f]{2})(?:-(?P<sub>[0-9a-f]{2}))?\])?"
)


def _is_tree_line(line: str) -> bool:
    return bool(_TREE_START.match(line) or _TREE_ROW.match(line)) and not _HEADER.match(line)


def parse_tree(lines: list[str]) -> dict[str, TreeNode]:
    """``lspci -t``/``-tv`` (pciutils ls-tree.c): who hangs below which bridge, and -tv's names.

    A bus's children share one column of ``+-``/``\\-`` connectors; a device right after ``]--`` is the
    only child of that bus. Raises ``PasteError`` on a tree whose connectors lead nowhere.
    """
    nodes: dict[str, TreeNode] = {}
    branch: dict[int, tuple[str, int, str | None]] = {}  # column -> (domain, bus, parent bridge)
    dom = "0000"
    for line in lines:
        markers: list[tuple[int, str, int, str | None]] = []  # (end column, domain, bus, parent)
        last_dev: TreeNode | None = None
        name_at = None
        for m in _TREE_TOKEN.finditer(line):
            if m["rbus"] is not None:
                if m["dom"] is not None:
                    dom = m["dom"].rjust(4, "0")[-8:]
                    up: str | None = None
                else:
                    up = UNKNOWN_PARENT  # "-[0e]" after an elision: a bridge the paste left out
                markers.append((m.end(), dom, int(m["rbus"], 16), up))
                _open_branch(line, m.end(), branch, (dom, int(m["rbus"], 16), up))
                continue
            # the bus this device sits on: walk left over '-' to a connector column or a marker
            p = m.start() - 1
            while p >= 0 and line[p] == "-":
                p -= 1
            if p >= 0 and line[p] in "+\\" and p in branch:
                bdom, bus, parent = branch[p]
            elif p >= 0 and line[p] == "]" and markers and markers[-1][0] == p + 1:
                _, bdom, bus, parent = markers[-1]
            else:
                # an elided or cut tree ("-01.0-[01-18]" at the start of a fragment): the bus is unknown
                if m["sec"]:
                    below = int(m["sec"], 16)
                    markers.append((m.end(), dom, below, UNKNOWN_PARENT))
                    _open_branch(line, m.end(), branch, (dom, below, UNKNOWN_PARENT))
                last_dev, name_at = None, None
                continue
            if int(m["dev"], 16) > 0x1F:
                raise PasteError(f"lspci -t tree: device number {m['dev']} above 0x1f in {line.strip()!r}")
            bdf = f"{bdom}:{bus:02x}:{m['dev']}.{m['fn']}"
            sec = int(m["sec"], 16) if m["sec"] else None
            sub = int(m["sub"], 16) if m["sub"] else sec
            why = bus_fault(bus, None, sec, sub) if sec is not None else None
            if why:
                raise PasteError(
                    f"lspci -t tree: {bdf} with buses {bus_range(sec, sub)} below it: {why}; a bridge's buses "
                    "lie above its own (Linux drivers/pci/probe.c pci_scan_bridge_extend()): an edited tree"
                )
            before = nodes.get(bdf)
            if before is not None and UNKNOWN_PARENT not in (before.parent, parent):
                if before.parent != parent:
                    raise PasteError(
                        f"lspci -t tree: {bdf} is listed under two parents "
                        f"({before.parent or 'the root bus'} and {parent or 'the root bus'}): "
                        "two trees (two machines?) in one paste"
                    )
                if (before.secondary, before.subordinate) != (sec, sub):
                    raise PasteError(
                        f"lspci -t tree: {bdf} is listed twice with different buses below it "
                        f"({bus_range(before.secondary, before.subordinate)} and {bus_range(sec, sub)}): "
                        "two trees (two machines?) in one paste"
                    )
            last_dev = nodes[bdf] = TreeNode(bdf, parent, sec, sub, before.name if before else None)
            name_at = m.end()
            if sec is not None:
                markers.append((m.end(), bdom, sec, bdf))
                _open_branch(line, m.end(), branch, (bdom, sec, bdf))
        if last_dev is not None and name_at is not None:
            rest = line[name_at:].strip()
            if rest and not rest.startswith(("-", "+", "\\")):
                last_dev.name = rest
    return nodes


def bus_range(sec: int | None, sub: int | None) -> str:
    """``[02]`` or ``[02-04]`` as ``lspci -t`` prints a bridge's secondary-subordinate buses."""
    return "none" if sec is None else f"[{sec:02x}]" if sub in (None, sec) else f"[{sec:02x}-{sub:02x}]"


def _open_branch(
    line: str, end: int, branch: dict[int, tuple[str, int, str | None]], what: tuple[str, int, str | None]
) -> None:
    p = end
    while p < len(line) and line[p] == "-":
        p += 1
    if p < len(line) and line[p] in "+\\":
        branch[p] = what
