"""P2P and NCCL checks: pure functions from a target and the measured figures (``p2p.json`` form) to a Verdict.

Every failure names the GPUs (index, BDF, model), the figure measured against its pass line and where
that line came from, the PCIe path, and the fixes that apply to this rig (ACS redirect on a bridge of the
path, IOMMU translation, NCCL's P2P level).
"""

from __future__ import annotations

from itertools import permutations
from typing import Any

from ..iommu import grub_fix
from ..pcie import ACS_P2P_BLOCKING, decode_acs
from ..rig import Rig
from ..targets import GpuTarget
from ..topology import pair_class
from ..verdict import Verdict, failed, judged, not_applicable, passed, unreadable, warned
from . import thresholds as th
from .figures import DEFINITIONS, group_key, value
from .figures import measured as figure_readings
from .targets import GroupTarget, RouteTarget

NVML_P2P_STATUS = {
    0: "OK",
    1: "CHIPSET_NOT_SUPPORTED",
    2: "GPU_NOT_SUPPORTED",
    3: "IOH_TOPOLOGY_NOT_SUPPORTED",
    4: "DISABLED_BY_REGKEY",
    5: "NOT_SUPPORTED",
    6: "UNKNOWN",
}  # nvmlGpuP2PStatus_t
P2P_SPEEDUP = 1.2  # P2P must beat the host-staged control by this factor to count as really peer-to-peer
LIKELY_CAUSES = (
    "ACS redirect on a bridge between the GPUs (P2P requests bounce off the root complex)",
    "an IOMMU translating GPU DMA (peer writes fault or stall)",
    "P2P over a path the chipset does not support (try NCCL_P2P_DISABLE=1: if that runs, P2P is the problem)",
    "a BAR1 aperture far smaller than the GPU's memory (Resizable BAR off: peers cannot map it)",
)


def _diagnosis_env(rig: Rig, data: dict[str, Any] | None) -> Any:
    """The environment the figures were measured in: the run's own record (``p2p.json`` ``env``), else the
    rig's ``RunEnv`` (live, or the snapshot's ``env.json``); None where neither says."""
    from ..runenv.state import RunEnv, run_env_or_none

    recorded = run_env_or_none(rig)
    env = (data or {}).get("env")
    if isinstance(env, dict) and all(isinstance(v, str) for v in env.values()):
        return RunEnv("the P2P/NCCL run", env=dict(env), nccl_conf=recorded.nccl_conf if recorded else [])
    return recorded


def env_causes(rig: Rig, bdfs: list[str], data: dict[str, Any] | None = None) -> list[tuple[str, str, str]]:
    """NCCL settings that kept these GPUs off P2P in the measured run: (setting, what it does, fix)."""
    from ..runenv.checks import transport_causes

    env = _diagnosis_env(rig, data)
    return transport_causes(rig, env, bdfs, data) if env is not None else []


def _hidden(rig: Rig, label: str, bdfs: list[str], data: dict[str, Any]) -> Verdict | None:
    """UNREADABLE naming the variable (or container) that hid one of these GPUs from the measuring run."""
    hidden = data.get("hidden")
    if not isinstance(hidden, dict):
        from ..runenv.state import hidden_gpus

        hidden = hidden_gpus(rig, _diagnosis_env(rig, data))
    gone = [(b, str(hidden[b])) for b in bdfs if b in hidden]
    if not gone:
        return None
    bdf, why = gone[0]
    if "CUDA_VISIBLE_DEVICES" in why:
        fix = "unset CUDA_VISIBLE_DEVICES, or list every GPU: CUDA_VISIBLE_DEVICES=" + ",".join(
            str(i) for i in range(len(rig.pcie.gpus))
        )
        what = f"{why}: unset it or list every GPU"
    else:
        fix = "pass every GPU to the container: docker run --gpus all (or NVIDIA_VISIBLE_DEVICES=all)"
        what = why
    return unreadable(
        f"{label}: not measured: {bdf} is {what}",
        measured=f"{bdf}: {why}",
        expected="every GPU of the pair or group visible to the measuring processes",
        fix=[fix],
        cause="test_gpu_visible",
    )


