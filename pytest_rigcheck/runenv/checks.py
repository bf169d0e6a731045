"""Checks of the run's environment and the container: pure functions from the rig and its ``RunEnv`` to a Verdict.

Each names what it read (the variable, the limit, the size), what it expected and where that comes from,
and the fix. Sources: NCCL's user guide, "Environment Variables" (what ``NCCL_P2P_DISABLE``,
``NCCL_P2P_LEVEL``, ``NCCL_SHM_DISABLE`` and ``NCCL_IB_DISABLE`` change) and "Troubleshooting" (shared
memory in ``/dev/shm``, Docker's ``--shm-size=1g --ulimit memlock=-1``); vLLM's "Deploying with Docker"
(``--ipc=host`` or ``--shm-size`` for tensor parallelism); the CUDA C++ Programming Guide, "CUDA
Environment Variables" (``CUDA_VISIBLE_DEVICES``).
"""

from __future__ import annotations

import re
import shlex
from itertools import combinations
from typing import Any

from ..rig import Rig
from ..targets import GpuTarget
from ..verdict import Verdict, failed, not_applicable, passed, unreadable, warned
from .state import RunEnv, Unread, _gib, _mib, cuda_visible, driver_info, hidden_gpus

NCCL_ENV_DOC = (
    "NCCL user guide, Environment Variables (docs.nvidia.com/deeplearning/nccl/user-guide/docs/env.html)"
)
NCCL_SHM_DOC = (
    "NCCL user guide, Troubleshooting: shared memory (docs.nvidia.com/deeplearning/nccl/user-guide/docs/"
    "troubleshooting.html)"
)
CUDA_ENV_DOC = "CUDA C++ Programming Guide, CUDA Environment Variables"
MIB = 1 << 20
GIB = 1 << 30
# vLLM's multiprocess executor (tensor-parallel size > 1) keeps one broadcast ring to its workers and one
# response ring per worker in /dev/shm, each 10 chunks of 10 MiB (vllm/distributed/device_communicators/
# shm_broadcast.py MessageQueue defaults; vllm/v1/executor/multiproc_executor.py).
VLLM_RING_B = 10 * 10 * MIB
# NCCL's shared-memory transport: a receive buffer of NCCL_BUFFSIZE (4 MiB default) per channel and rank
# (the troubleshooting page's "failed to extend /dev/shm/nccl-... to 4194660 bytes" is one); two channels.
NCCL_SHM_PER_RANK_B = 2 * 4 * MIB
VLLM_SWAP_DEFAULT_GIB = 4.0  # vLLM CacheConfig.swap_space default (GiB per GPU)
# vLLM refuses to start when swap_space x TP exceeds 70 % of the host's memory and warns above 40 %
# (vllm/config/cache.py, CacheConfig.verify_with_parallel_config).
VLLM_SWAP_ERROR, VLLM_SWAP_WARN = 0.7, 0.4
# NCCL_P2P_LEVEL values, narrowest first (NCCL env docs); the legacy integers 0-5 map onto them.
P2P_LEVELS = ("LOC", "NVL", "PIX", "PXB", "PHB", "SYS")
P2P_LEVEL_INTS = {0: "LOC", 1: "PIX", 2: "PXB", 3: "PHB", 4: "PHB", 5: "SYS"}


def _env_unreadable(what: str, reason: Unread) -> Verdict:
    return unreadable(
        f"{what}: {reason}", fix=["run `rigcheck capture` again on the rig, as the user that serves"]
    )


# -- the tensor-parallel size and vLLM flags the checks size for ------------------------------------


def _vllm_raw(rig: Rig) -> dict[str, Any] | None:
    raw = rig.profile.raw.get("vllm")
    return raw if isinstance(raw, dict) else None


def _flags(raw: dict[str, Any] | None) -> list[str]:
    flags = (raw or {}).get("flags") or []
    if isinstance(flags, str):
        try:
            flags = shlex.split(flags)
        except ValueError:
            return []
    return [f for f in flags if isinstance(f, str)]


def _flag_value(flags: list[str], *names: str) -> str | None:
    for i, f in enumerate(flags):
        for n in names:
            if f == n and i + 1 < len(flags):
                return flags[i + 1]
            if f.startswith(n + "="):
                return f.split("=", 1)[1]
    return None


