"""The GPU suites replayed on snapshots: each check passes on healthy state and fails, naming the GPU, on its fault."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .conftest import DATA

PRO = "rtxpro6000x4-switch"
G2 = "0000:05:00.0"  # GPU2 of the switch rig


def _gpu(state: dict[str, Any], bdf: str) -> dict[str, Any]:
    return next(g for g in state["gpus"] if g["bdf"] == bdf)


def _set(bdf: str, **values: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(state: dict[str, Any]) -> None:
        _gpu(state, bdf).update(values)

    return mutate


def _load(bdf: str, **load: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(state: dict[str, Any]) -> None:
        _gpu(state, bdf)["load"].update(load)

    return mutate


def _samples(gens: list[int], width: int = 16, reasons: int = 4) -> list[list[Any]]:
    """Samples over the modelled 3 s window (``window_s``): 20 of them 0.15 s apart, so they span it."""
    return [[1.0 + i * 0.15, g, width, reasons, 340000, 2400] for i, g in enumerate(gens)]


def _run(pytester: pytest.Pytester, snap: Path, *args: str) -> tuple[set[str], str]:
    result = pytester.runpytest_subprocess(
        f"--rig-snapshot={snap}", "-p", "no:cacheprovider", "-rfE", "--tb=short", *args
    )
    out = result.stdout.str()
    return {m.group(1) for m in re.finditer(r"^(?:FAILED|ERROR) \S*::(\S+)", out, re.M)}, out


SUITES = (
    "test_power.py or test_gpu_link_load.py or test_clocks.py or test_gpu_health.py or test_tp_groups.py "
    "or test_vram_free.py or test_gpu_versions.py"
)


@pytest.mark.parametrize("base", ["rtx3090x2-gen4", PRO])
def test_healthy_rig_passes_every_gpu_check(
    pytester: pytest.Pytester, make_snapshot: Callable[..., Path], base: str
) -> None:
    """A healthy modelled rig passes every GPU check (skips only where a check does not apply)."""
    failed, out = _run(
        pytester,
        make_snapshot(base),
        "-k",
        "power or link or clock or ecc or repair or xid or replays "
        "or nvlinks or tp_groups or vram or versions",
    )
    assert failed == set(), out


FAULTS: list[tuple[str, Callable[[dict[str, Any]], None], str, list[str]]] = [
    (
        "power limit back at default",
        _set(G2, power_limit_mw=600000, enforced_limit_mw=600000),
        f"test_power_limit[{G2}]",
        ["power limit 600 W", "expected 350 W", "nvidia-smi -i 2 -pl 350", "systemctl enable"],
    ),
    (
        "enforced limit below the cap",
        _set(G2, enforced_limit_mw=300000),
        f"test_power_limit[{G2}]",
        ["enforced power limit 300 W", "another limiter"],
    ),
    (
        "persistence off",
        _set(G2, persistence_mode=0),
        f"test_persistence_mode[{G2}]",
        ["persistence mode disabled", "nvidia-persistenced"],
    ),
    (
        "link Gen3 under load",
        _load(G2, samples=_samples([3] * 20)),
        f"test_link_under_load[{G2}]",
        ["Gen3 under load, expected Gen4", "trained down"],
    ),
    (
        "link x8 under load",
        _load(G2, samples=_samples([4] * 20, width=8)),
        f"test_link_under_load[{G2}]",
        ["x8 under load, expected x16", "reseat"],
    ),
    (
        "link flapping",
        _load(G2, samples=_samples([4, 3] * 10)),
        f"test_link_not_flapping[{G2}] test_link_under_load[{G2}]",
        ["flapping under load", "19 change(s)"],
    ),
    (
        "HW thermal slowdown",
        _load(G2, samples=_samples([4] * 20, reasons=0x44)),
        f"test_clock_event_reasons[{G2}]",
        ["0x40 (HW thermal slowdown)", "cooling"],
    ),
    (
        "HW power brake",
        _load(G2, samples=_samples([4] * 20, reasons=0x88)),
        f"test_clock_event_reasons[{G2}]",
        ["HW power brake", "PSU"],
    ),
    (
        "uncorrected ECC",
        _set(G2, ecc_uncorrected_volatile=3, ecc_uncorrected_aggregate=3),
        f"test_no_uncorrected_ecc[{G2}]",
        ["3 uncorrected ECC error(s)", "nvidia-smi -i 2 -r"],
    ),
    (
        "row remap pending",
        _set(G2, remapped_rows=[0, 1, 1, 0]),
        f"test_no_memory_repair_pending[{G2}]",
        ["row remapping pending"],
    ),
    (
        "PCIe replays under load",
        _load(G2, replay_before=4, replay_after=57),
        f"test_no_pcie_replays_under_load[{G2}]",
        ["grew by 53", "4 -> 57"],
    ),
    (
        "NVLink down",
        _set(G2, nvlink_states={"0": 1, "1": 0, "2": 1, "3": 1}),
        f"test_nvlinks_up[{G2}]",
        ["NVLink(s) 1 down (3 of 4 up)"],
    ),
    (
        "display attached",
        _set(
            G2,
            display_active=1,
            memory_used_b=900 << 20,
            processes=[{"pid": 1873, "name": "/usr/lib/xorg/Xorg", "used_b": 900 << 20, "kind": "graphics"}],
        ),
        f"test_vram_free[{G2}]",
        ["a display is active", "Xorg (pid 1873, graphics) 900 MiB"],
    ),
    (
        "other card in the TP group",
        _set(G2, name="NVIDIA GeForce RTX 5090", memory_total_b=32607 << 20),
        f"test_tp_groups_homogeneous[{PRO}]",
        [f"GPU2 {G2} (NVIDIA GeForce RTX 5090, 31.8 GiB)"],
    ),
    (
        "fatal XID in the kernel log",
        lambda s: s.update(
            kernel_log=[
                "[ 8123.5] NVRM: Xid (PCI:0000:05:00): 79, pid=4242, name=python3, GPU has fallen off the bus."
            ]
        ),
        f"test_no_fatal_xid[{G2}]",
        ["Xid 79 (ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS: GPU has fallen off the bus", "RESTART_BM"],
    ),
]


@pytest.mark.parametrize(("what", "mutate", "test_id", "lines"), FAULTS, ids=[f[0] for f in FAULTS])
def test_fault_fails_its_check(
    pytester: pytest.Pytester,
    make_snapshot: Callable[..., Path],
    what: str,
    mutate: Callable[[dict[str, Any]], None],
    test_id: str,
    lines: list[str],
) -> None:
    """Each injected fault fails exactly its check, naming the GPU and the fix."""
    swap = what == "other card in the TP group"
    failed, out = _run(pytester, make_snapshot(PRO, mutate, swap_cards=swap), "-k", SUITES.replace(".py", ""))
    extra = {f"test_circuit_budget[{PRO}]"} if "power limit back" in what else set()
    assert failed == set(test_id.split()) | extra, out
    for line in lines:
        assert line in out, (line, out)
    assert "fix: " in out


def test_power_cap_lost_breaks_the_circuit(
    pytester: pytest.Pytester, make_snapshot: Callable[..., Path]
) -> None:
    """One GPU back at 600 W after a reboot pushes the four caps plus the host past the 1800 W circuit."""
    snap = make_snapshot(PRO, _set(G2, power_limit_mw=600000, enforced_limit_mw=600000))
    failed, out = _run(pytester, snap, "-k", "circuit")
    assert failed == {f"test_circuit_budget[{PRO}]"}, out
    assert "350 W + GPU1 350 W + GPU2 600 W + GPU3 350 W + host 300 W = 1950 W" in out


def test_mixed_rig_names_the_odd_cards(pytester: pytest.Pytester, make_snapshot: Callable[..., Path]) -> None:
    """On the switch rig relabelled as the seed's 3080/3070/3060 mix, the odd cards are named."""

    def mix(state: dict[str, Any]) -> None:
        for g, (name, mib) in zip(
            state["gpus"],
            [
                ("NVIDIA GeForce RTX 3080", 10240),
                ("NVIDIA GeForce RTX 3070", 8192),
                ("NVIDIA GeForce RTX 3060", 12288),
                ("NVIDIA GeForce RTX 3080", 10240),
            ],
            strict=True,
        ):
            g.update(name=name, memory_total_b=mib << 20)

    failed, out = _run(pytester, make_snapshot(PRO, mix, swap_cards=True), "-k", "tp_groups")
    assert failed == {f"test_tp_groups_homogeneous[{PRO}]"}, out
    assert "GPU1 0000:04:00.0 (NVIDIA GeForce RTX 3070, 8.0 GiB)" in out
    assert "GPU2 0000:05:00.0 (NVIDIA GeForce RTX 3060, 12.0 GiB)" in out
    assert "differ(s) from NVIDIA GeForce RTX 3080 10.0 GiB" in out


