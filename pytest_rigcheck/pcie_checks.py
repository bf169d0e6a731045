"""The PCIe conformance checks, as pure functions from a target to a ``Verdict``.

ACS (PCIe Base Spec 7.7.8), IOMMU mode, link speed and width per hop, root-port bifurcation,
GPU-pair topology class and GPU count. Suites call these and assert; no check writes anything.
"""

from __future__ import annotations

from .iommu import grub_fix
from .pcie import ACS_BITS, ACS_P2P_BLOCKING, SPEED_GT, decode_acs, fmt_link
from .profile import TOPOLOGY_CLASSES
from .rig import Rig
from .targets import BridgeTarget, GpuTarget, LaneGroupTarget, LinkTarget, PairTarget
from .topology import pair_class
from .tree import PciFunction
from .verdict import Verdict, failed, not_applicable, passed, unreadable

ROOT_HINT = (
    "run as root (sudo pytest --rig ...), or replay a snapshot captured as root (sudo rigcheck capture DIR)"
)


# -- GPU count ------------------------------------------------------------------------------------


def gpu_count(rig: Rig) -> Verdict:
    found = len(rig.pcie.gpus)
    listing = ", ".join(rig.pcie.gpu_label(g) for g in rig.pcie.gpus) or "none"
    props = {"gpu_count": found}
    # An imported paste (rigcheck import-lspci) that lists only part of the bus cannot show how many GPUs
    # there are: fewer than expected, or as many, is unknown; only more than expected is a finding.
    imported = rig.manifest.raw.get("imported", {}) if rig.manifest is not None else {}
    partial = imported.get("gpu_count_unknown") if isinstance(imported, dict) else None
    if partial and not (rig.profile.gpus is not None and found > rig.profile.gpus):
        return unreadable(
            f"{rig.name}: the imported text shows {found} GPU(s) ({listing}), but not the whole bus: {partial}",
            expected=f"{rig.profile.gpus} ({rig.profile.source})" if rig.profile.gpus is not None else "",
            fix=["paste the whole `sudo lspci -vvv` (or `lspci -nn` for the count), unfiltered"],
            properties=props,
        )
    if rig.profile.gpus is not None:
        want, where = rig.profile.gpus, rig.profile.source
        if found == want:
            return passed(f"{found} GPUs, as expected", properties=props)
        return failed(
            f"{rig.name}: {found} GPU(s) on the PCIe bus, expected {want}",
            measured=f"{found}: {listing}",
            expected=f"{want} ({where})",
            fix=[
                "reseat the missing card and its riser; check its power cables; check `dmesg | grep -i -e NVRM -e pcie`",
                "check the BIOS enables the slot (and Above 4G Decoding / Resizable BAR for large-BAR GPUs)",
            ],
            properties=props,
        )
    if found:
        return passed(f"{found} GPU(s): {listing}", properties=props)
    return failed(
        f"{rig.name}: no GPU (PCI class 03xx) in sys/bus/pci/devices",
        expected="at least one GPU (no profile gives a count)",
        fix=["check the cards are seated and powered; `lspci -d ::0300; lspci -d ::0302`"],
        properties=props,
    )


# -- ACS ------------------------------------------------------------------------------------------


