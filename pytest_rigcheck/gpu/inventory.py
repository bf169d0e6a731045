"""Rig-wide GPU checks: homogeneous tensor-parallel groups, memory held before the model loads, versions."""

from __future__ import annotations

import os
import re
from collections import Counter

from ..availability import DRIVER_VERSION_FILE
from ..rig import Rig
from ..targets import GpuTarget
from ..verdict import Verdict, failed, judged, passed, unreadable
from .common import expectations, label, need, opened, version_key
from .state import (
    CORRUPT,
    F_DISPLAY_ACTIVE,
    F_MEM_TOTAL,
    F_MEM_USED,
    F_NAME,
    F_PROCESSES,
    F_VBIOS,
    NOT_NVIDIA,
    GpuState,
    SystemState,
    Unavailable,
    cuda_text,
    mib,
)


def tp_groups(rig: Rig, gpus: dict[str, GpuState | Unavailable]) -> Verdict:
    """Each tensor-parallel group (profile ``[rig] tp_groups``, default all GPUs) has one model and one memory size."""
    tree = rig.pcie
    by_index = {g.index: g for g in gpus.values() if isinstance(g, GpuState)}
    if rig.profile.tp_groups is not None:
        groups, where = [list(g) for g in rig.profile.tp_groups], f"[rig] tp_groups ({rig.profile.source})"
    else:
        groups, where = (
            [sorted(by_index) or list(range(len(tree.gpus)))],
            "all GPUs (no [rig] tp_groups in the profile)",
        )
    missing = [
        fn
        for fn in tree.gpus
        if not isinstance(g := gpus.get(fn.bdf), GpuState)
        and not (isinstance(g, Unavailable) and g.code == NOT_NVIDIA)
    ]
    if missing:
        return unreadable(
            f"{rig.name}: NVML has no state for {', '.join(tree.gpu_label(f) for f in missing)}: "
            "tensor-parallel groups cannot be compared"
        )
    problems, notes = [], []
    props: dict[str, object] = {}
    split: list[list[int]] = []  # the groups again, each mixed one split by (model, memory): the fix
    for n, group in enumerate(groups):
        members = []
        for i in group:
            g = by_index.get(i)
            if g is None:
                return unreadable(
                    f"{rig.name}: tensor-parallel group {group} names GPU{i}, which NVML does not see "
                    f"(GPUs: {sorted(by_index)}) ({where})"
                )
            name, total = g.get(F_NAME), g.get(F_MEM_TOTAL)
            if isinstance(name, Unavailable) or isinstance(total, Unavailable):
                return unreadable(
                    f"{rig.name}: GPU{i} {g.bdf}: model or memory size unreadable: {name if isinstance(name, Unavailable) else total}"
                )
            members.append((g, name, _gib(total)))
        kinds = Counter((m[1], m[2]) for m in members)
        desc = ", ".join(f"GPU{g.index} {n_} {mem} GiB" for g, n_, mem in members)
        props[f"tp_group_{n}"] = desc
        if len(kinds) == 1:
            notes.append(f"group {group}: {desc}")
            split.append(list(group))
            continue
        by_kind: dict[tuple[object, float], list[int]] = {}
        for g, n_, mem in members:
            by_kind.setdefault((n_, mem), []).append(g.index)
        split += list(by_kind.values())
        # The most common kind is the group's; on a tie, that of its first GPU.
        ref = max(
            kinds, key=lambda k: (kinds[k], -next(i for i, m in enumerate(members) if (m[1], m[2]) == k))
        )
        odd = [f"GPU{g.index} {g.bdf} ({n_}, {mem} GiB)" for g, n_, mem in members if (n_, mem) != ref]
        problems.append(f"group {group}: {', '.join(odd)} differ(s) from {ref[0]} {ref[1]} GiB")
    if not problems:
        return passed(f"{rig.name}: tensor-parallel groups homogeneous: {'; '.join(notes)}", properties=props)
    return failed(
        f"{rig.name}: tensor-parallel group(s) mix GPU models or memory sizes: {'; '.join(problems)}",
        measured="; ".join(str(v) for v in props.values()),
        expected=f"one model and memory size per group ({where})",
        notes=["tensor parallelism runs at the pace of the slowest GPU and fits the model to the smallest"],
        fix=[
            "replace the odd card(s) with the group's model, or split the GPUs into groups of one model and "
            f"memory size and say so in the profile: [rig] tp_groups = {split}"
            + (
                " (a group of one GPU runs without tensor parallelism)"
                if any(len(g) == 1 for g in split)
                else ""
            ),
            "for vLLM: set --tensor-parallel-size to a homogeneous group's size and CUDA_VISIBLE_DEVICES to "
            "its GPUs",
        ],
        properties=props,
    )