def fixes(rig: Rig, bdfs: list[str], nccl: bool = False, data: dict[str, Any] | None = None) -> list[str]:
    """The fixes that apply to these GPUs on this rig: an NCCL setting that turns P2P off (first: it is the
    cause wherever it is set), ACS per bridge, IOMMU, NCCL's P2P level for pairs beyond its default cut-off,
    a small BAR1 (consumer cards), NVLink peers named so, never by a PCIe class."""
    from .nvlink import nvlink_links, nvlink_text
    from .session import recorded_figures

    tree, out = rig.pcie, []
    data = data if data is not None else recorded_figures(rig)
    causes = env_causes(rig, bdfs, data) if nccl else []
    for text, what, fix in causes:
        out.append(f"{fix}   ({text} {what}; NCCL user guide, Environment Variables)")
    seen: set[str] = set()
    for a, b in permutations(bdfs, 2):
        for br in tree.bridges_between(a, b):
            acs = br.config.acs if br.config is not None else None
            if br.bdf in seen or acs is None or not acs.ctrl & ACS_P2P_BLOCKING:
                continue
            seen.add(br.bdf)
            out.append(
                f"sudo setpci -s {br.bdf} ECAP_ACS+0x6.w=0000   (ACS {decode_acs(acs.ctrl)} on {br.describe()}; "
                f'lost at reboot: add "pci=disable_acs_redir={br.bdf}" to GRUB_CMDLINE_LINUX, or turn ACS off '
                "in the BIOS)"
            )
    modes = {rig.iommu.mode_of_group(tree.functions[b].iommu_group) for b in bdfs if b in tree.functions}
    if "translated" in modes:
        out.append(
            "IOMMU translating GPU DMA: " + grub_fix(rig.cpu_vendor, "passthrough" in rig.profile.iommu_allow)
        )
    from ..gpu.bar import bar1_small

    out += [hint for b in bdfs for hint in [bar1_small(rig, b)] if hint]
    links = {(a, b): nvlink_links(rig, data, a, b) for a, b in permutations(bdfs, 2)}
    if nccl and not causes:
        classes = {pair_class(tree, a, b) for (a, b), n in links.items() if not nvlink_text(n)}
        beyond = classes & {"PHB", "NODE", "SYS"}
        if beyond:
            out.append(
                f"pairs are {'/'.join(sorted(beyond))} apart: NCCL's default P2P cut-off is PXB (NVIDIA/nccl "
                "src/graph/paths.cc); with ACS off and the IOMMU off, set NCCL_P2P_LEVEL=SYS (NCCL docs, "
                "Environment Variables: NCCL_P2P_LEVEL)"
            )
    peers = {nvlink_text(n) for n in links.values()}
    if not out and links and None not in peers:
        out.append(
            f"the GPUs are {sorted(p for p in peers if p)[0]}: check every link is up (`nvidia-smi nvlink -s`), "
            "and run with NCCL_DEBUG=INFO to see each channel's transport ('via P2P/...')"
        )
    if not out:
        out.append(
            "no ACS redirect or IOMMU translation found on the path; check the links trained "
            "(pytest --rig -k 'test_link_trained or test_link_under_load') and `nvidia-smi topo -p2p rw`"
        )
    return out


def _paths(rig: Rig, bdfs: list[str]) -> list[str]:
    return [rig.pcie.path_text(b) for b in bdfs if b in rig.pcie.functions]


def _where(data: dict[str, Any]) -> str:
    return str(data.get("origin") or "measured live")


def _run_failure(
    rig: Rig, what: str, run: dict[str, Any] | None, bdfs: list[str], nccl: bool
) -> Verdict | None:
    """A failed verdict when the run that measures ``what`` hung or crashed; None if it finished."""
    if not run or not (run.get("hung") or run.get("crashed")):
        return None
    info = run.get("hung") or run.get("crashed") or {}
    left = info.get("left") or []
    killed = ", ".join(map(str, info.get("killed") or [])) or "none still running"
    after = (
        f"hung: no result {info.get('after_s')} s into {info.get('stage')} (timeout {info.get('timeout_s')} s)"
        if run.get("hung")
        else f"crashed: worker {info.get('worker')} exited with code {info.get('code')} "
        f"during {info.get('stage')}"
    )
    holders = info.get("gpu_holders")  # None: NVML not asked or not there
    if holders:
        memory = f"; STILL HOLDING GPU memory: {'; '.join(holders)}"
    else:
        memory = "; NVML shows none of them holding GPU memory" if holders == [] else ""
    notes = [
        f"every process of the run was killed (process groups {killed}); "
        + (f"STILL ALIVE: {left}" if left else "none left running")
        + memory
    ]
    notes += [f"likely cause: {c}" for c in LIKELY_CAUSES] if run.get("hung") else []
    notes += [f"log: {line}" for line in info.get("tail") or []]
    return failed(
        f"{what} {after}",
        path=_paths(rig, bdfs),
        notes=notes,
        fix=fixes(rig, bdfs, nccl),
        properties={
            "hung": bool(run.get("hung")),
            "processes_left": len(left),
            "gpu_memory_released": "n/a (no NVML)" if holders is None else not holders,
        },
    )


# -- P2P per ordered pair -------------------------------------------------------------------------


def _pair(t: RouteTarget, data: dict[str, Any]) -> dict[str, Any] | Verdict:
    """The pair's figures, or the verdict that ends the check: the run failed, nothing recorded, or
    no P2P where the profile does not require it."""
    hidden = _hidden(t.rig, f"{t.label}: P2P", [t.src.bdf, t.dst.bdf], data)
    if hidden is not None:
        return hidden
    failure = _run_failure(
        t.rig, f"{t.label}: P2P measurement", data.get("runs", {}).get("p2p"), [t.src.bdf, t.dst.bdf], False
    )
    if failure is not None:
        return failure
    entry: dict[str, Any] | None = data.get("pairs", {}).get(t.id)
    if entry is None:
        return unreadable(
            f"{t.label}: no P2P figures for this pair ({_where(data)})",
            fix=["measure live (pytest --rig with PyTorch installed) or capture again"],
        )
    return _not_required(t, entry) or entry


def _capable(entry: dict[str, Any], what: str = "P2P capability") -> bool | None:
    nvml = entry.get("nvml") or {}
    access = value(entry, "can_access_peer", what)
    if access is False or any(
        isinstance(value(nvml, c, what), int) and nvml[c] != 0 for c in ("read", "write")
    ):
        return False
    return True if access else None


def _not_required(t: RouteTarget, entry: dict[str, Any]) -> Verdict | None:
    """n/a where the pair cannot do P2P and the profile says it need not ([p2p] required = false)."""
    if th.p2p_required(t.rig) or _capable(entry, f"{t.label}: P2P capability") is not False:
        return None
    return not_applicable(
        f"{t.label}: no P2P between these GPUs, and {t.rig.profile.source} says it is not required "
        "([p2p] required = false): NCCL goes through host memory (see test_nccl_busbw)"
    )


