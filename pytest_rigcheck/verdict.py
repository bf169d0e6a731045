"""Verdicts: what a check found, formatted the way an engineer acts on it.

One status vocabulary (``Status``: PASS, WARN, FAIL, UNREADABLE, NOT_APPLICABLE) in one result type
(``Verdict``). A message has five parts: the device, what was measured, what was expected (and from
where), the context (the path from the root port), and the fix. The same facts travel as fields
(``measured_value``, ``expected_value``, ``unit``, ``fix``, ``target``) so the JUnit properties and the
``--rig-report`` read them directly, never scraped back out of the text.

A check that finds it cannot judge (a reading is missing or corrupt) may ``raise Unjudgeable(verdict)``
from deep inside; ``rig_check`` settles it like a returned verdict. That is the one way to stop early.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ParamSpec

P = ParamSpec("P")


class Status(enum.StrEnum):
    """The five outcomes of a check. ``str`` values are what reports and JUnit properties carry."""

    PASS = "pass"
    WARN = "warn"  # passes the gate, shown in the terminal summary and the report
    FAIL = "fail"
    UNREADABLE = "unreadable"  # could not read (or trust) what the check needs: never a pass
    NOT_APPLICABLE = "n/a"  # the check does not apply to this rig: a skip, with the reason


# Module-level names kept for the checks that compare ``verdict.status == UNREADABLE``.
PASS = Status.PASS
WARN = Status.WARN
FAIL = Status.FAIL
UNREADABLE = Status.UNREADABLE
NOT_APPLICABLE = Status.NOT_APPLICABLE


@dataclass
class Verdict:
    """The outcome of one check on one device.

    ``measured``/``expected`` are the human text; ``measured_value``/``expected_value`` (numbers, strings
    or booleans) with ``unit`` are the same facts as fields. ``target`` names the device (BDF, GPU index,
    name) for reports; ``cause`` may name the id of a check this failure follows from.
    """

    status: Status | str
    summary: str
    measured: str = ""
    expected: str = ""
    path: list[str] = field(default_factory=list)
    fix: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    properties: dict[str, object] = field(default_factory=dict)
    measured_value: object = None
    expected_value: object = None
    unit: str = ""
    target: dict[str, object] = field(default_factory=dict)
    cause: str | None = None

    def __post_init__(self) -> None:
        self.status = Status(self.status)

    @property
    def ok(self) -> bool:
        """True for PASS and WARN: the gate lets both through (WARN is shown, not hidden)."""
        return self.status in (Status.PASS, Status.WARN)

    def __repr__(self) -> str:  # short: pytest's assertion rewriting prints it
        return f"<Verdict {self.status}>"

    def __str__(self) -> str:
        lines = [self.summary]
        if self.path:
            lines += [f"  path: {p}" for p in self.path]
        if self.measured:
            lines.append(f"  measured: {self.measured}")
        if self.expected:
            lines.append(f"  expected: {self.expected}")
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  fix: {f}" for f in self.fix]
        return "\n".join(lines)

    def fields(self) -> dict[str, object]:
        """The structured record of this verdict (what JUnit properties and the JSON report carry)."""
        out: dict[str, object] = {"status": str(self.status), "summary": self.summary}
        if self.measured_value is not None:
            out["measured"] = self.measured_value
        elif self.measured:
            out["measured"] = self.measured
        if self.expected_value is not None:
            out["expected"] = self.expected_value
        elif self.expected:
            out["expected"] = self.expected
        if self.unit:
            out["unit"] = self.unit
        if self.fix:
            out["fix"] = list(self.fix)
        if self.path:
            out["path"] = list(self.path)
        if self.target:
            out["target"] = dict(self.target)
        if self.cause:
            out["cause"] = self.cause
        return out


class Unjudgeable(Exception):  # noqa: N818 - control flow: carries the verdict that ends the check
    """Raised inside a check to end it with ``verdict`` (normally UNREADABLE); ``rig_check`` settles it."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.summary)
        self.verdict = verdict


def passed(summary: str, **kw: object) -> Verdict:
    return Verdict(Status.PASS, summary, **kw)  # type: ignore[arg-type]


def warned(summary: str, **kw: object) -> Verdict:
    return Verdict(Status.WARN, summary, **kw)  # type: ignore[arg-type]


def failed(summary: str, **kw: object) -> Verdict:
    return Verdict(Status.FAIL, summary, **kw)  # type: ignore[arg-type]


def unreadable(summary: str, **kw: object) -> Verdict:
    return Verdict(Status.UNREADABLE, summary, **kw)  # type: ignore[arg-type]


def not_applicable(summary: str) -> Verdict:
    return Verdict(Status.NOT_APPLICABLE, summary)


def physical(value: object, *, lo: float = 0.0, hi: float = math.inf, allow_lo: bool = True) -> float | None:
    """``value`` as a float when it is a finite number within [lo, hi] (a possible reading), else None.

    Negative latencies, infinite or NaN bandwidths, negative watts, booleans and strings are not readings
    of real hardware: callers turn ``None`` into an UNREADABLE (corrupt) verdict.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    v = float(value)
    if not math.isfinite(v) or v > hi or v < lo or (not allow_lo and v == lo):
        return None
    return v


def judged(check: Callable[P, Verdict]) -> Callable[P, Verdict]:
    """Decorate a check so an ``Unjudgeable`` raised inside it returns its verdict.

    ``rig_check`` settles ``Unjudgeable`` too; this keeps a check a plain function from target to
    ``Verdict`` for callers outside pytest (unit tests, ``rigcheck`` tools).
    """

    @functools.wraps(check)
    def run(*args: P.args, **kwargs: P.kwargs) -> Verdict:
        try:
            return check(*args, **kwargs)
        except Unjudgeable as exc:
            return exc.verdict

    return run