def tp_size(rig: Rig) -> tuple[int, str]:
    """The tensor-parallel size to size for, and where it came from.

    ``[vllm] tensor_parallel_size`` or ``--tensor-parallel-size``/``-tp`` in ``[vllm] flags``; else the largest
    ``[rig] tp_groups`` group; else all GPUs of the rig (the group the NCCL checks all-reduce across).
    """
    raw = _vllm_raw(rig)
    tp = (raw or {}).get("tensor_parallel_size")
    if isinstance(tp, int) and not isinstance(tp, bool) and tp >= 1:
        return tp, f"{rig.profile.source} [vllm] tensor_parallel_size"
    flag = _flag_value(_flags(raw), "--tensor-parallel-size", "-tp")
    if flag and flag.isdigit() and int(flag) >= 1:
        return int(flag), f"{rig.profile.source} [vllm] flags"
    if rig.profile.tp_groups:
        return max(len(g) for g in rig.profile.tp_groups), f"{rig.profile.source} [rig] tp_groups"
    n = len(rig.pcie.gpus)
    return n, f"the rig's {n} GPU(s) (no tensor-parallel size in the profile)"


# -- /dev/shm -----------------------------------------------------------------------------------------


def shm_needed(tp: int) -> int:
    """Bytes of ``/dev/shm`` that NCCL and vLLM's tensor-parallel workers may fill at size ``tp``."""
    return (tp + 1) * VLLM_RING_B + tp * NCCL_SHM_PER_RANK_B


def shm_size(rig: Rig, env: RunEnv) -> Verdict:
    """``/dev/shm`` holds what NCCL and vLLM's tensor-parallel workers put there at the profile's TP size."""
    tp, where = tp_size(rig)
    if tp < 2:
        return not_applicable(
            f"{rig.name}: tensor-parallel size {tp} ({where}): no NCCL group, nothing shared between GPU processes"
        )
    if isinstance(env.shm, Unread):
        if "No such file" in env.shm.reason:
            return failed(
                f"{rig.name}: no /dev/shm: NCCL and vLLM cannot create their shared-memory segments",
                measured=env.shm.reason,
                expected=f"a tmpfs at /dev/shm of at least {_mib(shm_needed(tp))}",
                fix=["sudo mount -t tmpfs -o size=2G tmpfs /dev/shm", "in Docker: docker run --ipc=host ..."],
            )
        return _env_unreadable(f"{rig.name}: /dev/shm size", env.shm)
    need, total, free = shm_needed(tp), env.shm["total_b"], env.shm["free_b"]
    measured = f"/dev/shm {_mib(total)}, {_mib(free)} free ({env.origin})"
    expected = (
        f"at least {_mib(need)} at tensor-parallel size {tp} ({where}): vLLM's {tp + 1} message rings of "
        f"{_mib(VLLM_RING_B)} (vllm shm_broadcast.py) + NCCL's shared-memory buffers {tp} x "
        f"{_mib(NCCL_SHM_PER_RANK_B)} ({NCCL_SHM_DOC})"
    )
    fields: dict[str, Any] = {
        "measured_value": total,
        "expected_value": need,
        "unit": "B",
        "properties": {"shm_total_b": total, "shm_free_b": free, "shm_needed_b": need, "tp": tp},
    }
    container = env.in_container
    fix = (
        [
            "start the container with --ipc=host (vLLM's Docker guide) or --shm-size=1g or more "
            f"(NCCL's troubleshooting guide); at least {_mib(need)} here",
        ]
        if container
        else [
            f"sudo mount -o remount,size={max(1, -(-need // GIB))}G /dev/shm   (and the size= option in /etc/fstab)"
        ]
    )
    if total < need:
        docker = " (Docker's default without --ipc=host is 64 MiB)" if container and total <= 64 * MIB else ""
        return failed(
            f"{rig.name}: /dev/shm is {_mib(total)}{docker}, below the {_mib(need)} NCCL and vLLM need at "
            f"tensor-parallel size {tp}: expect 'NCCL WARN Error: failed to extend /dev/shm/nccl-...' or a "
            "bus error in a worker",
            measured=measured,
            expected=expected,
            fix=fix,
            **fields,
        )
    if free < need:
        return warned(
            f"{rig.name}: /dev/shm is {_mib(total)} but only {_mib(free)} free, below the {_mib(need)} needed "
            f"at tensor-parallel size {tp}",
            measured=measured,
            expected=expected,
            notes=[
                "segments left by killed runs stay until removed: ls -la /dev/shm (nccl-*, psm_*, torch_*)"
            ],
            fix=["remove stale segments of stopped jobs from /dev/shm, or enlarge it: " + fix[0]],
            **fields,
        )
    return passed(
        f"{rig.name}: /dev/shm {_mib(total)} ({_mib(free)} free) holds the {_mib(need)} needed at "
        f"tensor-parallel size {tp}",
        measured=measured,
        expected=expected,
        **fields,
    )