def _peer_figures(
    t: RouteTarget, data: dict[str, Any], figure: str, name: str, staged_ok: bool = False
) -> dict[str, Any] | Verdict:
    """The pair's figures for a check of its P2P ``figure`` (``unidir_gbps``, ``bidir_gbps``, ``latency_us``),
    or the verdict that ends the check: ``_pair``'s, or UNREADABLE where the record says CUDA cannot access
    the peer (``can_access_peer`` false: ``cudaDeviceCanAccessPeer`` 0) yet holds that figure.

    Without peer access no copy between the two GPUs goes peer-to-peer: ``cudaMemcpyPeerAsync`` then stages it
    through host memory (CUDA Runtime API, cudaMemcpyPeerAsync and cudaDeviceEnablePeerAccess), so the figure
    is no P2P figure and judging it as one would pass a pair with no P2P. Where it also beats the host-staged
    control by ``P2P_SPEEDUP`` the record contradicts itself outright (corrupt). ``test_p2p_capability``
    fails the pair for the missing peer access; this check follows from it. ``staged_ok``: the check compares
    the copy with the host-staged control (``peer_path``), so a staged figure is its evidence and only the
    contradiction ends it.
    """
    entry = _pair(t, data)
    if isinstance(entry, Verdict):
        return entry
    what = f"{t.label}: {name}"
    vals = figure_readings(entry, figure, what)
    if not vals or value(entry, "can_access_peer", f"{t.label}: P2P capability") is not False:
        return entry
    p2p = figure_readings(entry, "unidir_gbps", what)
    ctl = figure_readings(entry, "control_unidir_gbps", what)
    ratio = max(p2p) / ctl[0] if p2p and ctl and ctl[0] > 0 else None
    contradicts = ratio is not None and ratio >= P2P_SPEEDUP
    if staged_ok and not contradicts:
        return entry
    unit = "us" if figure.endswith("_us") else "GB/s"
    summary = (
        f"{what} not judged: the record says CUDA cannot access the peer (cudaDeviceCanAccessPeer 0), yet holds "
        f"{name} readings ({', '.join(f'{v:.4g}' for v in vals)} {unit}): without peer access no copy goes "
        "peer-to-peer (CUDA stages it through host memory), so they are no P2P figures"
    )
    if contradicts:
        summary += (
            f"; and its copies ran at x{ratio:.2f} the bandwidth of the host-staged control (peer access off), "
            "so they were not staged either: the record contradicts itself (corrupt)"
        )
    return unreadable(
        summary,
        measured=f"can_access_peer false; {figure} {', '.join(f'{v:.4g}' for v in vals)} {unit} ({_where(data)})",
        expected=f"{name} only for a pair whose GPUs can access each other (test_p2p_capability)",
        path=_paths(t.rig, [t.src.bdf, t.dst.bdf]),
        fix=[*fixes(t.rig, [t.src.bdf, t.dst.bdf]), MEASURE_AGAIN],
        measured_value=vals[0],
        unit=unit,
        cause="test_p2p_capability",
    )


@judged
def capability(t: RouteTarget, data: dict[str, Any]) -> Verdict:
    """NVML says P2P read and write are OK for the pair, and CUDA can access the peer."""
    entry = _pair(t, data)
    if isinstance(entry, Verdict):
        return entry
    nvml = entry.get("nvml") or {}
    access = value(entry, "can_access_peer", f"{t.label}: P2P capability")
    for cap in ("read", "write", "nvlink"):
        value(nvml, cap, f"{t.label}: P2P capability")
    props: dict[str, object] = {"can_access_peer": access if access is not None else "unknown"}
    found, unknown, refused = [], [], []
    for cap in ("read", "write"):
        v = nvml.get(cap)
        if isinstance(v, int):
            found.append(f"NVML {cap} {NVML_P2P_STATUS.get(v, v)}")
            props[f"nvml_p2p_{cap}"] = NVML_P2P_STATUS.get(v, v)
            if v != 0:
                refused.append(cap)
        else:
            unknown.append(
                f"NVML {cap} ({(v or {}).get('error', 'not recorded') if isinstance(v, dict) else 'not recorded'})"
            )
    if isinstance(nvml.get("nvlink"), int):
        found.append(f"NVML nvlink {NVML_P2P_STATUS.get(nvml['nvlink'], nvml['nvlink'])}")
    found.append(f"cudaDeviceCanAccessPeer {access if access is not None else 'not recorded'}")
    measured = "; ".join(found)
    path = _paths(t.rig, [t.src.bdf, t.dst.bdf])
    if refused or access is False:
        codes = [NVML_P2P_STATUS.get(nvml[c], nvml[c]) for c in refused]
        hint = (
            "CHIPSET_NOT_SUPPORTED is what stock GeForce drivers report: P2P needs a driver that enables it"
            if "CHIPSET_NOT_SUPPORTED" in codes
            else ""
        )
        return failed(
            f"{t.label}: P2P not available ({', '.join(codes) or 'CUDA cannot access the peer'}): NCCL and "
            "vLLM fall back to copies through host memory",
            measured=measured,
            expected="NVML P2P read and write OK, cudaDeviceCanAccessPeer 1 (NCCL uses P2P only if both are OK)",
            path=path,
            notes=[hint] if hint else [],
            fix=fixes(t.rig, [t.src.bdf, t.dst.bdf]),
            properties=props,
        )
    if unknown or access is None:
        return unreadable(
            f"{t.label}: P2P capability not fully known: {', '.join(unknown) or 'CUDA peer access'} "
            "not recorded",
            measured=measured,
            path=path,
            fix=["install nvidia-ml-py (pytest-rigcheck[nvml]) and measure live, or capture again"],
            properties=props,
        )
    return passed(f"{t.label}: P2P read/write OK, peer access available", measured=measured, properties=props)


