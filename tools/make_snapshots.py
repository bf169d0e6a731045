"""Write the shipped snapshots in fixtures/sysfs-snapshots/.

Modelled rigs come from ``pytest_rigcheck.testing.RigBuilder`` (real vendor/device IDs and
capability layouts; their manifests say ``kind = "modelled"``). The real captures are unpacked from
../shared/captures and given a manifest. tests/test_snapshots.py checks the committed trees match
what this script writes, so edit here, then run:

    python tools/make_snapshots.py [--captures ../shared/captures]
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_rigcheck.pcie import accelerator_kind
from pytest_rigcheck.testing import GPU_MODELS, RigBuilder, dump_toml

OUT = Path(__file__).resolve().parent.parent / "fixtures" / "sysfs-snapshots"
ACS_ON = 0x001D  # SrcValid+ ReqRedir+ CmpltRedir+ UpstreamFwd+, as on the AMD GPP bridges of NVIDIA/nccl#2079

# Feature plugins add recorded state to modelled snapshots: "module:function"(name, gpu_bdfs) -> dict | None.
STATE_WRITERS = {
    "nvml.json": "pytest_rigcheck.gpu.models:modelled_nvml",
    "p2p.json": "pytest_rigcheck.p2p.models:modelled_p2p",
    "soak.json": "pytest_rigcheck.soak.models:modelled_soak",
    "linkhealth.json": "pytest_rigcheck.soak.models:modelled_linkhealth",
    "storage.json": "pytest_rigcheck.soak.models:modelled_storage",
}


def rtx3090x2(
    name: str,
    *,
    acs_ctrl: int = 0,
    riser_x8: bool = False,
    gen3: bool = False,
    iommu: str = "off",
    bar1: int | None = None,
    aspm: int = 0,
    aer: bool = False,
) -> RigBuilder:
    """2x RTX 3090 on an AMD TRX40 (Threadripper 3000) board, each in a CPU Gen4 x16 slot."""
    b = RigBuilder(
        name,
        cpu="amd",
        iommu=iommu,
        cmdline=None
        if iommu == "off"
        else "BOOT_IMAGE=/boot/vmlinuz-6.8.0-49-generic root=/dev/nvme0n1p2 ro quiet splash",
    )
    host = b.host_bridge(0, 0, numa=0)
    b.root_port(host, "0000:00:08.1", cap=(4, 4), acs_ctrl=None)  # chipset link, no GPU
    rp0 = b.root_port(host, "0000:00:01.1", cap=(4, 16), acs_ctrl=acs_ctrl, slot=1)
    rp1 = b.root_port(host, "0000:00:03.1", cap=(4, 16), acs_ctrl=acs_ctrl, slot=3, lbms=gen3)
    m = GPU_MODELS["rtx3090"]
    # GPU0 idles at Gen1 (NVIDIA power-saving downshift: full width, target Gen4, no LBMS).
    b.gpu(rp0, "0000:21:00.0", m, link=(1, 16), labs=True, bar1=bar1)
    link1 = (3, 16) if gen3 else (4, 8) if riser_x8 else (4, 16)
    b.gpu(rp1, "0000:4b:00.0", m, link=link1, bar1=bar1)
    b.slot_name(rp0.children[0] if rp0.children else rp0, "PCIE1")
    b.slot_name(rp1.children[0] if rp1.children else rp1, "PCIE3")
    for node in (rp1, b.nodes["0000:4b:00.0"]):  # ASPM set at both ends of GPU1's link (BIOS "Auto")
        node.aspm = aspm
    if aer:  # the kernel's AER counters (CONFIG_PCIEAER), all zero at the start of the window
        for node in b.nodes.values():
            if node.port_type is not None and node.class_code >> 8 != 0x0403:
                node.aer = {"correctable": 0, "nonfatal": 0, "fatal": 0}
    return b


def rtxpro6000x4(name: str, *, acs_ctrl: int = 0, bifurcated: bool = False, root: bool = True) -> RigBuilder:
    """4x RTX Pro 6000 behind a Microchip Switchtec PFX Gen4 switch on an EPYC 7002 (Rome) board."""
    b = RigBuilder(name, cpu="amd", root=root)
    host = b.host_bridge(0, 0, numa=0)
    if bifurcated:
        rp = b.root_port(host, "0000:00:01.1", cap=(4, 8), slot=2)
        b.root_port(host, "0000:00:01.2", cap=(4, 8), slot=None)  # the other half of the lanes, unused
    else:
        rp = b.root_port(host, "0000:00:01.1", cap=(4, 16), slot=2)
    up_link = (4, 8) if bifurcated else (4, 16)
    up, downs = b.switch(
        rp,
        "0000:01:00.0",
        ["0000:02:00.0", "0000:02:01.0", "0000:02:02.0", "0000:02:03.0"],
        up_link=up_link,
        acs_ctrl=acs_ctrl,
    )
    rp.link = up_link
    for i, d in enumerate(downs):
        b.gpu(d, f"0000:{3 + i:02x}:00.0", GPU_MODELS["rtxpro6000"])
    b.slot_name(up, "SLOT2")
    return b


def mixed3(name: str) -> RigBuilder:
    """The seed's mixed rig: RTX 3080 (driving the display), 3070 and 3060, each in a CPU Gen4 x16 slot on TRX40."""
    b = RigBuilder(name, cpu="amd")
    host = b.host_bridge(0, 0, numa=0)
    for i, (port, gpu, model) in enumerate(
        [
            ("0000:00:01.1", "0000:21:00.0", "rtx3080"),
            ("0000:00:03.1", "0000:4b:00.0", "rtx3070"),
            ("0000:00:07.1", "0000:61:00.0", "rtx3060"),
        ]
    ):
        rp = b.root_port(host, port, cap=(4, 16), slot=2 * i + 1)
        b.gpu(rp, gpu, GPU_MODELS[model])
    return b