# -- locked memory ------------------------------------------------------------------------------------


def _limit_text(n: int) -> str:
    return "unlimited" if n < 0 else f"{n // 1024} KiB"


def memlock(rig: Rig, env: RunEnv) -> Verdict:
    """The locked-memory limit (RLIMIT_MEMLOCK) lets NCCL register memory for InfiniBand/RoCE."""
    if isinstance(env.memlock, Unread):
        return _env_unreadable(f"{rig.name}: locked-memory limit", env.memlock)
    soft, hard = env.memlock["soft"], env.memlock["hard"]
    if soft >= 0 and isinstance(env.rdma, Unread):
        # A finite limit matters only with RDMA devices: which ones there are was not recorded.
        return _env_unreadable(
            f"{rig.name}: RDMA devices (beside a locked-memory limit of {soft // 1024} KiB)", env.rdma
        )
    rdma = env.rdma if isinstance(env.rdma, list) else []
    measured = f"RLIMIT_MEMLOCK soft {_limit_text(soft)}, hard {_limit_text(hard)} ({env.origin})"
    expected = f"unlimited (NCCL's troubleshooting guide: --ulimit memlock=-1 in containers; {NCCL_SHM_DOC})"
    fields: dict[str, Any] = {
        "measured_value": soft,
        "expected_value": -1,
        "unit": "B (-1 unlimited)",
        "properties": {"memlock_soft_b": soft, "memlock_hard_b": hard, "rdma_devices": ",".join(rdma)},
    }
    if soft < 0:
        return passed(
            f"{rig.name}: locked-memory limit unlimited", measured=measured, expected=expected, **fields
        )
    fix = (
        ["start the container with --ulimit memlock=-1 (NCCL's troubleshooting guide)"]
        if env.in_container
        else [
            "add '* - memlock unlimited' to /etc/security/limits.conf (log in again), or "
            "LimitMEMLOCK=infinity in the serving unit's [Service] section"
        ]
    )
    if rdma:
        return failed(
            f"{rig.name}: locked-memory limit {_limit_text(soft)} with RDMA devices ({', '.join(rdma)}): "
            "NCCL's InfiniBand/RoCE transport pins its buffers with ibv_reg_mr, which fails past this limit",
            measured=measured,
            expected=expected,
            fix=fix,
            **fields,
        )
    return passed(
        f"{rig.name}: locked-memory limit {_limit_text(soft)}; no RDMA device (/sys/class/infiniband is empty), "
        "so NCCL's in-machine transports (P2P, SHM) do not lock memory against it",
        measured=measured,
        expected=expected,
        notes=["on a rig with InfiniBand or RoCE, NCCL needs it unlimited: " + fix[0]],
        **fields,
    )


# -- GPUs visible to CUDA -----------------------------------------------------------------------------