@judged
def _bandwidth_verdict(t: RouteTarget, data: dict[str, Any], figure: str) -> Verdict:
    name = {"unidir": "unidirectional P2P bandwidth", "bidir": "bidirectional P2P bandwidth"}[figure]
    entry = _peer_figures(t, data, f"{figure}_gbps", name)
    if isinstance(entry, Verdict):
        return entry
    vals = figure_readings(entry, f"{figure}_gbps", f"{t.label}: {name}")
    errors = entry.get("errors") or []
    if not vals:
        return unreadable(
            f"{t.label}: {name} not measured" + (f": {errors[0]}" if errors else f" ({_where(data)})"),
            fix=fixes(t.rig, [t.src.bdf, t.dst.bdf]),
        )
    beyond = above_capacity(t.rig, t.label, (t.src.bdf, t.dst.bdf), data, figure, name, vals)
    if beyond is not None:
        return beyond
    line = th.p2p_threshold(t.rig, t.src.bdf, t.dst.bdf, figure, data)
    if line is None:
        return unreadable(
            f"{t.label}: {name} {vals[0]:.1f} GB/s, but no pass line: no [p2p] min_{figure}_gbps in the "
            "profile and the path's link speeds are unreadable",
            fix=["add [p2p] to the profile"],
        )
    return _settle(t, data, entry, figure, name, vals, line)


def _settle(
    t: RouteTarget,
    data: dict[str, Any],
    entry: dict[str, Any],
    figure: str,
    name: str,
    vals: list[float],
    line: th.Threshold,
) -> Verdict:
    j = th.judge(vals, line)
    unit = line.unit
    verified = value(entry, f"{figure}_verified", f"{t.label}: {name} data check")
    props: dict[str, object] = {
        f"{figure}_{'gbps' if unit == 'GB/s' else 'us'}": round(j.value, 3),
        "pass_line": round(line.pass_line, 3),
        "readings": ",".join(f"{v:.3f}" for v in vals),
        "definition": DEFINITIONS[f"{figure}_{'gbps' if unit == 'GB/s' else 'us'}"],
        "figures_from": _where(data),
    }
    reads = ", ".join(f"{v:.3g}" for v in vals)
    measured = (
        f"{j.value:.4g} {unit} ({'readings ' + reads + '; best decides' if j.retried else 'one reading'})"
    ) + line.share(j.value)
    if verified is False:
        return failed(
            f"{t.label}: {name} copies delivered WRONG DATA",
            measured=measured + "; data check failed",
            expected="destination equal to the source's pattern after every copy",
            path=_paths(t.rig, [t.src.bdf, t.dst.bdf]),
            fix=fixes(t.rig, [t.src.bdf, t.dst.bdf]),
            properties=props,
        )
    if verified is None:
        props["verified"] = "not recorded"
    notes = []
    if j.status == th.FAIL:
        notes.append(f"definition: {props['definition']}")
    elif verified is None:
        notes.append("the data check was not recorded for these figures")
    if j.status == th.WARN:
        notes.append("inside the warning band: not a failure, but below the pass line after a retry")
    bdfs = [t.src.bdf, t.dst.bdf]
    return _banded(
        f"{t.label}: {name}", j, line, measured, _paths(t.rig, bdfs), fixes(t.rig, bdfs), props, notes
    )


def _banded(
    label: str,
    j: th.Judgement,
    line: th.Threshold,
    measured: str,
    path: list[str],
    fix: list[str],
    props: dict[str, object],
    notes: list[str] | None = None,
    at: str = "",
) -> Verdict:
    """The verdict on a figure ``th.judge`` judged against ``line``: FAIL beyond the warning line (with
    ``path`` and ``fix``), WARN inside the warning band, else PASS. ``label`` is ``"<target>: <figure>"``;
    ``at`` follows the value in the PASS summary (``" at 536870912 B"``)."""
    unit = line.unit
    common: dict[str, Any] = dict(
        measured=measured,
        expected=line.text(),
        measured_value=round(j.value, 3),
        expected_value=round(line.pass_line, 3),
        unit=unit,
        notes=notes or [],
        properties=props,
    )
    if j.status == th.FAIL:
        return failed(
            f"{label} {j.value:.3g} {unit}, "
            f"{'below' if line.higher_is_better else 'above'} {line.warn_line:.3g} {unit}",
            path=path,
            fix=fix,
            **common,
        )
    if j.status == th.WARN:
        return warned(f"{label} {j.value:.3g} {unit} is inside the warning band ({line.text()})", **common)
    return passed(f"{label} {j.value:.4g} {unit}{at} ({line.text()})", **common)


# The fix where figures are missing or corrupt: measure them where the GPUs are.
MEASURE_AGAIN = (
    "measure on the rig itself (pytest --rig), or capture it there again with `rigcheck capture DIR`"
)
CAPACITY_MARGIN = 1.05  # a reading may not beat the theoretical capacity of the path by more than this


