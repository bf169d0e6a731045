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

EXTRAS_KEY = "gpu"


def load_seconds(config: pytest.Config) -> float:
    """Seconds of GPU load: ``--rig-load-seconds`` > ``RIGCHECK_LOAD_SECONDS`` > ini ``rig_load_seconds`` > 3,
    from 0.5 to 120 (validated with every other setting before collection)."""
    from ..options import LOAD, value

    return float(value(config, LOAD))


class GpuSession:
    """One rig's NVML state, opened on first use and kept for the session (in ``rig.extras["gpu"]``).

    The outcome of opening NVML is kept too, so a machine without a driver is probed once; the
    fixtures settle it through ``availability.provide`` (UNREADABLE where NVIDIA GPUs are on the bus,
    a skip where there are none).
    """

    def __init__(self, rig: Rig, seconds: float, python: str | None = None) -> None:
        self.rig = rig
        self.seconds = seconds
        self.python = python  # the load worker's interpreter: the P2P workers' (--rig-p2p-python)
        self._nvml: Nvml | None = None
        self._error: Exception | None = None
        self._load: dict[str, LoadReadings | Unavailable] | None = None
        self._load_checked = False  # _check_load ran on _load
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
        """Every GPU of the PCIe tree, joined by BDF to NVML's state.

        Where NVML and PCIe disagree on a GPU (NVML lists a GPU not on the bus; it reports a function of
        another vendor or driver; its name is another model than the PCI device ID says, ``pcie.other_model``):
        ``Unavailable(code=corrupt)``. Where NVML has no state: ``Unavailable(code=not_nvidia)`` for a display function of another vendor
        (a BMC's VGA: the NVML checks do not apply), ``Unavailable(code=not_in_nvml)`` for an NVIDIA GPU
        NVML does not report (``inventory.seen_by_nvml`` fails it with the diagnosis).
        """
        from ..availability import NVIDIA_VENDOR
        from ..pcie import other_model
        from .state import CORRUPT, NOT_IN_NVML, NOT_NVIDIA, Unavailable

        by_bdf = {g.bdf: g for g in self.system.gpus}
        stray = sorted(b for b in by_bdf if b not in self.rig.pcie.functions)
        out: dict[str, GpuState | Unavailable] = {}
        for fn in self.rig.pcie.gpus:
            if stray and fn.vendor == NVIDIA_VENDOR:
                # NVML and PCIe disagree: which NVML entry is which GPU is then no evidence at all
                out[fn.bdf] = Unavailable(
                    f"{self.nvml.origin} lists GPU(s) at {', '.join(stray)} that are not on this rig's PCIe bus "
                    f"({len(self.rig.pcie.gpus)} GPU(s) there): NVML and PCIe disagree, so its readings "
                    "cannot be placed (NVML state of another machine, or corrupt)",
                    CORRUPT,
                )
            elif fn.bdf in by_bdf and (fn.vendor != NVIDIA_VENDOR or fn.driver not in (None, "nvidia")):
                # NVML reports only GPUs the nvidia driver runs: another vendor, or a GPU bound to another
                # driver (nouveau, vfio-pci) in sysfs, cannot also be in NVML's list
                what = (
                    f"vendor {fn.vendor:#06x} on the PCIe bus"
                    if fn.vendor != NVIDIA_VENDOR
                    else f"bound to {fn.driver}, not nvidia, on the PCIe bus"
                )
                out[fn.bdf] = Unavailable(
                    f"{fn.bdf} is {what}, yet {self.nvml.origin} reports it as an NVIDIA GPU: NVML and PCIe "
                    "disagree (NVML state of another machine or moment, or corrupt)",
                    CORRUPT,
                )
            elif fn.bdf in by_bdf and (other := other_model(fn.vendor, fn.device, by_bdf[fn.bdf].name or "")):
                # the PCI device ID (sysfs) and NVML's name of the same address name two models
                out[fn.bdf] = Unavailable(
                    f"{fn.bdf} is {fn.name} by its PCI ID {fn.ids} (sysfs), yet {self.nvml.origin} names the GPU "
                    f"there {by_bdf[fn.bdf].name!r} ({other}): NVML and PCIe disagree (NVML state of another "
                    "machine, or corrupt)",
                    CORRUPT,
                )
            elif fn.bdf in by_bdf:
                out[fn.bdf] = by_bdf[fn.bdf]
            elif fn.vendor != NVIDIA_VENDOR:
                out[fn.bdf] = Unavailable(
                    f"{fn.describe()} is not an NVIDIA GPU: NVML has no state for it", NOT_NVIDIA
                )
            else:
                out[fn.bdf] = Unavailable(
                    f"{fn.bdf} is on the PCIe bus (driver {fn.driver or 'none'}) but not among the "
                    f"{len(by_bdf)} GPU(s) {self.nvml.origin} reports ({', '.join(sorted(by_bdf)) or 'none'})",
                    NOT_IN_NVML,
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
        if not self._load_checked:
            self._check_load()
        return self._load

    def _check_load(self) -> None:
        """Refuse readings under load that cannot be real (``state.load_problem``: times not rising, a link above
        the GPU's own maximum), live and recorded alike, before any check or the PCIe link suite uses them."""
        from ..linkhealth import link_max
        from .common import load_source
        from .state import LoadReadings, load_checked

        assert self._load is not None
        gpus = self.gpus()
        src = load_source(self.rig)
        self._load = {
            b: load_checked(r, gpus.get(b), f"{src} ({b})", link_max(self.rig, b))
            for b, r in self._load.items()
        }
        self._load_checked = True
        self.rig.extras["link_under_load"] = {
            b: r.link for b, r in self._load.items() if isinstance(r, LoadReadings) and r.link is not None
        }

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


@pytest.fixture
def rig_nvml(rig: Rig, request: pytest.FixtureRequest) -> GpuSession:
    """The rig's GPU state through NVML (``GpuSession``): live NVML, or the snapshot's ``nvml.json``.

    ``.system`` (driver, CUDA, every GPU's ``GpuState``), ``.gpu(bdf)``, ``.load_of(bdf)`` (readings under a short
    load, taken once per session), ``.kernel_log()``. Where NVML cannot be opened the test is settled by
    ``availability.provide``: FAILED as UNREADABLE (with the install line or driver fix) on a live rig whose
    PCIe bus shows NVIDIA GPUs, or for a snapshot without NVML state; skipped where there is no NVIDIA GPU.

    Example::

        def test_persistence(rig_gpu, rig_nvml):
            assert rig_nvml.gpu(rig_gpu.gpu.bdf).get("persistence_mode") == 1
    """
    from ..availability import provide

    session = gpu_session(rig, request.config)
    return provide(request, rig, lambda: (session.nvml, session)[1], session)


@pytest.fixture
def rig_gpus(rig_nvml: GpuSession, request: pytest.FixtureRequest) -> dict[str, Any]:
    """The rig's GPUs as NVML sees them, joined to the PCIe tree by BDF: ``{bdf: GpuState | Unavailable}``.

    Example::

        def test_names(rig_gpus):
            assert all(g.name for g in rig_gpus.values())
    """
    from ..availability import provide

    return provide(request, rig_nvml.rig, rig_nvml.gpus, {})


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _fill_link_under_load(item)


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
