"""Rig profiles: presets load, bad values name the key, the value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_rigcheck.errors import ProfileError
from pytest_rigcheck.profile import load_profile, parse_profile, presets


def test_presets_load() -> None:
    """Every built-in preset is a valid profile."""
    names = presets()
    assert {"2x-rtx3090-gen4", "4x-rtxpro6000-gen4-switch", "8x-h100-nvlink", "8x-h200-nvlink"} <= set(names)
    for name in names:
        assert load_profile(name).source == f"profile preset {name}"


def test_per_device_overrides() -> None:
    """Per-GPU and per-slot link expectations override the global one."""
    p = parse_profile(
        {"links": {"gen": 4, "width": 16, "device": {"00000000:17:00.0": {"width": 8}, "PCIE3": {"gen": 3}}}},
        "t",
    )
    assert p.link_for("0000:17:00.0", None).width == 8
    assert p.link_for("0000:18:00.0", "PCIE3").gen == 3
    assert p.link_for("0000:19:00.0", None).gen == 4


@pytest.mark.parametrize(
    ("data", "key", "allowed"),
    [
        ({"links": {"gen": 7}}, "links.gen", "from 1 to 6"),
        ({"links": {"width": 12}}, "links.width", "one of 1, 2, 4, 8, 16, 32"),
        ({"links": {"speed": 4}}, "links.speed", "unknown key"),
        ({"bifurcation": {"0000:00:03": "x8x4x8"}}, "bifurcation.0000:00:03", "lane split"),
        ({"iommu": {"allow": ["on"]}}, "iommu.allow", "off"),
        ({"topology": {"max_class": "NV4"}}, "topology.max_class", "PIX"),
        ({"rig": {"gpus": 0}}, "rig.gpus", "from 1 to 64"),
        ({"rig": {"tp_groups": [[0, "a"]]}}, "rig.tp_groups", "lists of GPU indices"),
        ({"rigs": {}}, "rigs", "unknown section"),
    ],
)
def test_bad_values(data: dict, key: str, allowed: str) -> None:
    """A bad value raises ProfileError naming key, value and what is allowed."""
    with pytest.raises(ProfileError) as info:
        parse_profile(data, "rig.toml")
    assert info.value.key == key
    assert allowed in str(info.value)
    assert "rig.toml" in str(info.value)


def test_bad_toml(tmp_path: Path) -> None:
    """A file that is not TOML is a ProfileError with the file named."""
    f = tmp_path / "rig.toml"
    f.write_text("[links\n")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile(str(f))


def test_unknown_preset() -> None:
    """An unknown name lists the presets."""
    with pytest.raises(ProfileError, match="2x-rtx3090-gen4"):
        load_profile("no-such-rig")
