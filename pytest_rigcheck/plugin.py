"""The pytest11 entry point ``rigcheck``: options, header, fixtures and per-device parametrization.

Imports here are stdlib and pytest only: the plugin loads in every pytest run of its users, and
does nothing (no hardware read, no heavy import) unless ``--rig`` is given.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .report import REPORT_DESC, REPORT_OPTION, RigReport

if TYPE_CHECKING:
    from .rig import Rig
    from .verdict import Verdict

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
)

SUITES_DIR_NAME = "suites"


def suites_dir() -> Path:
    """The shipped suites: ``pytest_rigcheck/suites`` in a wheel, ``suites/`` beside the package in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / SUITES_DIR_NAME, here.parent / SUITES_DIR_NAME):
        if candidate.is_dir():
            return candidate
    return here / SUITES_DIR_NAME


# -- options ----------------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    group = parser.getgroup("rigcheck", "multi-GPU rig checks (pytest-rigcheck)")
    group.addoption(RIG_OPTION, action="store_true", default=None, help=RIG_DESC)
    group.addoption(SNAPSHOT_OPTION, action="append", default=None, metavar="PATH", help=SNAPSHOT_DESC)
    group.addoption(PROFILE_OPTION, default=None, metavar="FILE|PRESET", help=PROFILE_DESC)
    parser.addini("rig", type="bool", default=False, help=RIG_DESC)
    parser.addini("rig_snapshot", type="paths", default=[], help=SNAPSHOT_DESC)
    parser.addini("rig_profile", type="string", default="", help=PROFILE_DESC)
    group.addoption(REPORT_OPTION, default=None, metavar="FILE", help=REPORT_DESC)
    parser.addini("rig_report", type="string", default="", help=REPORT_DESC)
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
    """Resolved settings. Precedence: command line > RIGCHECK_* environment > ini."""

    def __init__(self, config: pytest.Config) -> None:
        snaps = config.getoption(SNAPSHOT_OPTION) or []
        snap_where = SNAPSHOT_OPTION
        if not snaps and os.environ.get("RIGCHECK_SNAPSHOT"):
            snaps, snap_where = os.environ["RIGCHECK_SNAPSHOT"].split(os.pathsep), "RIGCHECK_SNAPSHOT"
        if not snaps and config.getini("rig_snapshot"):
            snaps, snap_where = [str(p) for p in config.getini("rig_snapshot")], "ini rig_snapshot"
        self.snapshots: list[str] = list(snaps)
        self.snapshot_source = snap_where
        profile = config.getoption(PROFILE_OPTION)
        self.profile_source = PROFILE_OPTION
        if not profile and os.environ.get("RIGCHECK_PROFILE"):
            profile, self.profile_source = os.environ["RIGCHECK_PROFILE"], "RIGCHECK_PROFILE"
        if not profile and config.getini("rig_profile"):
            profile, self.profile_source = config.getini("rig_profile"), "ini rig_profile"
        self.profile: str | None = profile or None
        rig = config.getoption(RIG_OPTION)
        if rig is None:
            rig = os.environ.get("RIGCHECK_RIG", "").lower() in ("1", "true", "yes") or config.getini("rig")
        self.enabled = bool(rig or self.snapshots)


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
        from .errors import RigcheckError
        from .profile import Profile, load_profile
        from .rig import Rig
        from .snapshot import open_snapshot

        s = self.settings
        try:
            cli_profile = load_profile(s.profile) if s.profile else None
        except RigcheckError as exc:
            raise pytest.UsageError(f"{s.profile_source}: {exc}") from None
        if not s.snapshots:
            return [Rig.live(cli_profile or Profile())]
        rigs: list[Rig] = []
        for path in s.snapshots:
            try:
                snap = open_snapshot(path)
                profile = cli_profile
                if profile is None and snap.manifest.profile:
                    profile = load_profile(snap.manifest.profile, base=snap.root)
                rig = Rig.replay(snap, profile or Profile())
                rig.pcie  # noqa: B018 - read the tree now, so a corrupt snapshot is a usage error
            except (RigcheckError, ValueError) as exc:
                for r in rigs:
                    r.close()
                raise pytest.UsageError(f"{s.snapshot_source} {path}: {exc}") from None
            rigs.append(rig)
        names = [r.name for r in rigs]
        for r in rigs:
            if names.count(r.name) > 1:  # two snapshots of one name: ids must still differ
                r.name = f"{r.name}#{sum(1 for x in rigs[: rigs.index(r) + 1] if x.name == r.name)}"
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
    if session.enabled:
        _add_suites(config)
        report = (
            config.getoption(REPORT_OPTION)
            or os.environ.get("RIGCHECK_REPORT")
            or config.getini("rig_report")
        )
        if report and not hasattr(config, "workerinput"):  # xdist: the controller writes it
            config.pluginmanager.register(RigReport(config, Path(report)), "rigcheck-report")


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
        rs.rigs  # noqa: B018 - load now: a bad snapshot or profile is a usage error before collection


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    rs = rig_session(config)
    if not rs.enabled:
        return None
    return [f"rigcheck: {r.header()}" for r in rs.rigs]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    # A fixture found that what the test needs cannot be read here (availability.provide): fail the
    # check as UNREADABLE now, in its call phase, so it is a failed check and not a setup error.
    from .availability import fail_deferred

    fail_deferred(item)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("rig_live") is None:
        return
    rig = item_rig(item)
    if rig is not None and not rig.is_live:
        pytest.skip(f"live-only check: {rig.name} is a snapshot")


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

    Feature sections (``[power]``, ``[p2p]``, ``[vllm]``...) are in ``rig_profile.raw``.
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
def rig_check(record_property: Callable[[str, object], None]) -> Callable[[Verdict], Verdict]:
    """Settle a ``Verdict``: record its measured values (JUnit properties), skip if it does not apply,
    fail if what it needs could not be read. Returns the verdict for the test to assert on.

    Example::

        def test_acs(rig_bridge, rig_check):
            verdict = rig_check(pcie_checks.acs(rig_bridge))
            assert verdict.ok, str(verdict)
    """

    def settle(verdict: Verdict) -> Verdict:
        __tracebackhide__ = True
        from .verdict import NOT_APPLICABLE, UNREADABLE

        record_property("rig_verdict", verdict.summary)
        for key, value in verdict.properties.items():
            record_property(key, value)
        if verdict.status == NOT_APPLICABLE:
            pytest.skip(verdict.summary)
        if verdict.status == UNREADABLE:
            pytest.fail(f"UNREADABLE, not a pass: {verdict}", pytrace=False)
        return verdict

    return settle


def iter_rigs(config: pytest.Config) -> Iterator[Rig]:
    """The rigs of this run, for feature plugins' hooks."""
    rs = rig_session(config)
    if rs.enabled:
        yield from rs.rigs