def acs(t: BridgeTarget) -> Verdict:
    br, rig = t.bridge, t.rig
    tree = rig.pcie
    pairs = [f"GPU{tree.gpu_index(a.bdf)} {a.bdf} <-> GPU{tree.gpu_index(b.bdf)} {b.bdf}" for a, b in t.pairs]
    path = [tree.path_text(g.bdf) for g in _unique_gpus(t.pairs)]
    if br.config is None:
        return unreadable(
            f"{br.describe()}: config space unreadable ({br.config_error}); ACS state unknown",
            path=path,
            fix=[rig.config_fix(br)],
        )
    if br.config.size <= 64:
        return unreadable(
            f"{br.describe()}: only {br.config.size} bytes of config space readable; ACS lives in extended "
            "config space (from offset 0x100), so its state is unknown",
            path=path,
            fix=[rig.config_fix(br)],
        )
    props: dict[str, object] = {"bdf": br.bdf}
    if br.config.acs is None:
        if br.config.size < 4096 and br.config.port_type is not None:
            return unreadable(
                f"{br.describe()}: a PCI Express port, but only {br.config.size} bytes of its config space were "
                "read: ACS lives in extended config space (0x100-0xfff), so its state is unknown",
                path=path,
                fix=[
                    rig.config_fix(br),
                    "if root already reads 256 bytes, the kernel has no ECAM/MMCONFIG access here",
                ],
            )
        why = (
            "a conventional PCI bridge (no extended config space)"
            if br.config.size < 4096
            else "no ACS capability"
        )
        return passed(f"{br.describe()}: {why}: peer-to-peer is not redirected", properties=props)
    ctrl, cap = br.config.acs.ctrl, br.config.acs.cap
    props.update(acs_ctrl=f"{ctrl:#06x}", acs_cap=f"{cap:#06x}", acs_offset=f"{br.config.acs.offset:#x}")
    blocking = ctrl & ACS_P2P_BLOCKING
    if not blocking:
        return passed(f"{br.describe()}: ACSCtl {ctrl:#06x} ({decode_acs(ctrl)})", properties=props)
    bits = ", ".join(long for bit, _, long in ACS_BITS if blocking & bit)
    notes = [f"between {p}" for p in pairs]
    if rig.iommu.mode == "translated":
        notes.append(
            "the IOMMU is translating: the kernel sets ACS again at boot while it is on; turn it off too (test_iommu)"
        )
    return failed(
        f"{br.describe()}: ACS {bits} enabled: peer-to-peer traffic between GPUs is redirected to the root complex "
        "(slow P2P, NCCL hangs)",
        measured=f"ACSCtl {ctrl:#06x} = {decode_acs(ctrl)} (ACS capability at {br.config.acs.offset:#x})",
        expected="ReqRedir- CmpltRedir- UpstreamFwd- EgressCtrl- on every bridge between two GPUs",
        path=path,
        notes=notes,
        fix=[
            f"sudo setpci -s {br.bdf} ECAP_ACS+0x6.w=0000   (now; lost at reboot)",
            f'kernel parameter "pci=disable_acs_redir={br.bdf}" in GRUB_CMDLINE_LINUX (every boot; clears '
            "ReqRedir, CmpltRedir and EgressCtrl; UpstreamFwd needs pci=config_acs=)",
            'or disable "ACS" / "PCIe ACS Control" in the BIOS (AMD CBS > NBIO, Intel > IIO)',
        ],
        properties=props,
    )


def _unique_gpus(pairs: tuple[tuple[object, object], ...]) -> list:  # type: ignore[type-arg]
    seen: dict[str, object] = {}
    for a, b in pairs:
        for g in (a, b):
            seen.setdefault(g.bdf, g)  # type: ignore[attr-defined]
    return list(seen.values())


# -- IOMMU ----------------------------------------------------------------------------------------


def iommu(t: GpuTarget) -> Verdict:
    rig, gpu = t.rig, t.gpu
    state = rig.iommu
    mode = state.mode_of_group(gpu.iommu_group)
    cmd = state.cmdline if state.cmdline is not None else "(not in this snapshot)"
    props: dict[str, object] = {"iommu_mode": mode, "iommu_group": gpu.iommu_group or ""}
    allow = rig.profile.iommu_allow
    where = rig.profile.source
    if mode == "unknown":
        return unreadable(
            f"{t.label}: IOMMU state unknown: neither sys/kernel/iommu_groups nor sys/class/iommu "
            "was captured, and the kernel command line does not switch the IOMMU off",
            fix=["capture again with `rigcheck capture` (it records both)"],
        )
    if mode == "off" or (mode == "passthrough" and "passthrough" in allow):
        group = (
            f"group {gpu.iommu_group} type identity"
            if mode == "passthrough"
            else f"no IOMMU group; {state.evidence}"
        )
        return passed(f"{t.label}: IOMMU {mode} ({group})", properties=props)
    gtype = state.group_types.get(gpu.iommu_group or "", "?")
    return failed(
        f"{t.label}: IOMMU {mode} (group {gpu.iommu_group}, type {gtype}): GPU peer-to-peer DMA goes through "
        "IOMMU translation; NCCL can hang",
        measured=f"iommu group {gpu.iommu_group} type {gtype}; kernel command line: {cmd}",
        expected=f"IOMMU {' or '.join(allow)} ({where})",
        fix=[
            grub_fix(rig.cpu_vendor, "passthrough" in allow),
            "or disable IOMMU (AMD: NBIO > IOMMU; Intel: VT-d) in the BIOS",
        ],
        properties=props,
    )


