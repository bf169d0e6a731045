"""Rig profiles: a TOML file of what the rig should look like.

Without a profile, expectations come from the hardware itself (each link at the lesser of its two
ends' capability, ACS off between GPUs, IOMMU off or passthrough). Built-in presets describe the
seeds' rigs.

Every section is validated when the profile loads, by the parser ``SECTION_PARSERS`` names for it
(imported on first use, so the plugin's import stays light); the typed results are in
``Profile.sections`` and a mistake is one ``ProfileError`` naming the file, ``section.key``, the value
and what is allowed. Once the rig has been read, ``match_rig`` checks that every device, slot and lane
group key names something on it. The raw tables stay in ``Profile.raw``.
"""

from __future__ import annotations

import difflib
import importlib
import math
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ProfileError
from .pcie import normalize_bdf

if TYPE_CHECKING:
    from .rig import Rig

TOPOLOGY_CLASSES = ("PIX", "PXB", "PHB", "NODE", "SYS")
IOMMU_MODES = ("off", "passthrough")
SPLIT = re.compile(r"^(x(1|2|4|8|16))+$")
LANE_GROUP = re.compile(r"^(?:(?P<dom>[0-9a-fA-F]{4,8}):)?(?P<bus>[0-9a-fA-F]{2}):(?P<dev>[0-9a-fA-F]{2})$")

# Section -> "module:function" that validates its table: ``parse(table, where) -> typed object``,
# raising ProfileError. Imported only when a profile is parsed; each parser imports nothing heavy.
SECTION_PARSERS: dict[str, str] = {
    "rig": "pytest_rigcheck.profile:parse_rig",
    "links": "pytest_rigcheck.profile:parse_links",
    "bifurcation": "pytest_rigcheck.profile:parse_bifurcation",
    "iommu": "pytest_rigcheck.profile:parse_iommu",
    "topology": "pytest_rigcheck.profile:parse_topology",
    "power": "pytest_rigcheck.gpu.expect:parse_power",
    "gpu": "pytest_rigcheck.gpu.expect:parse_gpu",
    "p2p": "pytest_rigcheck.p2p.thresholds:parse_p2p",
    "nccl": "pytest_rigcheck.p2p.thresholds:parse_nccl",
    "vllm": "pytest_rigcheck.vllm.settings:parse_vllm",
    "soak": "pytest_rigcheck.soak.judge:parse_soak",
    "storage": "pytest_rigcheck.storage:parse_storage",
}


# -- value checks the section parsers share ---------------------------------------------------------


