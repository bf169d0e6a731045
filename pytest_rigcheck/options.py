"""Every setting of every rigcheck plugin, and the one resolver that reads them.

Each setting has a command-line option, a ``RIGCHECK_*`` environment variable and an ini key; the first
one given wins (command line > environment > ini > default), and the value keeps where it came from, so
an error names it (``--rig-load-seconds``, ``RIGCHECK_LOAD_SECONDS``, ``ini rig_load_seconds``). This
follows pytest-timeout's ``get_env_settings``/``_validate_timeout`` (https://github.com/pytest-dev/
pytest-timeout, ``pytest_timeout.py``). The core plugin registers the whole table in ``pytest_addoption``
(so ``pytest --help`` lists every option and ini key, and pytest knows them all without importing any
feature) and resolves it in ``pytest_configure`` when a rig run is asked for, before collection: a bad
value is one ``pytest.UsageError`` (exit 4) naming the value, its source and what is allowed.

Stdlib and pytest only: pytest imports this in every run of its users (through ``plugin``). A parser
that needs a feature's code imports it when it runs, which is only in a rig run.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

Parse = Callable[[Any], Any]

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


class Setting:
    """One setting: its option, ``RIGCHECK_*`` variable and ini key, and how its text becomes a value.

    Args:
        option: the command-line option (``--rig-load-seconds``).
        env: the environment variable (``RIGCHECK_LOAD_SECONDS``).
        ini: the ini key (``rig_load_seconds``).
        help: the help text (shared by the option and the ini key).
        parse: text (or, for ``many``, the list of texts) -> value; raises ``ValueError`` whose text says
            what is allowed. ``None``: the text itself.
        default: the value when none of the three is given (not parsed).
        metavar: the option's placeholder in ``--help``.
        kind: ``"value"``; ``"flag"`` (store_true, ini bool, env 1/true/yes/0/false/no); ``"path"`` (a
            relative ini value is taken from the ini file's folder); ``"path_or_name"`` (the same, for a
            value with a ``/`` or naming a file there: a preset name or a command on PATH stays as is).
        many: repeatable option; the environment variable holds several values split at ``sep``.
        sep: separator of several values in the environment variable.
        dest: the option's attribute on ``config.option`` (default: from the option's name).
    """

    __slots__ = ("default", "dest", "env", "help", "ini", "kind", "many", "metavar", "option", "parse", "sep")

    def __init__(
        self,
        option: str,
        env: str,
        ini: str,
        help: str,  # noqa: A002 - argparse's and pytest's name for it
        parse: Parse | None = None,
        default: Any = None,
        metavar: str = "VALUE",
        kind: str = "value",
        many: bool = False,
        sep: str = os.pathsep,
        dest: str | None = None,
    ) -> None:
        self.option, self.env, self.ini, self.help = option, env, ini, help
        self.parse, self.default, self.metavar, self.kind = parse, default, metavar, kind
        self.many, self.sep = many, sep
        self.dest = dest or option.lstrip("-").replace("-", "_")

    def __repr__(self) -> str:
        return f"Setting({self.option!r})"


class Resolved:
    """A setting's value and where it came from: the option, the variable, ``ini KEY`` or ``default``."""

    __slots__ = ("value", "where")

    def __init__(self, value: Any, where: str) -> None:
        self.value, self.where = value, where

    @property
    def given(self) -> bool:
        return self.where != "default"

    def __repr__(self) -> str:
        return f"Resolved({self.value!r}, {self.where!r})"


# -- parsers ------------------------------------------------------------------------------------------


def seconds(lo: float, hi: float, example: float) -> Parse:
    """A parser for a duration in seconds within [lo, hi]: ``ValueError`` saying the range otherwise."""

    def parse(text: Any) -> float:
        try:
            value = float(str(text).strip())
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or not lo <= value <= hi:
            raise ValueError(f"a number of seconds from {lo:g} to {hi:g}, e.g. {example:g}")
        return value

    return parse


