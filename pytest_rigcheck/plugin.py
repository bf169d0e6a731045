"""The pytest11 entry point ``rigcheck``: options, header, fixtures and per-device parametrization.

Imports here are stdlib and pytest only: the plugin loads in every pytest run of its users, and
does nothing (no hardware read, no heavy import) unless ``--rig`` is given.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import signal
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .report import REPORT_DESC, REPORT_OPTION, RigResults
from .verdict import Unjudgeable, Verdict

if TYPE_CHECKING:
    from .rig import Rig

RIG_OPTION = "--rig"
SNAPSHOT_OPTION = "--rig-snapshot"
PROFILE_OPTION = "--rig-profile"

RIG_DESC = "Run the rig conformance suites (shipped with pytest-rigcheck) against this machine or a snapshot"
SNAPSHOT_DESC = (
    "Replay a captured or modelled rig snapshot (directory or .tar.gz) instead of the live machine; "
    "repeat for several rigs (implies --rig)"
)
PROFILE_DESC = "Rig profile: a TOML file or a preset name (default: expectations from the hardware itself)"

# Feature areas, each a plugin module of its own (options, fixtures, hooks). Registered from this
# module's pytest_addoption: that hook is historic, so their own pytest_addoption still runs.
FEATURE_PLUGINS: tuple[str, ...] = (
    "pytest_rigcheck.vllm.plugin",
    "pytest_rigcheck.gpu.plugin",
    "pytest_rigcheck.p2p.plugin",
    "pytest_rigcheck.runenv.plugin",
    "pytest_rigcheck.soak.plugin",
    "pytest_rigcheck.fleet.prometheus",
)

SUITES_DIR_NAME = "suites"


def suites_dir() -> Path:
    """The shipped suites: ``pytest_rigcheck/suites`` in a wheel, ``suites/`` beside the package in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / SUITES_DIR_NAME, here.parent / SUITES_DIR_NAME):
        if candidate.is_dir():
            return candidate
    return here / SUITES_DIR_NAME


# -- settings ---------------------------------------------------------------------------------------
#
# One resolver for every setting of every rigcheck plugin (core, GPU, P2P, vLLM), after pytest-timeout's
# get_env_settings/_validate_timeout: each setting has a command-line option, a RIGCHECK_* environment
# variable and an ini key; the first one given wins (command line > environment > ini > default), and the
# value keeps where it came from, so an error names it ("--rig-load-seconds", "RIGCHECK_LOAD_SECONDS",
# "ini rig_load_seconds"). All of them are read and validated in pytest_configure, before collection:
# a bad value is one pytest.UsageError (exit 4) naming the value, its source and what is allowed.


@dataclass(frozen=True)
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
        kind: ``"value"``; ``"flag"`` (store_true, ini bool, env 1/true/yes/0/false/no); ``"path"`` (a
            relative ini value is taken from the ini file's folder); ``"path_or_name"`` (the same, for a
            value with a ``/`` or naming a file there: a preset name or a command on PATH stays as is).
        many: repeatable option; the environment variable holds several values split at ``sep``.
        sep: separator of several values in the environment variable.
    """

    option: str
    env: str
    ini: str
    help: str
    parse: Callable[[Any], Any] | None = None
    default: Any = None
    metavar: str = "VALUE"
    kind: str = "value"
    many: bool = False
    sep: str = os.pathsep

    @property
    def dest(self) -> str:
        return self.option.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Resolved:
    """A setting's value and where it came from: the option, the variable, ``ini KEY`` or ``default``."""

    value: Any
    where: str

    @property
    def given(self) -> bool:
        return self.where != "default"


SETTINGS: dict[str, Setting] = {}  # option -> Setting, filled by add_setting (core and feature plugins)
RESOLVED = pytest.StashKey[dict[str, Resolved]]()