def _gib(b: int) -> float:
    return round(b / (1 << 30), 1)


@judged
def vram_free(t: GpuTarget, gpu: GpuState | Unavailable, own_pid: int | None = None) -> Verdict:
    """Before the model arrives, no display and no other process holds GPU memory (``[gpu] max_vram_used_mib``)."""
    exp = expectations(t.rig.profile, t)
    total = need(t, gpu, F_MEM_TOTAL, "memory size")
    used = need(t, gpu, F_MEM_USED, "memory in use")
    display = need(t, gpu, F_DISPLAY_ACTIVE, "display state")
    procs = need(t, gpu, F_PROCESSES, "processes on the GPU")
    gpu = opened(t, gpu, "memory in use")
    own_pid = os.getpid() if own_pid is None else own_pid
    name = label(t, gpu)
    own = sum(p["used_b"] or 0 for p in procs if p["pid"] == own_pid)
    others = [p for p in procs if p["pid"] != own_pid]
    held = max(0, used - own)
    props: dict[str, object] = {
        "vram_used_mib": round(held / (1 << 20)),
        "vram_total_mib": round(total / (1 << 20)),
        "display_active": display,
        "other_processes": len(others),
    }
    plist = [
        f"{p['name']} (pid {p['pid']}, {p['kind']}) {mib(p['used_b']) if p['used_b'] is not None else 'memory unknown'}"
        for p in others
    ]
    measured = (
        f"{mib(held)} of {mib(total)} in use, not counting the driver's reservation"
        + (f" or this test run's own {mib(own)}" if own else "")
        + f"; display {'active' if display else 'not active'}"
        + (f"; processes: {'; '.join(plist)}" if plist else "; no other process")
    )
    limit = exp.max_vram_used_mib
    if not display and not others and held <= limit * (1 << 20):
        return passed(
            f"{name}: {mib(held)} in use before the model loads, no display, no other process",
            properties=props,
        )
    why = []
    if display:
        why.append("a display is active on it")
    if others:
        why.append(f"{len(others)} other process(es) hold memory")
    if held > limit * (1 << 20):
        why.append(f"{mib(held)} already in use")
    fix = []
    if display:
        fix.append(
            "drive the display from another GPU or the CPU's graphics (plug the monitor there; BIOS "
            '"Primary display" = IGD), or run headless: sudo systemctl set-default multi-user.target'
        )
    if others:
        fix.append(
            f"stop them before serving: `nvidia-smi --query-compute-apps=pid,name,used_memory --format=csv -i {gpu.index}`"
        )
    fix.append("or lower vLLM's --gpu-memory-utilization by what they hold")
    return failed(
        f"{name}: memory taken before the model arrives: {', '.join(why)}",
        measured=measured,
        expected=f"no display, no other process, at most {limit:g} MiB in use ({exp.said('max_vram_used_mib')}, {exp.where})",
        fix=fix,
        properties=props,
    )


class ModuleVersion(str):
    """The loaded nvidia.ko's version, with ``where`` it was read."""

    where: str