def folder_problem(folder: Path) -> str | None:
    """Why nothing can be written into ``folder`` (one clause naming it), or None when a file can be.

    Never creates it. A real write test (a temporary file made and removed): ``os.access`` says yes to
    root on read-only file systems such as ``/proc``. The one check behind every file or folder the tool
    writes (``--rig-report``, ``--rig-html``, ``--rig-soak-save``, ``--rig-prometheus``, ``rigcheck
    capture``, ``rigcheck merge --out``).
    """
    if not folder.is_dir():
        return f"the folder {str(folder) or '.'} does not exist (create it first)"
    try:
        fd, probe = tempfile.mkstemp(prefix=".rigcheck-probe-", dir=folder)
    except OSError as exc:  # /proc: ENOENT although the folder exists; a read-only mount: EROFS
        return f"no file can be created in {folder} ({exc.strerror})"
    os.close(fd)
    os.unlink(probe)
    return None


def output_file(text: Any) -> Path:
    """A file the run will write (a report, a page, samples): not a directory, device, FIFO or socket, in
    an existing folder this user may write (``folder_problem``). Checked before any check runs."""
    path = Path(str(text)).expanduser()
    if path.is_dir():
        raise ValueError("a file path, but this is a directory (give a file name inside it)")
    if path.exists() and not path.is_file():
        raise ValueError("a regular file path (this is a device, FIFO or socket)")
    why = folder_problem(path.parent)
    if why:
        raise ValueError(f"a file path in a folder you can write, but {why}")
    return path


def _paths(values: Any) -> list[str]:
    out = [str(v) for v in (values if isinstance(values, list) else [values])]
    if any(not v.strip() for v in out):
        raise ValueError(
            f"snapshot paths or shipped names, none empty (two separators in a row?), found {out!r}"
        )
    return out


def _prom_file(text: Any) -> Path:
    """A ``.prom`` file (node-exporter's textfile collector reads only those) in a folder this user writes."""
    if Path(str(text)).suffix != ".prom":
        raise ValueError("a file ending in .prom (node-exporter's textfile collector reads only *.prom)")
    return output_file(text)


def _interpreter(text: Any) -> str:
    """An interpreter that exists and may be run: a path, or a command found on PATH (``python3.12``)."""
    value = str(text).strip()
    if not value:
        raise ValueError("the path of a Python interpreter with PyTorch")
    path = Path(value).expanduser()
    if "/" in value:
        if not path.is_file():
            raise ValueError(f"the path of a Python interpreter with PyTorch, but {path} is not a file")
        if not os.access(path, os.X_OK):
            raise ValueError(f"the path of a Python interpreter with PyTorch, but {path} is not executable")
        return str(path)
    found = shutil.which(value)
    if found is None:
        raise ValueError(f"a Python interpreter with PyTorch, but no {value!r} is on PATH")
    return found


def _directory(text: Any) -> Path:
    path = Path(str(text).strip()).expanduser()
    if not path.is_dir():
        raise ValueError(f"a directory, but {path} is {'a file' if path.exists() else 'missing'}")
    return path


def _soak_duration(text: Any) -> float:
    from .soak.judge import parse_duration

    return parse_duration(text)


def _vllm_url(text: Any) -> str:
    from .vllm.settings import parse_url

    return parse_url(text)


def _env_name(text: Any) -> str:
    import re

    name = str(text).strip()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError("the name of an environment variable (letters, digits, _), e.g. VLLM_API_KEY")
    return name


def _launch(text: Any) -> str:
    if not str(text).strip():
        raise ValueError("a command template, e.g. 'vllm serve {model} --port {port}'")
    return str(text)


def _gpu_specs(specs: Any) -> tuple[Any, ...]:
    """``(key, GpuMemory)`` pairs (``vllm.settings.parse_gpu_options``); matched to the rig's GPUs at session
    start (``vllm.plugin.resolve_settings``)."""
    from .vllm.settings import parse_gpu_options

    return parse_gpu_options(specs if isinstance(specs, list) else [specs])


# -- the table ------------------------------------------------------------------------------------------

DEFAULT_LOAD_S = 3.0
DEFAULT_P2P_TIMEOUT_S = 120.0