def check_keys(where: str, section: str, table: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Raise ProfileError for the first key of ``table`` not in ``allowed``, naming the keys there are.

    Example:
        >>> check_keys("rig.toml", "power", {"cap_W": 350}, ["cap_w", "tolerance_w"])
        Traceback (most recent call last):
        ...
        pytest_rigcheck.errors.ProfileError: rig.toml: invalid value 350 for 'power.cap_W': unknown key \
(did you mean cap_w?); keys of [power] are cap_w, tolerance_w
    """
    keys = sorted(allowed)
    for k, v in table.items():
        if k not in keys:
            close = difflib.get_close_matches(k.lower(), keys, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ProfileError(
                where, f"{section}.{k}", v, f"unknown key{hint}; keys of [{section}] are {', '.join(keys)}"
            )


def number(
    where: str, key: str, value: object, lo: float, hi: float, unit: str, *, above: bool = False
) -> float:
    """``value`` as a float in ``lo..hi`` (``lo`` itself excluded when ``above``); ``unit`` words the error.

    Args:
        unit: what the number counts, as the message says it: ``"watts"``, ``"MiB"``, ``"GB/s"``.

    Raises:
        ProfileError: not a number (booleans and strings are not), NaN, or out of range.
    """
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok and (value < lo or value > hi or (above and value == lo)):  # type: ignore[operator]
        ok = False
    if not ok:
        lo_t, hi_t = (str(int(x)) if float(x).is_integer() else f"{x:g}" for x in (lo, hi))
        rng = f"above {lo_t} and at most {hi_t}" if above else f"from {lo_t} to {hi_t}"
        raise ProfileError(where, key, value, f"a number of {unit}, {rng}")
    return float(value)  # type: ignore[arg-type]


def whole(where: str, key: str, value: object, lo: int, hi: int, unit: str = "") -> int:
    """``value`` as an int in ``lo..hi``; ``unit`` (``"link changes"``) words the error.

    Raises:
        ProfileError: not a whole number, or out of range.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        what = f"a whole number of {unit}" if unit else "a whole number"
        raise ProfileError(where, key, value, f"{what} from {lo} to {hi}")
    return value


def boolean(where: str, key: str, value: object) -> bool:
    """``value`` as a bool; the strings ``"no"``, ``"false"`` are not booleans.

    Raises:
        ProfileError: not true or false.
    """
    if not isinstance(value, bool):
        raise ProfileError(where, key, value, "true or false (TOML booleans, without quotes)")
    return value


def table_of(where: str, key: str, value: object, what: str) -> dict[str, Any]:
    """``value`` as a TOML table; ``what`` says what the table holds.

    Raises:
        ProfileError: not a table.
    """
    if not isinstance(value, dict):
        raise ProfileError(where, key, value, f"a table ([{key}]) {what}")
    return value


# -- per-device keys --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceKey:
    """The key of a per-device table (``[links.device.X]``, ``[power.device.X]``, ``[gpu.device.X]``).

    A PCI address (``"0000:03:00.0"``, also ``"03:00.0"``), a GPU index as nvidia-smi numbers the GPUs
    (PCI bus order: ``0``, ``1``...), or a slot name from ``/sys/bus/pci/slots`` (``PCIE3``; any case).
    """

    text: str  # as written in the profile
    kind: str  # "bdf", "index" or "slot"
    value: str  # "0000:03:00.0", "1", or the slot name lowercased

    @classmethod
    def parse(cls, text: str) -> DeviceKey:
        """Example:
        >>> DeviceKey.parse("03:00.0").value, DeviceKey.parse("2").kind, DeviceKey.parse("PCIE3").value
        ('0000:03:00.0', 'index', 'pcie3')
        """
        t = text.strip()
        if t.isdigit():
            return cls(text, "index", str(int(t)))
        try:
            return cls(text, "bdf", normalize_bdf(t))
        except ValueError:
            return cls(text, "slot", t.lower())

    def matches(self, bdf: str, index: int | None, slot: str | None) -> bool:
        """Whether this key names the device ``bdf`` (GPU ``index``, in ``slot``)."""
        if self.kind == "bdf":
            return self.value == bdf
        if self.kind == "index":
            return index is not None and int(self.value) == index
        return slot is not None and slot.lower() == self.value

    def table(self, section: str, sub: str = "device") -> str:
        """``[power.device."0000:03:00.0"]``: the table as the profile spells it (``sub`` the per-device
        table's name: ``gpus`` for ``[vllm.gpus."0"]``)."""
        return f'[{section}.{sub}."{self.text}"]'


def device_tables(
    where: str, section: str, value: object, parse: Callable[[str, dict[str, Any]], Any]
) -> dict[DeviceKey, Any]:
    """``[section.device.X]`` tables: each key read as a ``DeviceKey``, each table by ``parse(key, table)``.

    ``parse`` gets the dotted key to name in errors (``power.device."0000:03:00.0"``).

    Raises:
        ProfileError: ``device`` is not a table of tables, a key is empty, two keys name one device
            the same way, or ``parse`` refuses a table.
    """
    tables = table_of(
        where, f"{section}.device", value, f'of per-device tables, e.g. [{section}.device."0000:03:00.0"]'
    )
    out: dict[DeviceKey, Any] = {}
    for text, sub in tables.items():
        key = f'{section}.device."{text}"'
        if not text.strip():
            raise ProfileError(where, key, sub, "a PCI address, a GPU index or a slot name as the key")
        if not isinstance(sub, dict):
            raise ProfileError(where, key, sub, f'a table: [{section}.device."{text}"] with its own keys')
        dk = DeviceKey.parse(text)
        twin = next((k for k in out if (k.kind, k.value) == (dk.kind, dk.value)), None)
        if twin is not None:
            raise ProfileError(where, key, sub, f"names the same device as {twin.table(section)}: keep one")
        out[dk] = parse(key, sub)
    return out


# -- the core sections ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinkExpect:
    gen: int | None = None
    width: int | None = None


@dataclass(frozen=True)
class RigSection:
    """``[rig]``: a name, the GPU count, and the tensor-parallel groups (lists of GPU indices)."""

    name: str | None = None
    description: str | None = None
    gpus: int | None = None
    tp_groups: tuple[tuple[int, ...], ...] | None = None


@dataclass(frozen=True)
class LinksSection:
    """``[links]``: the expected gen/width of every hop, and ``[links.device.X]`` overrides."""

    default: LinkExpect = LinkExpect()
    devices: dict[DeviceKey, LinkExpect] = field(default_factory=dict)


@dataclass(frozen=True)
class BifurcationSection:
    """``[bifurcation]``: lane split per lane group (``dddd:bb:dd``), root port (BDF) or slot name.

    ``splits`` is keyed by the normalized key (lowercase, 4-digit domain); ``written`` maps it back
    to the key as the profile spells it.
    """

    splits: dict[str, str] = field(default_factory=dict)
    written: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class IommuSection:
    allow: tuple[str, ...] = IOMMU_MODES


@dataclass(frozen=True)
class TopologySection:
    max_class: str | None = None


def parse_rig(table: dict[str, Any], where: str) -> RigSection:
    """``[rig]``: name, description (strings), gpus (1-64), tp_groups (disjoint lists of GPU indices)."""
    check_keys(where, "rig", table, ("name", "description", "gpus", "tp_groups"))
    for k in ("name", "description"):
        if k in table and not isinstance(table[k], str):
            raise ProfileError(where, f"rig.{k}", table[k], "a string")
    gpus = whole(where, "rig.gpus", table["gpus"], 1, 64, "GPUs") if "gpus" in table else None
    tp = table.get("tp_groups")
    groups = None
    if tp is not None:
        if (
            not isinstance(tp, list)
            or not tp
            or not all(
                isinstance(g, list)
                and g
                and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in g)
                for g in tp
            )
        ):
            raise ProfileError(
                where,
                "rig.tp_groups",
                tp,
                "a list of lists of GPU indices (0, 1, ...), e.g. [[0, 1], [2, 3]]",
            )
        seen: dict[int, int] = {}
        for n, g in enumerate(tp):
            for i in g:
                if i in seen:
                    why = f"GPU{i} appears twice in group {g}" if seen[i] == n else f"GPU{i} is in two groups"
                    raise ProfileError(
                        where, "rig.tp_groups", tp, f"{why}; each GPU belongs to one group at most"
                    )
                seen[i] = n
        if gpus is not None and max(seen) >= gpus:
            raise ProfileError(
                where,
                "rig.tp_groups",
                tp,
                f"GPU indices from 0 to {gpus - 1} ([rig] gpus = {gpus}); GPU{max(seen)} is beyond them",
            )
        groups = tuple(tuple(g) for g in tp)
    return RigSection(table.get("name"), table.get("description"), gpus, groups)