def loaded_module_version(rig: Rig) -> ModuleVersion | None:
    """The loaded NVIDIA kernel module's version: ``sys/module/nvidia/version`` (the module's MODULE_VERSION),
    else the ``NVRM version:`` line of ``/proc/driver/nvidia/version``; None where neither says."""
    text = (rig.source.read_optional("sys/module/nvidia/version") or "").strip()
    where = "/sys/module/nvidia/version"
    if not re.fullmatch(r"\d+(\.\d+)+", text):
        line = (rig.source.read_optional(DRIVER_VERSION_FILE) or "").partition("\n")[0]
        m = re.search(r"NVRM version:.*?\s(\d+\.\d+(?:\.\d+)*)\s", line + " ")
        text, where = (m.group(1), f"/{DRIVER_VERSION_FILE}") if m else ("", "")
    if not text:
        return None
    out = ModuleVersion(text)
    out.where = where
    return out


def versions(rig: Rig, system: SystemState) -> Verdict:
    """Driver, CUDA and VBIOS versions, recorded; at least the profile's ``[gpu] min_driver`` / ``min_cuda``."""
    exp = expectations(rig.profile)
    props: dict[str, object] = {}
    driver, cuda = system.driver, system.cuda
    if isinstance(driver, str):
        props["nvidia_driver"] = driver
    if isinstance(cuda, int):
        props["cuda_driver_version"] = cuda_text(cuda)
    for g in system.gpus:
        vb = g.get(F_VBIOS)
        props[f"vbios_gpu{g.index}"] = vb if isinstance(vb, str) else f"unreadable: {vb}"
    module = loaded_module_version(rig)
    if module is not None and isinstance(driver, str) and module != driver:
        # NVML refuses to start when its library and the loaded module differ ("Failed to initialize NVML:
        # Driver/library version mismatch", nvidia-smi): both readings cannot be one machine's at one time.
        return unreadable(
            f"{rig.name}: NVML reports driver {driver} but the loaded kernel module is {module} "
            f"({module.where}): contradictory readings",
            measured=f"NVML {driver}, kernel module {module}",
            expected="one driver version (NVML's library and the loaded nvidia.ko agree, or NVML does not start)",
            fix=[
                "reboot after a driver update (or reload nvidia.ko), then run again or capture the rig again"
            ],
            properties=props,
        )
    problems, fix = [], []
    if exp.min_driver:
        if isinstance(driver, Unavailable) or driver is None:
            return unreadable(
                f"{rig.name}: driver version unreadable ({driver}); the profile needs {exp.min_driver}",
                properties=props,
            )
        if version_key(driver) < version_key(exp.min_driver):
            problems.append(f"driver {driver} < {exp.min_driver}")
            fix.append(
                f"install NVIDIA driver {exp.min_driver} or newer (distribution packages or the .run installer)"
            )
    if exp.min_cuda:
        if not isinstance(cuda, int):
            return unreadable(
                f"{rig.name}: CUDA driver version unreadable ({cuda}); the profile needs {exp.min_cuda}",
                properties=props,
            )
        if version_key(cuda_text(cuda)) < version_key(exp.min_cuda):
            problems.append(f"CUDA {cuda_text(cuda)} < {exp.min_cuda}")
            fix.append(f"a driver supporting CUDA {exp.min_cuda} or newer")
    measured = ", ".join(f"{k} {v}" for k, v in props.items())
    if isinstance(driver, Unavailable) or not isinstance(cuda, int):
        return unreadable(f"{rig.name}: versions unreadable: driver {driver}, CUDA {cuda}", properties=props)
    if problems:
        return failed(
            f"{rig.name}: {'; '.join(problems)}",
            measured=measured,
            expected=f"driver >= {exp.min_driver or 'any'}, CUDA >= {exp.min_cuda or 'any'} ([gpu], {exp.where})",
            fix=fix,
            properties=props,
        )
    return passed(f"{rig.name}: {measured}", properties=props)


