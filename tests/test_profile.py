"""Rig profiles: presets load; every section is validated at load; device keys are matched against the rig.

Failing inputs from the new-user trial (gate.md D3, D16, D21, D30, D31) and the public case
03-mixed-power-caps (club-3090 issues 761 and 769: an RTX 5090 capped at 400 W beside an RTX 3090 Ti at
290 W) are kept here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_rigcheck.errors import ProfileError
from pytest_rigcheck.gpu.expect import GpuSection, PowerSection, expectations
from pytest_rigcheck.gpu.state import SystemState
from pytest_rigcheck.p2p.thresholds import NcclSection, P2pSection
from pytest_rigcheck.profile import (
    SECTION_PARSERS,
    BifurcationSection,
    DeviceKey,
    IommuSection,
    LinksSection,
    Profile,
    RigSection,
    TopologySection,
    load_profile,
    match_rig,
    parse_profile,
    presets,
)
from pytest_rigcheck.rig import Rig
from pytest_rigcheck.snapshot import open_snapshot
from pytest_rigcheck.targets import GpuTarget
from pytest_rigcheck.vllm.settings import VllmSettings

from .conftest import REPO, SNAPSHOTS

CASE03 = Path(__file__).parent / "data" / "case03-mixed-power-caps"


@pytest.fixture
def open_rig() -> Iterator[Any]:
    """``open_rig(snapshot, profile)``: a replayed rig (closed after the test)."""
    opened: list[Rig] = []

    def make(snapshot: Path | str, profile: Profile | None = None) -> Rig:
        rig = Rig.replay(open_snapshot(snapshot), profile or Profile())
        opened.append(rig)
        return rig

    yield make
    for r in opened:
        r.close()


def test_presets_load() -> None:
    """Every built-in preset is a valid profile."""
    names = presets()
    assert {"2x-rtx3090-gen4", "4x-rtxpro6000-gen4-switch", "8x-h100-nvlink", "8x-h200-nvlink"} <= set(names)
    for name in names:
        assert load_profile(name).source == f"profile preset {name}"


def test_presets_match_their_snapshots(open_rig: Any) -> None:
    """Each shipped snapshot's manifest profile matches that snapshot's rig (no stray device key)."""
    for snap in sorted(SNAPSHOTS.iterdir()):
        rig = open_rig(snap)
        if rig.manifest.profile:
            match_rig(load_profile(rig.manifest.profile, base=rig.root), rig)


def test_per_device_overrides() -> None:
    """Per-GPU (by address or index) and per-slot link expectations override the global one."""
    p = parse_profile(
        {
            "links": {
                "gen": 4,
                "width": 16,
                "device": {"00000000:17:00.0": {"width": 8}, "PCIE3": {"gen": 3}, "2": {"width": 4}},
            }
        },
        "t",
    )
    assert p.link_for("0000:17:00.0", None).width == 8
    assert p.link_for("0000:18:00.0", "pcie3").gen == 3  # slot names in any case
    assert p.link_for("0000:19:00.0", None).gen == 4
    assert p.link_for("0000:19:00.0", None, 2).width == 4


def test_device_key() -> None:
    """A device key is a PCI address (any spelling), a GPU index, or a slot name."""
    assert DeviceKey.parse("03:00.0") == DeviceKey("03:00.0", "bdf", "0000:03:00.0")
    assert DeviceKey.parse("3").matches("0000:06:00.0", 3, None)
    assert not DeviceKey.parse("3").matches("0000:06:00.0", None, None)
    assert DeviceKey.parse("Slot2").matches("0000:01:00.0", None, "SLOT2")
    assert DeviceKey.parse("0000:03:00.0").table("power") == '[power.device."0000:03:00.0"]'


def test_every_section_parsed_at_load() -> None:
    """Every section has a registered parser; a loaded profile holds each as a typed object."""
    data = {
        "rig": {"gpus": 2, "tp_groups": [[0, 1]]},
        "links": {"gen": 4},
        "bifurcation": {"00:03": "x8x8"},
        "iommu": {"allow": ["off"]},
        "topology": {"max_class": "PHB"},
        "power": {"cap_w": 350, "device": {"1": {"cap_w": 290}}},
        "gpu": {"min_driver": "550.54.15", "device": {"0": {"max_vram_used_mib": 1024}}},
        "p2p": {"required": False, "warn_band": 0.2},
        "nccl": {"min_busbw_gbps": 10},
        "vllm": {"model": "m", "tensor_parallel_size": 2},
        "soak": {"max_clock_drop": 0.1},
        "storage": {"min_read_gbps": 2.0},
    }
    assert set(data) == set(SECTION_PARSERS)
    p = parse_profile(data, "rig.toml")
    kinds = {
        "rig": RigSection,
        "links": LinksSection,
        "bifurcation": BifurcationSection,
        "iommu": IommuSection,
        "topology": TopologySection,
        "power": PowerSection,
        "gpu": GpuSection,
        "p2p": P2pSection,
        "nccl": NcclSection,
        "vllm": VllmSettings,
    }
    for name, kind in kinds.items():
        assert isinstance(p.sections[name], kind), name
    assert p.bifurcation == {"0000:00:03": "x8x8"}
    assert p.section("p2p").required is False and p.section("p2p").warn_band == 0.2
    assert p.section("vllm").tensor_parallel_size == 2
    assert p.raw == data  # kept for compatibility
    # A section the profile leaves out gives its defaults.
    assert Profile().section("power") == PowerSection()
    assert Profile().section("p2p").required is True


def test_parsers_import_nothing_heavy() -> None:
    """Loading a profile with every feature section imports neither torch, pynvml, nor the checks."""
    code = (
        "import sys\n"
        "from pytest_rigcheck.profile import parse_profile\n"
        "parse_profile({'power': {'cap_w': 1}, 'gpu': {}, 'p2p': {}, 'nccl': {}, 'vllm': {}}, 't')\n"
        "bad = [m for m in ('torch', 'pynvml', 'pytest_rigcheck.gpu.nvml', 'pytest_rigcheck.p2p.checks',"
        " 'pytest_rigcheck.p2p.measure', 'pytest_rigcheck.vllm.checks') if m in sys.modules]\n"
        "print(bad); sys.exit(bool(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize(
    ("data", "key", "allowed"),
    [
        ({"links": {"gen": 7}}, "links.gen", "from 1 to 6"),
        ({"links": {"width": 12}}, "links.width", "one of 1, 2, 4, 8, 16, 32"),
        ({"links": {"width": True}}, "links.width", "one of 1, 2, 4, 8, 16, 32"),
        ({"links": {"speed": 4}}, "links.speed", "unknown key"),
        ({"links": {"device": {"PCIE3": {"gen": 9}}}}, 'links.device."PCIE3".gen', "from 1 to 6"),
        ({"links": {"device": {"PCIE3": 16}}}, 'links.device."PCIE3"', "a table"),
        ({"bifurcation": {"0000:00:03": "x8x4x8"}}, "bifurcation.0000:00:03", "lane split"),
        (
            {"bifurcation": {"00:03": "x8x8", "0000:00:03": "x16"}},
            "bifurcation.0000:00:03",
            "same lane group",
        ),
        ({"iommu": {"allow": ["on"]}}, "iommu.allow", "off"),
        ({"iommu": {"mode": "off"}}, "iommu.mode", "keys of [iommu] are allow"),
        ({"topology": {"max_class": "NV4"}}, "topology.max_class", "PIX"),
        ({"rig": {"gpus": 0}}, "rig.gpus", "from 1 to 64"),
        ({"rig": {"gpus": 2.0}}, "rig.gpus", "whole number of GPUs"),
        ({"rig": {"name": 5}}, "rig.name", "a string"),
        ({"rig": {"tp_groups": [[0, "a"]]}}, "rig.tp_groups", "lists of GPU indices"),
        ({"rig": {"tp_groups": [[0, 1], []]}}, "rig.tp_groups", "lists of GPU indices"),
        # gate.md D16: duplicate and overlapping groups were accepted.
        ({"rig": {"tp_groups": [[0, 0], [1, 2]]}}, "rig.tp_groups", "GPU0 appears twice"),
        ({"rig": {"tp_groups": [[0, 1], [1, 2]]}}, "rig.tp_groups", "GPU1 is in two groups"),
        ({"rig": {"gpus": 4, "tp_groups": [[0, 9]]}}, "rig.tp_groups", "from 0 to 3 ([rig] gpus = 4)"),
        ({"rigs": {}}, "rigs", "unknown section"),
        # gate.md D31: [model] was accepted with any keys and never read.
        ({"model": {"name": "x"}}, "model", "unknown section"),
        ({"power": 350}, "power", "a table"),
    ],
)
def test_bad_core_values(data: dict[str, Any], key: str, allowed: str) -> None:
    """A bad core value raises ProfileError naming file, key, value and what is allowed."""
    with pytest.raises(ProfileError) as info:
        parse_profile(data, "rig.toml")
    assert info.value.key == key
    assert allowed in str(info.value)
    assert str(info.value).startswith("rig.toml: ")


@pytest.mark.parametrize(
    ("data", "key", "allowed"),
    [
        # gate.md D16: each of these became 18-44 per-test UNREADABLE failures instead of one usage error.
        ({"power": {"cap_w": -350}}, "power.cap_w", "a number of watts, above 0 and at most 2000"),
        ({"power": {"cap_W": 350}}, "power.cap_W", "unknown key (did you mean cap_w?); keys of [power] are"),
        ({"power": {"cap_w": "350"}}, "power.cap_w", "a number of watts"),
        ({"power": {"cap_w": 350000}}, "power.cap_w", "at most 2000"),  # milliwatts by mistake
        ({"power": {"tolerance_w": -1}}, "power.tolerance_w", "a number of watts, from 0 to 200"),
        ({"power": {"circuit_w": 0}}, "power.circuit_w", "above 0"),
        ({"power": {"host_w": True}}, "power.host_w", "a number of watts"),
        ({"iommu": {"allow": "off"}}, "iommu.allow", "a list from"),  # FRESH3/FRESH4: a string, not a list
        (
            {"power": {"circuit_w": 500, "host_w": 800}},
            "power.host_w",
            "a wattage below [power] circuit_w = 500 W",
        ),
        ({"power": {"cap_w": float("nan")}}, "power.cap_w", "a number of watts"),
        ({"p2p": {"min_unidir_gbps": -5}}, "p2p.min_unidir_gbps", "a number of GB/s, above 0"),
        ({"p2p": {"min_unidr_gbps": 5}}, "p2p.min_unidr_gbps", "did you mean min_unidir_gbps?"),
        ({"p2p": {"max_latency_us": 0}}, "p2p.max_latency_us", "a number of microseconds, above 0"),
        ({"p2p": {"warn_band": 5}}, "p2p.warn_band", "a fraction from 0 to below 1"),
        ({"p2p": {"required": "no"}}, "p2p.required", "true or false"),
        ({"nccl": {"min_busbw_gbps": -1}}, "nccl.min_busbw_gbps", "a number of GB/s"),
        ({"nccl": {"warn_band": 1}}, "nccl.warn_band", "a fraction"),
        ({"nccl": {"required": False}}, "nccl.required", "keys of [nccl] are min_busbw_gbps, warn_band"),
        ({"gpu": {"min_drivr": "550.54.15"}}, "gpu.min_drivr", "did you mean min_driver?"),
        ({"gpu": {"min_driver": "new"}}, "gpu.min_driver", "a version string"),
        ({"gpu": {"max_vram_used_mib": -1}}, "gpu.max_vram_used_mib", "a number of MiB, from 0 to 1048576"),
        ({"gpu": {"max_link_changes": 1.5}}, "gpu.max_link_changes", "a whole number of link changes"),
        ({"gpu": {"max_replay_growth": -2}}, "gpu.max_replay_growth", "a whole number of replays"),
        ({"vllm": {"port": 0}}, "vllm.port", "from 1 to 65535"),
        ({"vllm": {"modle": "m"}}, "vllm.modle", "unknown key"),
    ],
)
def test_bad_feature_values(data: dict[str, Any], key: str, allowed: str) -> None:
    """A bad feature-section value is refused when the profile loads, with its section, key and unit."""
    with pytest.raises(ProfileError) as info:
        parse_profile(data, "rig.toml")
    assert info.value.key == key
    assert allowed in str(info.value)
    assert str(info.value).startswith("rig.toml: ")
    if "mib" in key:
        assert "watts" not in str(info.value)  # gate.md D16: MiB was worded "a number of watts / a count"


@pytest.mark.parametrize(
    ("device", "key", "allowed"),
    [
        ({"0000:03:00.0": {"cap_w": -1}}, 'power.device."0000:03:00.0".cap_w', "a number of watts"),
        ({"0000:03:00.0": {"cap": 290}}, 'power.device."0000:03:00.0".cap', "did you mean cap_w?"),
        ({"0000:03:00.0": {"circuit_w": 900}}, 'power.device."0000:03:00.0".circuit_w', "cap_w, tolerance_w"),
        ({"0000:03:00.0": 290}, 'power.device."0000:03:00.0"', "a table"),
        ({" ": {"cap_w": 290}}, 'power.device." "', "a PCI address, a GPU index or a slot name"),
        (
            {"03:00.0": {"cap_w": 1}, "0000:03:00.0": {"cap_w": 2}},
            'power.device."0000:03:00.0"',
            "same device",
        ),
    ],
)
def test_bad_device_tables(device: dict[str, Any], key: str, allowed: str) -> None:
    """A per-device table with an unknown key or a bad value stops the run naming the table's key."""
    with pytest.raises(ProfileError) as info:
        parse_profile({"power": {"device": device}}, "rig.toml")
    assert info.value.key == key
    assert allowed in str(info.value)


