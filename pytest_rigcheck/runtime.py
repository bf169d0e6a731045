"""The core's hooks of a rig run: registered by ``plugin.pytest_configure`` only when ``--rig`` or
``--rig-snapshot`` is given, so a pytest run without them pays nothing per test for rigcheck.

- Session: signal handlers, the rigs loaded before collection (a bad snapshot or profile is a usage
  error then), the header line per rig.
- Per test: a live-only check skipped on a replay; the call wrapper that settles what a check could not
  judge (``Unjudgeable``, an unreadable or refused file) as UNREADABLE; WARN verdicts collected for the
  "rigcheck warnings" section.
- Stopping: SIGTERM/SIGINT stop everything the run started and still write the report.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from .plugin import RIG_SESSION, rig_session
from .report import RESULT_PROPERTY

if TYPE_CHECKING:
    from .rig import Rig
    from .verdict import Verdict


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    if not session.config.option.help:
        _install_signal_handlers()
        rig_session(session.config).rigs  # noqa: B018 - load now: a bad snapshot or profile is a usage error before collection


def pytest_report_header(config: pytest.Config) -> list[str]:
    from .options import live_only_given

    lines = [f"rigcheck: {r.header()}" for r in rig_session(config).rigs]
    lines += [  # given on the command line these stopped the run; from a variable or ini they are said here
        f"rigcheck: {r.where} ({setting.option}) applies to live runs only: not used in this replay"
        for setting, r in live_only_given(config)
    ]
    return lines


def pytest_unconfigure(config: pytest.Config) -> None:
    run_stop_callbacks()
    _restore_signal_handlers()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # One reason for a live-only check on a replay, whatever the number of snapshots (gate D29), and
    # before feature plugins' own reasons (the vLLM plugin's "no server to check").
    if item.get_closest_marker("rig_live") is None:
        return
    rig = item_rig(item)
    rigs = [rig] if rig is not None else rig_session(item.config).rigs
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
    rs = item.config.stash[RIG_SESSION]
    return rs.rigs[0] if len(rs.rigs) == 1 else None


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


def _plain(value: object) -> object:
    return value if isinstance(value, str | int | float | bool) else json.dumps(value, default=str)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    # A fixture found that what the test needs cannot be read here (availability.provide): fail the check
    # as UNREADABLE now, in its call phase, before the test body runs, so it is a failed check and not a
    # setup error.
    __tracebackhide__ = True
    from .availability import deferred
    from .errors import ConfigSpaceError, SourceError
    from .verdict import Unjudgeable, unreadable

    message = deferred(item)
    if message is not None:  # through the one verdict path: status unreadable in the report, one cause
        verdict = unreadable(message)
        item.stash[_EARLY] = f"UNREADABLE, not a pass: {verdict}"
        settle_verdict(item, verdict)
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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # A check failed as UNREADABLE before its body ran (pytest_runtest_call, above) has no frame of its own to
    # show: its failure text is the one line, without pytest's "All traceback entries are hidden" note.
    rep = yield
    if call.when == "call" and rep.failed:
        text = item.stash.get(_EARLY, None)
        if text is not None:
            rep.longrepr = text
    return rep


_EARLY = pytest.StashKey[str]()  # the failure text of a check settled before its body ran


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