RIG = Setting(
    "--rig",
    "RIGCHECK_RIG",
    "rig",
    "Run the rig conformance suites (shipped with pytest-rigcheck) against this machine or a snapshot",
    kind="flag",
    default=False,
)
SNAPSHOT = Setting(
    "--rig-snapshot",
    "RIGCHECK_SNAPSHOT",
    "rig_snapshot",
    "Replay a captured or modelled rig snapshot (directory or .tar.gz) instead of the live machine; "
    "repeat for several rigs (implies --rig)",
    _paths,
    [],
    "PATH|NAME",
    "path_or_name",  # a shipped snapshot's name stays a name, as for the option
    many=True,
)
PROFILE = Setting(
    "--rig-profile",
    "RIGCHECK_PROFILE",
    "rig_profile",
    "Rig profile: a TOML file or a preset name (default: expectations from the hardware itself)",
    None,
    None,
    "FILE|PRESET",
    "path_or_name",
)
REPORT = Setting(
    "--rig-report",
    "RIGCHECK_REPORT",
    "rig_report",
    "Write every rig check's outcome, measured values and fix lines to this JSON file",
    output_file,
    None,
    "FILE",
    "path",
)
HTML = Setting(
    "--rig-html",
    "RIGCHECK_HTML",
    "rig_html",
    "Write one self-contained HTML page (topology, P2P heatmap, root causes, every check) to this file",
    output_file,
    None,
    "FILE.html",
    "path",
)
BRIEF = Setting(
    "--rig-brief",
    "RIGCHECK_BRIEF",
    "rig_brief",
    "Tell rig failures only in the rig summary (root causes first), leaving them out of pytest's "
    "per-failure section and short summary",
    kind="flag",
    default=False,
)
LOAD = Setting(
    "--rig-load-seconds",
    "RIGCHECK_LOAD_SECONDS",
    "rig_load_seconds",
    f"Seconds of GPU load while NVML samples link, clocks and power (live runs; default: {DEFAULT_LOAD_S:g})",
    seconds(0.5, 120, DEFAULT_LOAD_S),
    DEFAULT_LOAD_S,
    "S",
)
P2P_TIMEOUT = Setting(
    "--rig-p2p-timeout",
    "RIGCHECK_P2P_TIMEOUT",
    "rig_p2p_timeout",
    "Seconds each P2P/NCCL phase (set-up, then measuring) may take before it counts as hung "
    f"(default: {DEFAULT_P2P_TIMEOUT_S:g})",
    seconds(1, 3600, DEFAULT_P2P_TIMEOUT_S),
    DEFAULT_P2P_TIMEOUT_S,
    "S",
)
P2P_PYTHON = Setting(
    "--rig-p2p-python",
    "RIGCHECK_P2P_PYTHON",
    "rig_p2p_python",
    "Python interpreter with PyTorch to run the P2P/NCCL workers and the GPU load (default: the one running "
    "pytest)",
    _interpreter,
    None,
    "PATH",
    "path_or_name",
)
VLLM_URL = Setting(
    "--rig-vllm-url",
    "RIGCHECK_VLLM_URL",
    "rig_vllm_url",
    "Check the running OpenAI-compatible (vLLM) server at this base URL, e.g. http://127.0.0.1:8000",
    _vllm_url,
    None,
    "URL",
)
VLLM_API_KEY_ENV = Setting(
    "--rig-vllm-api-key-env",
    "RIGCHECK_VLLM_API_KEY_ENV",
    "rig_vllm_api_key_env",
    "Name of the environment variable holding the server's API key (default: RIGCHECK_VLLM_API_KEY)",
    _env_name,
    None,
    "NAME",
)
VLLM_LAUNCH = Setting(
    "--rig-vllm-launch",
    "RIGCHECK_VLLM_LAUNCH",
    "rig_vllm_launch",
    "Start the server with this command template instead of [vllm] launch; placeholders {model}, "
    "{tensor_parallel_size}, {host}, {port}, {flags}, ...",
    _launch,
    None,
    "TEMPLATE",
)
VLLM_READY_TIMEOUT = Setting(
    "--rig-vllm-ready-timeout",
    "RIGCHECK_VLLM_READY_TIMEOUT",
    "rig_vllm_ready_timeout",
    "Seconds a started server may take to become ready (default: [vllm] ready_timeout_s, else 900)",
    seconds(1, 86400, 900),
    None,
    "SECONDS",
)
VLLM_GPU_MEMORY = Setting(
    "--rig-vllm-gpu-memory",
    "RIGCHECK_VLLM_GPU_MEMORY",
    "rig_vllm_gpu_memory",
    "GPU memory for the model-fit gate, INDEX:NAME:TOTAL:USED, e.g. '0:RTX 3080:10GiB:1.2GiB'; "
    "repeat per GPU (default: [vllm.gpus], else NVML; ';' between them in RIGCHECK_VLLM_GPU_MEMORY)",
    _gpu_specs,
    None,
    "SPEC",
    many=True,
    sep=";",
)
SOAK = Setting(
    "--rig-soak",
    "RIGCHECK_SOAK",
    "rig_soak",
    "Soak every GPU under sustained load for this long while NVML samples every second: 600, 90s, 10m "
    "(default: off)",
    _soak_duration,
    0.0,
    "DURATION",
)
SOAK_SAVE = Setting(
    "--rig-soak-save",
    "RIGCHECK_SOAK_SAVE",
    "rig_soak_save",
    "Write the live soak's samples to FILE as soak.json (replayable from a snapshot)",
    output_file,
    None,
    "FILE",
    "path",
)
MODEL_DIR = Setting(
    "--rig-model-dir",
    "RIGCHECK_MODEL_DIR",
    "rig_model_dir",
    "The model's directory whose storage read speed is measured (default: [vllm] model when a local path)",
    _directory,
    None,
    "DIR",
    "path",
)
PROMETHEUS = Setting(
    "--rig-prometheus",
    "RIGCHECK_PROMETHEUS",
    "rig_prometheus",
    "Write every check's status and figures as a node-exporter textfile (FILE.prom), atomically",
    _prom_file,
    None,
    "FILE.prom",
    "path",
)