def gpu_visible(t: GpuTarget, env: RunEnv) -> Verdict:
    """The GPU is visible to a CUDA process started here: not left out by CUDA_VISIBLE_DEVICES or the
    container's device list (``/dev/nvidiaN`` present)."""
    rig, bdf = t.rig, t.gpu.bdf
    if t.gpu.vendor != 0x10DE:
        return not_applicable(f"{t.label}: not an NVIDIA GPU; CUDA_VISIBLE_DEVICES does not apply")
    if isinstance(env.env, Unread):
        return _env_unreadable(f"{t.label}: GPU visibility (CUDA_VISIBLE_DEVICES)", env.env)
    info = driver_info(rig)
    hidden = hidden_gpus(rig, env)
    cvd = env.variables().get("CUDA_VISIBLE_DEVICES")
    n = len(info)
    visible_n = n - len(hidden)
    fields: dict[str, Any] = {
        "measured_value": "hidden" if bdf in hidden else "visible",
        "expected_value": "visible",
        "target": {"bdf": bdf, "gpu_index": t.index},
        "properties": {
            "cuda_visible_devices": cvd if cvd is not None else "unset",
            "visible_gpus": visible_n,
        },
    }
    measured = f"CUDA_VISIBLE_DEVICES={cvd if cvd is not None else '(unset)'}" + (
        f"; /dev/nvidia* minors {env.dev_nvidia}" if isinstance(env.dev_nvidia, list) else ""
    )
    if cvd is not None:
        _visible, odd = cuda_visible(cvd, list(info.values()))
        if odd:
            measured += f" ({odd})"
        if env.variables().get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID" and re.search(r"\d", cvd):
            measured += (
                "; CUDA_DEVICE_ORDER is not PCI_BUS_ID, so CUDA numbers GPUs fastest first: indices here "
                "are read in PCI bus order (nvidia-smi's)"
            )
    why = hidden.get(bdf)
    if why is None:
        if isinstance(env.dev_nvidia, Unread) and cvd is None:
            return _env_unreadable(f"{t.label}: GPU visibility", env.dev_nvidia)
        mine = info.get(bdf)
        if (
            isinstance(env.container, Unread)
            and mine is not None
            and not mine.listed
            and any(o.listed for o in info.values())
        ):
            # The driver lists other GPUs but not this one: the container toolkit hides the GPUs it did not
            # pass in, so whether this is a container decides it, and that was not recorded.
            return _env_unreadable(f"{t.label}: GPU visibility (container)", env.container)
        if (
            isinstance(env.dev_nvidia, list)
            and len(env.dev_nvidia) < n
            and (mine is None or mine.minor is None)
        ):
            return unreadable(
                f"{t.label}: only {len(env.dev_nvidia)} /dev/nvidia* node(s) for {n} GPUs, and the driver's "
                f"/proc/driver/nvidia/gpus/{bdf}/information (its device minor) is not readable: cannot tell "
                "whether this GPU is the one missing",
                measured=measured,
                fix=["ls -l /dev/nvidia*; cat /proc/driver/nvidia/gpus/*/information"],
            )
        return passed(
            f"{t.label}: visible to CUDA ({visible_n} of {n} GPUs visible)", measured=measured, **fields
        )
    if why.startswith("hidden by CUDA_VISIBLE_DEVICES"):
        every = ",".join(str(i) for i in range(n))
        fix = [f"unset CUDA_VISIBLE_DEVICES, or list every GPU: export CUDA_VISIBLE_DEVICES={every}"]
        src = CUDA_ENV_DOC
    else:
        nvd = env.variables().get("NVIDIA_VISIBLE_DEVICES")
        fix = [
            "pass every GPU to the container: docker run --gpus all (or NVIDIA_VISIBLE_DEVICES=all with the "
            "NVIDIA container runtime)" + (f"; NVIDIA_VISIBLE_DEVICES={nvd} here" if nvd else "")
        ]
        src = "the NVIDIA container toolkit creates /dev/nvidiaN only for the GPUs passed in"
    return failed(
        f"{t.label}: {why}: vLLM, NCCL and PyTorch started in this environment see {visible_n} of {n} GPUs",
        measured=measured,
        expected=f"every GPU of the rig visible ({src})",
        fix=fix,
        **fields,
    )


# -- NCCL variables that change the transport ---------------------------------------------------------


def _nccl_int(value: str) -> int:
    """NCCL reads integer settings with strtoll(value, NULL, 0): ``"true"`` is 0 (NVIDIA/nccl src/misc/param.cc)."""
    m = re.match(r"\s*([+-]?(?:0[xX][0-9a-fA-F]+|0[0-7]*|[1-9]\d*))", value)
    if not m:
        return 0
    return int(m.group(1), 0) if not re.fullmatch(r"[+-]?0[0-7]+", m.group(1)) else int(m.group(1), 8)


