"""One way to start, stop and reap a process group: the P2P/NCCL workers, the GPU load and a vLLM server.

Every program rigcheck starts runs in its own session, so in its own process group whose id is the
leader's pid (``start_new_session``, setsid(2)). Whatever it starts in turn (vLLM's engine processes,
a worker's helpers) stays in that group, so stopping means the whole group: SIGTERM, SIGKILL after a
grace period, reap the leader, then read ``/proc`` until no member of the group is left (proc(5):
``/proc/<pid>/stat`` field 5 is the process group). A zombie holds no memory and is not counted.

Every started group is kept in a module-level registry until it is stopped, so ``stop_all(reason)``
can end everything this process started: the plugin's SIGTERM handler calls it, ``atexit`` calls it,
and, until someone installs a SIGTERM handler of their own, a fallback handler installed with the first
group calls it and then lets SIGTERM end the process as it would have.

Stdlib only: whether stopped processes still hold GPU memory is asked through a callable the caller
passes (``gpu_released``), so this module never imports NVML.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

PROC = Path("/proc")
TAIL_LINES = 25

Member = tuple[int, str, str]
"""A live process of a group: ``(pid, state, comm)``, state as in proc(5) (``R``, ``S``, ``D``...)."""

GpuReleased = Callable[[Iterable[int]], "list[str] | None"]
"""Asked after a stop with every pid seen in the group: lines naming what still holds GPU memory
(empty when nothing does), or None when it cannot tell (no NVML). ``gpu.holders.gpu_holders`` fits."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the kernel's pick; another process could still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def log_tail(
    path: Path | None, lines: int = TAIL_LINES, contains: str | None = None, max_chars: int = 4000
) -> list[str]:
    """The last ``lines`` lines of a log file, for failure messages; ``[]`` when there is none.

    Reads at most the last 256 KiB. With ``contains``, only lines holding that text (``"NCCL"`` for a
    hung rank), unless none do, then all lines. At most ``max_chars`` in all: earlier lines are dropped
    first, and a single longer line keeps its end.
    """
    if path is None:
        return []
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 256 * 1024))
            text = f.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return []
    if contains:
        text = [t for t in text if contains in t] or text
    text = text[-lines:]
    while len(text) > 1 and sum(len(t) + 1 for t in text) > max_chars:
        text.pop(0)
    return [t[-max_chars:] for t in text]


def group_members(pgid: int, proc_root: Path = PROC) -> list[Member]:
    """Processes of process group ``pgid`` that are not zombies: ``(pid, state, comm)``.

    Read from ``/proc/<pid>/stat`` (proc(5): field 3 state, field 5 pgrp; comm may hold spaces and
    parentheses, so split after the last ``)``). Without ``/proc`` (not Linux), ``killpg(pgid, 0)``
    answers, zombies included: ``[(pgid, "?", "?")]`` while anything of the group exists.
    """
    try:
        entries = list(proc_root.iterdir())
    except OSError:
        return [(pgid, "?", "?")] if _signal_group(pgid, 0) else []
    found = []
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        comm = stat[stat.find("(") + 1 : stat.rfind(")")]
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            found.append((int(entry.name), fields[0], comm))
    return found


@dataclass
class StopReport:
    """How a stop went.

    Attributes:
        returncode: the leader's exit code (negative: the signal that ended it), None if not reaped.
        seconds: from the first signal until the group was empty (or the reap deadline passed).
        killed: whether SIGKILL was needed (something outlived SIGTERM and the grace period).
        leftover: members still alive afterwards; should be empty, the caller fails on anything here.
        pids: every pid of the group seen before the stop, for the GPU memory question.
        gpu_holders: ``gpu_released``'s answer (None when not asked or it cannot tell).
        reason: why it was stopped (``stop_all``'s reason), or "".
        was_running: whether anything of the group was alive when the stop began.
    """

    returncode: int | None
    seconds: float
    killed: bool
    leftover: list[Member]
    pids: frozenset[int] = frozenset()
    gpu_holders: list[str] | None = None
    reason: str = ""
    was_running: bool = False