def above_capacity(
    rig: Rig,
    label: str,
    bdfs: tuple[str, str | None],
    data: dict[str, Any],
    figure: str,
    name: str,
    vals: list[float],
) -> Verdict | None:
    """UNREADABLE (corrupt) where a reading beats the physical capacity of its path by more than
    ``CAPACITY_MARGIN``: between two GPUs (``bdfs`` a pair; ``figure`` unidir/bidir) or between a GPU and
    host memory (``bdfs`` ``(gpu, None)``; ``figure`` h2d/d2h).

    Judged only where the path is known: for a pair, NVLink as NVML reports it, or PCIe where NVML recorded
    that the pair has no NVLink P2P (without that record the copy may ride an NVLink the figures do not
    show); for the host, the GPU's PCIe path to the root complex on an x86 host (AMD or Intel: on Grace the
    host link may be NVLink-C2C, far beyond the PCIe figures, so it is not judged there).
    """
    a, b = bdfs
    cap = th.path_capacity(rig, a, b, data)
    if b is None:
        known = rig.cpu_vendor in ("amd", "intel")
    else:
        nvml_nvlink = ((data.get("pairs", {}).get(f"{a}->{b}") or {}).get("nvml") or {}).get("nvlink")
        known = cap is not None and (
            cap.kind != "pcie" or (isinstance(nvml_nvlink, int) and nvml_nvlink != 0)
        )
    if cap is None or not known:
        return None
    limit = cap.gbps * (2 if figure == "bidir" else 1) * CAPACITY_MARGIN
    over = [v for v in vals if v > limit]
    if not over:
        return None
    return unreadable(
        f"{label}: {name} reading {over[0]:.4g} GB/s is above what the path can carry: corrupt figure",
        measured=f"readings {', '.join(f'{v:.4g}' for v in vals)} GB/s ({_where(data)})",
        expected=f"at most {limit:.4g} GB/s: {'2 x ' if figure == 'bidir' else ''}{cap.text}"
        + (" between the GPU and the host" if b is None else ""),
        path=_paths(rig, [x for x in bdfs if x is not None]),
        fix=[MEASURE_AGAIN],
        measured_value=over[0],
        expected_value=round(limit, 3),
        unit="GB/s",
    )


def unidirectional(t: RouteTarget, data: dict[str, Any]) -> Verdict:
    return _bandwidth_verdict(t, data, "unidir")


def bidirectional(t: RouteTarget, data: dict[str, Any]) -> Verdict:
    return _bandwidth_verdict(t, data, "bidir")


@judged
def latency(t: RouteTarget, data: dict[str, Any]) -> Verdict:
    entry = _peer_figures(t, data, "latency_us", "P2P latency")
    if isinstance(entry, Verdict):
        return entry
    vals = figure_readings(entry, "latency_us", f"{t.label}: P2P latency")
    if not vals:
        return unreadable(f"{t.label}: P2P latency not measured ({_where(data)})", fix=[MEASURE_AGAIN])
    ctl = figure_readings(entry, "control_latency_us", f"{t.label}: P2P latency with peer access off")
    line = th.latency_threshold(t.rig, ctl[0] if ctl else None, (t.src.bdf, t.dst.bdf), data)
    if line is None:
        return unreadable(
            f"{t.label}: P2P latency {vals[0]:.3g} us, but no pass line: no [p2p] max_latency_us and no "
            "peer-access-off control to compare with",
            fix=["add [p2p] max_latency_us to the profile"],
        )
    return _settle(t, data, entry, "latency", "P2P latency", vals, line)


@judged
def peer_path(t: RouteTarget, data: dict[str, Any]) -> Verdict:
    """P2P copies beat the host-staged control: traffic really goes peer-to-peer."""
    entry = _peer_figures(t, data, "unidir_gbps", "P2P bandwidth", staged_ok=True)
    if isinstance(entry, Verdict):
        return entry
    p2p = figure_readings(entry, "unidir_gbps", f"{t.label}: P2P bandwidth")
    ctl = figure_readings(entry, "control_unidir_gbps", f"{t.label}: bandwidth with peer access off")
    value(entry, "control_verified", f"{t.label}: bandwidth with peer access off, data check")
    if not p2p or not ctl:
        return unreadable(
            f"{t.label}: no {'control (peer access off)' if p2p else 'P2P'} reading to compare "
            f"({_where(data)})",
            fix=[MEASURE_AGAIN],
        )
    corrupt = above_capacity(t.rig, t.label, (t.src.bdf, t.dst.bdf), data, "unidir", "P2P bandwidth", p2p)
    if corrupt is not None:  # a figure the path cannot carry is no evidence of peer-to-peer either
        return corrupt
    best, base = max(p2p), ctl[0]
    ratio = best / base if base > 0 else float("inf")
    props: dict[str, object] = {
        "p2p_gbps": round(best, 3),
        "control_gbps": round(base, 3),
        "ratio": round(ratio, 3),
    }
    measured = f"peer access on {best:.4g} GB/s, off (staged through host) {base:.4g} GB/s: x{ratio:.2f}"
    if ratio >= P2P_SPEEDUP:
        return passed(
            f"{t.label}: P2P {ratio:.1f}x the host-staged copy", measured=measured, properties=props
        )
    access = value(entry, "can_access_peer", f"{t.label}: P2P capability")
    return failed(
        f"{t.label}: copies with peer access are no faster than through host memory (x{ratio:.2f}): "
        "traffic is not going peer-to-peer"
        + ("" if access is not False else " (CUDA cannot access the peer)"),
        measured=measured,
        expected=f"at least x{P2P_SPEEDUP} the control with peer access off (this rigcheck)",
        path=_paths(t.rig, [t.src.bdf, t.dst.bdf]),
        fix=fixes(t.rig, [t.src.bdf, t.dst.bdf]),
        properties=props,
    )