def parse_links(table: dict[str, Any], where: str) -> LinksSection:
    """``[links]``: gen (1-6), width (1, 2, 4, 8, 16, 32); ``[links.device.X]`` the same per device."""
    check_keys(where, "links", table, ("gen", "width", "device"))
    devices = device_tables(where, "links", table.get("device", {}), lambda k, t: _link(where, k, t))
    return LinksSection(_link(where, "links", {k: v for k, v in table.items() if k != "device"}), devices)


def parse_bifurcation(table: dict[str, Any], where: str) -> BifurcationSection:
    """``[bifurcation]``: ``"0000:00:03" = "x8x8"``; the key a lane group, a root port or a slot name."""
    splits: dict[str, str] = {}
    written: dict[str, str] = {}
    for key, split in table.items():
        if not isinstance(split, str) or not SPLIT.match(split) or _lanes(split) > 16:
            raise ProfileError(
                where,
                f"bifurcation.{key}",
                split,
                'a lane split such as "x16", "x8x8", "x4x4x4x4" (16 lanes at most)',
            )
        norm = bifurcation_key(key)
        if norm in splits:
            raise ProfileError(
                where,
                f"bifurcation.{key}",
                split,
                f"names the same lane group as {written[norm]!r}: keep one",
            )
        splits[norm], written[norm] = split, key
    return BifurcationSection(splits, written)


def bifurcation_key(text: str) -> str:
    """A ``[bifurcation]`` key, normalized: lane group ``dddd:bb:dd``, root port BDF, else a slot name lowercased.

    Example:
        >>> bifurcation_key("00:03"), bifurcation_key("0000:00:03.1"), bifurcation_key("PCIE3")
        ('0000:00:03', '0000:00:03.1', 'pcie3')
    """
    t = text.strip()
    m = LANE_GROUP.match(t)
    if m:
        dom = int(m["dom"] or "0", 16)
        return f"{dom:04x}:{int(m['bus'], 16):02x}:{int(m['dev'], 16):02x}"
    try:
        return normalize_bdf(t)
    except ValueError:
        return t.lower()