class Group:
    """A program started in a new session (``start_group``), with its log; stop it with ``stop``.

    Attributes:
        argv: the command.
        name: a short label for messages and ``live_groups()``.
        log: the file receiving its stdout and stderr, or None.
        proc: the ``Popen`` of the leader; ``pid`` is also the process group id.
        started_at: ``time.monotonic()`` at start.
    """

    def __init__(
        self, argv: Sequence[str], name: str, log: Path | None, proc: subprocess.Popen[bytes]
    ) -> None:
        self.argv = list(argv)
        self.name = name
        self.log = log
        self.proc = proc
        self.started_at = time.monotonic()
        self.stop_report: StopReport | None = None

    @property
    def pid(self) -> int:
        """The leader's pid, which is the process group id."""
        return self.proc.pid

    def __repr__(self) -> str:
        return f"Group({self.name!r}, pid={self.pid})"

    def poll(self) -> int | None:
        """The leader's exit code, or None while it runs (never blocks)."""
        return self.proc.poll()

    def wait(self, timeout_s: float) -> int | None:
        """Wait up to ``timeout_s`` for the leader to exit: its exit code, or None at the deadline."""
        try:
            return self.proc.wait(timeout=max(timeout_s, 0.0))
        except subprocess.TimeoutExpired:
            return None

    def members(self) -> list[Member]:
        return group_members(self.pid)

    def tail(self, lines: int = TAIL_LINES, contains: str | None = None) -> list[str]:
        return log_tail(self.log, lines, contains)

    def stop(
        self,
        grace_s: float = 10.0,
        reap_s: float = 10.0,
        gpu_released: GpuReleased | None = None,
        reason: str = "",
    ) -> StopReport:
        """SIGTERM the group, SIGKILL it after ``grace_s``, then wait up to ``reap_s`` for it to be empty.

        Never raises and never blocks past ``grace_s + 2 * reap_s``; ``StopReport.leftover`` lists what
        survived. A second call returns the first report. ``grace_s=0`` sends SIGKILL at once.
        """
        if self.stop_report is not None:
            return self.stop_report
        return _stop_many([self], grace_s, reap_s, gpu_released, reason)[0]


_LIVE: dict[int, Group] = {}  # pgid -> group; plain dict operations only, so a signal handler may use it
_handler_installed = False