def p2p_level(value: str) -> str | None:
    """``NCCL_P2P_LEVEL``'s value as one of ``P2P_LEVELS``; None when NCCL would not accept it."""
    v = value.strip().upper()
    if v in P2P_LEVELS:
        return v
    if v == "NVB":
        return "NVL"
    if v.isdigit() and int(v) in P2P_LEVEL_INTS:
        return P2P_LEVEL_INTS[int(v)]
    return None


def pair_distance(rig: Rig, a: str, b: str, figures: dict[str, Any] | None = None) -> tuple[str, str]:
    """The NCCL path type two GPUs need for P2P (``NVL`` for NVLink peers, else PIX/PXB/PHB/SYS), and its text."""
    from ..p2p.nvlink import nvlink_links, nvlink_text
    from ..topology import pair_class

    nv = nvlink_text(nvlink_links(rig, figures, a, b))
    if nv:
        return "NVL", nv
    cls = pair_class(rig.pcie, a, b)
    return ("PHB" if cls == "NODE" else cls), f"{cls} apart"


def blocked_pairs(rig: Rig, level: str, bdfs: list[str], figures: dict[str, Any] | None = None) -> list[str]:
    """GPU pairs among ``bdfs`` that ``NCCL_P2P_LEVEL=level`` keeps off P2P, each as text."""
    out = []
    rank = P2P_LEVELS.index(level)
    for a, b in combinations(bdfs, 2):
        need, text = pair_distance(rig, a, b, figures)
        if P2P_LEVELS.index(need) > rank:
            out.append(f"{a} and {b} ({text})")
    return out


def transport_causes(
    rig: Rig, env: RunEnv, bdfs: list[str], figures: dict[str, Any] | None = None
) -> list[tuple[str, str, str]]:
    """NCCL settings that keep these GPUs off P2P: ``(setting text, what it does here, fix)`` each."""
    out = []
    got = env.nccl("NCCL_P2P_DISABLE")
    if got and _nccl_int(got[0]) != 0:
        text = env.setting_text("NCCL_P2P_DISABLE") or ""
        out.append(
            (
                text,
                "turns off NCCL's P2P transport (direct GPU-to-GPU over NVLink or PCIe): NCCL copies through "
                "host memory (SHM) instead",
                "unset NCCL_P2P_DISABLE" + ("" if got[1] == "environment" else f" (remove it from {got[1]})"),
            )
        )
    got = env.nccl("NCCL_P2P_LEVEL")
    if got:
        level = p2p_level(got[0])
        text = env.setting_text("NCCL_P2P_LEVEL") or ""
        if level is not None:
            blocked = blocked_pairs(rig, level, bdfs, figures)
            if blocked:
                out.append(
                    (
                        text,
                        f"allows P2P only up to {level}; it keeps P2P off between {'; '.join(blocked)}",
                        "unset NCCL_P2P_LEVEL"
                        + ("" if got[1] == "environment" else f" (remove it from {got[1]})")
                        + " or set it no narrower than the widest pair",
                    )
                )
    return out