# Settings that steer a measurement on the live machine: a replay measures nothing, so given on the command
# line beside --rig-snapshot they are a usage error (the user asked for something the run will not do);
# from a variable or ini file (shared by live and replay jobs) the header says they do not apply.
LIVE_ONLY = (
    LOAD, P2P_TIMEOUT, P2P_PYTHON, VLLM_URL, VLLM_API_KEY_ENV, VLLM_LAUNCH, VLLM_READY_TIMEOUT, SOAK,
    SOAK_SAVE, MODEL_DIR,
)  # fmt: skip

# option -> Setting: every setting of every rigcheck plugin, in --help order.
SETTINGS: dict[str, Setting] = {
    s.option: s
    for s in (
        RIG,
        SNAPSHOT,
        PROFILE,
        REPORT,
        HTML,
        BRIEF,
        LOAD,
        P2P_TIMEOUT,
        P2P_PYTHON,
        VLLM_URL,
        VLLM_API_KEY_ENV,
        VLLM_LAUNCH,
        VLLM_READY_TIMEOUT,
        VLLM_GPU_MEMORY,
        SOAK,
        SOAK_SAVE,
        MODEL_DIR,
        PROMETHEUS,
    )
}
RESOLVED = pytest.StashKey[dict[str, Resolved]]()


# -- registering and resolving ------------------------------------------------------------------------


def add_options(parser: pytest.Parser) -> None:
    """Register every setting: its option in the ``rigcheck`` group and its ini key."""
    group = parser.getgroup("rigcheck", "multi-GPU rig checks (pytest-rigcheck)")
    for s in SETTINGS.values():
        # --help names the other two ways to give it (command line > environment > ini)
        text = f"{s.help} [env {s.env}, ini {s.ini}]"
        if s.kind == "flag":
            group.addoption(s.option, action="store_true", default=None, dest=s.dest, help=text)
            parser.addini(s.ini, type="bool", default=False, help=s.help)
            continue
        action = "append" if s.many else "store"
        group.addoption(s.option, action=action, default=None, dest=s.dest, metavar=s.metavar, help=text)
        # Several paths: pytest's "paths" (whitespace-separated, taken from the ini's folder); other lists
        # one per line (a GPU memory spec has spaces in the GPU's name).
        if not s.many:
            parser.addini(s.ini, type="string", default="", help=s.help)
        elif s.kind == "path":
            parser.addini(s.ini, type="paths", default=[], help=s.help)
        else:
            parser.addini(s.ini, type="linelist", default=[], help=s.help)


def _blank(value: Any) -> bool:
    return value in ("", []) or (isinstance(value, list) and not any(str(v).strip() for v in value))