def test_gpu_device_keys() -> None:
    """``[gpu.device.X]`` takes the per-GPU limits, not the rig-wide version floors."""
    with pytest.raises(ProfileError, match=r"gpu\.device\.\"0\"\.min_driver.*keys of"):
        parse_profile({"gpu": {"device": {"0": {"min_driver": "550"}}}}, "rig.toml")


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


@pytest.mark.parametrize("spec", ["", "  ", 5, ["a"]])
def test_empty_or_non_text_profile_name(spec: object, tmp_path: Path) -> None:
    """gate.md D30/D10: a manifest ``profile = ""`` (or a number) is refused, not read as "no profile"."""
    with pytest.raises(ProfileError, match="a file path or a preset name"):
        load_profile(spec, base=tmp_path)  # type: ignore[arg-type]


# -- per-GPU expectations ---------------------------------------------------------------------------


def test_expectations_per_device(open_rig: Any) -> None:
    """A GPU's own ``[power.device.X]`` / ``[gpu.device.X]`` values win, and say where they came from."""
    p = parse_profile(
        {
            "power": {
                "cap_w": 350,
                "tolerance_w": 5,
                "device": {"0000:04:00.0": {"cap_w": 300}, "3": {"tolerance_w": 9}},
            },
            "gpu": {
                "max_vram_used_mib": 100,
                "device": {"0": {"max_vram_used_mib": 1024, "max_link_changes": 2}},
            },
        },
        "rig.toml",
    )
    rig = open_rig(SNAPSHOTS / "rtxpro6000x4-switch", p)
    t0, t1, _, t3 = (GpuTarget(rig, g) for g in rig.pcie.gpus)
    e0, e1, e3 = (expectations(p, t) for t in (t0, t1, t3))
    assert (e0.cap_w, e0.max_vram_used_mib, e0.max_link_changes) == (350, 1024, 2)
    assert e0.said("max_vram_used_mib") == '[gpu.device."0"] max_vram_used_mib'
    assert (e1.cap_w, e1.tolerance_w, e1.max_vram_used_mib) == (300, 5, 100)
    assert e1.said("cap_w") == '[power.device."0000:04:00.0"] cap_w'
    assert (e3.cap_w, e3.tolerance_w) == (350, 9)
    assert e3.said("cap_w") == "[power] cap_w"
    assert expectations(p).cap_w == 350  # rig-wide