def add_setting(parser: pytest.Parser, setting: Setting) -> Setting:
    """Register ``setting``: its option in the ``rigcheck`` group, its ini key, and the resolver's table."""
    group = parser.getgroup("rigcheck")
    if setting.kind == "flag":
        group.addoption(setting.option, action="store_true", default=None, help=setting.help)
        parser.addini(setting.ini, type="bool", default=False, help=setting.help)
    else:
        action = "append" if setting.many else "store"
        group.addoption(
            setting.option, action=action, default=None, metavar=setting.metavar, help=setting.help
        )
        # Several paths: pytest's "paths" (whitespace-separated, taken from the ini's folder); other lists
        # one per line (a GPU memory spec has spaces in the GPU's name).
        if not setting.many:
            parser.addini(setting.ini, type="string", default="", help=setting.help)
        elif setting.kind == "path":
            parser.addini(setting.ini, type="paths", default=[], help=setting.help)
        else:
            parser.addini(setting.ini, type="linelist", default=[], help=setting.help)
    SETTINGS[setting.option] = setting
    return setting


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def _raw(config: pytest.Config, s: Setting) -> tuple[Any, str]:
    """The first given of option, variable, ini, as text (or a list of texts); ``(None, "default")`` if none."""
    value = config.getoption(s.dest, default=None)
    if value not in (None, [], "") and not (
        isinstance(value, list) and not any(str(v).strip() for v in value)
    ):
        return value, s.option
    if (
        value is not None
        and s.kind != "flag"
        and value in ("", [])
        or (isinstance(value, list) and value and not any(str(v).strip() for v in value))
    ):
        # `--rig-report=` (an unset CI variable expanded to nothing): never silently "not given"
        raise pytest.UsageError(f"{s.option}: empty value: give a value, or leave the option out")
    text = os.environ.get(s.env, "")
    if s.env in os.environ and not text.strip() and s.kind != "flag":
        raise pytest.UsageError(f"{s.env}: empty value: give a value, or unset the variable (unset {s.env})")
    if text.strip():
        if s.kind == "flag":
            return text, s.env
        return ([t for t in text.split(s.sep) if t.strip()] if s.many else text), s.env
    try:
        value = config.getini(s.ini)
    except ValueError:
        return None, "default"
    if s.kind == "flag":
        return (True, f"ini {s.ini}") if value else (None, "default")
    if value in (None, [], ""):
        return None, "default"
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
            if s.kind == "flag":
                if isinstance(raw, bool):
                    value: Any = raw
                elif str(raw).strip().lower() in _TRUE:
                    value = True
                elif str(raw).strip().lower() in _FALSE:
                    value = False
                else:
                    raise ValueError("1, true or yes to turn it on; 0, false or no to turn it off")
            else:
                value = s.parse(raw) if s.parse is not None else raw
        except ValueError as exc:
            raise pytest.UsageError(f"{where}: invalid value {_show(raw)}: {exc}") from None
        result = Resolved(value, where)
    cache[s.option] = result
    return result


def setting_value(config: pytest.Config, option: str) -> Any:
    """The resolved value of the setting registered under ``option`` (``--rig-load-seconds``)."""
    return resolve(config, SETTINGS[option]).value


def resolve_all(config: pytest.Config) -> dict[str, Resolved]:
    """Resolve and validate every registered setting; all bad values in one ``pytest.UsageError``."""
    errors = []
    for s in SETTINGS.values():
        try:
            resolve(config, s)
        except pytest.UsageError as exc:
            errors.append(str(exc))
    if errors:
        raise pytest.UsageError("\nERROR: ".join(errors))  # pytest prefixes the first line
    return config.stash[RESOLVED]


def _show(raw: Any) -> str:
    return ", ".join(repr(str(r)) for r in raw) if isinstance(raw, list) else repr(str(raw))


def seconds(lo: float, hi: float, example: float) -> Callable[[Any], float]:
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


def _paths(values: Any) -> list[str]:
    return [str(v) for v in (values if isinstance(values, list) else [values])]


def _report_path(text: Any) -> Path:
    """``--rig-report``: a file in an existing folder this user may write; checked before any check runs."""
    path = Path(str(text)).expanduser()
    if path.is_dir():
        raise ValueError("a file path, but this is a directory (give e.g. rig-report.json inside it)")
    folder = path.parent
    if not folder.is_dir():
        raise ValueError(f"a file path in an existing folder, but {str(folder) or '.'} does not exist")
    if path.exists() and not path.is_file():
        raise ValueError("a regular file path (this is a device, FIFO or socket)")
    try:  # a real write test: os.access says yes to root on read-only file systems such as /proc
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=folder)
    except OSError as exc:
        raise ValueError(f"a file path in a folder you can write, but {folder}: {exc.strerror}") from None
    os.close(fd)
    os.unlink(probe)
    return path