def test_profile_min_driver(pytester: pytest.Pytester, make_snapshot: Callable[..., Path]) -> None:
    """A driver older than the profile's [gpu] min_driver fails; the versions are recorded either way."""
    snap = make_snapshot(PRO)
    (snap / "p.toml").write_text('[gpu]\nmin_driver = "575.51.02"\n[power]\ncap_w = 350\n')
    failed, out = _run(
        pytester,
        snap,
        "-k",
        "versions",
        f"--rig-profile={snap / 'p.toml'}",
        "--junitxml=j.xml",
        "-o",
        "junit_family=xunit1",
    )
    assert failed == {f"test_versions[{PRO}]"}, out
    assert "driver 570.133.07 < 575.51.02" in out
    xml = (pytester.path / "j.xml").read_text()
    assert 'name="nvidia_driver" value="570.133.07"' in xml and 'name="vbios_gpu0"' in xml


@pytest.mark.parametrize("field", ["power_limit_mw", "persistence_mode", "pcie_max_gen", "nvlink_states"])
def test_missing_field_is_unreadable_not_a_pass(
    pytester: pytest.Pytester, make_snapshot: Callable[..., Path], field: str
) -> None:
    """A reading the capture lacks fails as unreadable; a not-supported one too."""

    def drop(state: dict[str, Any]) -> None:
        _gpu(state, G2)[field] = {"unavailable": "not supported on this GPU/driver", "code": "not_captured"}

    failed, out = _run(pytester, make_snapshot(PRO, drop), "-k", SUITES.replace(".py", ""))
    assert failed and all(G2 in t or PRO in t for t in failed), out
    assert "UNREADABLE, not a pass" in out