# -- the profile against the rig --------------------------------------------------------------------


def _mismatch(open_rig: Any, snapshot: str, data: dict[str, Any]) -> ProfileError:
    rig = open_rig(SNAPSHOTS / snapshot)
    with pytest.raises(ProfileError) as info:
        match_rig(parse_profile(data, "rig.toml"), rig)
    return info.value


def test_typo_bdf_names_key_and_lists_links(open_rig: Any) -> None:
    """gate.md D3: ``[links.device."0000:4c:00.0"]`` (the GPU is 4b) matched nothing and a GPU passed."""
    err = _mismatch(
        open_rig,
        "rtx3090x2-riser-x8",
        {"rig": {"gpus": 2}, "links": {"gen": 4, "width": 8, "device": {"0000:4c:00.0": {"width": 16}}}},
    )
    assert err.key == "links.device" and err.value == "0000:4c:00.0"
    text = str(err)
    assert "no device on rtx3090x2-riser-x8 has this PCI address, GPU index or slot name" in text
    assert "0000:21:00.0 (GPU0, slot PCIE1), 0000:4b:00.0 (GPU1, slot PCIE3)" in text


@pytest.mark.parametrize(
    "device", [{"0000:4b:00.0": {"width": 16}}, {"1": {"width": 16}}, {"pcie3": {"width": 16}}]
)
def test_links_device_by_address_index_or_slot(open_rig: Any, device: dict[str, Any]) -> None:
    """The same link is named by its GPU's address, its GPU index or its slot (any case)."""
    p = parse_profile({"links": {"device": device}}, "rig.toml")
    rig = open_rig(SNAPSHOTS / "rtx3090x2-riser-x8", p)
    match_rig(p, rig)
    gpu1 = rig.pcie.gpus[1]
    assert p.link_for(gpu1.bdf, gpu1.slot, 1).width == 16


