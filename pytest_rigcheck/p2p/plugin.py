"""Feature plugin for the P2P and NCCL suites: options, targets (ordered GPU pairs, NCCL groups), fixtures, xdist.

Registered by the core plugin (``FEATURE_PLUGINS``). Imports stdlib and pytest only: torch runs in the
worker subprocesses, and nothing is measured before a check that needs it runs.

Measurement checks never run at the same time as each other, whatever ``-n`` is: they carry the
``rig_measure`` marker and, under pytest-xdist, ``xdist_group("rig_measure")`` (``--dist loadgroup`` keeps
them on one worker); under any distribution mode the measuring itself holds a machine-wide file lock and
is done once per run, its figures shared with the other workers. Static checks spread over workers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ..rig import Rig
    from .session import P2pSession

EXTRAS_KEY = "p2p"
MEASURE_GROUP = "rig_measure"
MEASURE_FIXTURES = ("rig_p2p", "rig_nccl")
TARGETS = {
    "rig_p2p_pair": ("pytest_rigcheck.p2p.targets:routes", "fewer than two GPUs: no GPU pair"),
    "rig_nccl_group": (
        "pytest_rigcheck.p2p.targets:groups",
        "fewer than two GPUs: nothing to all-reduce across",
    ),
}


def timeout_s(config: pytest.Config) -> float:
    """The per-phase timeout: ``--rig-p2p-timeout`` > ``RIGCHECK_P2P_TIMEOUT`` > ini > 120 s (1 to 3600)."""
    from ..options import P2P_TIMEOUT, value

    return float(value(config, P2P_TIMEOUT))


def worker_python(config: pytest.Config) -> str | None:
    """The workers' interpreter: ``--rig-p2p-python`` > ``RIGCHECK_P2P_PYTHON`` > ini (from the ini's folder),
    checked at the start to exist and be executable (a command name is looked up on PATH)."""
    from ..options import P2P_PYTHON, value

    found = value(config, P2P_PYTHON)
    return str(found) if found else None


def p2p_session(rig: Rig, config: pytest.Config) -> P2pSession:
    """The rig's ``P2pSession``, made on first use and kept in ``rig.extras["p2p"]``."""
    from .session import P2pSession

    s = rig.extras.get(EXTRAS_KEY)
    if not isinstance(s, P2pSession):
        uid = getattr(config, "workerinput", {}).get("testrunuid")
        from ..progress import status_line

        s = P2pSession(rig, timeout_s(config), worker_python(config), uid)
        s.progress = status_line(config)  # None under -q
        rig.extras[EXTRAS_KEY] = s
    return s


