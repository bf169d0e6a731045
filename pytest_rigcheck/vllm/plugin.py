"""pytest plugin module of the vLLM feature: the ``rig_vllm_settings`` / ``rig_vllm_server`` fixtures and
the ``rig_vllm`` marker's skip (its ``--rig-vllm-*`` options and ini keys are in ``options``).

Registered by the core plugin (``FEATURE_PLUGINS``) in a rig run. Top-level imports are stdlib and pytest
only; nothing is started or read until a fixture is requested.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from ..options import VLLM_API_KEY_ENV, VLLM_GPU_MEMORY, VLLM_LAUNCH, VLLM_READY_TIMEOUT, VLLM_URL

if TYPE_CHECKING:
    from .server import VllmServer
    from .settings import GpuMemory, VllmSettings

URL_OPTION = VLLM_URL.option
API_KEY_ENV_OPTION = VLLM_API_KEY_ENV.option
LAUNCH_OPTION = VLLM_LAUNCH.option
READY_TIMEOUT_OPTION = VLLM_READY_TIMEOUT.option
GPU_MEMORY_OPTION = VLLM_GPU_MEMORY.option
MARKER = "rig_vllm"
DEFAULT_API_KEY_ENV = "RIGCHECK_VLLM_API_KEY"

NOT_CONFIGURED = (
    f"no vLLM server to check: give {URL_OPTION} URL (a running server), or set [vllm] model "
    f"(and launch) in the rig profile to let rigcheck start one"
)

SETTINGS_KEY = pytest.StashKey["VllmSettings"]()
# The start failure raised by rig_vllm_server (pytest re-raises that one object for every test that
# needs the fixture) and the test that reported it first; later reports point there in one line.
START_FAILED_KEY = pytest.StashKey[list[Any]]()
# The server this run checked, for --rig-report's served_model: url or launch, ready and stop times.
SERVED: dict[str, Any] = {}


def _pick(config: pytest.Config, setting: Any) -> tuple[Any, str]:
    """Value and its source from the one resolver (``options``); ``(None, "")`` when none is given."""
    from ..options import resolve

    r = resolve(config, setting)
    return (r.value, r.where) if r.given else (None, "")


def resolve_settings(config: pytest.Config, profile: Any, rig: Any = None) -> VllmSettings:
    """Options and the profile's ``[vllm]`` table, validated; ``pytest.UsageError`` names key, value and
    what is allowed. GPU memory figures ([vllm.gpus], --rig-vllm-gpu-memory) must name GPUs of ``rig``.

    Args:
        config: the pytest config (options, ini).
        profile: the rig's ``Profile`` (its ``raw`` TOML and ``source``), or ``None``.
        rig: the ``Rig`` the figures are matched to; ``None``: taken as given.
    """
    from ..errors import ProfileError
    from .settings import DEFAULT_LAUNCH, VllmSettings, parse_url, parse_vllm_table

    raw = (getattr(profile, "raw", None) or {}).get("vllm", {})
    where = str(getattr(profile, "source", "no profile"))
    try:
        kw = parse_vllm_table(raw, where)
    except ProfileError as exc:
        raise pytest.UsageError(str(exc)) from None
    url, url_src = _pick(config, VLLM_URL)
    if url is None and "url" in kw:
        url, url_src = kw["url"], f"[vllm] url in {where}"
        try:
            parse_url(url)
        except ValueError as exc:
            raise pytest.UsageError(f"{url_src}: {exc}") from None
    kw["url"], kw["url_source"] = url, url_src
    launch, launch_src = _pick(config, VLLM_LAUNCH)
    if launch is not None:
        try:
            kw.update(
                {
                    k: v
                    for k, v in parse_vllm_table(
                        {"launch": launch, **({"port": kw["port"]} if "port" in kw else {})}, launch_src
                    ).items()
                    if k == "launch"
                }
            )
        except ProfileError as exc:
            raise pytest.UsageError(str(exc)) from None
        kw["launch_source"] = launch_src
    elif "launch" in kw:
        kw["launch_source"] = f"[vllm] launch in {where}"
    elif kw.get("model") and url is None:
        kw["launch"], kw["launch_source"] = DEFAULT_LAUNCH, f"default launch for [vllm] model in {where}"
    if url is not None:
        kw["launch"] = None  # a running server is checked as it is; nothing is started
    elif kw.get("launch") and not kw.get("model") and "{model}" in kw["launch"]:
        raise pytest.UsageError(
            f"{kw['launch_source']}: the launch command uses {{model}} but [vllm] model is not set in {where}"
        )
    key_env, _ = _pick(config, VLLM_API_KEY_ENV)
    kw["api_key_env"] = key_env or DEFAULT_API_KEY_ENV
    timeout, _ = _pick(config, VLLM_READY_TIMEOUT)
    if timeout is not None:
        kw["ready_timeout_s"] = timeout
    option, option_src = _pick(config, VLLM_GPU_MEMORY)
    if option:  # the option's figures replace the table's
        kw["gpu_tables"], kw["gpus_source"] = option, option_src
    if kw.get("gpu_tables"):
        kw["gpus"] = _place_gpus(kw["gpu_tables"], rig, where, option_src if option else None)
    return VllmSettings(where=where, **kw)


def _place_gpus(given: Any, rig: Any, where: str, option_src: str | None) -> tuple[GpuMemory, ...]:
    """The figures of [vllm.gpus] or --rig-vllm-gpu-memory on the rig's GPUs (``settings.place_gpus``);
    ``pytest.UsageError`` for one the rig does not have. Without a rig they are taken as given."""
    from ..errors import ProfileError, RigcheckError
    from .settings import place_gpus

    if rig is None:
        return tuple(sorted((g for _, g in given if g.index >= 0), key=lambda g: g.index))
    try:
        found = [(f.bdf, f.slot) for f in rig.pcie.gpus]
    except RigcheckError as exc:
        raise pytest.UsageError(f"rig {rig.name}: {exc}") from None
    try:
        return place_gpus(given, found, where, option_src or "vllm.gpus", rig.name)
    except ProfileError as exc:
        if option_src:  # as options.resolve words a bad value: the option (or variable, ini key) and value
            raise pytest.UsageError(f"{option_src}: invalid value {exc.value!r}: {exc.allowed}") from None
        raise pytest.UsageError(str(exc)) from None


def _first(config: pytest.Config) -> tuple[Any, Any]:
    """The first rig's profile and the rig (the settings follow the first rig), or ``(None, None)``."""
    from ..plugin import iter_rigs

    for rig in iter_rigs(config):
        return rig.profile, rig
    return None, None


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    # After the core loaded the rigs (its hook is tryfirst): a bad [vllm] table or option is a usage
    # error before collection, not a failure in the middle of the run.
    config = session.config
    if config.option.help:
        return
    from ..plugin import RIG_SESSION

    if RIG_SESSION not in config.stash or not config.stash[RIG_SESSION].enabled:
        return
    settings = config.stash[SETTINGS_KEY] = resolve_settings(config, *_first(config))
    # One server, measured: parallel workers would each start their own (GPU memory twice) or share it
    # and skew every timing. The controller refuses before any worker starts (workers have "workerinput").
    workers = getattr(config.option, "numprocesses", None)
    if settings.configured and workers and not hasattr(config, "workerinput"):
        raise pytest.UsageError(
            f"the vLLM checks ({settings.url_source or settings.launch_source}) measure one server and must "
            f"not run in parallel, but -n {workers} was given: run them with -n0 (or -p no:xdist)"
        )