def with_profile(
    builder: RigBuilder, preset: str, extra: str, replace: tuple[str, str] | None = None
) -> RigBuilder:
    """Ship ``profile.toml`` in the snapshot: the preset's text, ``replace`` applied, ``extra`` appended."""
    text = (
        Path(__file__).resolve().parent.parent / "pytest_rigcheck" / "presets" / f"{preset}.toml"
    ).read_text()
    if replace:
        assert replace[0] in text, replace
        text = text.replace(*replace)
    builder.add_file("profile.toml", text.rstrip("\n") + "\n\n" + extra.strip("\n") + "\n")
    return builder


def models() -> list[tuple[RigBuilder, dict[str, Any]]]:
    gpus3090 = ["0000:21:00.0", "0000:4b:00.0"]
    sw_ports = ["0000:02:00.0", "0000:02:01.0", "0000:02:02.0", "0000:02:03.0"]
    return [
        (
            rtx3090x2("rtx3090x2-gen4"),
            dict(
                description="2x RTX 3090 on a TRX40 board, each in a CPU Gen4 x16 slot; GPU0 idling at Gen1",
                shows="healthy: ACS off, IOMMU off, Gen4 x16 links (GPU0's idle Gen1 downshift is not a fault)",
                profile="2x-rtx3090-gen4",
                expect_fail=[],
            ),
        ),
        (
            rtx3090x2("rtx3090x2-acs-root-port", acs_ctrl=ACS_ON),
            dict(
                description="2x RTX 3090 on TRX40 with ACS redirect left on at both GPP root ports",
                shows="fault: ACSCtl 0x001d (SrcValid+ ReqRedir+ CmpltRedir+ UpstreamFwd+) on root ports 0000:00:01.1 and 0000:00:03.1",
                profile="2x-rtx3090-gen4",
                expect_fail=["test_acs_redirect_off[0000:00:01.1]", "test_acs_redirect_off[0000:00:03.1]"],
            ),
        ),
        (
            rtx3090x2("rtx3090x2-riser-x8", riser_x8=True),
            dict(
                description="2x RTX 3090 on TRX40; GPU1 on a riser that trained the link to x8",
                shows="fault: 0000:4b:00.0 at Gen4 x8 on an x16 slot (both ends capable of x16)",
                profile="2x-rtx3090-gen4",
                expect_fail=["test_link_trained[0000:4b:00.0]"],
            ),
        ),
        (
            rtx3090x2("rtx3090x2-gen3", gen3=True),
            dict(
                description="2x RTX 3090 on TRX40; GPU1's link retrained to Gen3 for reliability (LBMS on its root port)",
                shows="fault: 0000:4b:00.0 at Gen3 x16, capable and targeted Gen4",
                profile="2x-rtx3090-gen4",
                expect_fail=["test_link_trained[0000:4b:00.0]"],
            ),
        ),
        (
            rtx3090x2("rtx3090x2-iommu-dma", iommu="DMA-FQ"),
            dict(
                description="2x RTX 3090 on TRX40 with the AMD IOMMU translating (default kernel command line)",
                shows="fault: IOMMU groups of type DMA-FQ; no iommu=off/pt on the command line",
                profile="2x-rtx3090-gen4",
                expect_fail=[f"test_iommu_not_translating[{g}]" for g in gpus3090],
            ),
        ),
        (
            rtxpro6000x4("rtxpro6000x4-switch"),
            dict(
                description="4x RTX Pro 6000 (Gen5 cards) behind a Switchtec PFX 84xG4 Gen4 switch on EPYC 7002",
                shows="healthy: ACS off on root and downstream ports, Gen4 x16 everywhere, all pairs PIX",
                profile="4x-rtxpro6000-gen4-switch",
                expect_fail=[],
            ),
        ),
        (
            rtxpro6000x4("rtxpro6000x4-acs-switch", acs_ctrl=ACS_ON),
            dict(
                description="4x RTX Pro 6000 behind a Switchtec Gen4 switch, ACS left on at the switch downstream ports",
                shows="fault: ACSCtl 0x001d on downstream ports 0000:02:00.0-0000:02:03.0",
                profile="4x-rtxpro6000-gen4-switch",
                expect_fail=[f"test_acs_redirect_off[{p}]" for p in sw_ports],
            ),
        ),
        (
            rtxpro6000x4("rtxpro6000x4-bifurcated-x8x8", bifurcated=True),
            dict(
                description="4x RTX Pro 6000 behind a Gen4 switch whose x16 slot the BIOS bifurcated x8x8",
                shows="fault: root ports 0000:00:01.1/.2 split x8x8; switch uplink 0000:01:00.0 trained x8",
                profile="4x-rtxpro6000-gen4-switch",
                expect_fail=["test_bifurcation[0000:00:01]", "test_link_trained[0000:01:00.0]"],
            ),
        ),
        # Sustained-load and link-health variants (soak.json, linkhealth.json, storage.json from
        # pytest_rigcheck.soak.models add their expect_fail).
        (
            rtx3090x2("rtx3090x2-soak-healthy", aer=True),
            dict(
                description="2x RTX 3090 on TRX40 after a 5-minute soak, a 20-minute run and a model-storage read",
                shows="healthy: clocks, temperatures and power with normal noise, no AER growth, a 70B model on Gen4 NVMe",
                profile="2x-rtx3090-gen4",
                expect_fail=[],
            ),
        ),
        (
            rtx3090x2("rtx3090x2-soak-throttle-late", aer=True),
            dict(
                description="2x RTX 3090 on TRX40; GPU1's cooler gives up four minutes into the soak",
                shows="fault: GPU1 0000:4b:00.0 SW+HW thermal slowdown from 240 s, SM clock down a quarter, 91 C",
                profile="2x-rtx3090-gen4",
                expect_fail=[],
            ),
        ),
        (
            rtx3090x2("rtx3090x2-soak-clock-decay", aer=True),
            dict(
                description="2x RTX 3090 on TRX40; GPU0 slowly loses boost clock during the soak, no slowdown reason set",
                shows="fault: GPU0 0000:21:00.0 SM clock slides from 1905 to 1640 MHz (14% below its first 60 s)",
                profile="2x-rtx3090-gen4",
                expect_fail=[],
            ),
        ),
        (
            rtx3090x2("rtx3090x2-aer-riser", aer=True),
            dict(
                description="2x RTX 3090 on TRX40; the riser to GPU1 is going bad: correctable PCIe errors grow during the run",
                shows="fault: AER correctable errors +37 on 0000:4b:00.0 and +12 on root port 0000:00:03.1 over 20 minutes",
                profile="2x-rtx3090-gen4",
                expect_fail=[],
            ),
        ),
        (
            rtx3090x2("rtx3090x2-aspm-on", aspm=0x2),
            dict(
                description="2x RTX 3090 on TRX40 with the BIOS ASPM option on Auto: L1 enabled on GPU1's link",
                shows="warning: LnkCtl ASPM L1 on root port 0000:00:03.1 and GPU1 0000:4b:00.0 (a WARN with the fix, not a failure)",
                profile="2x-rtx3090-gen4",
                expect_fail=[],
            ),
        ),
        (
            rtx3090x2("rtx3090x2-slow-disk"),
            dict(
                description="2x RTX 3090 on TRX40; the 70B FP16 model (141 GB) sits on a SATA hard disk",
                shows="fault: model storage reads at 0.19 GB/s, the model takes 12 minutes to load",
                profile="2x-rtx3090-gen4",
                expect_fail=[],
            ),
        ),
        # GPU state variants (nvml.json from pytest_rigcheck.gpu.models adds their expect_fail).
        (
            rtx3090x2("rtx3090x2-power-390w"),
            dict(
                description="2x RTX 3090 on TRX40; GPU1 is a partner board with a 390 W BIOS whose 350 W cap was lost at reboot",
                shows="fault: GPU1 power limit 390 W (its default), profile cap 350 W",
                profile="2x-rtx3090-gen4",
                expect_fail=[],
            ),
        ),
        (
            rtxpro6000x4("rtxpro6000x4-powercap-lost"),
            dict(
                description="4x RTX Pro 6000 capped at 350 W for one 110 V circuit; after a reboot GPU2 is back at 600 W",
                shows="fault: GPU2 power limit 600 W, expected 350 W; 3x350 + 600 + 300 W host = 1950 W > 1800 W circuit",
                profile="4x-rtxpro6000-gen4-switch",
                expect_fail=[],
            ),
        ),
        (
            mixed3("rtx3080-3070-3060-mixed"),
            dict(
                description="the seed's mixed rig: RTX 3080 10 GB (driving the desktop, ~1 GB used), RTX 3070 8 GB, RTX 3060 12 GB",
                shows="fault: one tensor-parallel group of three different cards; Xorg and gnome-shell hold ~1 GB on the 3080",
                expect_fail=[],
            ),
        ),
        (
            with_profile(
                rtx3090x2("rtx3090x2-nvlink-no-bridge"),
                "2x-rtx3090-gen4",
                '[gpu]\n# RTX 3090s have NVLink, but no bridge is fitted on this rig.\nnvlink = "none"',
            ),
            dict(
                description="2x RTX 3090 on TRX40 without an NVLink bridge: NVML reports all 4 NVLinks of each card inactive",
                shows='healthy with [gpu] nvlink = "none"; nvlink = "bridge" fails asking to fit the bridge (never RMA)',
                profile="profile.toml",
                expect_fail=[],
            ),
        ),
        (
            with_profile(
                rtx3090x2("rtx3090x2-small-bar1", bar1=256 << 20),
                "2x-rtx3090-gen4",
                "",
                (
                    "required = false",
                    "required = true  # a P2P-enabled driver (tinygrad's patched open modules)",
                ),
            ),
            dict(
                description="2x RTX 3090 on a P2P-enabled driver with Resizable BAR off: BAR1 256 MiB of 24 GiB",
                shows="fault: BAR1 far smaller than VRAM on a rig that uses P2P (tinygrad/open-gpu-kernel-modules#13)",
                profile="profile.toml",
                expect_fail=["test_bar1_aperture[0000:21:00.0]", "test_bar1_aperture[0000:4b:00.0]"],
            ),
        ),
        (
            rtxpro6000x4("rtxpro6000x4-xid95-reset"),
            dict(
                description="4x RTX Pro 6000 behind a Gen4 switch; GPU1 needs a reset after an uncontained ECC error",
                shows="fault: Xid 95 on GPU1 (NVIDIA: RESET_GPU); NV_ERR_RESET_REQUIRED lines name no GPU (scitix/sichek#51)",
                profile="4x-rtxpro6000-gen4-switch",
                expect_fail=[],
            ),
        ),
        (
            rtxpro6000x4("rtxpro6000x4-switch-nonroot", root=False),
            dict(
                description="the healthy switch rig captured without root: config space stops at 64 bytes",
                shows="unreadable: ACS state cannot be known; those checks fail as unreadable, never pass",
                profile="4x-rtxpro6000-gen4-switch",
                expect_fail=[
                    *[f"test_acs_redirect_off[{p}]" for p in ["0000:01:00.0", *sw_ports]],
                    *[f"test_aspm_off[0000:{3 + i:02x}:00.0]" for i in range(4)],
                ],
            ),
        ),
    ]


