"""Pass lines for P2P and NCCL figures: from the profile, else from the topology; and the judging rule.

Derived lines are a stated fraction of the theoretical one-direction bandwidth of the narrowest link on
the pair's path (PCIe data rates with 128b/130b encoding: Gen3 0.985, Gen4 1.969, Gen5 3.938 GB/s per lane).
For NVLink peers the line is the links up between the pair times the per-link rate of the NVLink
generation, per direction (NVIDIA's NVLink page, https://www.nvidia.com/en-us/data-center/nvlink/, and
the GPU datasheets: NVLink 2 (V100) 6 links = 300 GB/s both ways, NVLink 3 (A100) 12 = 600, NVLink 4
(H100/H200) 18 = 900, NVLink 5 (Blackwell) 18 x 100 GB/s = 1.8 TB/s; so 25, 25, 25 and 50 GB/s per link
per direction; NVLink 1 (P100) 20. GA102 cards' NVLink 3 runs 14.0625 GB/s per link per direction:
NVIDIA Ampere GA102 GPU Architecture whitepaper). The generation comes from NVML
(``nvmlDeviceGetNvLinkVersion``, an ``nvmlNvlinkVersion_t`` in current nvml.h: 1 = 1.0, 2 = 2.0,
3 = 2.2, 4 = 3.0, 5 = 3.1, 6 = 4.0, 7 = 5.0), else from the GPU's name. A warning band lies beyond each
pass line (below it for bandwidth, above it for latency); a first reading outside the pass line is
measured again before the verdict, and the best reading decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ProfileError
from ..pcie import link_bandwidth_gbps
from ..profile import boolean, check_keys, number
from ..rig import Rig

PASS, WARN, FAIL = "pass", "warn", "fail"
WARN_BAND = 0.10  # the band below (above, for latency) the pass line that warns instead of failing
FRACTION = {
    # Gen5 P2P writes reach about 89 % of 63 GB/s (local-inference-lab/rtx6kpro ``hardware/pcie-bandwidth.md``,
    # measured with cuda-samples ``Samples/5_Domain_Specific/p2pBandwidthLatencyTest``); the seed's Gen4 targets are 87 % (uni)
    # and 80 % (bidir) of theoretical. Lines a little under those, so a healthy rig passes with margin.
    ("pcie", "unidir"): 0.80,
    ("pcie", "bidir"): 0.72,
    # 2x H200 NVLink4 x18: copy-engine P2P 362-393 GB/s (80-87 % of 450), bidir 736-773 (82-86 % of 900).
    ("nvlink", "unidir"): 0.70,
    ("nvlink", "bidir"): 0.70,
    ("host", "h2d"): 0.70,  # Gen4 x16 H2D 24-27 GB/s (76-86 % of 31.5), Gen5 H200 55 GB/s (88 % of 63)
    ("host", "d2h"): 0.70,
    ("nccl", "busbw"): 0.55,  # all-reduce busbw at 512 MB: 2x H200 314 GB/s = 70 % of 450
}
LATENCY_VS_CONTROL = 0.5  # P2P latency must be under half the host-staged latency of the same run
# NVLink peers: a 16 B peer copy is launch-bound, about 2-3 us (2x H200 NV18: 2.2 us; the host-staged
# control 15-17 us), so half the control would let a 8 us NVLink pass and a staged path nearly pass.
NVLINK_LATENCY_US = 10.0
NVLINK_GBPS = {1: 20.0, 2: 25.0, 3: 25.0, 4: 25.0, 5: 50.0}  # per link, per direction
# nvmlNvlinkVersion_t (nvml.h, NVML_NVLINK_VERSION_1_0 = 1 .. NVML_NVLINK_VERSION_5_0 = 7) -> generation
NVML_NVLINK_ENUM = {
    1: (1, "1.0"),
    2: (2, "2.0"),
    3: (2, "2.2"),
    4: (3, "3.0"),
    5: (3, "3.1"),
    6: (4, "4.0"),
    7: (5, "5.0"),
}
# GA102 (RTX 3090, RTX A6000, A40): NVLink 3 at 14.0625 GB/s per link per direction (GA102 whitepaper)
NVLINK_GBPS_BY_NAME = (("RTX 3090", 14.0625), ("RTX A6000", 14.0625), ("A40", 14.0625))
NVLINK_BY_NAME = (
    ("B200", 5),
    ("B100", 5),
    ("GB200", 5),
    ("H200", 4),
    ("H100", 4),
    ("H800", 4),
    ("A100", 3),
    ("A800", 3),
    ("RTX 3090", 3),
    ("RTX A6000", 3),
    ("A40", 3),
    ("V100", 2),
    ("P100", 1),
)
P2P_KEYS = {
    "min_unidir_gbps",
    "min_bidir_gbps",
    "max_latency_us",
    "min_h2d_gbps",
    "min_d2h_gbps",
    "warn_band",
    "required",
}
NO_P2P_BUSBW_FRACTION = 0.30  # NCCL over SHM: every byte crosses the PCIe link twice, through host memory
NCCL_KEYS = {"min_busbw_gbps", "warn_band"}


@dataclass(frozen=True)
class Threshold:
    """A pass line, the warning line beyond it, which way is better, and where it came from."""

    pass_line: float
    warn_line: float
    higher_is_better: bool
    unit: str
    source: str
    capacity: float | None = None  # the theoretical figure the line is a fraction of (same unit), if any

    def share(self, value: float) -> str:
        """``; 31% of the theoretical 450 GB/s`` for a derived bandwidth line, else ``""``."""
        if not self.capacity or not self.higher_is_better:
            return ""
        return f"; {value / self.capacity:.0%} of the theoretical {self.capacity:.4g} {self.unit}"

    def classify(self, value: float) -> str:
        if self.higher_is_better:
            return PASS if value >= self.pass_line else WARN if value >= self.warn_line else FAIL
        return PASS if value <= self.pass_line else WARN if value <= self.warn_line else FAIL

    def text(self) -> str:
        op = ">=" if self.higher_is_better else "<="
        return (
            f"{op} {self.pass_line:.3g} {self.unit} (warning band to {self.warn_line:.3g} {self.unit}), "
            f"from {self.source}"
        )


@dataclass(frozen=True)
class Judgement:
    status: str
    value: float  # the reading that decided
    readings: tuple[float, ...]

    @property
    def retried(self) -> bool:
        return len(self.readings) > 1


def judge(readings: list[float], t: Threshold) -> Judgement:
    """The first reading decides if it passes; otherwise the best of the retries does.

    Example:
        >>> t = Threshold(25.0, 22.5, True, "GB/s", "test")
        >>> judge([21.0, 25.3], t).status
        'pass'
    """
    if not readings:
        raise ValueError("no reading")
    if t.classify(readings[0]) == PASS:
        return Judgement(PASS, readings[0], tuple(readings))
    best = max(readings) if t.higher_is_better else min(readings)
    return Judgement(t.classify(best), best, tuple(readings))


def bandwidth_line(value: float, band: float, source: str, capacity: float | None = None) -> Threshold:
    return Threshold(value, value * (1 - band), True, "GB/s", source, capacity)


@dataclass(frozen=True)
class PathCapacity:
    """Theoretical one-direction bandwidth of the narrowest link between two GPUs (or a GPU and the host)."""

    kind: str  # "nvlink" or "pcie"
    gbps: float
    text: str


MAX_GBPS = 10_000.0  # above any link (NVLink5 x18 is 900 GB/s per direction): a bigger line is a typo
MAX_LATENCY_US = 1_000_000.0


@dataclass(frozen=True)
class P2pSection:
    """``[p2p]``: pass lines (GB/s, us) that replace the derived ones; the warning band; whether P2P is required."""

    min_unidir_gbps: float | None = None
    min_bidir_gbps: float | None = None
    max_latency_us: float | None = None
    min_h2d_gbps: float | None = None
    min_d2h_gbps: float | None = None
    warn_band: float = WARN_BAND
    required: bool = True

    def line(self, key: str) -> float | None:
        return getattr(self, key)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class NcclSection:
    """``[nccl]``: the all-reduce bus bandwidth pass line (GB/s) and the warning band."""

    min_busbw_gbps: float | None = None
    warn_band: float = WARN_BAND


def _figures(table: dict[str, Any], where: str, section: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in table.items():
        key = f"{section}.{k}"
        if k == "required":
            out[k] = boolean(where, key, v)
        elif k == "warn_band":
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v < 1:
                raise ProfileError(
                    where, key, v, "a fraction from 0 to below 1 (0.1 warns within 10 % of the line)"
                )
            out[k] = float(v)
        elif k.endswith("_gbps"):
            out[k] = number(where, key, v, 0.0, MAX_GBPS, "GB/s", above=True)
        else:  # max_latency_us
            out[k] = number(where, key, v, 0.0, MAX_LATENCY_US, "microseconds", above=True)
    return out


def parse_p2p(table: dict[str, Any], where: str) -> P2pSection:
    """Validate ``[p2p]``: min_unidir_gbps, min_bidir_gbps, min_h2d_gbps, min_d2h_gbps (GB/s, above 0),
    max_latency_us (us, above 0), warn_band (a fraction, 0 to below 1), required (true or false).

    Raises:
        ProfileError: an unknown key or a bad value, named.
    """
    check_keys(where, "p2p", table, P2P_KEYS)
    return P2pSection(**_figures(table, where, "p2p"))


def parse_nccl(table: dict[str, Any], where: str) -> NcclSection:
    """Validate ``[nccl]``: min_busbw_gbps (GB/s, above 0), warn_band (a fraction, 0 to below 1).

    Raises:
        ProfileError: an unknown key or a bad value, named.
    """
    check_keys(where, "nccl", table, NCCL_KEYS)
    return NcclSection(**_figures(table, where, "nccl"))


def nvlink_version(info: dict[str, Any] | None, gpu_name: str) -> tuple[int | None, str]:
    """NVLink generation of a GPU and how it was known: NVML's ``nvmlNvlinkVersion_t`` decoded, checked
    against the GPU's name (NVML has been seen reporting 5.0 for Hopper, which has NVLink 4: the
    ``NVML_NVLINK_VERSION_5_0`` workaround in FlashInfer's NVLink bandwidth probe); else the name alone.

    Example:
        >>> nvlink_version({"version": 6}, "NVIDIA H200")
        (4, 'NVML NVLink 4.0')
    """
    by_name = next(((k, v) for k, v in NVLINK_BY_NAME if k in gpu_name), None)
    raw = info.get("version") if info else None
    if isinstance(raw, int) and not isinstance(raw, bool) and raw in NVML_NVLINK_ENUM:
        gen, text = NVML_NVLINK_ENUM[raw]
        if by_name is not None and by_name[1] != gen:
            return by_name[1], f"NVLink{by_name[1]} of {by_name[0]} (NVML reports {text}, not this GPU's)"
        return gen, f"NVML NVLink {text}"
    if by_name is not None:
        return by_name[1], f"NVLink{by_name[1]} assumed for {by_name[0]}"
    return None, "unknown"


def nvlink_rate(version: int, gpu_name: str) -> float | None:
    """GB/s per link per direction for the generation (GA102 cards' slower NVLink 3 by name)."""
    for key, rate in NVLINK_GBPS_BY_NAME:
        if key in gpu_name and version == 3:
            return rate
    return NVLINK_GBPS.get(version)


def path_capacity(rig: Rig, a: str, b: str | None, data: dict[str, Any]) -> PathCapacity | None:
    """The narrowest link between GPUs ``a`` and ``b`` (``b=None``: between ``a`` and the host).

    NVLink when NVML says the pair's NVLink P2P status is OK and both GPUs have active links (links to
    the peer itself, else the lesser active count, as through an NVSwitch); otherwise PCIe, each hop at
    the lesser of its two ends' capability (and of the profile's [links], where given).
    """
    tree = rig.pcie
    if b is not None:
        pair = data.get("pairs", {}).get(f"{a}->{b}") or {}
        nvml = pair.get("nvml") or {}
        la, lb = (data.get("gpus", {}).get(x, {}).get("nvlink") or {} for x in (a, b))
        if nvml.get("nvlink") == 0 and la.get("active") and lb.get("active"):
            direct = (la.get("remotes") or {}).get(b)
            links = int(direct) if direct else min(int(la["active"]), int(lb["active"]))
            name = data.get("gpus", {}).get(a, {}).get("name") or tree.functions[a].name
            version, how = nvlink_version(la, name)
            per = nvlink_rate(version, name) if version is not None else None
            if per is not None:
                linked = [
                    g
                    for g in (data.get("gpus") or {}).values()
                    if ((g or {}).get("nvlink") or {}).get("active")
                ]
                via = (
                    "direct"
                    if direct
                    else "the pair's active links: no other GPU has NVLink"
                    if len(linked) == 2
                    else "lesser active count of the two GPUs (NVSwitch)"
                )
                return PathCapacity(
                    "nvlink",
                    links * per,
                    f"NVLink: {links} links x {per:g} GB/s per direction, NVLink gen {version} ({via}; {how}) = "
                    f"{links * per:g} GB/s",
                )
    hops: list[tuple[float, str]] = []
    gpu_index = {g.bdf: i for i, g in enumerate(tree.gpus)}
    chains = [tree.links_to(a)] + ([tree.links_to(b)] if b is not None else [])
    if b is not None:
        common = {x.bdf for x in tree.ancestors(a)} & {x.bdf for x in tree.ancestors(b)}
        # A link whose lower end is a shared ancestor (a switch's uplink) carries no P2P traffic: it turns there.
        chains = [[(u, d) for u, d in ch if d.bdf not in common] for ch in chains]
    for chain in chains:
        for up, down in chain:
            gens = [g for g in (down.link_cap[0], up.link_cap[0] if up else None) if g]
            widths = [w for w in (down.link_cap[1], up.link_cap[1] if up else None) if w]
            want = rig.profile.link_for(down.bdf, down.slot, gpu_index.get(down.bdf))
            gens += [want.gen] if want.gen else []
            widths += [want.width] if want.width else []
            if not gens or not widths:
                continue
            gen, width = min(gens), min(widths)
            where = f"{up.bdf} -> {down.bdf}" if up else f"{down.bdf} to the root complex"
            hops.append((link_bandwidth_gbps(gen, width), f"Gen{gen} x{width} at {where}"))
    if not hops:
        return None
    gbps, text = min(hops)
    return PathCapacity(
        "pcie", gbps, f"PCIe {text} ({gbps:.3g} GB/s per direction, narrowest link on the path)"
    )


def p2p_threshold(rig: Rig, a: str, b: str | None, figure: str, data: dict[str, Any]) -> Threshold | None:
    """Pass line for ``unidir`` or ``bidir`` bandwidth from GPU ``a`` to ``b``, or (``b`` None) for
    ``h2d``/``d2h`` between GPU ``a`` and host memory: ``[p2p] min_<figure>_gbps``, else a fraction of
    the path's capacity (``FRACTION``); None if nothing gives one."""
    sec: P2pSection = rig.profile.section("p2p")
    key = f"min_{figure}_gbps"
    line = sec.line(key)
    if line is not None:
        return bandwidth_line(line, sec.warn_band, f"{rig.profile.source} [p2p] {key}")
    cap = path_capacity(rig, a, b, data)
    if cap is None:
        return None
    frac = FRACTION[("host" if b is None else cap.kind, figure)]
    mult = 2 if figure == "bidir" else 1
    return bandwidth_line(
        frac * mult * cap.gbps,
        sec.warn_band,
        f"{frac:.0%} of {'2 x ' if mult == 2 else ''}{cap.text}",
        mult * cap.gbps,
    )


def latency_threshold(
    rig: Rig,
    control_us: float | None,
    pair: tuple[str, str] | None = None,
    data: dict[str, Any] | None = None,
) -> Threshold | None:
    """Latency line: ``[p2p] max_latency_us``; for NVLink peers (``pair`` with ``data``)
    ``NVLINK_LATENCY_US``; else half the same pair's host-staged latency."""
    sec: P2pSection = rig.profile.section("p2p")
    band = sec.warn_band
    if sec.max_latency_us is not None:
        v = sec.max_latency_us
        return Threshold(v, v * (1 + band), False, "us", f"{rig.profile.source} [p2p] max_latency_us")
    cap = path_capacity(rig, pair[0], pair[1], data) if pair is not None and data is not None else None
    if cap is not None and cap.kind == "nvlink":
        v = NVLINK_LATENCY_US
        return Threshold(
            v,
            v * (1 + band),
            False,
            "us",
            f"NVLink peers ({cap.text}): a 16 B peer copy over NVLink is launch-bound, 2-3 us "
            f"(2x H200 NV18: 2.2 us); {v:g} us allows for slower launch paths",
        )
    if control_us is None:
        return None
    v = LATENCY_VS_CONTROL * control_us
    return Threshold(
        v,
        v * (1 + band),
        False,
        "us",
        f"{LATENCY_VS_CONTROL:.0%} of the same pair's latency with peer access off ({control_us:.3g} us, "
        "staged through host memory)",
    )


def host_threshold(rig: Rig, gpu: str, figure: str, data: dict[str, Any]) -> Threshold | None:
    """Pass line for ``h2d`` or ``d2h`` bandwidth of ``gpu`` (``p2p_threshold`` with no peer)."""
    return p2p_threshold(rig, gpu, None, figure, data)


def p2p_required(rig: Rig) -> bool:
    """``[p2p] required`` (default true); false where the cards cannot do P2P (stock GeForce drivers)."""
    return bool(rig.profile.section("p2p").required)


def busbw_threshold(rig: Rig, gpus: list[str], data: dict[str, Any], p2p: bool = True) -> Threshold | None:
    sec: NcclSection = rig.profile.section("nccl")
    band = sec.warn_band
    if sec.min_busbw_gbps is not None:
        return bandwidth_line(sec.min_busbw_gbps, band, f"{rig.profile.source} [nccl] min_busbw_gbps")
    caps = [
        c for a in gpus for b in gpus if a != b for c in [path_capacity(rig, a, b, data)] if c is not None
    ]
    if len(caps) < len(gpus) * (len(gpus) - 1):
        return None
    cap = min(caps, key=lambda c: c.gbps)
    frac = FRACTION[("nccl", "busbw")] if p2p else NO_P2P_BUSBW_FRACTION
    why = "" if p2p else " (no P2P: NCCL goes through host memory)"
    return bandwidth_line(
        frac * cap.gbps, band, f"{frac:.0%} of the group's narrowest path{why}, {cap.text}", cap.gbps
    )