def settings_of(config: pytest.Config) -> VllmSettings:
    """The run's vLLM settings (resolved at session start, or now when the core is not enabled)."""
    if SETTINGS_KEY not in config.stash:
        config.stash[SETTINGS_KEY] = resolve_settings(config, *_first(config))
    return config.stash[SETTINGS_KEY]


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker(MARKER) is not None and not settings_of(item.config).configured:
        pytest.skip(NOT_CONFIGURED)


@pytest.fixture(scope="session")
def rig_vllm_settings(pytestconfig: pytest.Config) -> VllmSettings:
    """The validated vLLM settings (``VllmSettings``): the profile's ``[vllm]`` table plus ``--rig-vllm-*``.

    Example::

        def test_tp(rig_vllm_settings):
            assert rig_vllm_settings.tensor_parallel_size in (1, 2, 4, 8)
    """
    return settings_of(pytestconfig)


def progress_line(config: pytest.Config) -> Any:
    """The run's status line (``progress.status_line``: one line per request in a log, repeated every 10 s
    while it waits; rewritten in place on a terminal), or ``None`` under ``-q``."""
    from ..progress import status_line

    return status_line(config, log_every_s=10.0)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # A server that failed to start is reported once, with its log; every later test that needed it
    # gets one line pointing to that report.
    rep = yield
    first = item.config.stash.get(START_FAILED_KEY, None)
    if call.when == "setup" and call.excinfo is not None and first and call.excinfo.value is first[0]:
        if first[1] is None:
            first[1] = item.nodeid
        elif first[1] != item.nodeid:
            headline = (str(getattr(first[0], "msg", "") or first[0]).splitlines() or [""])[0]
            rep.longrepr = f"UNREADABLE: the vLLM server did not start; see {first[1]}: {headline}"
    return rep