def _add_state(builder: RigBuilder, name: str, kw: dict[str, Any]) -> None:
    """Add feature state files; a writer's ``expect_fail`` entries join the manifest's promises."""
    # The same rule the suites count GPUs by (a BMC's VGA is not one): pytest_rigcheck.pcie.accelerator_kind.
    gpus = sorted(b for b, n in builder.nodes.items() if accelerator_kind(n.vendor, n.class_code >> 8))
    for filename, spec in STATE_WRITERS.items():
        module, _, func = spec.partition(":")
        try:
            writer: Callable[[str, list[str]], dict[str, Any] | None] = getattr(
                importlib.import_module(module), func
            )
        except (ModuleNotFoundError, AttributeError):
            continue  # that feature is not in this checkout
        state = writer(name, gpus)
        if state is not None:
            kw["expect_fail"] = [*kw.get("expect_fail", []), *state.pop("expect_fail", [])]
            builder.add_file(filename, json.dumps(state, indent=1, sort_keys=True) + "\n")


CAPTURES = {
    "h200x2-nvlink": dict(
        archive="h200x2-nvlink/sysfs.tar.gz",
        kernel="6.18.44-fc-v657-gpu",
        driver="580.159.04",
        description="2x NVIDIA H200 SXM with 18 NVLinks each, in a Firecracker VM: GPUs on the root bus, no bridges",
        shows="healthy: Gen5 x16 links, no IOMMU; no bridge between the GPUs, so ACS and bifurcation do not apply",
        # The capture listed /sys/class/iommu and it was empty (nvidia-smi-topo.txt, "+ ls /sys/class/iommu").
        empty_dirs=["sys/class/iommu"],
        root=True,
        expect_fail=[],
    ),
    "h100x1": dict(
        archive="h100x1/sysfs-root.tar.gz",
        kernel="6.18.44-fc-v657-gpu",
        driver="580.159.04",
        description="1x NVIDIA H100 SXM5 80GB in a Firecracker VM, read as root",
        shows="healthy links; the capture holds no IOMMU evidence, so the IOMMU check fails as unreadable",
        empty_dirs=[],
        root=True,
        expect_fail=["test_iommu_not_translating[0000:00:06.0]"],
    ),
    "h100x1-nonroot": dict(
        archive="h100x1/sysfs-nonroot.tar.gz",
        kernel="6.18.44-fc-v657-gpu",
        driver="580.159.04",
        description="1x NVIDIA H100 SXM5 80GB in a Firecracker VM, read as an unprivileged user (64-byte config files)",
        shows="links still read from sysfs; no IOMMU evidence, so the IOMMU check fails as unreadable",
        empty_dirs=[],
        root=False,
        expect_fail=["test_iommu_not_translating[0000:00:06.0]", "test_aspm_off[0000:00:06.0]"],
    ),
}


