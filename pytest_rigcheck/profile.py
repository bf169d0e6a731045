"""Rig profiles: a TOML file of what the rig should look like.

Without a profile, expectations come from the hardware itself (each link at the lesser of its two
ends' capability, ACS off between GPUs, IOMMU off or passthrough). Built-in presets describe the
seeds' rigs. Sections other than the core ones here belong to feature plugins (``power``, ``p2p``,
``nccl``, ``vllm``, ``gpu``), which validate them; their raw tables are kept in ``Profile.raw``.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ProfileError
from .pcie import normalize_bdf

TOPOLOGY_CLASSES = ("PIX", "PXB", "PHB", "NODE", "SYS")
IOMMU_MODES = ("off", "passthrough")
SPLIT = re.compile(r"^(x(1|2|4|8|16))+$")
FEATURE_SECTIONS = ("power", "p2p", "nccl", "vllm", "gpu", "model", "soak", "storage")
_CORE_KEYS: dict[str, set[str]] = {
    "rig": {"name", "description", "gpus", "tp_groups"},
    "links": {"gen", "width", "device"},
    "bifurcation": set(),  # free-form: lane group or slot -> split
    "iommu": {"allow"},
    "topology": {"max_class"},
}


@dataclass(frozen=True)
class LinkExpect:
    gen: int | None = None
    width: int | None = None


@dataclass(frozen=True)
class Profile:
    """Expectations for one rig. ``source`` says where they came from, for messages."""

    source: str = "hardware defaults (no profile)"
    name: str | None = None
    gpus: int | None = None
    links: LinkExpect = LinkExpect()
    link_overrides: dict[str, LinkExpect] = field(default_factory=dict)  # BDF or slot name -> expect
    bifurcation: dict[str, str] = field(default_factory=dict)  # lane group / root port / slot -> "x8x8"
    iommu_allow: tuple[str, ...] = IOMMU_MODES
    max_topology_class: str | None = None
    tp_groups: tuple[tuple[int, ...], ...] | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    def link_for(self, bdf: str, slot: str | None) -> LinkExpect:
        """The link expectation for the hop ending at ``bdf``: per-device override, else global."""
        for key in (bdf, slot):
            if key and key in self.link_overrides:
                over = self.link_overrides[key]
                return LinkExpect(over.gen or self.links.gen, over.width or self.links.width)
        return self.links


def presets() -> dict[str, Path]:
    """Built-in presets by name (``2x-rtx3090-gen4``, ...)."""
    root = resources.files("pytest_rigcheck") / "presets"
    return {p.name.removesuffix(".toml"): Path(str(p)) for p in root.iterdir() if p.name.endswith(".toml")}


def load_profile(spec: str, base: Path | None = None) -> Profile:
    """Load a profile from a file path or a preset name.

    Args:
        spec: ``rig.toml`` (a path) or a preset name such as ``4x-rtxpro6000-gen4-switch``.
        base: directory a relative path is taken from (the snapshot's, for a manifest's profile).
    """
    path = Path(spec)
    if base is not None and not path.is_absolute():
        path = base / path
    label = str(path)
    if not path.is_file():
        known = presets()
        if spec in known:
            path, label = known[spec], f"preset {spec}"
        else:
            raise ProfileError(
                spec, "profile", spec, f"no such file, and not a preset ({', '.join(sorted(known))})"
            )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(str(path), "(file)", "", f"not valid TOML: {exc}") from None
    except OSError as exc:
        raise ProfileError(str(path), "(file)", "", f"cannot read: {exc.strerror}") from None
    return parse_profile(data, label)


def parse_profile(data: dict[str, Any], where: str) -> Profile:
    """Validate a profile's core sections; a bad value names the key, the value and what is allowed."""
    for top, value in data.items():
        if top not in _CORE_KEYS and top not in FEATURE_SECTIONS:
            allowed = ", ".join(sorted([*_CORE_KEYS, *FEATURE_SECTIONS]))
            raise ProfileError(where, top, value, f"unknown section; sections are {allowed}")
        if not isinstance(value, dict):
            raise ProfileError(where, top, value, "must be a table ([section])")
        keys = _CORE_KEYS.get(top)
        if keys:
            for k in value:
                if k not in keys:
                    raise ProfileError(
                        where,
                        f"{top}.{k}",
                        value[k],
                        f"unknown key; keys of [{top}] are {', '.join(sorted(keys))}",
                    )

    rig = data.get("rig", {})
    links = data.get("links", {})
    gpus = _opt_int(where, "rig.gpus", rig.get("gpus"), 1, 64)
    overrides: dict[str, LinkExpect] = {}
    for key, table in links.get("device", {}).items():
        if not isinstance(table, dict):
            raise ProfileError(where, f"links.device.{key}", table, "must be a table with gen and/or width")
        name = key
        try:
            name = normalize_bdf(key)
        except ValueError:
            pass  # a slot name, such as "PCIE3"
        overrides[name] = _link(where, f"links.device.{key}", table)

    bif: dict[str, str] = {}
    for key, split in data.get("bifurcation", {}).items():
        if not isinstance(split, str) or not SPLIT.match(split) or _lanes(split) > 16:
            raise ProfileError(
                where,
                f"bifurcation.{key}",
                split,
                'a lane split such as "x16", "x8x8", "x4x4x4x4" (16 lanes at most)',
            )
        bif[key.lower()] = split

    allow = data.get("iommu", {}).get("allow", list(IOMMU_MODES))
    if isinstance(allow, str):
        allow = [allow]
    if not isinstance(allow, list) or not allow or any(a not in IOMMU_MODES for a in allow):
        raise ProfileError(where, "iommu.allow", allow, f"a list from {list(IOMMU_MODES)}")

    max_class = data.get("topology", {}).get("max_class")
    if max_class is not None and max_class not in TOPOLOGY_CLASSES:
        raise ProfileError(where, "topology.max_class", max_class, f"one of {', '.join(TOPOLOGY_CLASSES)}")

    tp = rig.get("tp_groups")
    tp_groups = None
    if tp is not None:
        if not isinstance(tp, list) or not all(
            isinstance(g, list) and g and all(isinstance(i, int) and i >= 0 for i in g) for g in tp
        ):
            raise ProfileError(
                where, "rig.tp_groups", tp, "a list of lists of GPU indices, e.g. [[0, 1], [2, 3]]"
            )
        tp_groups = tuple(tuple(g) for g in tp)

    name = rig.get("name")
    if name is not None and not isinstance(name, str):
        raise ProfileError(where, "rig.name", name, "a string")
    return Profile(
        source=f"profile {where}",
        name=name,
        gpus=gpus,
        links=_link(where, "links", {k: v for k, v in links.items() if k != "device"}),
        link_overrides=overrides,
        bifurcation=bif,
        iommu_allow=tuple(allow),
        max_topology_class=max_class,
        tp_groups=tp_groups,
        raw=data,
    )


def _lanes(split: str) -> int:
    return sum(int(n) for n in split.split("x") if n)


def _link(where: str, key: str, table: dict[str, Any]) -> LinkExpect:
    for k in table:
        if k not in ("gen", "width"):
            raise ProfileError(where, f"{key}.{k}", table[k], "unknown key; use gen and width")
    gen = _opt_int(where, f"{key}.gen", table.get("gen"), 1, 6)
    width = table.get("width")
    if width is not None and width not in (1, 2, 4, 8, 16, 32):
        raise ProfileError(where, f"{key}.width", width, "one of 1, 2, 4, 8, 16, 32")
    return LinkExpect(gen, width)


def _opt_int(where: str, key: str, value: object, lo: int, hi: int) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ProfileError(where, key, value, f"a whole number from {lo} to {hi}")
    return value