def test_switch_uplink_by_slot(open_rig: Any) -> None:
    """A link key may name a switch port on a GPU's path (here by its slot, SLOT2)."""
    p = parse_profile({"links": {"device": {"SLOT2": {"width": 16}}}}, "rig.toml")
    match_rig(p, open_rig(SNAPSHOTS / "rtxpro6000x4-switch", p))


def test_bifurcation_slot_typo(open_rig: Any) -> None:
    """gate.md D3: a ``[bifurcation] SLOT9`` typo was ignored; now it names the lane groups there are."""
    err = _mismatch(open_rig, "rtx3090x2-gen4", {"bifurcation": {"SLOT9": "x8x8"}})
    assert err.key == "bifurcation" and err.value == "SLOT9"
    assert (
        "0000:00:01 (root ports 0000:00:01.1; slots PCIE1); 0000:00:03 (root ports 0000:00:03.1; slots PCIE3)"
        in str(err)
    )


@pytest.mark.parametrize("key", ["0000:00:03", "00:03", "0000:00:03.1", "PCIE3", "pcie3"])
def test_bifurcation_keys_that_match(open_rig: Any, key: str) -> None:
    """A lane group (with or without domain), a root port or a slot below it all name lane group 00:03."""
    p = parse_profile({"bifurcation": {key: "x16"}}, "rig.toml")
    rig = open_rig(SNAPSHOTS / "rtx3090x2-gen4", p)
    match_rig(p, rig)
    assert (
        sum(
            k in p.bifurcation
            for k in next(t for t in _lane_groups(rig) if t.key == "0000:00:03").profile_keys
        )
        == 1
    )