# -- parametrization --------------------------------------------------------------------------------


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    names = [n for n in TARGETS if n in metafunc.fixturenames]
    if not names:
        return
    from ..plugin import _resolve, rig_session, skip_without_rig

    if len(names) > 1:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: one target per test, got {', '.join(names)}")
    argname = names[0]
    rs = rig_session(metafunc.config)
    if not rs.enabled:
        skip_without_rig(metafunc, argname)
        return
    spec, empty = TARGETS[argname]
    enumerate_ = _resolve(spec)
    multi = len(rs.rigs) > 1
    params = []
    for rig in rs.rigs:
        found = enumerate_(rig)
        prefix = f"{rig.name}:" if multi else ""
        if not found:
            reason = f"{rig.name}: {empty}"
            if rig.is_live:
                from .session import TORCH_EXTRA, torch_missing

                if torch_missing(worker_python(metafunc.config)):
                    reason += f"; these checks also need {TORCH_EXTRA}"
            params.append(pytest.param(None, marks=pytest.mark.skip(reason=reason), id=f"{prefix}none"))
        params += [pytest.param(t, id=f"{prefix}{t.id}") for t in found]
    metafunc.parametrize(argname, params, indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    xdist = config.pluginmanager.hasplugin("xdist")
    for item in items:
        names = getattr(item, "fixturenames", ())
        if any(f in names for f in MEASURE_FIXTURES) and item.get_closest_marker("rig_measure") is None:
            item.add_marker(pytest.mark.rig_measure)
        if xdist and item.get_closest_marker("rig_measure") is not None:
            item.add_marker(pytest.mark.xdist_group(MEASURE_GROUP))


def pytest_collection_finish(session: pytest.Session) -> None:
    """P2P figures wanted in this run: the live GPU load then runs as their first phase (``joint.py``)."""
    if not any(any(f in getattr(i, "fixturenames", ()) for f in MEASURE_FIXTURES) for i in session.items):
        return
    from ..plugin import rig_session
    from .joint import WANTED_KEY

    rs = rig_session(session.config)
    if not rs.enabled:
        return
    for rig in rs.rigs:
        if rig.is_live:
            p2p_session(rig, session.config)
            rig.extras[WANTED_KEY] = True


# -- fixtures ---------------------------------------------------------------------------------------


def _target_rig(request: pytest.FixtureRequest) -> Rig:
    for name in (*TARGETS, "rig_gpu"):
        if name in request.fixturenames:
            return request.getfixturevalue(name).rig  # type: ignore[no-any-return]
    return request.getfixturevalue("rig")  # type: ignore[no-any-return]


def _figures(request: pytest.FixtureRequest) -> dict[str, Any]:
    from ..availability import provide

    rig = _target_rig(request)
    return provide(request, rig, p2p_session(rig, request.config).figures, {})


@pytest.fixture
def rig_p2p(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The rig's P2P figures (``p2p.json`` form): measured live once per run, or the snapshot's ``p2p.json``.

    ``["pairs"]["SRC->DST"]`` holds ``unidir_gbps``, ``bidir_gbps``, ``latency_us`` (lists of readings),
    ``control_*`` (peer access off), NVML status and ``can_access_peer``; ``["gpus"][BDF]`` holds
    ``h2d_gbps``/``d2h_gbps``; ``["definitions"]`` says what each figure means. Skips where a snapshot never had
    ``p2p.json`` (modelled or imported without it) or the machine has no NVIDIA
    GPU; FAILS as UNREADABLE where the live machine has NVIDIA GPUs but no PyTorch or no loaded driver, where a
    snapshot's manifest says the figures were recorded or their capture was attempted and not taken
    (``availability.record_missing``), or where ``p2p.json``
    is corrupt (``availability.provide``). A figure no
    hardware can give is a ``figures.Corrupt`` in its place.

    Example::

        def test_fast(rig_p2p_pair, rig_p2p):
            assert max(rig_p2p["pairs"][rig_p2p_pair.id]["unidir_gbps"]) > 20
    """
    return _figures(request)


@pytest.fixture
def rig_nccl(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The rig's NCCL figures (``p2p.json`` form, the same object as ``rig_p2p``): ``["nccl"]["groups"]`` per
    ``"BDF+BDF"`` (sweep, busbw readings, correctness, transports, hangs), ``["nccl"]["control"]``
    (``NCCL_P2P_DISABLE=1``) and ``["nccl"]["ipc"]``.

    Example::

        def test_ok(rig_nccl_group, rig_nccl):
            assert rig_nccl["nccl"]["groups"]["+".join(rig_nccl_group.bdfs)]["wrong"] == 0
    """
    return _figures(request)


@pytest.fixture
def rig_p2p_pair(request: pytest.FixtureRequest) -> Any:
    """One ordered GPU pair (``RouteTarget``: ``.rig``, ``.src``, ``.dst``, ``.label``); id ``SRC->DST``."""
    return request.param


@pytest.fixture
def rig_nccl_group(request: pytest.FixtureRequest) -> Any:
    """GPUs that all-reduce together (``GroupTarget``: ``.rig``, ``.gpus``, ``.bdfs``); id ``all`` or ``tpN``."""
    return request.param