def _raw(config: pytest.Config, s: Setting) -> tuple[Any, str]:
    """The first given of option, variable, ini, as text (or a list of texts); ``(None, "default")`` if none."""
    value = config.getoption(s.dest, default=None)
    if value is not None and not _blank(value):
        return value, s.option
    if value is not None and s.kind != "flag":
        # `--rig-report=` (an unset CI variable expanded to nothing): never silently "not given"
        raise pytest.UsageError(f"{s.option}: empty value: give a value, or leave the option out")
    text = os.environ.get(s.env, "")
    if s.env in os.environ and not text.strip() and s.kind != "flag":
        raise pytest.UsageError(f"{s.env}: empty value: give a value, or unset the variable (unset {s.env})")
    if text.strip():
        if s.kind == "flag":
            return text, s.env
        if not s.many:
            return text, s.env
        parts = [t for t in text.split(s.sep) if t.strip()]  # "a::b" is a and b, as PATH takes it
        if not parts:
            raise pytest.UsageError(
                f"{s.env}={text!r}: only separators ({s.sep!r}), no value: give one, or unset it"
            )
        return parts, s.env
    try:
        value = config.getini(s.ini)
    except (ValueError, pytest.UsageError) as exc:  # pytest 9 raises UsageError for a bad bool itself
        allowed = "true or false (1/0, yes/no)" if s.kind == "flag" else "see pytest --help"
        raise pytest.UsageError(f"ini {s.ini} in {config.inipath}: {exc}: {allowed}") from None
    if s.kind == "flag":
        return (True, f"ini {s.ini}") if value else (None, "default")
    if value in (None, [], "") or (isinstance(value, list) and not any(str(v).strip() for v in value)):
        # `rig_report =` in the ini (a template's blank line): never silently "not given"; pytest gives ""
        # for a key that is absent too, so ask its parsed file (no public API says which keys it has)
        if s.ini in getattr(config, "_inicfg", {}):
            raise pytest.UsageError(
                f"ini {s.ini} in {config.inipath}: empty value: give a value, or remove the line"
            )
        return None, "default"
    if s.many and s.kind == "path_or_name":  # several on a line too, as pytest's "paths" ini type takes them
        value = [part for v in value for part in str(v).split()]
    if s.kind in ("path", "path_or_name") and config.inipath is not None:
        base = config.inipath.parent
        items = [base_path(base, str(v), s.kind) for v in (value if s.many else [value])]
        value = items if s.many else items[0]
    return value, f"ini {s.ini}"


def base_path(base: Path, text: str, kind: str = "path") -> str:
    """``text`` from an ini file in ``base``: a relative path is taken from ``base`` (not the working folder).

    With ``kind="path_or_name"`` a bare name (no ``/``) stays as it is unless ``base`` holds a file of that
    name: preset names and commands on PATH are not paths.
    """
    p = Path(text).expanduser()
    if p.is_absolute():
        return str(p)
    if kind == "path_or_name" and "/" not in text and not (base / p).exists():
        return text
    return str(base / p)