def _lane_groups(rig: Rig) -> list[Any]:
    from pytest_rigcheck.targets import lane_groups

    return lane_groups(rig)


def test_bifurcation_two_keys_one_group(open_rig: Any) -> None:
    """Two keys naming one lane group (its key and its slot) are refused: which one holds is unclear."""
    err = _mismatch(open_rig, "rtx3090x2-gen4", {"bifurcation": {"0000:00:03": "x16", "PCIE3": "x8x8"}})
    assert "keep one" in str(err)


def test_power_device_unmatched_lists_gpus(open_rig: Any) -> None:
    """An unmatched ``[power.device.X]`` names the key and lists the GPUs by address, index and slot."""
    err = _mismatch(open_rig, "rtxpro6000x4-switch", {"power": {"device": {"0000:07:00.0": {"cap_w": 300}}}})
    assert err.key == "power.device"
    assert (
        "GPUs are 0000:03:00.0 (GPU0), 0000:04:00.0 (GPU1), 0000:05:00.0 (GPU2), 0000:06:00.0 (GPU3)"
        in str(err)
    )


def test_gpu_device_index_beyond_rig(open_rig: Any) -> None:
    """``[gpu.device.4]`` on a 4-GPU rig (GPU0-3) matches nothing."""
    err = _mismatch(open_rig, "rtxpro6000x4-switch", {"gpu": {"device": {"4": {"max_vram_used_mib": 9}}}})
    assert err.key == "gpu.device" and err.value == "4"