def parse_iommu(table: dict[str, Any], where: str) -> IommuSection:
    """``[iommu]``: allow, a list from ``off``, ``passthrough``."""
    check_keys(where, "iommu", table, ("allow",))
    allow = table.get("allow", list(IOMMU_MODES))
    if not isinstance(allow, list) or not allow or any(a not in IOMMU_MODES for a in allow):
        raise ProfileError(where, "iommu.allow", allow, f"a list from {list(IOMMU_MODES)}")
    return IommuSection(tuple(allow))


def parse_topology(table: dict[str, Any], where: str) -> TopologySection:
    """``[topology]``: max_class, one of PIX, PXB, PHB, NODE, SYS (nvidia-smi topo -m)."""
    check_keys(where, "topology", table, ("max_class",))
    max_class = table.get("max_class")
    if max_class is not None and max_class not in TOPOLOGY_CLASSES:
        raise ProfileError(where, "topology.max_class", max_class, f"one of {', '.join(TOPOLOGY_CLASSES)}")
    return TopologySection(max_class)


def _lanes(split: str) -> int:
    return sum(int(n) for n in split.split("x") if n)


def _link(where: str, key: str, table: dict[str, Any]) -> LinkExpect:
    check_keys(where, key, table, ("gen", "width"))
    gen = whole(where, f"{key}.gen", table["gen"], 1, 6) if "gen" in table else None
    width = table.get("width")
    if width is not None and (isinstance(width, bool) or width not in (1, 2, 4, 8, 16, 32)):
        raise ProfileError(where, f"{key}.width", width, "a lane count, one of 1, 2, 4, 8, 16, 32")
    return LinkExpect(gen, width)