def start_group(
    argv: Sequence[str],
    *,
    log: Path | None = None,
    append: bool = False,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    name: str = "",
) -> Group:
    """Start ``argv`` in a new session (its own process group), stdout and stderr into ``log``.

    Args:
        argv: the command; the program is not looked up through a shell.
        log: file for stdout and stderr (truncated, or appended to with ``append``); None: discarded.
        env: the whole environment of the program (default: this process's).
        cwd: its working directory.
        name: label for messages (default: the program's name).

    Raises:
        OSError: the program cannot be run (not found, not executable); nothing was started.
    """
    f = log.open("ab" if append else "wb") if log is not None else None
    try:
        proc = subprocess.Popen(  # noqa: S603 - argv built by rigcheck or given by the user's own profile
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=f if f is not None else subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    finally:
        if f is not None:
            f.close()
    group = Group(argv, name or os.path.basename(str(argv[0])), log, proc)
    _LIVE[group.pid] = group
    _install_fallback_handler()
    return group


def stop_groups(
    groups: Sequence[Group],
    grace_s: float = 10.0,
    reap_s: float = 10.0,
    gpu_released: GpuReleased | None = None,
    reason: str = "",
) -> list[StopReport]:
    """Stop several groups at once (the ranks of one NCCL run): one grace period for all of them, and
    one ``gpu_released`` question with every pid seen in any of them. Groups stopped before keep their
    first report."""
    todo = [g for g in groups if g.stop_report is None]
    if todo:
        _stop_many(todo, grace_s, reap_s, gpu_released, reason)
    return [g.stop_report for g in groups if g.stop_report is not None]


def run(argv: Sequence[str], timeout_s: float, env: Mapping[str, str] | None = None) -> int | None:
    """Run ``argv`` in its own group to the end: its exit code, or None when it ran past ``timeout_s``
    (then the whole group is stopped). Output is discarded.

    Raises:
        OSError: the program cannot be run.
    """
    g = start_group(argv, env=env)
    code = g.wait(timeout_s)
    g.stop(grace_s=1.0, reap_s=5.0)
    return code


def live_groups() -> list[Group]:
    """Groups started here and not yet stopped, oldest first (a group whose members all exited on their
    own is dropped here)."""
    for pgid, g in list(_LIVE.items()):
        if g.poll() is not None and not group_members(pgid):
            _LIVE.pop(pgid, None)
    return list(_LIVE.values())


def stop_all(
    reason: str = "rigcheck is stopping", grace_s: float = 2.0, reap_s: float = 3.0
) -> list[StopReport]:
    """Stop every group this process started and has not stopped yet, all at once; the reports.

    For a SIGTERM/SIGINT handler, ``atexit`` and fixture teardown alike: safe to call from a signal
    handler in the main thread while a stop of the same group is under way (no locks, no blocking
    wait), and safe to call twice. Takes at most ``grace_s + 2 * reap_s`` seconds. ``reason`` goes into
    each group's log and report.
    """
    groups = list(_LIVE.values())
    if not groups:
        return []
    for g in groups:
        if g.log is not None:
            try:
                with g.log.open("a", encoding="utf-8") as f:
                    f.write(f"\n# rigcheck: stopping this process group: {reason}\n")
            except OSError:
                pass  # the log is for people; the stop goes on
    return _stop_many(groups, grace_s, reap_s, None, reason)


def _stop_many(
    groups: list[Group], grace_s: float, reap_s: float, gpu_released: GpuReleased | None, reason: str
) -> list[StopReport]:
    t0 = time.monotonic()
    members = {g.pid: group_members(g.pid) for g in groups}
    running = {g.pid for g in groups if g.poll() is None or members[g.pid]}
    seen = {g.pid: frozenset([g.pid, *(p for p, _, _ in members[g.pid])]) for g in groups}
    # Only groups with a member or an unreaped leader are signalled: the kernel does not hand out a pid
    # again while it is some process's group id, so the signal cannot reach a stranger.
    if grace_s > 0:
        for pgid in running:
            _signal_group(pgid, signal.SIGTERM)
        _wait_empty(groups, t0 + grace_s)
    killed = {g.pid for g in groups if g.poll() is None or group_members(g.pid)}
    for pgid in killed:
        _signal_group(pgid, signal.SIGKILL)
    _wait_empty(groups, time.monotonic() + reap_s)
    left = {g.pid: group_members(g.pid) for g in groups}
    holders = None
    if gpu_released is not None:
        holders = gpu_released(frozenset().union(*seen.values()))
    reports = []
    for g in groups:
        report = StopReport(
            g.poll(),
            time.monotonic() - t0,
            g.pid in killed,
            left[g.pid],
            seen[g.pid],
            holders,
            reason,
            g.pid in running,
        )
        if g.stop_report is None:
            g.stop_report = report
        if not left[g.pid]:
            _LIVE.pop(g.pid, None)
        reports.append(report)
    return reports


def _wait_empty(groups: list[Group], deadline: float) -> None:
    """Poll (reaping leaders, never a blocking wait) until every group is empty or the deadline passes."""
    while True:
        busy = [g for g in groups if g.poll() is None or group_members(g.pid)]
        if not busy or time.monotonic() >= deadline:
            return
        time.sleep(0.02)


def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to group ``pgid``; whether anything of it (zombies included) was there."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False  # the whole group is gone already
    except PermissionError:
        return True  # a member changed uid (setuid helper): the leftover check reports it
    return True


# -- stopping on exit and on SIGTERM ------------------------------------------------------------------


def _at_exit() -> None:
    if _LIVE:
        stop_all("the test run is exiting")


atexit.register(_at_exit)


def _install_fallback_handler() -> None:
    """With the first group: if SIGTERM still has its default action (it ends the process without
    ``atexit``), stop every group first. Someone else's handler is left alone; it should call
    ``stop_all`` itself (the rigcheck plugin's does)."""
    global _handler_installed
    if _handler_installed or threading.current_thread() is not threading.main_thread():
        return
    _handler_installed = True
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):
        pass  # not the main interpreter: atexit and fixture teardown remain


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    stop_all(f"signal {signal.Signals(signum).name} received")
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)  # end as SIGTERM would have, now that nothing is left behind


__all__ = [
    "Group",
    "GpuReleased",
    "StopReport",
    "free_port",
    "group_members",
    "live_groups",
    "log_tail",
    "run",
    "start_group",
    "stop_all",
    "stop_groups",
]