@judged
def ipc(t: RouteTarget, data: dict[str, Any]) -> Verdict:
    """A buffer written by SRC's process reads back right in DST's process through a CUDA IPC handle."""
    hidden = _hidden(t.rig, f"{t.label}: CUDA IPC", [t.src.bdf, t.dst.bdf], data)
    if hidden is not None:
        return hidden
    group = (data.get("nccl", {}).get("groups", {}) or {}).get(
        group_key([g.bdf for g in t.rig.pcie.gpus])
    ) or {}
    failure = _run_failure(
        t.rig, f"{t.label}: CUDA IPC check (in the NCCL run)", group, [t.src.bdf, t.dst.bdf], True
    )
    if failure is not None:
        return failure
    pair_entry = data.get("pairs", {}).get(t.id)
    skip = _not_required(t, pair_entry) if pair_entry else None
    if skip is not None:
        return skip
    block = data.get("nccl", {}).get("ipc") or {}
    entry = (block.get("pairs") or {}).get(t.id)
    if entry is None:
        why = block.get("error") or f"not recorded ({_where(data)})"
        return unreadable(f"{t.label}: CUDA IPC round trip {why}", fix=[MEASURE_AGAIN])
    kernel = entry.get("kernel_read") or {}
    for part, field in ((entry, "ok"), (entry, "mismatches"), (kernel, "ok"), (kernel, "mismatches")):
        value(part, field, f"{t.label}: CUDA IPC round trip")
    props: dict[str, object] = {
        "ipc_ok": bool(entry.get("ok")),
        "mismatches": entry.get("mismatches", "n/a"),
        "kernel_read_ok": "not run" if kernel.get("ok") is None else bool(kernel.get("ok")),
    }
    if entry.get("ok") and kernel.get("ok") is not False:
        how = (
            "a copy and a kernel on the reader's GPU"
            if kernel.get("ok")
            else f"a copy (kernel read {kernel.get('error') or 'not recorded'})"
        )
        return passed(
            f"{t.label}: {entry.get('bytes', 0) >> 20} MiB written by {t.src.bdf}'s process read back intact "
            f"by {t.dst.bdf}'s through cudaIpcOpenMemHandle, by {how}",
            properties=props,
        )
    if entry.get("ok"):
        what = "the copy engine read it right, but a kernel reading it through the mapping got " + (
            kernel.get("error") or f"{kernel.get('mismatches')} of {entry.get('bytes', 0) // 4} int32 wrong"
        )
    else:
        what = entry.get("error") or f"{entry.get('mismatches')} of {entry.get('bytes', 0) // 4} int32 differ"
    return failed(
        f"{t.label}: CUDA IPC round trip failed: {what}",
        measured=what,
        expected="every element equal to the writer's pattern (vLLM's custom all-reduce reads "
        "peers' buffers this way; garbage here means wrong output from vLLM with TP>1)",
        path=_paths(t.rig, [t.src.bdf, t.dst.bdf]),
        fix=[
            *fixes(t.rig, [t.src.bdf, t.dst.bdf], True),
            "until fixed, start vLLM with --disable-custom-all-reduce",
        ],
        properties=props,
    )


# -- host <-> device per GPU ----------------------------------------------------------------------


@judged
def host_bandwidth(t: GpuTarget, data: dict[str, Any], figure: str) -> Verdict:
    """H2D (``figure="h2d"``) or D2H bandwidth of one GPU against its own link."""
    hidden = _hidden(t.rig, f"{t.label}: host bandwidth", [t.gpu.bdf], data)
    if hidden is not None:
        return hidden
    failure = _run_failure(
        t.rig, f"{t.label}: host bandwidth measurement", data.get("runs", {}).get("p2p"), [t.gpu.bdf], False
    )
    if failure is not None:
        return failure
    entry = data.get("gpus", {}).get(t.gpu.bdf)
    name = {"h2d": "host-to-device bandwidth", "d2h": "device-to-host bandwidth"}[figure]
    vals = figure_readings(entry, f"{figure}_gbps", f"{t.label}: {name}")
    if not vals:
        errs = (entry or {}).get("errors") or []
        return unreadable(
            f"{t.label}: {name} not measured" + (f": {errs[0]}" if errs else f" ({_where(data)})"),
            fix=[MEASURE_AGAIN],
        )
    beyond = above_capacity(t.rig, t.label, (t.gpu.bdf, None), data, figure, name, vals)
    if beyond is not None:
        return beyond
    line = th.host_threshold(t.rig, t.gpu.bdf, figure, data)
    if line is None:
        return unreadable(
            f"{t.label}: {name} {vals[0]:.3g} GB/s, but the GPU's link speed is unreadable",
            fix=[f"read the link as root (sudo pytest --rig), or add [p2p] min_{figure}_gbps to the profile"],
        )
    j = th.judge(vals, line)
    props: dict[str, object] = {
        f"{figure}_gbps": round(j.value, 3),
        "pass_line": round(line.pass_line, 3),
        "definition": DEFINITIONS[f"{figure}_gbps"],
        "figures_from": _where(data),
    }
    measured = f"{j.value:.4g} GB/s (readings {', '.join(f'{v:.3g}' for v in vals)})"
    if value(entry, f"{figure}_verified", f"{t.label}: {name} data check") is False:
        return failed(
            f"{t.label}: {name} copies delivered WRONG DATA",
            measured=measured,
            expected="the pinned buffer's pattern",
            path=_paths(t.rig, [t.gpu.bdf]),
            fix=["check `dmesg` for NVRM Xid and AER errors on this GPU's link"],
            properties=props,
        )
    return _banded(
        f"{t.label}: {name}",
        j,
        line,
        measured,
        _paths(t.rig, [t.gpu.bdf]),
        [
            "check the link trained to full speed and width (pytest --rig -k test_link)",
            "check the GPU's NUMA node: pin the process to the CPU socket the GPU hangs off "
            "(numactl --cpunodebind)",
        ],
        props,
    )