def nccl_transport_env(rig: Rig, env: RunEnv, figures: dict[str, Any] | None = None) -> Verdict:
    """No NCCL setting (environment, ``~/.nccl.conf``, ``/etc/nccl.conf``) steers NCCL off the fast path
    between this rig's GPUs; the ones set are named with what they change."""
    lost = env.unread("env", "nccl_conf")
    if lost is not None:
        return _env_unreadable(f"{rig.name}: NCCL settings (environment and NCCL config files)", lost)
    bdfs = [g.bdf for g in rig.pcie.gpus]
    from ..errors import ProfileError
    from ..p2p import thresholds as th
    from ..p2p.session import recorded_figures

    figures = figures if figures is not None else recorded_figures(rig)

    try:
        required = th.p2p_required(rig)
    except ProfileError:
        required = True
    fails: list[str] = []
    warns: list[str] = []
    notes: list[str] = []
    fix: list[str] = []
    said: dict[str, str] = {}
    for text, what, f in transport_causes(rig, env, bdfs, figures):
        said[text] = what
        (fails if required else notes).append(f"{text} {what}")
        fix.append(f)
    p2p_off = bool(said)
    for name, what in (
        (
            "NCCL_SHM_DISABLE",
            "turns off NCCL's shared-memory transport: between GPUs that do not use P2P, NCCL goes over the "
            "network (InfiniBand or IP sockets)",
        ),
        (
            "NCCL_IB_DISABLE",
            "turns off NCCL's InfiniBand/RoCE transport: between machines NCCL uses IP sockets; it changes "
            "nothing between the GPUs of one machine",
        ),
    ):
        got = env.nccl(name)
        if not got:
            continue
        text = env.setting_text(name) or name
        if _nccl_int(got[0]) == 0:
            notes.append(f"{text}: NCCL reads it as the number 0, so it changes nothing")
            continue
        if name == "NCCL_SHM_DISABLE" and (p2p_off or not required) and len(bdfs) > 1:
            fails.append(f"{text} {what}; with P2P off too, these GPUs all-reduce over sockets")
            fix.append(f"unset {name}")
        elif name == "NCCL_SHM_DISABLE" and len(bdfs) > 1:
            warns.append(
                f"{text} {what}; no effect while P2P works, but any pair that falls back goes over sockets"
            )
            fix.append(f"unset {name}")
        else:
            notes.append(f"{text} {what}")
    for name in ("NCCL_P2P_DISABLE", "NCCL_P2P_LEVEL"):
        got = env.nccl(name)
        setting = env.setting_text(name)
        if got and setting and setting not in said:
            if name == "NCCL_P2P_LEVEL" and p2p_level(got[0]) is None:
                fails.append(f"{setting} is not a level NCCL accepts ({', '.join(P2P_LEVELS)}, or 0-5)")
                fix.append("unset NCCL_P2P_LEVEL")
            elif name == "NCCL_P2P_DISABLE":
                notes.append(f"{setting}: NCCL reads it as the number 0, so P2P stays on")
            else:
                notes.append(f"{setting}: allows P2P for every GPU pair of this rig")
    others = sorted(
        k
        for k in env.variables()
        if k.startswith("NCCL_")
        and k not in ("NCCL_P2P_DISABLE", "NCCL_P2P_LEVEL", "NCCL_SHM_DISABLE", "NCCL_IB_DISABLE")
    )
    if others:
        notes.append("also set: " + ", ".join(f"{k}={env.variables()[k]}" for k in others))
    conf = [p for p, t in env.nccl_conf if t] if isinstance(env.nccl_conf, list) else []
    measured = (
        "; ".join(
            s
            for s in (
                env.setting_text(n)
                for n in ("NCCL_P2P_DISABLE", "NCCL_P2P_LEVEL", "NCCL_SHM_DISABLE", "NCCL_IB_DISABLE")
            )
            if s
        )
        or "none of NCCL_P2P_DISABLE, NCCL_P2P_LEVEL, NCCL_SHM_DISABLE, NCCL_IB_DISABLE set"
    ) + (f"; NCCL config files read: {', '.join(conf)}" if conf else "")
    fields: dict[str, Any] = {
        "measured": measured,
        "expected": f"NCCL free to use P2P and SHM between this rig's GPUs ({NCCL_ENV_DOC})",
        "properties": {k: v for k, v in env.variables().items() if k.startswith("NCCL_") and k in measured},
    }
    if not required and said:
        notes.append(f"{rig.profile.source} says P2P is not required ([p2p] required = false)")
    if fails:
        return failed(f"{rig.name}: " + "; ".join(fails), fix=fix, notes=notes, cause=None, **fields)
    if warns:
        return warned(f"{rig.name}: " + "; ".join(warns), fix=fix, notes=notes, **fields)
    return passed(
        f"{rig.name}: no NCCL setting steers NCCL off P2P or SHM between the GPUs", notes=notes, **fields
    )


# -- host memory for vLLM's swap space ----------------------------------------------------------------