def test_vllm_gpus_key_beyond_rig_lists_gpus(open_rig: Any) -> None:
    """``[vllm.gpus] "2"`` on a 2-GPU rig matches nothing, as any per-device key (the model-fit gate would
    otherwise size the served group from a GPU that is not there)."""
    entry = {"name": "RTX 3090", "total_gib": 23.58, "used_gib": 0}
    err = _mismatch(open_rig, "rtx3090x2-riser-x8", {"vllm": {"gpus": {"0": entry, "2": entry}}})
    assert err.key == "vllm.gpus" and err.value == "2"
    assert "GPUs are 0000:21:00.0 (GPU0, slot PCIE1), 0000:4b:00.0 (GPU1, slot PCIE3)" in str(err)
    err = _mismatch(open_rig, "rtx3090x2-riser-x8", {"vllm": {"gpus": {"1": entry, "PCIE3": entry}}})
    assert '[vllm.gpus."PCIE3"] and [vllm.gpus."1"] both name 0000:4b:00.0' in str(err)
    match_rig(
        parse_profile({"vllm": {"gpus": {"pcie3": entry}}}, "rig.toml"),
        open_rig(SNAPSHOTS / "rtx3090x2-riser-x8"),
    )


def test_two_tables_one_gpu(open_rig: Any) -> None:
    """A GPU named by two tables of one section (address and index) is refused."""
    err = _mismatch(
        open_rig,
        "rtxpro6000x4-switch",
        {"power": {"device": {"0": {"cap_w": 300}, "0000:03:00.0": {"cap_w": 310}}}},
    )
    assert "both name 0000:03:00.0" in str(err)


def test_tp_groups_beyond_rig(open_rig: Any) -> None:
    """gate.md D16: ``tp_groups = [[0, 9]]`` on a 4-GPU rig became 4 failures; now one error."""
    err = _mismatch(open_rig, "rtxpro6000x4-switch", {"rig": {"tp_groups": [[0, 9]]}})
    assert err.key == "rig.tp_groups"
    assert "GPU9 does not exist: rtxpro6000x4-switch has 4 GPU(s) (GPUs 0 to 3" in str(err)


def test_missing_gpu_is_named(open_rig: Any) -> None:
    """When the rig shows fewer GPUs than ``[rig] gpus``, the error says a missing GPU may be the cause."""
    err = _mismatch(
        open_rig, "rtx3090x2-gen4", {"rig": {"gpus": 3}, "power": {"device": {"2": {"cap_w": 300}}}}
    )
    assert "the profile expects 3 GPUs ([rig] gpus) and the rig shows 2" in str(err)


def _readme_profile() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Profiles") :]
    match = re.search(r"```toml\n(.*?)```", section, re.S)
    assert match
    return match.group(1)


def test_readme_profile_fits_its_rig(open_rig: Any, tmp_path: Path) -> None:
    """The README's example profile loads and matches the rig it is shown with (rtxpro6000x4-switch)."""
    f = tmp_path / "rig.toml"
    f.write_text(_readme_profile())
    p = load_profile(str(f))
    assert p.section("power").devices and p.section("gpu").devices and p.link_overrides
    match_rig(p, open_rig(SNAPSHOTS / "rtxpro6000x4-switch", p))


# -- end to end: a usage error (exit 4) before any check --------------------------------------------

BAD_PROFILES = {
    "typo-bdf": (
        "rtx3090x2-riser-x8",
        '[rig]\ngpus = 2\n[links]\ngen = 4\nwidth = 8\n[links.device."0000:4c:00.0"]\nwidth = 16\n',
        "invalid value '0000:4c:00.0' for 'links.device': no device on rtx3090x2-riser-x8",
    ),
    "bifurcation-slot9": (
        "rtx3090x2-riser-x8",
        '[bifurcation]\nSLOT9 = "x8x8"\n',
        "invalid value 'SLOT9' for 'bifurcation': names no lane group",
    ),
    "cap_W": (
        "rtxpro6000x4-switch",
        "[power]\ncap_W = 350\n",
        "'power.cap_W': unknown key (did you mean cap_w?)",
    ),
    "negative-cap": ("rtxpro6000x4-switch", "[power]\ncap_w = -350\n", "'power.cap_w': a number of watts"),
    "tp-groups-0-9": ("rtxpro6000x4-switch", "[rig]\ntp_groups = [[0, 9]]\n", "GPU9 does not exist"),
    "p2p-negative": ("rtxpro6000x4-switch", "[p2p]\nmin_unidir_gbps = -5\n", "'p2p.min_unidir_gbps'"),
    "vram-negative": ("rtxpro6000x4-switch", "[gpu]\nmax_vram_used_mib = -1\n", "a number of MiB"),
    "model-section": ("rtxpro6000x4-switch", '[model]\nname = "x"\n', "'model': unknown section"),
    "power-device-unknown-key": (
        "rtxpro6000x4-switch",
        '[power.device."0000:03:00.0"]\ncap = 290\n',
        "'power.device.\"0000:03:00.0\".cap': unknown key (did you mean cap_w?)",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_PROFILES))