def _flag(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("1, true or yes to turn it on; 0, false or no to turn it off")


def resolve(config: pytest.Config, s: Setting) -> Resolved:
    """Resolve one setting (cached per run). Raises ``pytest.UsageError`` naming value, source and range."""
    cache = config.stash.setdefault(RESOLVED, {})
    if s.option in cache:
        return cache[s.option]
    raw, where = _raw(config, s)
    if raw is None:
        result = Resolved(s.default, "default")
    else:
        try:
            value = _flag(raw) if s.kind == "flag" else (s.parse(raw) if s.parse is not None else raw)
        except ValueError as exc:
            raise pytest.UsageError(f"{where}: invalid value {_show(raw)}: {exc}") from None
        result = Resolved(value, where)
    cache[s.option] = result
    return result


def value(config: pytest.Config, s: Setting) -> Any:
    """The resolved value of ``s`` (its default when none of option, variable and ini is given)."""
    return resolve(config, s).value


# RIGCHECK_* variables that are not settings: read by other parts of the tool (the API key's default
# variable, the multi-node worker's node name, the pci.ids path) or by its scripts and tests.
OTHER_ENV = frozenset({"RIGCHECK_VLLM_API_KEY", "RIGCHECK_NODE", "RIGCHECK_PCI_IDS"})


def strays(config: pytest.Config) -> list[str]:
    """Settings given under a name no setting has: a ``RIGCHECK_*`` variable one letter off a setting's
    (``RIGCHECK_LOAD_SECOND``), an ini key ``rig_*`` nothing registered. Silently ignored, either would let
    a CI job run with a default its author thinks they changed. One line each, naming the closest setting.
    """
    import difflib

    out = []
    envs = sorted(s.env for s in SETTINGS.values())
    for name in sorted(os.environ):
        if name.startswith("RIGCHECK_") and name not in envs and name not in OTHER_ENV:
            dist, near = min((_edits(name, e), e) for e in envs)
            if dist <= 2:  # a typo; an unrelated RIGCHECK_* of the user's own scripts is left alone
                out.append(f"{name}: no such setting (did you mean {near}?): rename or unset it")
    inis = sorted(s.ini for s in SETTINGS.values())
    # pytest's own list of the ini file's keys nothing registered (what it warns "Unknown config
    # option" about, an error only under --strict-config); no public API gives it.
    unknown = getattr(config, "_get_unknown_ini_keys", None)
    try:
        keys: list[str] = sorted(unknown()) if callable(unknown) else []
    except Exception:  # noqa: BLE001 - another pytest's internals: then pytest's own warning is all
        keys = []
    for key in keys:
        if key.startswith("rig_"):
            close = difflib.get_close_matches(key, inis, n=1, cutoff=0.8)
            hint = f"did you mean {close[0]}?" if close else "the rigcheck ini keys: " + ", ".join(inis)
            out.append(f"ini {key} in {config.inipath}: no such rigcheck setting ({hint})")
    return out


def _edits(a: str, b: str) -> int:
    """Levenshtein distance: insertions, deletions and substitutions turning ``a`` into ``b``."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def resolve_all(config: pytest.Config) -> dict[str, Resolved]:
    """Resolve and validate every setting; all bad values, and settings under a name no setting has
    (``strays``), in one ``pytest.UsageError``."""
    errors = strays(config)
    for s in SETTINGS.values():
        try:
            resolve(config, s)
        except pytest.UsageError as exc:
            errors.append(str(exc))
    snapshots = config.stash[RESOLVED].get(SNAPSHOT.option)
    for setting, r in live_only_given(config):
        if r.where == setting.option:
            errors.append(
                f"{setting.option}: applies to a live run (pytest --rig on the rig); this run replays "
                f"{', '.join(map(str, snapshots.value if snapshots else []))} (it judges what was recorded and "
                f"measures nothing): drop {setting.option}, or run live"
            )
    # two outputs on one file: the last writer wins, silently (the report, the page, the textfile, JUnit)
    written: dict[str, str] = {}
    junit = getattr(config.option, "xmlpath", None)
    outputs = [
        (o.option, config.stash[RESOLVED].get(o.option)) for o in (REPORT, HTML, SOAK_SAVE, PROMETHEUS)
    ]
    replayed = _snapshot_roots(snapshots.value if snapshots else [])
    for where, path in [*((w, r.value if r else None) for w, r in outputs), ("--junitxml", junit)]:
        if not path:
            continue
        key = os.path.realpath(os.path.expanduser(str(path)))
        if key in written:
            errors.append(f"{where}: {path} is also given to {written[key]}: one would overwrite the other")
        written.setdefault(key, where)
        inside = next((r for r in replayed if key == r or key.startswith(r + os.sep)), None)
        if inside is not None:
            errors.append(
                f"{where}: {path} is inside the snapshot this run replays ({inside}): writing it would change "
                "the evidence; write outside the snapshot"
            )
    if errors:
        raise pytest.UsageError("\nERROR: ".join(errors))  # pytest prefixes the first line
    return config.stash[RESOLVED]


def _snapshot_roots(specs: list[str]) -> list[str]:
    """The real paths of the snapshots (directories or archives) a run replays; a name not found is left to
    the snapshot reader's own error."""
    from .errors import SnapshotError
    from .snapshot import find_snapshot

    out = []
    for spec in specs:
        try:
            out.append(os.path.realpath(find_snapshot(spec)))
        except SnapshotError:
            continue
    return out


def live_only_given(config: pytest.Config) -> list[tuple[Setting, Resolved]]:
    """The ``LIVE_ONLY`` settings given (option, variable or ini) in a run that replays snapshots."""
    resolved = config.stash.get(RESOLVED, {})
    snapshots = resolved.get(SNAPSHOT.option)
    if snapshots is None or not snapshots.value:
        return []
    return [(s, r) for s in LIVE_ONLY if (r := resolved.get(s.option)) is not None and r.given]


def _show(raw: Any) -> str:
    return ", ".join(repr(str(r)) for r in raw) if isinstance(raw, list) else repr(str(raw))


__all__ = [
    "SETTINGS",
    "Resolved",
    "Setting",
    "add_options",
    "base_path",
    "live_only_given",
    "output_file",
    "resolve",
    "resolve_all",
    "seconds",
    "value",
]