def write_capture(name: str, spec: dict[str, Any], captures: Path, out: Path) -> None:
    dest = out / name
    with tarfile.open(captures / spec["archive"]) as tar:
        tar.extractall(dest, filter="data")
    manifest = {
        "format": 1,
        "kind": "captured",
        "name": name,
        "description": spec["description"],
        "shows": spec["shows"],
        "kernel": spec["kernel"],
        "driver": spec["driver"],
        "date": "2026-11-23",
        "tool": "the project's capture script on the real machine (before rigcheck capture existed)",
        "root": spec["root"],
        "empty_dirs": spec["empty_dirs"],
        "expect": {"fail": spec["expect_fail"]},
    }
    (dest / "MANIFEST.toml").write_text(dump_toml(manifest))
    for filename, writer_spec in STATE_WRITERS.items():
        module, _, func = writer_spec.partition(":")
        try:
            writer = getattr(importlib.import_module(module), func.replace("modelled", "captured"))
        except (ModuleNotFoundError, AttributeError):
            continue
        state = writer(name, captures)
        if state is not None:
            manifest["expect"]["fail"] = sorted([*manifest["expect"]["fail"], *state.pop("expect_fail", [])])
            (dest / "MANIFEST.toml").write_text(dump_toml(manifest))
            (dest / filename).write_text(json.dumps(state, indent=1, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--captures", type=Path, default=OUT.parent.parent.parent / "shared" / "captures")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    for builder, kw in models():
        _add_state(builder, builder.name, kw)
        builder.write(args.out / builder.name, **kw)
    if args.captures.is_dir():
        for name, spec in CAPTURES.items():
            write_capture(name, spec, args.captures, args.out)
    print(f"wrote {len(list(args.out.iterdir()))} snapshots to {args.out}")


if __name__ == "__main__":
    main()