def swap_space(rig: Rig, env: RunEnv) -> Verdict:
    """Host memory holds vLLM's CPU swap space (``--swap-space`` GiB per GPU x tensor-parallel size)."""
    raw = _vllm_raw(rig)
    if raw is None:
        return not_applicable(f"{rig.name}: no [vllm] table in the profile: no server to size swap space for")
    flags = _flags(raw)
    text = _flag_value(flags, "--swap-space")
    if text is None:
        swap, swap_where = VLLM_SWAP_DEFAULT_GIB, "vLLM's default --swap-space 4 (GiB per GPU)"
    else:
        try:
            swap = float(text)
        except ValueError:
            return failed(
                f"{rig.name}: [vllm] flags --swap-space {text!r} is not a number of GiB",
                fix=["correct [vllm] flags in the profile"],
            )
        swap_where = f"--swap-space {text} in {rig.profile.source} [vllm] flags"
    tp, tp_where = tp_size(rig)
    if isinstance(env.meminfo, Unread):
        return _env_unreadable(f"{rig.name}: host memory", env.meminfo)
    total, avail = env.meminfo["MemTotal"], env.meminfo["MemAvailable"]
    need = int(swap * GIB * tp)
    measured = f"MemTotal {_gib(total)}, MemAvailable {_gib(avail)} (/proc/meminfo, {env.origin})"
    expected = (
        f"{swap:g} GiB x tensor-parallel size {tp} = {_gib(need)} ({swap_where}; TP from {tp_where}) within "
        f"MemAvailable and under {VLLM_SWAP_WARN:.0%} of MemTotal (vLLM refuses above {VLLM_SWAP_ERROR:.0%}, "
        "vllm/config/cache.py verify_with_parallel_config)"
    )
    fields: dict[str, Any] = {
        "measured_value": avail,
        "expected_value": need,
        "unit": "B",
        "measured": measured,
        "expected": expected,
        "properties": {"mem_total_b": total, "mem_available_b": avail, "swap_space_b": need},
    }
    smaller = max(0.0, min(VLLM_SWAP_WARN * total, avail) / GIB / max(tp, 1))
    fix = [f"lower --swap-space in [vllm] flags to {smaller:.0f} or less (GiB per GPU), or free host memory"]
    if need > VLLM_SWAP_ERROR * total:
        return failed(
            f"{rig.name}: --swap-space needs {_gib(need)}, over {VLLM_SWAP_ERROR:.0%} of the host's "
            f"{_gib(total)}: vLLM refuses to start ('Too large swap space')",
            fix=fix,
            **fields,
        )
    if need > avail:
        return failed(
            f"{rig.name}: --swap-space needs {_gib(need)} of pinned host memory, only {_gib(avail)} available",
            fix=fix,
            **fields,
        )
    if need > VLLM_SWAP_WARN * total:
        return warned(
            f"{rig.name}: --swap-space takes {_gib(need)}, over {VLLM_SWAP_WARN:.0%} of the host's {_gib(total)} "
            "(vLLM warns 'Possibly too large swap space')",
            fix=fix,
            **fields,
        )
    return passed(
        f"{rig.name}: host memory holds the {_gib(need)} swap space ({_gib(avail)} available)", **fields
    )


# -- container ----------------------------------------------------------------------------------------


def container(rig: Rig, env: RunEnv) -> Verdict:
    """Says whether the checks run inside a container, and on what evidence (never fails on its own: the
    container's /dev/shm, memlock limit and GPU list are judged by their own checks)."""
    if isinstance(env.container, Unread):
        return _env_unreadable(f"{rig.name}: container evidence", env.container)
    if env.in_container:
        return passed(
            f"{rig.name}: inside a container: " + "; ".join(env.container),
            measured="; ".join(env.container),
            measured_value=True,
            notes=[
                "/dev/shm, the locked-memory limit and the GPUs seen here are the container's "
                "(test_shm_size, test_memlock_limit, test_gpu_visible)"
            ],
            properties={"container": "; ".join(env.container)},
        )
    return passed(
        f"{rig.name}: not in a container (no /.dockerenv or /run/.containerenv, no container cgroup, root "
        "filesystem not overlay)",
        measured_value=False,
        properties={"container": "none"},
    )