RIG = Setting("--rig", "RIGCHECK_RIG", "rig", RIG_DESC, kind="flag", default=False)
SNAPSHOT = Setting(
    SNAPSHOT_OPTION, "RIGCHECK_SNAPSHOT", "rig_snapshot", SNAPSHOT_DESC, _paths, [], "PATH", "path", many=True
)
PROFILE = Setting(
    PROFILE_OPTION, "RIGCHECK_PROFILE", "rig_profile", PROFILE_DESC, None, None, "FILE|PRESET", "path_or_name"
)
REPORT = Setting(
    REPORT_OPTION, "RIGCHECK_REPORT", "rig_report", REPORT_DESC, _report_path, None, "FILE", "path"
)
HTML = Setting(
    "--rig-html",
    "RIGCHECK_HTML",
    "rig_html",
    "Write one self-contained HTML page (topology, P2P heatmap, root causes, every check) to this file",
    _report_path,
    None,
    "FILE.html",
    "path",
)


# -- options ----------------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    group = parser.getgroup("rigcheck", "multi-GPU rig checks (pytest-rigcheck)")
    for setting in (RIG, SNAPSHOT, PROFILE, REPORT, HTML):
        add_setting(parser, setting)
    group.addoption(
        "--rig-brief",
        action="store_true",
        dest="rig_condensed",
        default=False,
        help="Tell rig failures only in the rig summary (root causes first), leaving them out of pytest's "
        "per-failure section and short summary",
    )
    for name in FEATURE_PLUGINS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if not exc.name or not name.startswith(exc.name):
                raise  # the feature exists but a module it imports is missing: say so
            continue
        if not pluginmanager.is_registered(module):
            pluginmanager.register(module, "rigcheck-" + name.split(".")[-2])


class Settings:
    """The core's resolved settings (``resolve``: command line > RIGCHECK_* environment > ini)."""

    def __init__(self, config: pytest.Config) -> None:
        snaps = resolve(config, SNAPSHOT)
        self.snapshots: list[str] = list(snaps.value)
        self.snapshot_source = snaps.where
        profile = resolve(config, PROFILE)
        self.profile: str | None = profile.value or None
        self.profile_source = profile.where
        self.enabled = bool(resolve(config, RIG).value or self.snapshots)


