"""One policy for "cannot measure here": a missing dependency is UNREADABLE where it applies, a skip where not.

A GPU or P2P check needs something this machine may lack: NVML bindings (``pynvml``, from nvidia-ml-py),
the NVIDIA driver, or PyTorch. Such code raises ``FeatureUnavailable``. Whether that ends the check as a
failure or a skip is decided here, once, for the GPU and P2P plugins alike:

- on a live rig whose PCIe bus (sysfs) shows an NVIDIA GPU (vendor 0x10de, display class 03xx), the
  checks apply, so a missing dependency is UNREADABLE: the check FAILS (not a pytest setup error), with
  the install line or the driver fix;
- where no NVIDIA GPU is on the bus, the checks do not apply: one skip that says why.

Any other ``RigcheckError`` while obtaining a feature's state (no permission, a corrupt ``nvml.json``)
is UNREADABLE everywhere.

A snapshot without one of the files ``rigcheck capture`` records (``RECORDS``) is settled by the same rule:
``record_missing`` says why the absence is a could-not-read (the manifest notes the file was recorded, or
that its capture was attempted and not taken on a rig with NVIDIA GPUs); otherwise (a modelled or imported
snapshot that never had it, a capture that noted nothing of it) the checks that need it do not apply.

The failure is deferred from the fixture to the test's call phase (``pytest_runtest_call`` in the core
plugin calls ``fail_deferred``), so pytest reports a FAILED check, not an ERROR in setup.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import pytest

from .errors import RigcheckError

if TYPE_CHECKING:
    from .rig import Rig

T = TypeVar("T")

NVIDIA_VENDOR = 0x10DE
NVML_INSTALL = "pip install 'pytest-rigcheck[nvml]'   (nvidia-ml-py, which provides pynvml)"
TORCH_INSTALL = "pip install 'pytest-rigcheck[torch]'   (PyTorch with its NCCL, the stack vLLM runs on)"
DRIVER_VERSION_FILE = "proc/driver/nvidia/version"  # below the rig's root; present once nvidia.ko is loaded
DRIVER_FIX = (
    "load the NVIDIA driver: `sudo modprobe nvidia` (and check `dmesg | grep -i nvrm` for why it did not "
    "load); install it if `modinfo nvidia` finds none"
)
UNREADABLE_PREFIX = "UNREADABLE, not a pass: "

_DEFERRED = pytest.StashKey[str]()


class FeatureUnavailable(RigcheckError):
    """A dependency of a group of checks is missing on this machine.

    Args:
        what: the checks that need it ("GPU checks", "P2P/NCCL checks").
        reason: what is missing and why ("NVML bindings not installed").
        fix: the command that provides it (an install line, ``modprobe``).
    """

    def __init__(self, what: str, reason: str, fix: str) -> None:
        self.what = what
        self.reason = reason
        self.fix = fix
        super().__init__(f"{what}: {reason}; fix: {fix}")


def nvidia_gpus(rig: Rig) -> list[str]:
    """BDFs of the NVIDIA display-class functions on the rig's PCIe bus (sysfs), whatever driver holds them."""
    try:
        return [f.bdf for f in rig.pcie.gpus if f.vendor == NVIDIA_VENDOR]
    except (RigcheckError, OSError, ValueError):
        return []


def driver_loaded(rig: Rig) -> bool:
    """True when ``/proc/driver/nvidia/version`` exists below the rig's root (read through its ``Source``)."""
    return rig.source.exists(DRIVER_VERSION_FILE)


# What `rigcheck capture` records beside the sysfs tree, by its MANIFEST.toml ``[notes]`` key
# (``capture.EXTRA_CAPTURERS``: each capturer returns that note, the file's summary or "not captured: why").
# Only the note is evidence that a file was recorded or attempted: captures taken before the notes existed
# (the 2x H200 capture in tests/gpu/data) hold neither, and their absence says nothing.
RECORDS = {"nvml": "nvml.json", "p2p": "p2p.json", "env": "env.json"}
NOT_CAPTURED = "not captured"


def record_missing(rig: Rig, key: str) -> str | None:
    """Why the absence of ``RECORDS[key]`` from the snapshot ``rig`` replays is a could-not-read, or None.

    The snapshot's own manifest decides: its ``[notes] key`` says the file was recorded (then it was lost),
    or that its capture was attempted and not taken (``"not captured: ..."``, a missing dependency: as live,
    that is UNREADABLE where NVIDIA GPUs are on the snapshot's bus, ``decision``). None live, and for a
    snapshot whose manifest notes nothing of it (modelled, imported, captured by another tool or before
    rigcheck noted what it captured): the checks that need it do not apply there.
    """
    m = rig.manifest
    if m is None:
        return None
    file = RECORDS[key]
    notes = m.raw.get("notes")
    note = notes.get(key) if isinstance(notes, dict) else None
    if note is None:
        return None
    said = f"MANIFEST.toml [notes] {key} = {str(note)!r}"
    if not str(note).startswith(NOT_CAPTURED):
        return f"{file} missing from a capture that recorded it ({said})"
    if nvidia_gpus(rig):
        return f"{file} was not captured on a rig with NVIDIA GPUs ({said})"
    return None


def decision(rig: Rig, exc: FeatureUnavailable) -> tuple[bool, str]:
    """(applies, message): UNREADABLE on a live rig with NVIDIA GPUs on its bus, else a skip."""
    gpus = nvidia_gpus(rig) if rig.is_live else []
    if gpus:
        bound = [b for b in gpus if _driver_of(rig, b) == "nvidia"]
        seen = f"{len(gpus)} NVIDIA GPU(s) on the PCIe bus ({', '.join(gpus)}"
        seen += ", bound to nvidia)" if len(bound) == len(gpus) else f"; bound to nvidia: {len(bound)})"
        return True, f"{exc.what} cannot run: {exc.reason}, but this machine has {seen}; fix: {exc.fix}"
    where = "this machine" if rig.is_live else f"snapshot {rig.name}"
    return False, f"{exc.what} skipped: no NVIDIA GPU on the PCIe bus of {where} ({exc.reason})"


def _driver_of(rig: Rig, bdf: str) -> str | None:
    try:
        return rig.pcie.functions[bdf].driver
    except (RigcheckError, KeyError, OSError):
        return None


def provide(request: pytest.FixtureRequest, rig: Rig, obtain: Callable[[], T], placeholder: T) -> T:
    """The feature's state from ``obtain()``; where it cannot be had, settle the test by the one policy.

    ``FeatureUnavailable`` on a rig without NVIDIA GPUs skips (the reason says why); on a live rig with
    them, and any other ``RigcheckError``, makes the test FAIL as UNREADABLE in its call phase. Then
    ``placeholder`` is returned, and the test body never runs.
    """
    skip = None
    try:
        return obtain()
    except FeatureUnavailable as exc:
        applies, message = decision(rig, exc)
        if applies:
            defer(request.node, message)
        else:
            skip = message
    except RigcheckError as exc:
        defer(request.node, str(exc))
    if skip is not None:
        # Outside the except block (no chained traceback); the same line for every test, so -rs folds them.
        pytest.skip(skip)
    return placeholder


def defer(item: pytest.Item, message: str) -> None:
    """Mark ``item`` to fail as UNREADABLE with ``message`` when its call phase starts."""
    item.stash[_DEFERRED] = message


def deferred(item: pytest.Item) -> str | None:
    """Why ``item`` cannot be judged (``defer``), or None; ``runtime.pytest_runtest_call`` fails it as
    UNREADABLE with that reason, as a recorded verdict, before its body runs."""
    return item.stash.get(_DEFERRED, None)