def test_no_load_readings_is_unreadable(
    pytester: pytest.Pytester, make_snapshot: Callable[..., Path]
) -> None:
    """Without readings under load the load checks fail as unreadable; the link still passes if idle was already full."""

    def idle_only(state: dict[str, Any]) -> None:
        g = _gpu(state, G2)
        g["load"] = {"unavailable": "not captured: idle only", "code": "not_captured"}

    failed, out = _run(pytester, make_snapshot(PRO, idle_only), "-k", "load or clock or replays")
    assert failed == {
        f"test_link_under_load[{G2}]",
        f"test_link_not_flapping[{G2}]",
        f"test_clock_event_reasons[{G2}]",
        f"test_no_pcie_replays_under_load[{G2}]",
    }, out  # idle Gen1: cannot tell without load
    failures = out.split("short test summary info")[0]
    assert failures.count("UNREADABLE, not a pass") == 4, out


def test_snapshot_without_nvml_json_fails_unreadable(
    pytester: pytest.Pytester, make_snapshot: Callable[..., Path]
) -> None:
    """A snapshot without nvml.json fails every GPU check as unreadable, naming what to do."""
    failed, out = _run(pytester, make_snapshot("rtx3090x2-gen4", nvml=False), "-k", "power_limit or vram")
    assert len(failed) == 4, out
    assert "no nvml.json: NVML state was not captured" in out


def test_live_capture_replays(pytester: pytest.Pytester) -> None:
    """The capture taken live on 2x H200 (rigcheck capture, with a 3 s load) replays with every GPU check passing."""
    failed, out = _run(pytester, DATA / "h200x2-live.tar.gz", "-v")
    assert failed == set(), out
    assert "test_clock_event_reasons[0000:00:06.0] PASSED" in out
    assert "test_link_not_flapping[0000:00:07.0] PASSED" in out


def test_live_h100_capture_replays(pytester: pytest.Pytester) -> None:
    """The capture taken live on 1x H100 (700 W, Gen5 x16 under load, no NVLink) replays with every GPU check
    passing and the NVLink check not applicable."""
    failed, out = _run(pytester, DATA / "h100x1-live.tar.gz", "-v", "-rs")
    assert failed == set(), out
    assert "test_power_limit[0000:00:06.0] PASSED" in out
    assert "test_link_under_load[0000:00:06.0] PASSED" in out
    assert "no NVLink on this GPU" in out