class RigSession:
    """Per-run state: the rigs, loaded on first use (never in pytest_configure)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.settings = Settings(config)
        self._rigs: list[Rig] | None = None

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    @property
    def rigs(self) -> list[Rig]:
        if self._rigs is None:
            self._rigs = self._load()
        return self._rigs

    def _load(self) -> list[Rig]:
        from .errors import ProfileError, RigcheckError
        from .profile import Profile, load_profile, match_rig
        from .rig import Rig
        from .snapshot import open_snapshot

        s = self.settings
        try:
            cli_profile = load_profile(s.profile) if s.profile else None
        except RigcheckError as exc:
            raise pytest.UsageError(f"{s.profile_source}: {exc}") from None
        if not s.snapshots:
            rig = Rig.live(cli_profile or Profile())
            try:
                match_rig(rig.profile, rig)  # every device key names something here, before any check
            except ProfileError as exc:
                raise pytest.UsageError(f"{s.profile_source}: {exc}") from None
            except RigcheckError as exc:
                raise pytest.UsageError(f"live rig {rig.name}: {exc}") from None
            return [rig]
        rigs: list[Rig] = []
        for path in s.snapshots:
            snap = None
            try:
                snap = open_snapshot(path)
                profile = cli_profile if cli_profile is not None else snap.profile()
                rig = Rig.replay(snap, profile or Profile())
                rig.pcie  # noqa: B018 - read the tree now, so a corrupt snapshot is a usage error
                match_rig(rig.profile, rig)  # every device key names something here, before any check
            except (RigcheckError, ValueError) as exc:
                for r in rigs:
                    r.close()
                if snap is not None:
                    snap.close()
                raise pytest.UsageError(f"{s.snapshot_source} {path}: {exc}") from None
            rigs.append(rig)
        seen: dict[str, int] = {}
        for r in rigs:  # two snapshots of one name: ids must still differ (name, name#2, ...)
            seen[r.name] = seen.get(r.name, 0) + 1
            if seen[r.name] > 1:
                r.name = f"{r.name}#{seen[r.name]}"
        return rigs

    def close(self) -> None:
        for r in self._rigs or []:
            r.close()


RIG_SESSION = pytest.StashKey[RigSession]()


def rig_session(config: pytest.Config) -> RigSession:
    return config.stash[RIG_SESSION]


# -- wiring -----------------------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "rig_live: needs the live rig (GPUs); skipped when replaying snapshots"
    )
    config.addinivalue_line(
        "markers", "rig_measure: a measurement that must not run at the same time as another"
    )
    session = RigSession(config)
    config.stash[RIG_SESSION] = session
    if session.enabled and not config.option.help:
        resolve_all(config)  # every setting of every plugin: a bad value stops here, before collection
        _add_suites(config)
        from .summary import Summary

        results = None
        if not hasattr(config, "workerinput"):  # xdist: the controller collects, writes and summarises
            results = RigResults(config, resolve(config, REPORT).value, resolve(config, HTML).value)
            config.pluginmanager.register(results, "rigcheck-report")
        config.pluginmanager.register(Summary(config, results), "rigcheck-summary")


def _add_suites(config: pytest.Config) -> None:
    # `pytest --rig` with no path runs the shipped suites from any directory; with paths, the
    # suites run beside them unless a path already points into the suites.
    suites = suites_dir()
    explicit = config.args_source == pytest.Config.ArgsSource.ARGS
    if not explicit:
        config.args = [str(suites)]
        return
    for arg in config.args:
        target = Path(arg.split("::", 1)[0])
        try:
            target.resolve().relative_to(suites)
            return
        except ValueError:
            pass
        if config.option.pyargs and arg.startswith("pytest_rigcheck"):
            return
    config.args = [*config.args, str(suites)]


def pytest_unconfigure(config: pytest.Config) -> None:
    run_stop_callbacks()
    _restore_signal_handlers()
    if RIG_SESSION in config.stash:
        config.stash[RIG_SESSION].close()


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if not rig_session(config).enabled:
        try:
            collection_path.resolve().relative_to(suites_dir())
            return True  # without --rig the suites are neither collected nor run
        except ValueError:
            pass
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    rs = rig_session(session.config)
    if rs.enabled and not session.config.option.help:
        _install_signal_handlers()
        rs.rigs  # noqa: B018 - load now: a bad snapshot or profile is a usage error before collection


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    rs = rig_session(config)
    if not rs.enabled:
        return None
    return [f"rigcheck: {r.header()}" for r in rs.rigs]


def pytest_runtest_setup(item: pytest.Item) -> None:
    # One reason for a live-only check on a replay, whatever the number of snapshots (gate D29), and
    # before feature plugins' own reasons (the vLLM plugin's "no server to check").
    if item.get_closest_marker("rig_live") is None:
        return
    rs = rig_session(item.config)
    if not rs.enabled:
        return
    rig = item_rig(item)
    rigs = [rig] if rig is not None else rs.rigs
    if rigs and not any(r.is_live for r in rigs):
        pytest.skip(LIVE_ONLY)


LIVE_ONLY = "live-only check: this run replays snapshots, not the live machine (run pytest --rig on the rig)"


def item_rig(item: pytest.Item) -> Rig | None:
    """The rig a collected test runs against: its target's rig, or the run's only rig."""
    from .rig import Rig

    callspec = getattr(item, "callspec", None)
    if callspec is not None:
        for value in callspec.params.values():
            rig = value if isinstance(value, Rig) else getattr(value, "rig", None)
            if isinstance(rig, Rig):
                return rig
    rs = rig_session(item.config)
    return rs.rigs[0] if rs.enabled and len(rs.rigs) == 1 else None


# -- parametrization --------------------------------------------------------------------------------

# Target fixture -> (enumerator "module:function", what it means when a rig has none).
TARGETS: dict[str, tuple[str, str]] = {
    "rig_gpu": ("pytest_rigcheck.targets:gpus", "no GPU on this rig"),
    "rig_gpu_pair": ("pytest_rigcheck.targets:gpu_pairs", "fewer than two GPUs: no GPU pair"),
    "rig_bridge": (
        "pytest_rigcheck.targets:bridges",
        "no PCIe bridge or switch port between any two GPUs (fewer than two GPUs, or GPUs on the root bus)",
    ),
    "rig_link": ("pytest_rigcheck.targets:links", "no GPU, so no link to check"),
    "rig_lane_group": (
        "pytest_rigcheck.targets:lane_groups",
        "no root port feeds a GPU (GPUs sit on the root bus, as in a VM): nothing bifurcated",
    ),
}


def skip_without_rig(metafunc: pytest.Metafunc, argname: str) -> None:
    """Without --rig, a test taking a rig target is one skipped item saying what it needs."""
    metafunc.parametrize(
        argname,
        [
            pytest.param(
                None,
                marks=pytest.mark.skip(reason=f"needs {RIG_OPTION} or {SNAPSHOT_OPTION}"),
                id="no-rig",
            )
        ],
        indirect=True,
    )


def _resolve(spec: str) -> Callable[[Any], list[Any]]:
    module, _, func = spec.partition(":")
    return getattr(importlib.import_module(module), func)  # type: ignore[no-any-return]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    names = [n for n in TARGETS if n in metafunc.fixturenames]
    wants_rig = "rig" in metafunc.fixturenames
    if not names and not wants_rig:
        return
    rs = rig_session(metafunc.config)
    if not rs.enabled:
        skip_without_rig(metafunc, names[0] if names else "rig")
        return
    multi = len(rs.rigs) > 1
    if not names:
        metafunc.parametrize("rig", rs.rigs, ids=[r.name for r in rs.rigs], indirect=True)
        return
    if len(names) > 1:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: one target per test, got {', '.join(names)}")
    argname = names[0]
    spec, empty = TARGETS[argname]
    enumerate_ = _resolve(spec)
    params = []
    for rig in rs.rigs:
        found = enumerate_(rig)
        prefix = f"{rig.name}:" if multi else ""
        if not found:
            params.append(
                pytest.param(None, marks=pytest.mark.skip(reason=f"{rig.name}: {empty}"), id=f"{prefix}none")
            )
        params += [pytest.param(t, id=f"{prefix}{t.id}") for t in found]
    metafunc.parametrize(argname, params, indirect=True)


# -- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def rig_rigs(pytestconfig: pytest.Config) -> list[Rig]:
    """All rigs of this run: the live machine, or one per ``--rig-snapshot``.

    Example::

        def test_names(rig_rigs):
            assert all(r.name for r in rig_rigs)
    """
    rs = rig_session(pytestconfig)
    if not rs.enabled:
        pytest.skip(f"needs {RIG_OPTION} or {SNAPSHOT_OPTION}")
    return rs.rigs


@pytest.fixture
def rig(request: pytest.FixtureRequest) -> Rig:
    """The rig under test (``Rig``): its source (live ``/`` or a snapshot), manifest, profile and PCIe tree.

    Tests that take a device target (``rig_gpu``, ``rig_link``, ...) get that target's rig.

    Example::

        def test_kernel(rig):
            assert rig.source.read_text("proc/version").startswith("Linux")
    """
    param = getattr(request, "param", None)
    if param is not None:
        return param  # type: ignore[no-any-return]
    for name in TARGETS:
        if name in request.fixturenames:
            return request.getfixturevalue(name).rig  # type: ignore[no-any-return]
    rigs = request.getfixturevalue("rig_rigs")
    return rigs[0]  # type: ignore[no-any-return]


@pytest.fixture
def rig_pcie(rig: Rig) -> Any:
    """The rig's PCIe tree (``PcieTree``): every function, its parents up to the root port, links, ACS, AER.

    Example::

        def test_gpus_have_drivers(rig_pcie):
            assert all(g.driver == "nvidia" for g in rig_pcie.gpus)
    """
    return rig.pcie


@pytest.fixture
def rig_profile(rig: Rig) -> Any:
    """The rig's expectations (``Profile``): from ``--rig-profile``, the snapshot's manifest, or hardware defaults.

    Every section is parsed: ``rig_profile.section("power")`` and so on give typed objects (``raw`` keeps the TOML).
    """
    return rig.profile


def _target(request: pytest.FixtureRequest) -> Any:
    return request.param


@pytest.fixture
def rig_gpu(request: pytest.FixtureRequest) -> Any:
    """One GPU of the rig (``GpuTarget``: ``.rig``, ``.gpu``, ``.index``, ``.label``); tests taking it run per GPU, id = BDF."""
    return _target(request)


@pytest.fixture
def rig_gpu_pair(request: pytest.FixtureRequest) -> Any:
    """One unordered GPU pair (``PairTarget``: ``.rig``, ``.a``, ``.b``); id = ``BDF-BDF``."""
    return _target(request)


@pytest.fixture
def rig_bridge(request: pytest.FixtureRequest) -> Any:
    """A bridge or switch port that GPU-to-GPU traffic passes, root ports included (``BridgeTarget``); id = BDF."""
    return _target(request)


@pytest.fixture
def rig_link(request: pytest.FixtureRequest) -> Any:
    """A physical link on a root-port-to-GPU path (``LinkTarget``: ``.up``, ``.down``, ``.gpus``); id = downstream BDF."""
    return _target(request)


@pytest.fixture
def rig_lane_group(request: pytest.FixtureRequest) -> Any:
    """Root ports carved from one CPU lane group, feeding at least one GPU (``LaneGroupTarget``); id = ``dddd:bb:dd``."""
    return _target(request)


@pytest.fixture
def rig_check(request: pytest.FixtureRequest) -> Callable[..., Verdict]:
    """Settle a ``Verdict``: record its fields, skip if it does not apply, fail if it could not be read.

    ``rig_check(verdict)`` takes a verdict; ``rig_check(check, *args, **kwargs)`` calls ``check`` and also
    settles an ``Unjudgeable`` it raises (the one way for a check to stop early). Either way it returns
    the verdict for the test to assert on (PASS and WARN are ``.ok``; a WARN is listed in the terminal
    summary under "rigcheck warnings" and in the report).

    Recorded as test properties (JUnit ``<property>`` under every ``junit_family``, without
    ``record_property``'s xunit2 warning; read back by ``--rig-report``): ``rig_status``, ``rig_measured``,
    ``rig_expected``, ``rig_unit`` where known, the verdict's own ``properties``, and ``rig_result``, the
    whole ``Verdict.fields()`` record as JSON (status, summary, measured, expected, unit, fix, path,
    target, cause).

    Example::

        def test_acs(rig_bridge, rig_check):
            verdict = rig_check(pcie_checks.acs, rig_bridge)
            assert verdict.ok, str(verdict)
    """

    def settle(check: Verdict | Callable[..., Verdict], *args: Any, **kwargs: Any) -> Verdict:
        __tracebackhide__ = True
        if callable(check) and not isinstance(check, Verdict):
            try:
                verdict = check(*args, **kwargs)
            except Unjudgeable as exc:
                verdict = exc.verdict
        else:
            verdict = check
        return settle_verdict(request.node, verdict)

    return settle


def record_verdict(item: pytest.Item, verdict: Verdict) -> None:
    """Record ``verdict``'s fields as ``item``'s user properties (see ``rig_check``)."""
    fields = verdict.fields()
    if "target" not in fields:  # the test's own target (BDF, pair, group), when the check did not name one
        callspec = getattr(item, "callspec", None)
        for value in callspec.params.values() if callspec is not None else ():
            if getattr(value, "rig", None) is not None and getattr(value, "id", None):
                fields["target"] = {"id": str(value.id)}
                break
    props = item.user_properties
    props.append(("rig_status", str(verdict.status)))
    for key in ("measured", "expected", "unit"):
        if key in fields:
            props.append((f"rig_{key}", _plain(fields[key])))
    props.extend(verdict.properties.items())
    props.append((RESULT_PROPERTY, json.dumps(fields, default=str, sort_keys=True)))


def settle_verdict(item: pytest.Item, verdict: Verdict) -> Verdict:
    """Record ``verdict`` on ``item``; skip it when NOT_APPLICABLE, fail it when UNREADABLE."""
    __tracebackhide__ = True
    from .verdict import NOT_APPLICABLE, UNREADABLE

    record_verdict(item, verdict)
    if verdict.status == NOT_APPLICABLE:
        pytest.skip(verdict.summary)
    if verdict.status == UNREADABLE:
        pytest.fail(f"UNREADABLE, not a pass: {verdict}", pytrace=False)
    return verdict


RESULT_PROPERTY = "rig_result"


def _plain(value: object) -> object:
    return value if isinstance(value, str | int | float | bool) else json.dumps(value, default=str)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    # A fixture found that what the test needs cannot be read here (availability.provide): fail the check
    # as UNREADABLE now, in its call phase, before the test body runs, so it is a failed check and not a
    # setup error.
    __tracebackhide__ = True
    from .availability import fail_deferred
    from .errors import ConfigSpaceError, SourceError
    from .verdict import unreadable

    fail_deferred(item)
    # An Unjudgeable that escapes a test (a check called outside rig_check) is settled the same way; so is
    # a garbage or refused reading (SourceError, ConfigSpaceError): UNREADABLE naming the file and the
    # reason, never a traceback.
    try:
        return (yield)
    except Unjudgeable as exc:
        verdict = exc.verdict
    except (SourceError, ConfigSpaceError) as exc:
        verdict = unreadable(str(exc), measured=str(exc))
    __tracebackhide__ = True
    settle_verdict(item, verdict)
    return None


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # On the controller (xdist or not): WARN verdicts are listed at the end, in "rigcheck warnings".
    if report.when != "call":
        return
    for key, value in report.user_properties:
        if key == RESULT_PROPERTY:
            try:
                fields = json.loads(str(value))
            except ValueError:
                continue
            if fields.get("status") == "warn":
                _WARNED.append((report.nodeid, str(fields.get("summary", ""))))


_WARNED: list[tuple[str, str]] = []


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    warned, _WARNED[:] = list(_WARNED), []
    if not warned:
        return
    terminalreporter.section("rigcheck warnings", yellow=True)
    for nodeid, summary in warned:
        terminalreporter.line(f"WARN {nodeid}: {summary}", yellow=True)


# -- stopping ---------------------------------------------------------------------------------------
#
# A CI job's timeout sends SIGTERM. Python's default for it ends the process at once: no fixture
# teardown, no report. While rigcheck runs, SIGTERM and SIGINT run the on_stop callbacks (the process
# runner stops what it started), then raise KeyboardInterrupt: pytest tears fixtures down, calls
# pytest_sessionfinish (the --rig-report is written with what was measured, exit_status 2) and exits 2.

_STOP: list[Callable[[], object]] = []
_STOPPED: list[str] = []  # the signal's name once one arrived
_PREVIOUS: dict[int, Any] = {}


def on_stop(callback: Callable[[], object]) -> Callable[[], None]:
    """Run ``callback`` (no arguments) if pytest is stopped by SIGTERM or SIGINT, or at the end of the run if
    it is still registered then. Callbacks run newest first, each once; an exception in one is ignored so the
    others still run. Returns a function that unregisters ``callback`` (call it once the work stopped normally).

    Example::

        proc = subprocess.Popen(argv, start_new_session=True)
        forget = on_stop(lambda: os.killpg(proc.pid, signal.SIGKILL))
        try:
            proc.wait(timeout)
        finally:
            forget()
    """
    _STOP.append(callback)

    def forget() -> None:
        if callback in _STOP:
            _STOP.remove(callback)

    return forget


def run_stop_callbacks() -> None:
    """Run and unregister every ``on_stop`` callback, newest first."""
    while _STOP:
        callback = _STOP.pop()
        try:
            callback()
        except Exception:  # noqa: BLE001 - stopping must go on: the next callback may free a GPU
            pass


def stopped_by() -> str | None:
    """``"SIGTERM"`` or ``"SIGINT"`` when a signal stopped this run, else ``None``."""
    return _STOPPED[0] if _STOPPED else None


def _on_signal(signum: int, frame: object) -> None:
    name = signal.Signals(signum).name
    if _STOPPED and signum == signal.SIGTERM:
        return  # already stopping: let teardown and the report finish
    _STOPPED.append(name)
    run_stop_callbacks()
    from . import procgroup  # stdlib only: every worker, load and vLLM server group this run started

    procgroup.stop_all(f"pytest received {name}")
    raise KeyboardInterrupt(f"rigcheck: stopped by {name}")


def _install_signal_handlers() -> None:
    import threading

    if threading.current_thread() is not threading.main_thread() or _PREVIOUS:
        return
    _STOPPED.clear()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            _PREVIOUS[sig] = signal.signal(sig, _on_signal)
        except (ValueError, OSError):
            pass


def _restore_signal_handlers() -> None:
    for sig, handler in _PREVIOUS.items():
        try:
            signal.signal(sig, handler)
        except (ValueError, OSError, TypeError):
            pass
    _PREVIOUS.clear()


def iter_rigs(config: pytest.Config) -> Iterator[Rig]:
    """The rigs of this run, for feature plugins' hooks."""
    rs = rig_session(config)
    if rs.enabled:
        yield from rs.rigs