# -- links ----------------------------------------------------------------------------------------


def link(t: LinkTarget) -> Verdict:
    rig, up, down = t.rig, t.up, t.down
    tree = rig.pcie
    gpu_names = ", ".join(tree.gpu_label(g) for g in t.gpus)
    where_label = (
        f"link {up.bdf} -> {down.bdf}" if up else f"link of {down.bdf} (on root bus {down.host_bridge})"
    )
    path = [tree.path_text(g.bdf) for g in t.gpus]
    cur_gen, cur_width = down.link_now
    cap_gen, cap_width = down.link_cap
    up_gen, up_width = up.link_cap if up else (None, None)
    if cur_gen is None or cur_width is None or cap_gen is None or cap_width is None:
        return unreadable(
            f"{where_label} (to {gpu_names}): link status unreadable: no current/max_link_* in sysfs "
            f"and config space {down.config_error or 'has no PCIe capability'}",
            path=path,
            fix=[rig.config_fix(down)],
        )
    hw_gen = min(g for g in (cap_gen, up_gen) if g)
    hw_width = min(w for w in (cap_width, up_width) if w)
    gpu_index = next((i for i, g in enumerate(tree.gpus) if g.bdf == down.bdf), None)
    want = rig.profile.link_for(down.bdf, down.slot, gpu_index)
    exp_gen, exp_width = want.gen or hw_gen, want.width or hw_width
    src_gen = (
        rig.profile.link_source(down.bdf, down.slot, gpu_index, "gen")
        if want.gen
        else "lesser of both ends' capability"
    )
    src_width = (
        rig.profile.link_source(down.bdf, down.slot, gpu_index, "width")
        if want.width
        else "lesser of both ends' capability"
    )
    props: dict[str, object] = {
        "link_gen": cur_gen,
        "link_width": cur_width,
        "expected_gen": exp_gen,
        "expected_width": exp_width,
    }
    slot = down.slot or (up.slot if up else None)
    slot_txt = f'slot "{slot}"' if slot else "its slot"
    caps = f"capability: {down.bdf} {fmt_link(cap_gen, cap_width)}" + (
        f", {up.bdf} {fmt_link(up_gen, up_width)}" if up else ""
    )

    if cur_width < exp_width:
        return failed(
            f"{where_label} (to {gpu_names}): trained to x{cur_width}, expected x{exp_width}",
            measured=f"{fmt_link(cur_gen, cur_width)}; {caps}",
            expected=f"x{exp_width} ({src_width})",
            path=path,
            fix=[
                f"reseat the card (and riser) in {slot_txt}; a riser or cable that loses lanes trains the link narrower",
                "check the BIOS bifurcation setting for that slot (x16, not x8x8)",
                f"confirm with `sudo lspci -vv -s {down.bdf} | grep -e LnkCap -e LnkSta`",
            ],
            properties=props,
        )
    if cur_gen >= exp_gen:
        return passed(f"{where_label}: {fmt_link(cur_gen, cur_width)}", properties=props)

    # Speed below expectation: hardware that cannot do it, a configured cap, a real downtrain, or
    # an idle GPU saving power.
    props["link_state"] = "below"
    if hw_gen < exp_gen:
        slower = up if up is not None and up_gen == hw_gen else down
        return failed(
            f"{where_label} (to {gpu_names}): at most Gen{hw_gen}, expected Gen{exp_gen}: "
            f"{slower.describe()} is a Gen{hw_gen} part",
            measured=f"{fmt_link(cur_gen, cur_width)}; {caps}",
            expected=f"Gen{exp_gen} ({src_gen})",
            path=path,
            fix=[
                f"move the GPU to a Gen{exp_gen}-capable slot or switch, or correct the profile ([links] gen = {hw_gen})"
            ],
            properties=props,
        )
    target = _target_speed(up, down)
    if target is not None and target < exp_gen:
        return failed(
            f"{where_label} (to {gpu_names}): speed capped at Gen{target} by Target Link Speed, expected Gen{exp_gen}",
            measured=f"{fmt_link(cur_gen, cur_width)}; LnkCtl2 target Gen{target}; {caps}",
            expected=f"Gen{exp_gen} ({src_gen})",
            path=path,
            fix=[
                f'set the BIOS PCIe link speed for {slot_txt} to "Auto" or "Gen{exp_gen}" (it is forced to Gen{target})'
            ],
            properties=props,
        )
    load = _under_load(rig, down.bdf)
    if load is not None:
        props["link_gen_under_load"] = load[0]
        if load[0] >= exp_gen:
            props["link_state"] = "idle-downshift"
            return passed(
                f"{where_label}: Gen{cur_gen} at idle, Gen{load[0]} under load: power-saving downshift, "
                "not a fault",
                properties=props,
            )
        return failed(
            f"{where_label} (to {gpu_names}): Gen{load[0]} under load, expected Gen{exp_gen}: the link trained down",
            measured=f"{fmt_link(cur_gen, cur_width)} at idle, Gen{load[0]} under load; {caps}",
            expected=f"Gen{exp_gen} ({src_gen})",
            path=path,
            fix=_downtrain_fix(slot_txt, exp_gen),
            properties=props,
        )
    unread = [f.bdf for f in (up, down) if f is not None and (f.config is None or f.config.link is None)]
    if unread and down.is_gpu and down.vendor == 0x10DE:
        # LBMS, HASD and the target speed are what tell an idle downshift from a downtrain here.
        return unreadable(
            f"{where_label} (to {gpu_names}): Gen{cur_gen} now, Gen{exp_gen} expected, no reading under load, "
            f"and the link registers (LnkSta, LnkCtl2) of {', '.join(unread)} unreadable: an idle downshift "
            "cannot be told from a downtrain",
            path=path,
            fix=[ROOT_HINT, "or run live with the GPU suites: a reading under load decides"],
            properties=props,
        )
    why = _not_idle_downshift(up, down, cur_gen)
    if why is None:
        # NVIDIA GPUs drop link speed when idle (nvidia-smi -q: Gen1 at idle; local-inference-lab/rtx6kpro#88); no retrain for reliability
        # is recorded on the port above (LnkSta LBMS clear), and the target speed allows full
        # speed, so this is the power-saving downshift. The GPU suite re-reads it under load.
        props["link_state"] = "idle-downshift"
        return passed(
            f"{where_label}: Gen{cur_gen} now, Gen{exp_gen} capable: idle power-saving downshift (target speed "
            f"Gen{target or '?'}, no reliability retrain recorded); the GPU suite confirms it under load",
            properties=props,
        )
    return failed(
        f"{where_label} (to {gpu_names}): trained to Gen{cur_gen}, expected Gen{exp_gen} ({why})",
        measured=f"{fmt_link(cur_gen, cur_width)}; target Gen{target or '?'}; {caps}",
        expected=f"Gen{exp_gen} ({src_gen})",
        path=path,
        fix=_downtrain_fix(slot_txt, exp_gen),
        properties=props,
    )


