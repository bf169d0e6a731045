"""The run's environment as plain data: read live, written to a snapshot's ``env.json``, read back from it.

What NCCL, PyTorch and vLLM will see when started the way ``pytest --rig`` was: the variables that
choose GPUs and NCCL transports, NCCL's configuration files, ``/dev/shm``, the locked-memory limit,
host memory, the ``/dev/nvidia*`` nodes and whether this is a container. Live, it is read once from
``os.environ``, ``resource.getrlimit``, ``os.statvfs`` and files through the rig's ``Source`` rooted at
``/``; a snapshot holds the same record as ``env.json`` and is read through the snapshot's ``Source``
(nothing outside the snapshot is read). A snapshot without ``env.json`` was captured before rigcheck
recorded the environment: ``RunEnvMissing`` says so, and the checks that need it do not apply there; unless
its manifest notes that ``env.json`` was recorded (``availability.record_missing``): then it was lost, and
``RunEnvCorrupt`` makes those checks UNREADABLE.

``env.json`` (format 1)::

    {"format": 1, "origin": "captured live on host (2026-11-30)",
     "env": {"CUDA_VISIBLE_DEVICES": "0", "NCCL_P2P_DISABLE": "1"},
     "nccl_conf": [{"path": "/etc/nccl.conf", "vars": {"NCCL_DEBUG": "WARN"}}],
     "shm": {"total_b": 67108864, "free_b": 67108864},
     "memlock": {"soft": 65536, "hard": 65536},          # -1: unlimited
     "meminfo": {"MemTotal": 540000000000, "MemAvailable": 500000000000},   # bytes
     "container": ["/.dockerenv exists", "root filesystem is overlay"],
     "dev_nvidia": [0, 1],                                 # minors of /dev/nvidiaN
     "rdma": ["mlx5_0"]}                                   # /sys/class/infiniband

A reading that could not be taken is ``{"unavailable": "why"}`` in place of its value. A key missing from
``env.json`` is a reading not taken either (``Unread``, naming the file and the key), never an empty value:
no ``env`` is not "no variable set", no ``container`` is not "not in a container".
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import RigcheckError, SourceError

if TYPE_CHECKING:
    from ..rig import Rig
    from ..source import Source

ENV_JSON = "env.json"
FORMAT = 1
EXTRAS_KEY = "runenv"
# The variables recorded: NCCL's and PyTorch's NCCL settings, and the ones that choose GPUs.
ENV_PREFIXES = ("NCCL_", "TORCH_NCCL_")
ENV_NAMES = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "NVIDIA_VISIBLE_DEVICES")
# Where NCCL reads settings besides the environment (NVIDIA/nccl src/misc/param.cc, initEnv): NCCL_CONF_FILE
# or else ~/.nccl.conf, then /etc/nccl.conf, each "NAME=value" per line, "#" comments; a variable already
# set is never overwritten (setenv(..., 0)), so the environment wins, then the user file, then /etc.
SYSTEM_NCCL_CONF = "etc/nccl.conf"
CONTAINER_MARKERS = (
    ("/.dockerenv", ".dockerenv", "Docker"),
    ("/run/.containerenv", "run/.containerenv", "Podman"),
)
_CGROUP_WORDS = ("docker", "kubepods", "containerd", "libpod", "lxc", "crio")
_SECRET = re.compile(r"(TOKEN|SECRET|PASSWORD|_KEY$)", re.I)  # NCCL_IB_PKEY is kept


class RunEnvMissing(RigcheckError):
    """The snapshot holds no ``env.json``: the environment it ran in was not recorded."""


RECAPTURE_ENV = (
    "capture again on the rig with `rigcheck capture DIR` (it writes env.json), or run `pytest --rig` there"
)


class RunEnvCorrupt(RigcheckError):
    """``env.json`` is there but not readable as the format says (names the field), or lost from a capture
    whose manifest notes it was recorded."""


@dataclass(frozen=True)
class Unread:
    """A reading that is not there, and why. Never a pass."""

    reason: str

    def __str__(self) -> str:
        return self.reason


NOT_RECORDED = Unread("not recorded")


@dataclass
class RunEnv:
    """The environment one rig's GPU processes run in. Fields hold a value or an ``Unread``."""

    origin: str
    env: dict[str, str] | Unread = NOT_RECORDED
    nccl_conf: list[tuple[str, dict[str, str]]] | Unread = NOT_RECORDED
    shm: dict[str, int] | Unread = NOT_RECORDED
    memlock: dict[str, int] | Unread = NOT_RECORDED
    meminfo: dict[str, int] | Unread = NOT_RECORDED
    container: list[str] | Unread = NOT_RECORDED
    dev_nvidia: list[int] | Unread = NOT_RECORDED
    rdma: list[str] | Unread = NOT_RECORDED

    def variables(self) -> dict[str, str]:
        """The recorded variables, or none where they were not recorded (for diagnoses and counts only:
        a check that judges them asks ``unread(\"env\")`` first)."""
        return self.env if isinstance(self.env, dict) else {}

    def unread(self, *keys: str) -> Unread | None:
        """The first of ``keys`` (field names, as in ``env.json``) that holds no reading, or None.

        Example:
            >>> RunEnv("x", env={}).unread("env", "nccl_conf")
            Unread(reason='not recorded')
        """
        for key in keys:
            value = getattr(self, key)
            if isinstance(value, Unread):
                return value
        return None

    # -- what the variables amount to ---------------------------------------------------------------

    def nccl(self, name: str) -> tuple[str, str] | None:
        """``(value, where)`` of an NCCL setting as NCCL would resolve it, or None when unset.

        Example:
            >>> RunEnv("x", env={"NCCL_P2P_DISABLE": "1"}).nccl("NCCL_P2P_DISABLE")
            ('1', 'environment')
        """
        value = self.variables().get(name)
        if value:  # NCCL ignores an empty value (ncclGetEnv: strlen > 0)
            return value, "environment"
        for path, table in self.nccl_conf if isinstance(self.nccl_conf, list) else []:
            if table.get(name):
                return table[name], path
        return None

    def setting_text(self, name: str) -> str | None:
        """``NCCL_P2P_DISABLE=1`` (with `` in /etc/nccl.conf`` when it comes from a file), or None."""
        got = self.nccl(name)
        if got is None:
            return None
        value, where = got
        return f"{name}={value}" + ("" if where == "environment" else f" (in {where})")

    @property
    def in_container(self) -> bool:
        """True on evidence of a container; False also where it was not recorded (``unread("container")``)."""
        return isinstance(self.container, list) and bool(self.container)

    # -- env.json -----------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        def v(x: Any) -> Any:
            return {"unavailable": x.reason} if isinstance(x, Unread) else x

        return {
            "format": FORMAT,
            "origin": self.origin,
            "env": v(self.env if isinstance(self.env, Unread) else dict(sorted(self.env.items()))),
            "nccl_conf": v(
                self.nccl_conf
                if isinstance(self.nccl_conf, Unread)
                else [{"path": p, "vars": t} for p, t in self.nccl_conf]
            ),
            "shm": v(self.shm),
            "memlock": v(self.memlock),
            "meminfo": v(self.meminfo),
            "container": v(self.container),
            "dev_nvidia": v(self.dev_nvidia),
            "rdma": v(self.rdma),
        }

    @classmethod
    def from_json(cls, data: object, where: str) -> RunEnv:
        """Validate and load ``env.json``; a bad field raises ``RunEnvCorrupt`` naming it."""

        def bad(key: str, value: object, want: str) -> RunEnvCorrupt:
            return RunEnvCorrupt(f"{where}: field {key!r} is {value!r}, expected {want}")

        if not isinstance(data, dict):
            raise RunEnvCorrupt(f"{where}: expected a JSON object, found {type(data).__name__}")
        if data.get("format") != FORMAT:
            raise bad("format", data.get("format"), f"{FORMAT}")

        def unread(key: str) -> Unread | None:
            value = data.get(key)
            if value is None:
                return Unread(f"{where} has no {key!r} (not recorded)")
            if isinstance(value, dict) and set(value) == {"unavailable"}:
                return Unread(str(value["unavailable"]))
            return None

        def ints(key: str, names: tuple[str, ...], lo: int) -> dict[str, int] | Unread:
            u = unread(key)
            if u is not None:
                return u
            value = data[key]
            if not isinstance(value, dict):
                raise bad(key, value, f"an object with {', '.join(names)}")
            out = {}
            for n in names:
                x = value.get(n)
                if isinstance(x, bool) or not isinstance(x, int) or x < lo:
                    raise bad(f"{key}.{n}", x, f"a whole number >= {lo}")
                out[n] = x
            return out

        env: dict[str, str] | Unread = unread("env") or data["env"]
        if not isinstance(env, Unread):
            if not isinstance(env, dict):
                raise bad("env", env, "an object of strings")
            for k, x in env.items():
                if not isinstance(x, str):
                    raise bad(f"env.{k}", x, "a string (an environment variable's value)")
            env = dict(env)
        conf: list[tuple[str, dict[str, str]]] | Unread = unread("nccl_conf") or []
        if isinstance(conf, list):
            conf_raw = data["nccl_conf"]
            if not isinstance(conf_raw, list):
                raise bad("nccl_conf", conf_raw, "a list of {path, vars}")
            for i, entry in enumerate(conf_raw):
                if (
                    not isinstance(entry, dict)
                    or not isinstance(entry.get("path"), str)
                    or not isinstance(entry.get("vars"), dict)
                    or not all(isinstance(x, str) for x in entry["vars"].values())
                ):
                    raise bad(f"nccl_conf[{i}]", entry, "{path: string, vars: {NAME: string}}")
                conf.append((entry["path"], dict(entry["vars"])))

        def strings(key: str, want: str) -> list[str] | Unread:
            u = unread(key)
            if u is not None:
                return u
            value = data[key]
            if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                raise bad(key, value, want)
            return list(value)

        container = strings("container", "a list of strings (the evidence)")
        rdma = strings("rdma", "a list of device names")
        dev: list[int] | Unread
        u = unread("dev_nvidia")
        if u is not None:
            dev = u
        else:
            raw = data["dev_nvidia"]
            if not isinstance(raw, list) or not all(
                isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 256 for x in raw
            ):
                raise bad("dev_nvidia", raw, "a list of device minors (0-255)")
            dev = sorted(raw)
        shm = ints("shm", ("total_b", "free_b"), 0)
        if isinstance(shm, dict) and shm["free_b"] > shm["total_b"]:
            raise bad("shm.free_b", shm["free_b"], f"at most shm.total_b ({shm['total_b']})")
        memlock = ints("memlock", ("soft", "hard"), -1)
        if isinstance(memlock, dict):
            # rlim_t is 64-bit and RLIM_INFINITY is recorded as -1; the kernel refuses a soft limit
            # above the hard one (setrlimit(2): EINVAL if rlim_cur > rlim_max), so no process runs so.
            for n in ("soft", "hard"):
                if memlock[n] >= 2**63:
                    raise bad(f"memlock.{n}", memlock[n], "below 2^63 (rlim_t is 64-bit; -1 is unlimited)")
            soft, hard = memlock["soft"], memlock["hard"]
            if hard != -1 and (soft == -1 or soft > hard):
                raise bad(
                    "memlock.soft",
                    "unlimited" if soft == -1 else soft,
                    f"at most memlock.hard ({hard}): a soft limit above the hard one cannot be (setrlimit(2))",
                )
        meminfo = ints("meminfo", ("MemTotal", "MemAvailable"), 0)
        if isinstance(meminfo, dict) and meminfo["MemAvailable"] > meminfo["MemTotal"]:
            raise bad("meminfo.MemAvailable", meminfo["MemAvailable"], "at most meminfo.MemTotal")
        return cls(
            origin=str(data.get("origin") or where),
            env=env,
            nccl_conf=conf,
            shm=shm,
            memlock=memlock,
            meminfo=meminfo,
            container=container,
            dev_nvidia=dev,
            rdma=rdma,
        )