# -- the profile ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """Expectations for one rig. ``source`` says where they came from, for messages.

    ``sections`` holds each section's parsed object (``RigSection``, ``LinksSection``, the GPU
    plugin's ``PowerSection``...), by section name; ``section(name)`` gives the defaults for one the
    profile leaves out.
    """

    source: str = "hardware defaults (no profile)"
    name: str | None = None
    gpus: int | None = None
    links: LinkExpect = LinkExpect()
    link_overrides: dict[DeviceKey, LinkExpect] = field(default_factory=dict)
    bifurcation: dict[str, str] = field(
        default_factory=dict
    )  # normalized lane group / root port / slot -> "x8x8"
    iommu_allow: tuple[str, ...] = IOMMU_MODES
    max_topology_class: str | None = None
    tp_groups: tuple[tuple[int, ...], ...] | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    sections: dict[str, Any] = field(default_factory=dict)

    @property
    def where(self) -> str:
        """The profile as ProfileError names it: the file, or ``preset NAME``."""
        return self.source.removeprefix("profile ")

    def section(self, name: str) -> Any:
        """The parsed ``[name]`` section; its defaults if the profile has none.

        Raises:
            KeyError: ``name`` is not a section (see ``SECTION_PARSERS``).
            ProfileError: only for a ``Profile`` built by hand with a bad ``raw`` table (a loaded one
                was validated when it loaded).
        """
        if name in self.sections:
            return self.sections[name]
        return section_parser(name)(self.raw.get(name, {}), self.where)

    def link_for(self, bdf: str, slot: str | None, index: int | None = None) -> LinkExpect:
        """The link expectation for the hop ending at ``bdf`` (GPU ``index``, in ``slot``): its
        ``[links.device.X]`` table over ``[links]``."""
        for key, over in self.link_overrides.items():
            if key.matches(bdf, index, slot):
                return LinkExpect(over.gen or self.links.gen, over.width or self.links.width)
        return self.links

    def link_source(self, bdf: str, slot: str | None, index: int | None, what: str) -> str:
        """Where the hop's ``what`` (``"gen"`` or ``"width"``) comes from, for messages:
        ``profile rig.toml [links.device."0000:4b:00.0"] width``, or ``profile rig.toml [links] width``."""
        for key, over in self.link_overrides.items():
            if key.matches(bdf, index, slot) and getattr(over, what) is not None:
                return f"{self.source} {key.table('links')} {what}"
        return f"{self.source} [links] {what}"


def section_parser(name: str) -> Callable[[dict[str, Any], str], Any]:
    """The parser ``SECTION_PARSERS`` registers for ``name``, imported now."""
    module, _, func = SECTION_PARSERS[name].partition(":")
    return getattr(importlib.import_module(module), func)  # type: ignore[no-any-return]


def presets() -> dict[str, Path]:
    """Built-in presets by name (``2x-rtx3090-gen4``, ...)."""
    root = resources.files("pytest_rigcheck") / "presets"
    return {p.name.removesuffix(".toml"): Path(str(p)) for p in root.iterdir() if p.name.endswith(".toml")}


def load_profile(spec: str, base: Path | None = None) -> Profile:
    """Load a profile from a file path or a preset name, validating every section.

    Args:
        spec: ``rig.toml`` (a path) or a preset name such as ``4x-rtxpro6000-gen4-switch``.
        base: directory a relative path is taken from (the snapshot's, for a manifest's profile).

    Raises:
        ProfileError: ``spec`` is empty or not a string, names no file and no preset, the file is not
            TOML or cannot be read, or a section holds a bad key or value.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ProfileError(
            "MANIFEST.toml" if base is not None else "profile",
            "profile",
            spec,
            f"a file path or a preset name ({', '.join(sorted(presets()))}); leave the key out for none",
        )
    path = Path(spec)
    if base is not None and not path.is_absolute():
        path = base / path
    label = str(path)
    if not path.is_file():
        known = presets()
        if spec in known:
            path, label = known[spec], f"preset {spec}"
        else:
            what = (
                "a directory, not a profile file"
                if path.is_dir()
                else "not a regular file (a FIFO, device or socket): refused without opening it"
                if path.exists()
                else "no such file"
            )
            raise ProfileError(
                spec, "profile", spec, f"{what}, and not a preset ({', '.join(sorted(known))})"
            )
    try:
        data = tomllib.loads(
            path.read_text(encoding="utf-8-sig")
        )  # a byte-order mark (Windows editors) is no error
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(label, "(file)", "", f"not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ProfileError(label, "(file)", "", "not valid TOML: not UTF-8 text") from None
    except OSError as exc:
        raise ProfileError(label, "(file)", "", f"cannot read: {exc.strerror}") from None
    return parse_profile(data, label)


def parse_profile(data: dict[str, Any], where: str) -> Profile:
    """Validate every section of a profile through ``SECTION_PARSERS``.

    Args:
        data: the TOML document.
        where: the profile's name in messages (its path, or ``preset NAME``).

    Raises:
        ProfileError: an unknown section, a section that is not a table, or the first bad key or value
            a section parser finds.
    """
    sections: dict[str, Any] = {}
    for name, value in data.items():
        if name not in SECTION_PARSERS:
            close = difflib.get_close_matches(name.lower(), list(SECTION_PARSERS), n=1, cutoff=0.6)
            hint = f" (did you mean [{close[0]}]?)" if close else ""
            raise ProfileError(
                where,
                name,
                value,
                f"unknown section{hint}; sections are {', '.join(sorted(SECTION_PARSERS))}",
            )
        if not isinstance(value, dict):
            raise ProfileError(where, name, value, f"a table ([{name}])")
        sections[name] = section_parser(name)(value, where)
    rig: RigSection = sections.get("rig", RigSection())
    links: LinksSection = sections.get("links", LinksSection())
    bif: BifurcationSection = sections.get("bifurcation", BifurcationSection())
    return Profile(
        source=f"profile {where}",
        name=rig.name,
        gpus=rig.gpus,
        links=links.default,
        link_overrides=dict(links.devices),
        bifurcation=dict(bif.splits),
        iommu_allow=sections.get("iommu", IommuSection()).allow,
        max_topology_class=sections.get("topology", TopologySection()).max_class,
        tp_groups=rig.tp_groups,
        raw=data,
        sections=sections,
    )


# -- the profile against the rig --------------------------------------------------------------------


def match_rig(profile: Profile, rig: Rig) -> None:
    """Check that every device, slot and lane-group key of ``profile`` names something on ``rig``.

    Per-device tables (``[links.device.X]``, and every section with a ``devices`` mapping such as
    ``[power.device.X]`` and ``[vllm.gpus.X]``: a section's ``device_table`` names its table when not
    ``device``; with ``devices_without_gpus`` its keys are taken as given on a rig with no GPU) must name a GPU (or, for ``[links]``, the lower end of a link on a GPU's
    path) by PCI address, GPU index or slot name, and no device may be named by two tables of one
    section. ``[bifurcation]`` keys must name a lane group feeding a GPU, one of its root ports, or a
    slot below them. ``[rig] tp_groups`` indices must be GPUs of this rig. Reads the rig's PCIe tree
    only if the profile has such keys.

    Raises:
        ProfileError: naming the key and listing what the rig has.
    """
    for sec in profile.sections.values():  # a section's own checks against the rig ([vllm] tp size)
        hook = getattr(sec, "match_rig_gpus", None)
        if hook is not None:
            hook(lambda: len(rig.pcie.gpus), rig.name, profile.where)
    per_device = {
        name: sec.devices for name, sec in profile.sections.items() if getattr(sec, "devices", None)
    }
    if not per_device and not profile.bifurcation and not profile.tp_groups:
        return
    from .targets import lane_groups, links

    tree = rig.pcie
    where = profile.where
    gpus = tree.gpus
    index = {g.bdf: i for i, g in enumerate(gpus)}
    short = ""
    if profile.gpus is not None and len(gpus) < profile.gpus:
        short = (
            f" (the profile expects {profile.gpus} GPUs ([rig] gpus) and the rig shows {len(gpus)}: if a GPU "
            "is missing, its key matches nothing; see `lspci -d 10de:` and reseat or power it)"
        )

    for name, devices in per_device.items():
        # a section may name its per-device table otherwise ([vllm.gpus]) and may take its keys as given
        # on a machine without GPUs (the model-fit gate planning for GPUs not in it)
        sub = getattr(profile.sections[name], "device_table", "device")
        if not gpus and getattr(profile.sections[name], "devices_without_gpus", False):
            continue
        if name == "links":
            ends = [t.down for t in links(rig)]
            has = "links end at " + (", ".join(_fn_text(f, index) for f in ends) or "nothing (no GPU)")
        else:
            ends = list(gpus)
            has = "GPUs are " + (", ".join(_fn_text(f, index) for f in ends) or "none")
        claimed: dict[str, DeviceKey] = {}
        for key in devices:
            hit = [f for f in ends if key.matches(f.bdf, index.get(f.bdf), f.slot)]
            if not hit:
                raise ProfileError(
                    where,
                    f"{name}.{sub}",
                    key.text,
                    f"no device on {rig.name} has this PCI address, GPU index or slot name; its {has}{short}",
                )
            for f in hit:
                if f.bdf in claimed:
                    raise ProfileError(
                        where,
                        f"{name}.{sub}",
                        key.text,
                        f"{key.table(name, sub)} and {claimed[f.bdf].table(name, sub)} both name {f.bdf} on {rig.name}: keep one",
                    )
                claimed[f.bdf] = key

    if profile.bifurcation:
        written = getattr(profile.sections.get("bifurcation"), "written", {})
        groups = lane_groups(rig)
        known: dict[str, str] = {}
        for g in groups:
            known[g.key.lower()] = g.key
            for p in g.ports:
                known[p.bdf] = g.key
            for s in g.slots:
                known[s.lower()] = g.key
        hits: dict[str, str] = {}
        for norm in profile.bifurcation:
            text = written.get(norm, norm)
            if norm not in known:
                listed = "; ".join(
                    f"{g.key} (root ports {', '.join(p.bdf for p in g.ports)}"
                    + (f"; slots {', '.join(g.slots)}" if g.slots else "")
                    + ")"
                    for g in groups
                )
                raise ProfileError(
                    where,
                    "bifurcation",
                    text,
                    f"names no lane group, root port or slot on {rig.name} that feeds a GPU; lane groups: "
                    f"{listed or 'none (no root port feeds a GPU)'}{short}",
                )
            if known[norm] in hits:
                raise ProfileError(
                    where,
                    "bifurcation",
                    text,
                    f"names lane group {known[norm]}, as {hits[known[norm]]!r} does: keep one",
                )
            hits[known[norm]] = text

    if profile.tp_groups:
        beyond = sorted({i for g in profile.tp_groups for i in g if i >= len(gpus)})
        if beyond:
            has = f"GPUs 0 to {len(gpus) - 1}" if gpus else "no GPU"
            raise ProfileError(
                where,
                "rig.tp_groups",
                [list(g) for g in profile.tp_groups],
                f"GPU{beyond[0]} does not exist: {rig.name} has {len(gpus)} GPU(s) ({has}, nvidia-smi order){short}",
            )


def _fn_text(fn: Any, index: dict[str, int]) -> str:
    """``0000:4b:00.0 (GPU1, slot PCIE3)``, ``0000:01:00.0 (switch upstream port)``."""
    what = f"GPU{index[fn.bdf]}" if fn.bdf in index else fn.role
    return f"{fn.bdf} ({what}{', slot ' + fn.slot if fn.slot else ''})"