# NVIDIA GPUs idle at 2.5 GT/s, some cycling through 5 GT/s (local-inference-lab/rtx6kpro#88)
IDLE_MAX_GEN = 2


def _not_idle_downshift(up: PciFunction | None, down: PciFunction, cur_gen: int) -> str | None:
    """Why a slow link without a reading under load is not an idle downshift; None when it may be one."""
    if not (down.is_gpu and down.vendor == 0x10DE):
        return "not an NVIDIA GPU: links here do not downshift at idle"
    if up and up.config and up.config.link and up.config.link.bw_mgmt_status:
        return "LnkSta LBMS set on the port above: retrained for reliability"
    pinned = [
        f.bdf
        for f in (up, down)
        if f and f.config and f.config.link and f.config.link.hw_autonomous_speed_disable
    ]
    if pinned:
        return (
            f"LnkCtl2 Hardware Autonomous Speed Disable set on {', '.join(pinned)}: the link cannot change speed "
            "on its own, so this is where it trained"
        )
    if cur_gen > IDLE_MAX_GEN:
        return (
            f"an idle NVIDIA GPU drops to Gen1 or Gen2 (2.5 or 5 GT/s), not Gen{cur_gen}: a link stopped "
            "between speeds trained down"
        )
    return None


def _downtrain_fix(slot_txt: str, gen: int) -> list[str]:
    return [
        f"reseat the riser/cable in {slot_txt}; use one rated for Gen{gen} ({SPEED_GT[gen]:.0f} GT/s): "
        "signal loss makes the link retrain slower",
        f'set the BIOS PCIe link speed for {slot_txt} to "Gen{gen}" rather than Auto if it keeps falling back',
    ]


