"""Feature plugin for the GPU suites: NVML fixtures, the load run once per rig, and link readings for the PCIe suite.

Registered by the core plugin (``FEATURE_PLUGINS``). Imports stdlib and pytest only; NVML (``pynvml``)
and torch are imported when a GPU check first runs, never in ``pytest_configure``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ..rig import Rig
    from .nvml import Nvml
    from .state import GpuState, LoadReadings, SystemState, Unavailable

LOAD_OPTION = "--rig-load-seconds"
LOAD_DESC = "Seconds of GPU load while NVML samples link, clocks and power (live runs; default: 3)"
DEFAULT_LOAD_S = 3.0
EXTRAS_KEY = "gpu"


def pytest_addoption(parser: pytest.Parser) -> None:
    from ..plugin import add_setting

    add_setting(parser, LOAD_SETTING)


def _load_setting() -> Any:
    from ..plugin import Setting, seconds

    return Setting(
        LOAD_OPTION,
        "RIGCHECK_LOAD_SECONDS",
        "rig_load_seconds",
        LOAD_DESC,
        seconds(0.5, 120, DEFAULT_LOAD_S),
        DEFAULT_LOAD_S,
        "S",
    )


LOAD_SETTING = _load_setting()


def load_seconds(config: pytest.Config) -> float:
    """Seconds of GPU load: ``--rig-load-seconds`` > ``RIGCHECK_LOAD_SECONDS`` > ini ``rig_load_seconds`` > 3,
    from 0.5 to 120 (validated with every other setting before collection)."""
    from ..plugin import resolve

    return float(resolve(config, LOAD_SETTING).value)


class GpuSession:
    """One rig's NVML state, opened on first use and kept for the session (in ``rig.extras["gpu"]``).

    The outcome of opening NVML is kept too, so a machine without a driver is probed once and every
    GPU check skips with that one reason.
    """

    def __init__(self, rig: Rig, seconds: float, python: str | None = None) -> None:
        self.rig = rig
        self.seconds = seconds
        self.python = python  # the load worker's interpreter: the P2P workers' (--rig-p2p-python)
        self._nvml: Nvml | None = None
        self._error: Exception | None = None
        self._load: dict[str, LoadReadings | Unavailable] | None = None
        self._log: str | Unavailable | None = None
        self.progress: Any = None  # the run's status line (progress.StatusLine), set by gpu_session

    @property
    def nvml(self) -> Nvml:
        from ..errors import RigcheckError
        from .nvml import open_nvml

        if self._error is not None:
            raise self._error
        if self._nvml is None:
            try:
                self._nvml = open_nvml(None if self.rig.is_live else self.rig.root, self.rig.name)
            except RigcheckError as exc:
                self._error = exc
                raise
        return self._nvml

    @property
    def system(self) -> SystemState:
        return self.nvml.system()

    def gpus(self) -> dict[str, GpuState | Unavailable]:
        """Every GPU of the PCIe tree, joined by BDF to NVML's state (``Unavailable`` where NVML lacks it)."""
        from .state import NOT_CAPTURED, Unavailable

        by_bdf = {g.bdf: g for g in self.system.gpus}
        out: dict[str, GpuState | Unavailable] = {}
        for fn in self.rig.pcie.gpus:
            out[fn.bdf] = by_bdf.get(fn.bdf) or Unavailable(
                f"{fn.bdf} is on the PCIe bus but not among the GPUs {self.nvml.origin} reports "
                f"({', '.join(sorted(by_bdf)) or 'none'}): driver not bound, GPU fallen off the bus, or not captured",
                NOT_CAPTURED,
            )
        return out

    def gpu(self, bdf: str) -> GpuState | Unavailable:
        return self.gpus()[bdf]

    def load(self) -> dict[str, LoadReadings | Unavailable]:
        """Readings under load for every GPU, taken once (live: a short load on all GPUs at once)."""
        if self._load is None and self.rig.is_live:
            from ..p2p.joint import want_joint

            if want_joint(self.rig):  # the P2P measurement ran the load as its first phase
                return self._load  # type: ignore[return-value]
        if self._load is None:
            self._load = self.nvml.under_load(
                [fn.bdf for fn in self.rig.pcie.gpus], self.seconds, self.python, progress=self.progress
            )
            if self.progress is not None:
                self.progress.close()
            from .state import LoadReadings

            self.rig.extras["link_under_load"] = {
                b: r.link for b, r in self._load.items() if isinstance(r, LoadReadings) and r.link is not None
            }
        return self._load

    def load_of(self, bdf: str) -> LoadReadings | Unavailable:
        return self.load()[bdf]

    def kernel_log(self) -> str | Unavailable:
        if self._log is None:
            from .xid import read_kmsg, recorded_kernel_log

            self._log = read_kmsg() if self.rig.is_live else recorded_kernel_log(self.system)
        return self._log

    @property
    def log_where(self) -> str:
        return (
            "kernel log /dev/kmsg"
            if self.rig.is_live
            else f"kernel log NVRM lines in nvml.json of {self.rig.name}"
        )

    def close(self) -> None:
        if self._nvml is not None:
            self._nvml.close()