def test_bad_profile_stops_before_any_check(pytester: pytest.Pytester, tmp_path: Path, case: str) -> None:
    """Each bad profile is one usage error (exit 4) naming the key; no check runs."""
    snapshot, text, message = BAD_PROFILES[case]
    prof = tmp_path / "p.toml"
    prof.write_text(text)
    result = pytester.runpytest(
        f"--rig-snapshot={SNAPSHOTS / snapshot}", f"--rig-profile={prof}", "-p", "no:cacheprovider"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert message in err, err
    assert str(prof) in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1, err  # one line, no traceback
    assert not re.search(r"\d+ (passed|failed)", result.stdout.str())


def test_manifest_empty_profile_is_usage_error(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """gate.md D30: a manifest ``profile = ""`` silently meant "no profile"; now it stops the run."""
    snap = tmp_path / "snap"
    shutil.copytree(SNAPSHOTS / "rtx3090x2-gen4", snap, symlinks=True)
    manifest = snap / "MANIFEST.toml"
    manifest.write_text(manifest.read_text().replace('profile = "2x-rtx3090-gen4"', 'profile = ""'))
    result = pytester.runpytest(f"--rig-snapshot={snap}", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "profile is empty" in result.stderr.str()


# -- public case 03: two cards, each with its own cap -----------------------------------------------


@pytest.mark.parametrize(("snapshot", "failed"), [("snapshot-caps-set", 0), ("snapshot-caps-lost", 2)])
def test_case03_per_device_caps(pytester: pytest.Pytester, snapshot: str, failed: int) -> None:
    """Public case 03-mixed-power-caps (club-3090 issues 761, 769; the snapshots' flattened symlinks restored).

    Caps set: both cards pass at their own caps. Caps lost after a power-down: both fail, each naming its
    own expected cap, the table it came from and its own fix.
    """
    result = pytester.runpytest(
        f"--rig-snapshot={CASE03 / (snapshot + '.tar.gz')}",
        f"--rig-profile={CASE03 / 'profile-per-device.toml'}",
        "-k",
        "power_limit",
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(passed=2 - failed, failed=failed)
    if failed:
        out = result.stdout.str()
        assert "power limit 600 W (the card's default" in out and "expected 400 W" in out
        assert '400 W +/- 5 W ([power.device."0000:01:00.0"] cap_w' in out
        assert "sudo nvidia-smi -i 0 -pl 400" in out
        assert "power limit 450 W" in out and "expected 290 W" in out
        assert '290 W +/- 5 W ([power.device."0000:03:00.0"] cap_w' in out
        assert "sudo nvidia-smi -i 1 -pl 290" in out
        # one boot-time unit per GPU (fresh-user finding: one file name for both, the second overwrote the first)
        assert "/etc/systemd/system/nvidia-power-cap-0000-01-00.0.service" in out
        assert "ExecStart=/usr/bin/nvidia-smi -i 00000000:01:00.0 -pl 400" in out
        assert "/etc/systemd/system/nvidia-power-cap-0000-03-00.0.service" in out
        assert "ExecStart=/usr/bin/nvidia-smi -i 00000000:03:00.0 -pl 290" in out


def _case03(open_rig: Any, snapshot: str, profile: Profile) -> tuple[Rig, dict[str, Any]]:
    rig = open_rig(CASE03 / f"{snapshot}.tar.gz", profile)
    system = SystemState.from_json(json.loads((rig.root / "nvml.json").read_text()), "nvml.json")
    return rig, {g.bdf: g for g in system.gpus}


def test_case03_circuit_fix_uses_each_cap(open_rig: Any) -> None:
    """The circuit budget's fix caps each GPU at its own profile cap (400 W and 290 W), not one even share."""
    from pytest_rigcheck.gpu.power import circuit

    text = (
        (CASE03 / "profile-per-device.toml")
        .read_text()
        .replace("tolerance_w = 5", "tolerance_w = 5\ncircuit_w = 900\nhost_w = 150")
    )
    p = parse_profile(__import__("tomllib").loads(text), "p.toml")
    rig, gpus = _case03(open_rig, "snapshot-caps-lost", p)
    v = circuit(rig, gpus)
    assert v.status == "fail", str(v)
    assert v.measured_value == 600 + 450 + 150 and v.expected_value == 900
    assert "GPU0 400 W + GPU1 290 W + host 150 W = 840 W" in v.fix[0]
    assert "sudo nvidia-smi -i 0 -pl 400; sudo nvidia-smi -i 1 -pl 290" in v.fix[0]
    rig, gpus = _case03(open_rig, "snapshot-caps-set", p)
    assert circuit(rig, gpus).status == "pass"


# -- gate.md D21: the tp_groups fix proposes homogeneous groups -------------------------------------


def test_tp_groups_fix_is_homogeneous(open_rig: Any) -> None:
    """On 3080 + 3070 + 3060 the fix proposed [[0, 1], [2]], itself mixed; now one group per kind."""
    from pytest_rigcheck.gpu.inventory import tp_groups

    rig = open_rig(SNAPSHOTS / "rtx3080-3070-3060-mixed")
    system = SystemState.from_json(json.loads((rig.root / "nvml.json").read_text()), "nvml.json")
    v = tp_groups(rig, {g.bdf: g for g in system.gpus})
    assert v.status == "fail"
    assert "[rig] tp_groups = [[0], [1], [2]]" in v.fix[0]


def test_tp_groups_fix_keeps_pairs(open_rig: Any) -> None:
    """A mixed group of two 5090-class and two 3090-class cards splits into its two kinds; a good group stays."""
    from pytest_rigcheck.gpu.inventory import tp_groups
    from pytest_rigcheck.gpu.state import F_MEM_TOTAL, F_NAME

    rig = open_rig(
        SNAPSHOTS / "rtxpro6000x4-switch", parse_profile({"rig": {"tp_groups": [[0, 2, 1, 3]]}}, "t")
    )
    system = SystemState.from_json(json.loads((rig.root / "nvml.json").read_text()), "nvml.json")
    gpus = {g.bdf: g for g in system.gpus}
    for g in system.gpus[2:]:
        g.values[F_NAME] = "NVIDIA GeForce RTX 3090"
        g.values[F_MEM_TOTAL] = 24 << 30
    v = tp_groups(rig, gpus)
    assert v.status == "fail"
    assert "[rig] tp_groups = [[0, 1], [2, 3]]" in v.fix[0]


def test_link_names_its_device_table(open_rig: Any) -> None:
    """gate.md D3 with the right address: the GPU's x8 link fails against its own table, which is named."""
    from pytest_rigcheck import pcie_checks
    from pytest_rigcheck.targets import links

    p = parse_profile(
        {"rig": {"gpus": 2}, "links": {"gen": 4, "width": 8, "device": {"0000:4b:00.0": {"width": 16}}}},
        "p.toml",
    )
    rig = open_rig(SNAPSHOTS / "rtx3090x2-riser-x8", p)
    match_rig(p, rig)
    v = pcie_checks.link(next(t for t in links(rig) if t.down.bdf == "0000:4b:00.0"))
    assert v.status == "fail", str(v)
    assert 'x16 (profile p.toml [links.device."0000:4b:00.0"] width)' in v.expected


@pytest.mark.parametrize("kind", ["dir", "fifo"])
def test_profile_that_is_not_a_file_says_what_it_is(tmp_path: Path, kind: str) -> None:
    """Fresh-user finding: a FIFO or a directory given as the profile said "no such file"; a FIFO is refused
    without being opened (opening one blocks until a writer comes)."""
    import os

    from pytest_rigcheck.errors import ProfileError
    from pytest_rigcheck.profile import load_profile

    target = tmp_path / "p.toml"
    if kind == "dir":
        target.mkdir()
    else:
        os.mkfifo(target)
    with pytest.raises(ProfileError) as info:
        load_profile(str(target))
    assert ("a directory, not a profile file" if kind == "dir" else "not a regular file") in str(info.value)


def test_profile_with_a_byte_order_mark_loads(tmp_path: Path) -> None:
    """Fresh-user finding: a profile saved with a UTF-8 byte-order mark (a Windows editor) gave a cryptic
    TOML error."""
    from pytest_rigcheck.profile import load_profile

    p = tmp_path / "bom.toml"
    p.write_bytes(b"\xef\xbb\xbf[links]\ngen = 4\n")
    assert load_profile(str(p)).raw["links"]["gen"] == 4