def _target_speed(up: object, down: object) -> int | None:
    # The downstream port (upper end) controls training; its LnkCtl2 target caps the link.
    for fn in (up, down):
        cfg = getattr(fn, "config", None)
        if cfg is not None and cfg.link is not None and cfg.link.target_speed:
            return int(cfg.link.target_speed)
    return None


def _under_load(rig: Rig, bdf: str) -> tuple[int, int] | None:
    readings = rig.extras.get("link_under_load")
    if isinstance(readings, dict):
        value = readings.get(bdf)
        if isinstance(value, tuple) and len(value) == 2:
            return int(value[0]), int(value[1])
    return None


# -- bifurcation ----------------------------------------------------------------------------------


def bifurcation(t: LaneGroupTarget) -> Verdict:
    rig, tree = t.rig, t.rig.pcie
    widths = []
    for p in t.ports:
        w = p.link_cap[1]
        if w is None:
            return unreadable(
                f"{p.describe()}: link capability unreadable (no max_link_width, config {p.config_error})",
                fix=[rig.config_fix(p)],
            )
        widths.append(w)
    split = "".join(f"x{w}" for w in widths)
    props: dict[str, object] = {"lane_group": t.key, "split": split}
    slot_names = t.slots
    want = next((rig.profile.bifurcation[k] for k in t.profile_keys if k in rig.profile.bifurcation), None)
    ports_txt = ", ".join(f"{p.bdf} x{w}" for p, w in zip(t.ports, widths, strict=True))
    if want is not None:
        if want == split:
            return passed(
                f"lane group {t.key}: {split} as the profile expects ({ports_txt})", properties=props
            )
        return failed(
            f"lane group {t.key}: root ports split {split}, expected {want}",
            measured=f"{split} ({ports_txt})",
            expected=f"{want} ({rig.profile.source})",
            path=[tree.path_text(g.bdf) for g in tree.gpus if tree.root_port(g.bdf) in t.ports],
            fix=[
                f'set the BIOS "PCIe bifurcation" for {", ".join(slot_names) or "this slot"} to {want} '
                "(AMD CBS > NBIO > PCIe link configuration; vendor boards: Advanced > PCI Subsystem)"
            ],
            properties=props,
        )
    narrow = []
    for p in t.ports:
        for child_bdf in p.children:
            child = tree.functions[child_bdf]
            cw = child.link_cap[1]
            if cw is None and child.port_type is not None:  # a PCIe device whose width we cannot read
                return unreadable(
                    f"{child.describe()} below lane group {t.key}: link capability unreadable "
                    f"(no max_link_width, config {child.config_error})",
                    fix=[rig.config_fix(child)],
                )
            if cw and p.link_cap[1] and cw > p.link_cap[1]:
                gpus_below = [g for g in tree.gpus if p in tree.ancestors(g.bdf)]
                narrow.append((p, child, cw, gpus_below))
    if not narrow:
        return passed(
            f"lane group {t.key}: {split}; every port is as wide as the device below it ({ports_txt})",
            properties=props,
        )
    lines = [
        f"{p.bdf} is x{p.link_cap[1]} but {c.describe()} below it can use x{cw}; feeds "
        + ", ".join(tree.gpu_label(g) for g in gs)
        for p, c, cw, gs in narrow
    ]
    return failed(
        f"lane group {t.key}: split {split}: a GPU sits on a port narrower than it can use",
        measured=f"{split} ({ports_txt})",
        expected="each root port at least as wide as the device below it (no profile bifurcation entry)",
        path=[tree.path_text(g.bdf) for _, _, _, gs in narrow for g in gs],
        notes=lines,
        fix=[
            f'set the BIOS "PCIe bifurcation" for {", ".join(slot_names) or "this slot"} to x16 (it is split '
            f'{split}); or, if the split is intended, say so in the profile: [bifurcation] "{t.key}" = "{split}"'
        ],
        properties=props,
    )