@pytest.fixture(scope="session")
def rig_vllm_server(
    rig_vllm_settings: VllmSettings,
    tmp_path_factory: pytest.TempPathFactory,
    record_testsuite_property: Callable[[str, object], None],
    pytestconfig: pytest.Config,
) -> Iterator[VllmServer]:
    """The server under test (``VllmServer``): the one at ``--rig-vllm-url``, or one rigcheck starts from
    the ``[vllm]`` launch template and stops at the end of the session (SIGTERM, SIGKILL after
    ``stop_grace_s``, then a check that no process of its group is left).

    Skips when neither is configured; errors with the log's tail when a started server exits early or is
    not ready in time (the first test that needs it; the others in one line pointing there). Waiting for
    readiness and for each answer is said on the terminal every few seconds. The API key comes from the
    variable ``--rig-vllm-api-key-env`` names; it is never printed.

    Example::

        def test_models(rig_vllm_server):
            assert rig_vllm_server.client.get("/v1/models").status == 200
    """
    from .client import OpenAIClient
    from .launcher import LaunchError
    from .server import VllmServer, start_server

    s = rig_vllm_settings
    if not s.configured:
        pytest.skip(NOT_CONFIGURED)
    api_key = os.environ.get(s.api_key_env) or None
    progress = progress_line(pytestconfig)
    if s.url:
        server = VllmServer(OpenAIClient(s.url, api_key, s.request_timeout_s), s, progress=progress)
        server.resolve_model()
        record_testsuite_property("vllm_url", server.base_url)
        SERVED.update(url=server.base_url)
        yield server
        return
    failure = None
    try:
        from ..progress import progress_for

        with progress_for(pytestconfig) as progress:
            server = start_server(s, tmp_path_factory.mktemp("rig-vllm"), api_key, progress)
    except LaunchError as exc:
        failure = f"{s.launch_source}: {exc}"
    if failure:
        error = pytest.fail.Exception(failure, pytrace=False)
        pytestconfig.stash[START_FAILED_KEY] = [error, None]
        raise error  # outside the except: no chained traceback in the report
    assert server.process is not None
    record_testsuite_property("vllm_ready_s", round(server.process.ready_s or 0.0, 2))
    record_testsuite_property("vllm_launch", " ".join(server.process.argv))
    _fit_vs_log(s, server.process.log, record_testsuite_property)
    SERVED.update(
        url=server.base_url,
        launch=" ".join(server.process.argv),
        ready_s=round(server.process.ready_s or 0.0, 2),
        ready_at=_now(),
    )
    from ..gpu.holders import gpu_holders

    try:
        yield server
    finally:
        report = server.process.stop(s.stop_grace_s, gpu_released=gpu_holders)
        record_testsuite_property("vllm_stop_s", round(report.seconds, 2))
        SERVED.update(stop_s=round(report.seconds, 2), stopped_at=_now())
        if report.leftover:
            left = ", ".join(f"pid {p} ({c}, state {st})" for p, st, c in report.leftover)
            pytest.fail(
                f"{server.describe()}: {len(report.leftover)} process(es) of the server's group survived "
                f"SIGTERM and SIGKILL: {left}\n  fix: kill them by pid; an engine in uninterruptible "
                "sleep (state D) points at a hung GPU driver",
                pytrace=False,
            )
        holders = report.gpu_holders
        record_testsuite_property(
            "vllm_gpu_memory_released", "n/a (no NVML)" if holders is None else not holders
        )
        if holders:
            pytest.fail(
                f"{server.describe()}: stopped, but its processes still hold GPU memory: "
                f"{'; '.join(holders)}\n"
                "  fix: nvidia-smi shows them; a process stuck in the driver needs a GPU reset or a reboot",
                pytrace=False,
            )


def _fit_vs_log(s: VllmSettings, log: Any, record: Callable[[str, object], None]) -> None:
    """The model-fit estimate against the KV cache the started server logged, where the GPUs' memory is
    given ([vllm.gpus] or --rig-vllm-gpu-memory; NVML now counts the server itself): recorded as
    properties; a disagreement past ``fitcheck.DISAGREE`` is a warning in the run's summary."""
    import warnings

    from ..verdict import Status
    from .fitcheck import log_agreement

    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return
    verdict = log_agreement(s, list(s.gpus), text, str(log))
    for key, value in verdict.properties.items():
        record(f"vllm_fit_{key}", value)
    if verdict.status == Status.WARN:
        warnings.warn(str(verdict), stacklevel=1)


def _now() -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def gpus_from_rig_gpus(rig_gpus: Any) -> list[GpuMemory]:
    """Adapt the GPU plugin's ``rig_gpus`` (``{bdf: GpuState}``) to the gate's GPU memory list.

    ``used`` counts NVML v2's ``used`` plus ``reserved`` (the driver's reservation): what vLLM cannot have.
    Entries without memory readings are left out (the gate then says which GPUs it lacks).
    """
    from .settings import GpuMemory

    out: list[GpuMemory] = []
    for state in rig_gpus.values() if isinstance(rig_gpus, dict) else rig_gpus:
        get = getattr(state, "get", None)
        if get is None:
            continue  # an Unavailable entry: no NVML state for this BDF
        total, used, reserved = get("memory_total_b"), get("memory_used_b"), get("memory_reserved_b")
        if not isinstance(total, int) or not isinstance(used, int):
            continue
        used += reserved if isinstance(reserved, int) else 0
        index = getattr(state, "index", len(out))
        out.append(
            GpuMemory(int(index), str(getattr(state, "name", None) or f"GPU{index}"), total, min(used, total))
        )
    return sorted(out, key=lambda g: g.index)