# -- NCCL per group -------------------------------------------------------------------------------


def _group(t: GroupTarget, data: dict[str, Any]) -> dict[str, Any] | Verdict:
    """The group's all-reduce figures, or the verdict that ends the check."""
    if t.problem:
        return failed(
            f"{t.rig.name}: {t.problem}",
            expected="GPU indices below the rig's GPU count",
            fix=["correct [rig] tp_groups in the profile"],
        )
    hidden = _hidden(t.rig, f"{t.label}: NCCL all-reduce", t.bdfs, data)
    if hidden is not None:
        return hidden
    entry: dict[str, Any] | None = data.get("nccl", {}).get("groups", {}).get(group_key(t.bdfs))
    if entry is None:
        return unreadable(
            f"{t.label}: no NCCL all-reduce figures for this group ({_where(data)})", fix=[MEASURE_AGAIN]
        )
    return _run_failure(t.rig, f"{t.label}: NCCL all-reduce", entry, t.bdfs, True) or entry


@judged
def nccl_correct(t: GroupTarget, data: dict[str, Any]) -> Verdict:
    """All-reduce of ones gives exactly the group size on every rank and at every size; no NaN.

    Judged on the sweep's rows (rank 0's view, one per size, as all_reduce_perf prints ``#wrong``) and the
    group's ``wrong``/``nan`` totals (every checked rank): wrong or NaN elements at any size FAIL, naming
    the sizes; a total that contradicts the rows (0 beside rows with wrong elements) was made corrupt at
    load (``figures._check_totals``) and is UNREADABLE here; a corrupt row makes the sweep UNREADABLE.
    """
    entry = _group(t, data)
    if isinstance(entry, Verdict):
        return entry
    what = f"{t.label}: all-reduce results"
    sweep = value(entry, "sweep", what) or []
    wrong_total, nan_total = value(entry, "wrong", what), value(entry, "nan", what)
    n = len(t.gpus)
    bad = [s for s in sweep if s.get("wrong") or s.get("nan")]
    if not sweep or (wrong_total is None and not bad):
        return unreadable(f"{t.label}: all-reduce results not recorded ({_where(data)})", fix=[MEASURE_AGAIN])
    wrong = max(int(wrong_total or 0), sum(s.get("wrong") or 0 for s in sweep))
    nan = max(int(nan_total or 0), sum(s.get("nan") or 0 for s in sweep))
    sizes = f"{len(sweep)} sizes {sweep[0].get('bytes')} B .. {sweep[-1].get('bytes')} B"
    bad_sizes = [f"{s.get('bytes')} B" for s in bad]
    props: dict[str, object] = {
        "wrong": wrong,
        "nan": nan,
        "sizes": len(sweep),
        "bad_sizes": ",".join(str(s.get("bytes")) for s in bad),
    }
    if wrong or nan:
        at = (
            "; ".join(
                f"{s.get('bytes')} B: {s.get('wrong') or 0} wrong, {s.get('nan') or 0} NaN" for s in bad
            )
            or "none at any size of rank 0's sweep: on another rank"
        )
        shown = ", ".join(bad_sizes[:4]) + (", ..." if len(bad) > 4 else "")
        return failed(
            f"{t.label}: all-reduce returned WRONG values: {wrong} elements != {n}, {nan} NaN"
            + (f" at {len(bad)} of {len(sweep)} sizes ({shown})" if bad else ""),
            measured=f"{wrong} wrong, {nan} NaN over {sizes}; per size (rank 0's view): {at}",
            expected=f"all-reduce (sum) of ones == {n} everywhere, no NaN (vLLM troubleshooting oracle)",
            measured_value=wrong + nan,
            expected_value=0,
            unit="elements",
            path=_paths(t.rig, t.bdfs),
            notes=["silent wrong results are what ACS/IOMMU-broken P2P gives"],
            fix=fixes(t.rig, t.bdfs, True),
            properties=props,
        )
    return passed(
        f"{t.label}: all-reduce of ones == {n} on every rank at {sizes}; no NaN",
        measured=f"0 wrong, 0 NaN over {sizes}",
        expected=f"all-reduce (sum) of ones == {n} everywhere, no NaN",
        measured_value=0,
        expected_value=0,
        unit="elements",
        properties=props,
    )


@judged
def nccl_busbw(t: GroupTarget, data: dict[str, Any]) -> Verdict:
    entry = _group(t, data)
    if isinstance(entry, Verdict):
        return entry
    what = f"{t.label}: all-reduce bus bandwidth"
    vals = figure_readings(entry, "busbw_gbps", what)
    if not vals:
        return unreadable(
            f"{t.label}: all-reduce bus bandwidth not recorded ({_where(data)})", fix=[MEASURE_AGAIN]
        )
    kinds = {k.split("/", 1)[0] for k in (entry.get("transports") or {})}
    line = th.busbw_threshold(t.rig, t.bdfs, data, p2p=not kinds or bool(kinds & {"P2P", "NVLS"}))
    if line is None:
        return unreadable(
            f"{t.label}: busbw {vals[0]:.3g} GB/s, but no pass line ([nccl] min_busbw_gbps, or link speeds)",
            fix=["add [nccl] min_busbw_gbps to the profile, or read the links as root (sudo pytest --rig)"],
        )
    j = th.judge(vals, line)
    size = value(entry, "judged_bytes", what)
    sweep = value(entry, "sweep", what) or []
    props: dict[str, object] = {
        "busbw_gbps": round(j.value, 3),
        "pass_line": round(line.pass_line, 3),
        "judged_bytes": size or "",
        "definition": DEFINITIONS["busbw_gbps"],
        "transports": ",".join(sorted(entry.get("transports") or {})),
        "figures_from": _where(data),
    }
    table = " ".join(
        f"{s['bytes']}:{s['busbw_gbps']:.1f}" for s in sweep[-4:] if s.get("busbw_gbps") is not None
    )
    measured = (
        f"busbw {j.value:.4g} GB/s at {size} B (readings {', '.join(f'{v:.4g}' for v in vals)}); "
        f"sweep tail bytes:GB/s {table}; NCCL {entry.get('nccl') or '?'}"
    ) + line.share(j.value)
    return _banded(
        f"{t.label}: all-reduce busbw",
        j,
        line,
        measured,
        _paths(t.rig, t.bdfs),
        fixes(t.rig, t.bdfs, True),
        props,
        at=f" at {size} B",
    )