# -- reading ----------------------------------------------------------------------------------------


def selected_env(environ: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """The variables rigcheck records: ``NCCL_*``, ``TORCH_NCCL_*``, and those choosing GPUs.

    Values of names that look like secrets (``*TOKEN*``, ``*KEY*``) are not kept.
    """
    return {
        k: ("(set, value not recorded)" if _SECRET.search(k) else v)
        for k, v in sorted(environ.items())
        if k.startswith(ENV_PREFIXES) or k in ENV_NAMES
    }


def parse_nccl_conf(text: str) -> dict[str, str]:
    """``NAME=value`` lines as NCCL reads them (``#`` starts a comment line; no ``=``: ignored)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        out.setdefault(name, value)  # NCCL's setenv(.., 0): the first setting of a name wins
    return out


def parse_meminfo(text: str) -> dict[str, int] | Unread:
    """MemTotal and MemAvailable in bytes from ``/proc/meminfo`` (kB there: KiB, proc(5))."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        m = re.match(r"^(MemTotal|MemAvailable):\s+(\d+)\s*kB\s*$", line)
        if m:
            out[m.group(1)] = int(m.group(2)) * 1024
    if set(out) != {"MemTotal", "MemAvailable"}:
        return Unread("proc/meminfo has no MemTotal/MemAvailable lines (kernel before 3.14?)")
    if out["MemAvailable"] > out["MemTotal"]:
        return Unread("proc/meminfo: MemAvailable above MemTotal (corrupt)")
    return out


def container_evidence(source: Source) -> list[str]:
    """Signs that this process runs in a container, each a line saying what was seen."""
    found = []
    for shown, rel, runtime in CONTAINER_MARKERS:
        if source.exists(rel):
            found.append(f"{shown} exists ({runtime})")
    try:
        cgroup = source.read_text("proc/1/cgroup")
    except (KeyError, SourceError):
        cgroup = ""
    words = sorted({w for w in _CGROUP_WORDS if w in cgroup})
    if words:
        found.append(f"/proc/1/cgroup names {', '.join(words)}")
    try:
        mountinfo = source.read_text("proc/self/mountinfo")
    except (KeyError, SourceError):
        mountinfo = ""
    for line in mountinfo.splitlines():
        # mountinfo(5): id parent major:minor root mount-point options ... - fstype source super-options
        pre, sep, post = line.partition(" - ")
        fields = pre.split()
        if sep and len(fields) >= 5 and fields[4] == "/" and post.split()[:1] == ["overlay"]:
            found.append("the root filesystem is overlay (a container image's layers)")
            break
    return found


def read_live(source: Source) -> RunEnv:
    """This process's environment, as ``env.json`` would record it (``source`` rooted at ``/``)."""
    import datetime
    import resource
    import socket

    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    env = selected_env(os.environ)
    conf: list[tuple[str, dict[str, str]]] = []
    user_conf = os.environ.get("NCCL_CONF_FILE") or (
        os.path.join(os.path.expanduser("~"), ".nccl.conf") if os.path.expanduser("~") != "~" else None
    )
    if user_conf:
        try:
            with open(user_conf, encoding="utf-8", errors="replace") as f:
                conf.append((user_conf, parse_nccl_conf(f.read(1 << 20))))
        except OSError:
            pass  # NCCL skips a file it cannot open, as here
    try:
        conf.append(("/" + SYSTEM_NCCL_CONF, parse_nccl_conf(source.read_text(SYSTEM_NCCL_CONF))))
    except (KeyError, SourceError):
        pass
    shm: dict[str, int] | Unread
    try:
        st = os.statvfs("/dev/shm")
        shm = {"total_b": st.f_blocks * st.f_frsize, "free_b": st.f_bavail * st.f_frsize}
    except OSError as exc:
        shm = Unread(f"statvfs /dev/shm: {exc.strerror or exc}")
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    inf = resource.RLIM_INFINITY
    memlock = {"soft": -1 if soft == inf else int(soft), "hard": -1 if hard == inf else int(hard)}
    try:
        meminfo = parse_meminfo(source.read_text("proc/meminfo"))
    except (KeyError, SourceError) as exc:
        meminfo = Unread(f"proc/meminfo: {exc}")
    dev: list[int] | Unread
    try:
        dev = sorted(int(n[6:]) for n in os.listdir("/dev") if re.fullmatch(r"nvidia\d+", n))
    except OSError as exc:
        dev = Unread(f"listing /dev: {exc.strerror or exc}")
    return RunEnv(
        origin=f"read live on {socket.gethostname()} ({when}, pid {os.getpid()})",
        env=env,
        nccl_conf=conf,
        shm=shm,
        memlock=memlock,
        meminfo=meminfo,
        container=container_evidence(source),
        dev_nvidia=dev,
        rdma=source.listdir("sys/class/infiniband"),
    )


def read_recorded(source: Source, name: str) -> RunEnv:
    """The snapshot's ``env.json``, read through its ``Source``; ``RunEnvMissing`` when it has none."""
    try:
        data = source.read_json(ENV_JSON, limit=1 << 20)
    except KeyError:
        raise RunEnvMissing(
            f"{name}: the run's environment is not recorded in this snapshot (no {ENV_JSON}: captured before "
            "rigcheck recorded it, or modelled without it); `rigcheck capture` on the rig records it"
        ) from None
    except SourceError as exc:  # refused, too large, not UTF-8, not JSON (Source.read_json says which)
        raise RunEnvCorrupt(f"snapshot {name}: {exc}") from None
    return RunEnv.from_json(data, f"snapshot {name}: {ENV_JSON}")


def run_env(rig: Rig) -> RunEnv:
    """The rig's ``RunEnv``, read once and kept in ``rig.extras``; raises ``RunEnvMissing``/``RunEnvCorrupt``."""
    kept = rig.extras.get(EXTRAS_KEY)
    if isinstance(kept, RunEnv):
        return kept
    if isinstance(kept, RigcheckError):
        raise kept
    try:
        got = read_live(rig.source) if rig.is_live else read_recorded(rig.source, rig.name)
    except RunEnvMissing as exc:
        from ..availability import record_missing

        why = record_missing(rig, "env")
        # The manifest says env.json was recorded: it was lost, so the checks that need it cannot read it.
        lost = RunEnvCorrupt(f"snapshot {rig.name}: {why}; fix: {RECAPTURE_ENV}") if why else exc
        rig.extras[EXTRAS_KEY] = lost
        raise lost from None
    except RigcheckError as exc:
        rig.extras[EXTRAS_KEY] = exc
        raise
    rig.extras[EXTRAS_KEY] = got
    return got


def run_env_or_none(rig: Rig) -> RunEnv | None:
    """The rig's ``RunEnv``, or None where it is not recorded or unreadable (for diagnoses that only use it)."""
    try:
        return run_env(rig)
    except RigcheckError:
        return None


# -- which GPUs a CUDA process sees -----------------------------------------------------------------


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as the NVIDIA driver's ``/proc/driver/nvidia/gpus/BDF/information`` lists it."""

    bdf: str
    uuid: str | None
    minor: int | None
    listed: bool  # the information file was there


def driver_info(rig: Rig) -> dict[str, GpuInfo]:
    """UUID and device minor per NVIDIA GPU (read through the rig's source, live or snapshot), once per rig."""
    kept = rig.extras.get("driver_info")
    if isinstance(kept, dict):
        return kept
    out = {}
    for fn in rig.pcie.gpus:
        if fn.vendor != 0x10DE:
            continue
        try:
            text = rig.source.read_text(f"proc/driver/nvidia/gpus/{fn.bdf}/information")
        except (KeyError, SourceError):
            out[fn.bdf] = GpuInfo(fn.bdf, None, None, False)
            continue
        uuid = re.search(r"^GPU UUID:\s*(\S+)", text, re.M)
        minor = re.search(r"^Device Minor:\s*(\d+)", text, re.M)
        out[fn.bdf] = GpuInfo(
            fn.bdf, uuid.group(1) if uuid else None, int(minor.group(1)) if minor else None, True
        )
    rig.extras["driver_info"] = out
    return out


def cuda_visible(value: str, ordered: list[GpuInfo]) -> tuple[list[str], str | None]:
    """The BDFs ``CUDA_VISIBLE_DEVICES=value`` leaves visible, in CUDA's order, and a note on what was odd.

    CUDA reads a comma-separated list of indices or UUIDs (``GPU-...``, a unique prefix is enough); at the
    first entry that names no GPU the list stops, and only the GPUs before it are visible (CUDA C++
    Programming Guide, "CUDA Environment Variables"). Indices count in PCI bus order under
    ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (how rigcheck's workers run); ``ordered`` is that order.

    Example:
        >>> gpus = [GpuInfo("0000:00:06.0", "GPU-55", 0, True), GpuInfo("0000:00:07.0", "GPU-3c", 1, True)]
        >>> cuda_visible("1", gpus)
        (['0000:00:07.0'], None)
    """
    out: list[str] = []
    for raw in value.split(","):
        tok = raw.strip()
        hit: GpuInfo | None = None
        if re.fullmatch(r"\d+", tok):
            i = int(tok)
            hit = ordered[i] if i < len(ordered) else None
        elif tok.upper().startswith("GPU-"):
            matches = [g for g in ordered if g.uuid and g.uuid.lower().startswith(tok.lower())]
            hit = matches[0] if len(matches) == 1 else None
        if hit is None:
            return out, f"entry {tok!r} names no GPU of this rig, so CUDA stops reading the list there"
        if hit.bdf in out:
            return out, f"entry {tok!r} repeats a GPU, so CUDA stops reading the list there"
        out.append(hit.bdf)
    return out, None


def hidden_gpus(rig: Rig, env: RunEnv | None = None) -> dict[str, str]:
    """GPUs a CUDA process started in this environment cannot see: BDF -> why, naming the variable or
    the container's device list. Empty where every GPU is visible or nothing says otherwise."""
    env = env if env is not None else run_env_or_none(rig)
    if env is None:
        return {}
    info = driver_info(rig)
    ordered = list(info.values())
    hidden: dict[str, str] = {}
    cvd = env.variables().get("CUDA_VISIBLE_DEVICES")
    if cvd is not None:
        visible, _odd = cuda_visible(cvd, ordered)
        for g in ordered:
            if g.bdf not in visible:
                hidden[g.bdf] = f"hidden by CUDA_VISIBLE_DEVICES={cvd}"
    if isinstance(env.dev_nvidia, list):
        for g in ordered:
            if g.bdf in hidden:
                continue
            if g.minor is not None and g.minor not in env.dev_nvidia:
                where = "the container's device list" if env.in_container else "this machine's /dev"
                hidden[g.bdf] = f"no /dev/nvidia{g.minor} in {where}"
            elif not g.listed and env.in_container and any(o.listed for o in ordered):
                # The container toolkit hides the driver's entries of the GPUs it did not pass in.
                hidden[g.bdf] = (
                    "not passed to the container (the driver lists other GPUs here but not this one in "
                    "/proc/driver/nvidia/gpus)"
                )
    return hidden


def _mib(b: int) -> str:
    return f"{b / (1 << 20):.0f} MiB"


def _gib(b: int) -> str:
    return f"{b / (1 << 30):.1f} GiB"