def gpu_session(rig: Rig, config: pytest.Config) -> GpuSession:
    """The rig's ``GpuSession``, made on first use."""
    s = rig.extras.get(EXTRAS_KEY)
    if not isinstance(s, GpuSession):
        from ..p2p.plugin import worker_python
        from ..progress import status_line

        s = GpuSession(rig, load_seconds(config), worker_python(config))
        s.progress = status_line(config)  # the load's status line (None under -q)
        rig.extras[EXTRAS_KEY] = s
    return s


def _settle_open(session: GpuSession) -> None:
    __tracebackhide__ = True
    from ..errors import RigcheckError
    from .nvml import NvmlPermissionError, NvmlUnavailable

    skip = fail = None
    try:
        session.nvml  # noqa: B018 - opens NVML (or reads nvml.json) once
    except NvmlUnavailable as exc:
        skip = f"GPU checks skipped: {exc}"
    except NvmlPermissionError as exc:
        fail = f"NVML: {exc}"
    except RigcheckError as exc:
        fail = f"UNREADABLE, not a pass: {exc}"
    # Outside the except blocks, so the report shows the reason and not a chained traceback.
    if skip:
        pytest.skip(skip)
    if fail:
        pytest.fail(fail, pytrace=False)


@pytest.fixture
def rig_nvml(rig: Rig, pytestconfig: pytest.Config) -> GpuSession:
    """The rig's GPU state through NVML (``GpuSession``): live NVML, or the snapshot's ``nvml.json``.

    ``.system`` (driver, CUDA, every GPU's ``GpuState``), ``.gpu(bdf)``, ``.load_of(bdf)`` (readings under a short
    load, taken once per session), ``.kernel_log()``. Skips every GPU check with one reason where there is no
    NVIDIA driver or GPU; fails on a permission error or a snapshot without NVML state.

    Example::

        def test_persistence(rig_gpu, rig_nvml):
            assert rig_nvml.gpu(rig_gpu.gpu.bdf).get("persistence_mode") == 1
    """
    session = gpu_session(rig, pytestconfig)
    _settle_open(session)
    return session


@pytest.fixture
def rig_gpus(rig_nvml: GpuSession) -> dict[str, Any]:
    """The rig's GPUs as NVML sees them, joined to the PCIe tree by BDF: ``{bdf: GpuState | Unavailable}``.

    Example::

        def test_names(rig_gpus):
            assert all(g.name for g in rig_gpus.values())
    """
    return rig_nvml.gpus()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _skip_without_nvml(item)
    _fill_link_under_load(item)


def _skip_without_nvml(item: pytest.Item) -> None:
    # No driver / no GPU on a live machine: skip every GPU check with one reason. Raised here rather than
    # in the fixture, so the skip's location is this line for all of them and `-rs` reports it once.
    if "rig_nvml" not in getattr(item, "fixturenames", ()):
        return
    from ..errors import RigcheckError
    from ..plugin import item_rig, rig_session
    from .nvml import NvmlUnavailable

    if not rig_session(item.config).enabled:
        return
    rig = item_rig(item)
    if rig is None or not rig.is_live:
        return
    try:
        gpu_session(rig, item.config).nvml  # noqa: B018 - opened once; the outcome is kept
    except NvmlUnavailable as exc:
        reason = f"GPU checks skipped: {exc}"
    except RigcheckError:  # no permission, corrupt nvml.json: the fixture reports it, per test
        return
    else:
        return
    pytest.skip(reason)


def _fill_link_under_load(item: pytest.Item) -> None:
    # The PCIe link suite reads rig.extras["link_under_load"]: fill it before a link test runs, once per rig,
    # so an idle GPU's downshift is judged against a reading taken while busy.
    callspec = getattr(item, "callspec", None)
    if callspec is None or "rig_link" not in callspec.params:
        return
    target = callspec.params["rig_link"]
    rig = getattr(target, "rig", None)
    if rig is None or "link_under_load" in rig.extras:
        return
    from ..errors import RigcheckError

    session = gpu_session(rig, item.config)
    try:
        session.load()
    except RigcheckError:
        rig.extras["link_under_load"] = {}  # no NVML: the link check decides from sysfs alone


def pytest_unconfigure(config: pytest.Config) -> None:
    from ..plugin import RIG_SESSION

    rs = config.stash.get(RIG_SESSION, None)
    for rig in (rs._rigs or []) if rs is not None else []:
        s = rig.extras.get(EXTRAS_KEY)
        if isinstance(s, GpuSession):
            s.close()