@judged
def nccl_uses_p2p(t: GroupTarget, data: dict[str, Any]) -> Verdict:
    """NCCL connects the GPUs by P2P, and it beats the NCCL_P2P_DISABLE=1 control."""
    entry = _group(t, data)
    if isinstance(entry, Verdict):
        return entry
    # Per group since p2p.json files of format 1 recorded one control, over all GPUs, at top level.
    control = entry.get("control") or (data.get("nccl", {}).get("control") if t.name == "all" else None)
    if not control:
        return unreadable(
            f"{t.label}: no NCCL_P2P_DISABLE=1 control run recorded for this group ({_where(data)})",
            fix=[MEASURE_AGAIN],
        )
    failure = _run_failure(t.rig, f"{t.label}: NCCL control run (NCCL_P2P_DISABLE=1)", control, t.bdfs, True)
    if failure is not None:
        return failure
    on = figure_readings(entry, "busbw_gbps", f"{t.label}: all-reduce bus bandwidth")
    off = figure_readings(
        control, "busbw_gbps", f"{t.label}: all-reduce bus bandwidth with NCCL_P2P_DISABLE=1"
    )
    kinds = sorted({k.split("/", 1)[0] for k in (entry.get("transports") or {})})
    if not th.p2p_required(t.rig) and kinds and not ({"P2P", "NVLS"} & set(kinds)):
        return not_applicable(
            f"{t.label}: NCCL connects by {'/'.join(kinds)}; {t.rig.profile.source} says P2P is not "
            "required ([p2p] required = false)"
        )
    if not on or not off:
        return unreadable(f"{t.label}: busbw with and without P2P not both recorded", fix=[MEASURE_AGAIN])
    ratio = max(on) / off[0] if off[0] > 0 else float("inf")
    props: dict[str, object] = {
        "busbw_p2p_gbps": round(max(on), 3),
        "busbw_no_p2p_gbps": round(off[0], 3),
        "ratio": round(ratio, 3),
        "transports": ",".join(kinds) or "not recorded",
    }
    measured = (
        f"busbw {max(on):.4g} GB/s with P2P, {off[0]:.4g} GB/s with NCCL_P2P_DISABLE=1 (x{ratio:.2f}); "
        f"NCCL transports: {', '.join(sorted(entry.get('transports') or {})) or 'not recorded'}"
    )
    not_p2p = bool(kinds) and not ({"P2P", "NVLS"} & set(kinds))
    if not_p2p or ratio < P2P_SPEEDUP:
        why = (
            f"NCCL connected the GPUs by {'/'.join(kinds)}, not P2P"
            if not_p2p
            else f"P2P is only x{ratio:.2f} the host path"
        )
        causes = env_causes(t.rig, t.bdfs, data)
        if causes:
            why += " because " + " and ".join(f"{c[0]} is set (it {c[1]})" for c in causes)
        from .nvlink import nvlink_links, nvlink_text

        peers = {nvlink_text(nvlink_links(t.rig, data, a, b)) for a, b in permutations(t.bdfs, 2)}
        if None not in peers:
            why += f"; the GPUs are {sorted(p for p in peers if p)[0]}"
        return failed(
            f"{t.label}: {why}",
            measured=measured,
            expected=f"NCCL channels via P2P, busbw at least x{P2P_SPEEDUP} the NCCL_P2P_DISABLE=1 control",
            path=_paths(t.rig, t.bdfs),
            fix=fixes(t.rig, t.bdfs, True, data),
            properties=props,
            cause="test_nccl_transport_env" if causes else None,
        )
    if not kinds:
        # busbw beating the control says a faster path was taken, not which: NCCL's own transport lines
        # ("via P2P/IPC", "via NVLS") are the evidence that it used P2P
        return unreadable(
            f"{t.label}: NCCL's transports not recorded ({_where(data)}, transports empty): x{ratio:.1f} the "
            "NCCL_P2P_DISABLE=1 control, but whether NCCL connected the GPUs by P2P cannot be told",
            measured=measured,
            expected=f"NCCL channels via P2P, busbw at least x{P2P_SPEEDUP} the NCCL_P2P_DISABLE=1 control",
            path=_paths(t.rig, t.bdfs),
            fix=[
                MEASURE_AGAIN,
                "NCCL prints its transports at NCCL_DEBUG=INFO (set by rigcheck unless NCCL_DEBUG is already set)",
            ],
            properties=props,
        )
    notes: list[str] = []
    return passed(
        f"{t.label}: NCCL uses {'/'.join(kinds) or 'P2P'}, x{ratio:.1f} the no-P2P control",
        measured=measured,
        notes=notes,
        properties=props,
    )