# -- topology -------------------------------------------------------------------------------------


def topology(t: PairTarget) -> Verdict:
    rig, tree = t.rig, t.rig.pcie
    pair = f"{tree.gpu_label(t.a)} <-> {tree.gpu_label(t.b)}"
    # An imported paste that leaves out a bridge above either GPU (rigcheck import-lspci puts a
    # placeholder there) cannot tell how the two connect.
    imported = rig.manifest.raw.get("imported", {}) if rig.manifest is not None else {}
    holes = set(imported.get("placeholders", [])) if isinstance(imported, dict) else set()
    cut = sorted({x.bdf for g in (t.a, t.b) for x in tree.ancestors(g.bdf) if x.bdf in holes})
    if cut:
        return unreadable(
            f"{pair}: connection unknown: the imported text does not show the bridges above "
            f"{', '.join(g.bdf for g in (t.a, t.b))} (placeholders {', '.join(cut)})",
            fix=["paste the whole `sudo lspci -vvv` (its Bus: lines place every bridge), or add `lspci -tv`"],
        )
    cls = pair_class(tree, t.a.bdf, t.b.bdf)
    if imported and cls == "NODE" and (t.a.numa_node is None or t.b.numa_node is None):
        # across host bridges, NODE or SYS turns on the NUMA nodes, which this paste does not show
        return unreadable(
            f"{pair}: on different host bridges ({t.a.host_bridge}, {t.b.host_bridge}); NODE or SYS is unknown: "
            "the imported text shows no NUMA node",
            fix=["paste `lspci -vvv` (it prints NUMA node:) or `nvidia-smi topo -m`"],
        )
    props: dict[str, object] = {"topology": cls}
    limit = rig.profile.max_topology_class
    from .p2p.nvlink import nvlink_links, nvlink_text

    nvlink = nvlink_text(nvlink_links(rig, None, t.a.bdf, t.b.bdf))
    if nvlink:  # GPU-to-GPU traffic takes NVLink, closer than any PCIe class (nvidia-smi topo -m: NV#)
        props["topology"] = nvlink.removeprefix("NVLink peers (").rstrip(")") if "(" in nvlink else "NV"
        return passed(f"{pair}: {nvlink} (PCIe path {cls}, not used between them)", properties=props)
    if limit is None:
        note = ""
        if TOPOLOGY_CLASSES.index(cls) > TOPOLOGY_CLASSES.index("PXB"):
            note = " (NCCL uses P2P only up to PXB unless NCCL_P2P_LEVEL is set)"
        return passed(f"{pair}: {cls}{note}", properties=props)
    if TOPOLOGY_CLASSES.index(cls) <= TOPOLOGY_CLASSES.index(limit):
        return passed(f"{pair}: {cls}, within {limit}", properties=props)
    return failed(
        f"{pair}: connection {cls}, expected {limit} or closer",
        measured=cls,
        expected=f"at most {limit} ({rig.profile.source})",
        path=[tree.path_text(t.a.bdf), tree.path_text(t.b.bdf)],
        fix=[
            "move the cards so that tensor-parallel peers share a switch (PIX) or a root complex (PHB)",
            "check `nvidia-smi topo -m` agrees",
        ],
        properties=props,
    )


__all__ = ["acs", "bifurcation", "gpu_count", "iommu", "link", "not_applicable", "topology"]
