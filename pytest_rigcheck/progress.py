"""One status line for long phases (GPU load, P2P/NCCL phases, vLLM start-up and readiness, the soak).

Measuring code takes a ``progress`` callback, ``progress(what, elapsed_s, deadline_s)`` (default
``no_progress``), and calls it as often as it likes while a phase runs: ``what`` names what is running
("P2P: measuring", "vLLM: waiting for /health"), ``elapsed_s`` the seconds since that phase began and
``deadline_s`` when it is given up (None: none), and optionally ``detail=`` (what inside the phase: the GPU
pair a P2P worker copies between now, the soak's latest readings), shown on a terminal but not part of the
phase's name. So the measuring code stays testable without pytest.

``status_line(config)`` is the callback the plugins hand it, written through pytest's terminal reporter:

- on a terminal, one line rewritten in place (at most every ``TTY_EVERY_S``), erased by ``close()``;
- in a log (stdout not a TTY, or ``CI`` set, as GitHub Actions, GitLab CI and most CI systems set it),
  one line when a phase starts, naming it and its deadline; a phase given ``log_every_s`` (the soak)
  also repeats its line that often, so a log of a long phase still shows it is alive;
- nothing under ``-q`` (verbosity below 0), nor where there is no terminal reporter (``-p no:terminal``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pytest

Progress = Callable[..., None]  # (what, elapsed_s, deadline_s, detail="")
TTY_EVERY_S = 0.25


def no_progress(what: str, elapsed_s: float, deadline_s: float | None = None, detail: str = "") -> None:
    """The default ``progress`` callback: says nothing."""
    return None


def format_status(what: str, elapsed_s: float, deadline_s: float | None, detail: str = "") -> str:
    """``rigcheck: NCCL all-reduce sweep, 1 group, 12 s (deadline 120 s)`` (then ``detail``, if any)."""
    tail = f" (deadline {deadline_s:g} s)" if deadline_s is not None else ""
    return f"rigcheck: {what}, {elapsed_s:.0f} s{tail}" + (f"  {detail}" if detail else "")


def in_ci() -> bool:
    """Whether the ``CI`` environment variable is set to something other than empty/0/false."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


class StatusLine:
    """The status line of one pytest run (see the module docstring). Call it as a ``Progress``.

    Args:
        terminalreporter: pytest's ``terminalreporter`` plugin.
        capman: pytest's ``capturemanager`` plugin (output capture is suspended while writing), or None.
        tty: rewrite in place (a terminal) or one line per phase (a log).
        log_every_s: in a log, repeat a phase's line this often (None: once per phase).
    """

    def __init__(
        self, terminalreporter: Any, capman: Any, tty: bool, log_every_s: float | None = None
    ) -> None:
        self.tr = terminalreporter
        self.capman = capman
        self.tty = tty
        self.log_every_s = log_every_s
        self._what: str | None = None
        self._last = -1e9
        self._shown = False

    def __call__(
        self, what: str, elapsed_s: float, deadline_s: float | None = None, detail: str = ""
    ) -> None:
        """Show ``what`` (the phase; a new ``what`` is a new phase), its elapsed seconds and deadline, and
        ``detail`` (live readings, not part of the phase's name)."""
        now = time.monotonic()
        new = what != self._what
        self._what = what
        line = format_status(what, elapsed_s, deadline_s, detail)
        if self.tty:
            if not new and now - self._last < TTY_EVERY_S:
                return
            self._last = now
            with self._uncaptured():
                width = getattr(getattr(self.tr, "_tw", None), "fullwidth", 80)
                if not self._shown:
                    self.tr.write("\n")
                self.tr.rewrite(line[: width - 1], erase=True)
            self._shown = True
            return
        if not new and (self.log_every_s is None or now - self._last < self.log_every_s):
            return
        self._last = now
        with self._uncaptured():
            self.tr.ensure_newline()
            self.tr.write_line(line)

    def note(self, line: str) -> None:
        """A line that stays (a phase's outcome), in a log and on a terminal alike."""
        with self._uncaptured():
            if self.tty and self._shown:
                self.tr.rewrite("", erase=True)
                self._shown = False
            self.tr.ensure_newline()
            self.tr.write_line(f"rigcheck: {line}")

    def close(self) -> None:
        """Erase the in-place line on a terminal; the next phase starts a fresh one."""
        if self.tty and self._shown:
            with self._uncaptured():
                self.tr.rewrite("", erase=True)
                self.tr.write("\r")
        self._shown = False
        self._what = None

    def _uncaptured(self) -> Any:
        if self.capman is None:
            return contextlib.nullcontext()
        return self.capman.global_and_fixture_disabled()


def status_line(config: pytest.Config, log_every_s: float | None = None) -> StatusLine | None:
    """The run's status line, or None under ``-q`` or without a terminal reporter."""
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is None or config.get_verbosity() < 0:
        return None
    tty = bool(tr.isatty()) and not in_ci()
    return StatusLine(tr, config.pluginmanager.get_plugin("capturemanager"), tty, log_every_s)


@contextlib.contextmanager
def progress_for(config: pytest.Config | None, log_every_s: float | None = None) -> Any:
    """``with progress_for(config) as progress:`` a ``Progress`` (``no_progress`` under ``-q``), closed after."""
    line = status_line(config, log_every_s) if config is not None else None
    try:
        yield line if line is not None else no_progress
    finally:
        if line is not None:
            line.close()


__all__ = ["Progress", "StatusLine", "format_status", "in_ci", "no_progress", "progress_for", "status_line"]