@judged
def seen_by_nvml(t: GpuTarget, gpu: GpuState | Unavailable, system: SystemState) -> Verdict:
    """Every NVIDIA GPU on the PCIe bus (sysfs) is among the GPUs NVML reports (``nvmlDeviceGetCount_v2``,
    ``nvmlDeviceGetPciInfo_v3`` busId, NVML API reference).

    A GPU the bus enumerates but the driver does not present is dead, unbound, or failed to initialise
    (the kernel log then has ``NVRM: ... RmInitAdapter failed`` or ``fallen off the bus``, Xid 79); every
    other NVML check of it is UNREADABLE and points here.
    """
    if isinstance(gpu, GpuState):
        # A reading no GPU gives anywhere in its record (a field no other check reads included) makes the
        # record no evidence: said here once, whatever the field.
        corrupt = [v for v in gpu.values.values() if isinstance(v, Unavailable) and v.code == CORRUPT]
        if corrupt:
            return unreadable(
                f"{label(t, gpu)}: its NVML record holds {len(corrupt)} impossible reading(s): "
                + "; ".join(v.reason for v in corrupt[:3])
                + (f"; and {len(corrupt) - 3} more" if len(corrupt) > 3 else ""),
                fix=[
                    "measure on the rig itself (pytest --rig), or capture it there again with `rigcheck capture DIR`"
                ],
                target={"bdf": t.gpu.bdf, "gpu_index": gpu.index},
            )
        return passed(
            f"{label(t, gpu)}: on the PCIe bus and seen by NVML as GPU{gpu.index}",
            measured_value=True,
            expected_value=True,
            target={"bdf": t.gpu.bdf, "gpu_index": gpu.index},
        )
    if gpu.code == NOT_NVIDIA:
        opened(t, gpu, "NVML state")  # raises: not applicable
    if gpu.code == CORRUPT:  # NVML and PCIe disagree about this GPU: no evidence either way
        return unreadable(
            f"{t.label}: {gpu.reason}",
            fix=[
                "measure on the rig itself (pytest --rig), or capture it there again with `rigcheck capture DIR`"
            ],
            target={"bdf": t.gpu.bdf, "gpu_index": t.index},
        )
    fn, tree = t.gpu, t.rig.pcie
    driver = fn.driver
    # The physical slot: the GPU's own, else that of the nearest bridge above it (a riser or switch board).
    slot = fn.slot or next((a.slot for a in reversed(tree.ancestors(fn.bdf)) if a.slot), None)
    where = f'slot "{slot}"' if slot else "its slot"
    seen = sorted(g.bdf for g in system.gpus)
    notes = [
        f"NVML counted GPU index {u.get('index')} but could not open it: {u.get('error')}"
        for u in system.unopened
    ]
    fix = []
    if driver != "nvidia":
        fix.append(
            f"the GPU is bound to {driver or 'no driver'}, not nvidia: "
            + (
                "release it from vfio-pci (drop its ID from vfio-pci.ids= / the modprobe.d file) and reboot"
                if driver == "vfio-pci"
                else "blacklist nouveau, install and load the NVIDIA driver (`sudo modprobe nvidia`)"
                if driver == "nouveau"
                else "load the NVIDIA driver (`sudo modprobe nvidia`) and check `lspci -k -s " + fn.bdf + "`"
            )
        )
    fix += [
        "`sudo dmesg | grep -iE 'NVRM|RmInitAdapter|fallen off the bus|Xid'`: why the driver could not "
        "initialise it (Xid 79 = fallen off the bus)",
        f"`nvidia-smi -q -i {fn.bdf}`",
        f"power the machine off (a cold boot, not a reboot), reseat the card and its riser in {where}, "
        "and check every PCIe power cable of the card",
    ]
    return failed(
        f"{t.label} in {where}: on the PCIe bus (driver {driver or 'none'}) but NVML does not see it: a dead, "
        "unbound or uninitialised GPU",
        measured=f"sysfs {fn.bdf} {fn.ids} bound to {driver or 'no driver'}; NVML ({system.origin}) reports "
        f"{len(seen)} GPU(s): {', '.join(seen) or 'none'}",
        expected="every NVIDIA GPU on the PCIe bus among NVML's GPUs",
        path=[tree.path_text(fn.bdf)],
        notes=notes,
        fix=fix,
        measured_value=False,
        expected_value=True,
        target={"bdf": fn.bdf, "slot": slot or "", "gpu_index": t.index},
    )


__all__ = ["seen_by_nvml", "tp_groups", "versions", "vram_free"]
