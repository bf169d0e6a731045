"""The pytest11 entry point ``rigcheck``: options, fixtures and per-device parametrization.

pytest imports this in every run of its users, so it holds only what every run needs: the options and
ini keys of every rigcheck plugin (``options``), the ``rig_*`` fixtures (so ``pytest --fixtures`` lists
them and a user's own rig tests skip with the reason without ``--rig``), and the suites' collection
rule. Stdlib and pytest only. Everything else is registered in ``pytest_configure`` when ``--rig`` or
``--rig-snapshot`` is given: the core's run hooks (``runtime``), the feature plugins (GPU, P2P/NCCL, run
environment, soak, vLLM, Prometheus), the report and the summary.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from . import options
from .options import PROFILE, RIG, SNAPSHOT, resolve

if TYPE_CHECKING:
    from .rig import Rig
    from .verdict import Verdict

RIG_OPTION = RIG.option
SNAPSHOT_OPTION = SNAPSHOT.option
PROFILE_OPTION = PROFILE.option

# Feature areas, each a plugin module of its own (fixtures, hooks), registered by pytest_configure in a
# rig run, and for `pytest --fixtures`.
FEATURE_PLUGINS: tuple[str, ...] = (
    "pytest_rigcheck.vllm.plugin",
    "pytest_rigcheck.gpu.plugin",
    "pytest_rigcheck.p2p.plugin",
    "pytest_rigcheck.runenv.plugin",
    "pytest_rigcheck.soak.plugin",
    "pytest_rigcheck.fleet.prometheus",
)
# Their fixtures, so that without --rig a test asking for one is skipped with the reason (as a test
# asking for a core fixture is), not an error that the fixture does not exist. tests/test_plugin.py
# checks this list against the feature plugins.
FEATURE_FIXTURES = frozenset(
    {
        "rig_nvml",
        "rig_gpus",
        "rig_p2p",
        "rig_nccl",
        "rig_p2p_pair",
        "rig_nccl_group",
        "rig_runenv",
        "rig_soak",
        "rig_vllm_settings",
        "rig_vllm_server",
    }
)
MARKERS = (
    "rig_live: needs the live rig (GPUs); skipped when replaying snapshots",
    "rig_measure: a measurement that must not run at the same time as another",
    "rig_vllm: an end-to-end check against a served model (needs --rig-vllm-url or a [vllm] launch); "
    "skipped with the reason when none is configured",
    "rig_late(n): runs after the other checks, in order of n (the soak 1, the link-health window's end 2)",
)

SUITES_DIR_NAME = "suites"


def suites_dir() -> Path:
    """The shipped suites: ``pytest_rigcheck/suites`` in a wheel, ``suites/`` beside the package in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / SUITES_DIR_NAME, here.parent / SUITES_DIR_NAME):
        if candidate.is_dir():
            return candidate
    return here / SUITES_DIR_NAME


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_options(parser)


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
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    session = RigSession(config)
    config.stash[RIG_SESSION] = session
    if config.option.help:
        return
    if session.enabled:
        options.resolve_all(
            config
        )  # every setting of every plugin: a bad value stops here, before collection
        _add_suites(config)
        _register(config, ("pytest_rigcheck.runtime", *FEATURE_PLUGINS))
        from .report import RigResults
        from .summary import Summary

        results = None
        if not hasattr(config, "workerinput"):  # xdist: the controller collects, writes and summarises
            results = RigResults(
                config, resolve(config, options.REPORT).value, resolve(config, options.HTML).value
            )
            config.pluginmanager.register(results, "rigcheck-report")
        config.pluginmanager.register(Summary(config, results), "rigcheck-summary")
    elif config.option.showfixtures or config.option.show_fixtures_per_test:
        _register(config, FEATURE_PLUGINS)  # `pytest --fixtures` documents every fixture


def _register(config: pytest.Config, names: tuple[str, ...]) -> None:
    pm = config.pluginmanager
    for name in names:
        module = importlib.import_module(name)
        if not pm.is_registered(module):
            # pytest_rigcheck.gpu.plugin -> rigcheck-gpu, pytest_rigcheck.runtime -> rigcheck-runtime: one can
            # be left out as any pytest plugin can (`-p no:rigcheck-vllm`)
            parts = name.split(".")
            pm.register(module, "rigcheck-" + (parts[1] if len(parts) > 2 else parts[-1]))


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
    """Without --rig, a test taking a rig fixture is one skipped item saying what it needs.

    ``argname`` is parametrized directly (not through its fixture), so this works for a feature plugin's
    fixture too, which is not registered in a run without --rig."""
    metafunc.parametrize(
        argname,
        [
            pytest.param(
                None,
                marks=pytest.mark.skip(reason=f"needs {RIG_OPTION} or {SNAPSHOT_OPTION}"),
                id="no-rig",
            )
        ],
    )


def _resolve(spec: str) -> Callable[[Any], list[Any]]:
    module, _, func = spec.partition(":")
    return getattr(importlib.import_module(module), func)  # type: ignore[no-any-return]


_NO_RIG_ORDER = ("rig", *sorted(FEATURE_FIXTURES))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    fixturenames = metafunc.fixturenames
    names = [n for n in TARGETS if n in fixturenames]
    rs = rig_session(metafunc.config)
    if not rs.enabled:
        wanted = names or [n for n in _NO_RIG_ORDER if n in fixturenames]
        if wanted:
            skip_without_rig(metafunc, wanted[0])
        return
    if not names and "rig" not in fixturenames:
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

    from .runtime import settle_verdict
    from .verdict import Unjudgeable, Verdict

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


def iter_rigs(config: pytest.Config) -> Iterator[Rig]:
    """The rigs of this run, for feature plugins' hooks."""
    rs = rig_session(config)
    if rs.enabled:
        yield from rs.rigs
