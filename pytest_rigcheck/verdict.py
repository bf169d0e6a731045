"""Verdicts: what a check found, formatted the way an engineer acts on it.

A message has five parts: the device, what was measured, what was expected (and from where),
the context (the path from the root port), and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PASS = "pass"
FAIL = "fail"
UNREADABLE = "unreadable"  # could not read what the check needs: never a pass
NOT_APPLICABLE = "n/a"  # the check does not apply to this rig: a skip, with the reason


@dataclass
class Verdict:
    """The outcome of one check on one device."""

    status: str
    summary: str
    measured: str = ""
    expected: str = ""
    path: list[str] = field(default_factory=list)
    fix: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    properties: dict[str, object] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == PASS

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


def passed(summary: str, **kw: object) -> Verdict:
    return Verdict(PASS, summary, **kw)  # type: ignore[arg-type]


def failed(summary: str, **kw: object) -> Verdict:
    return Verdict(FAIL, summary, **kw)  # type: ignore[arg-type]


def unreadable(summary: str, **kw: object) -> Verdict:
    return Verdict(UNREADABLE, summary, **kw)  # type: ignore[arg-type]


def not_applicable(summary: str) -> Verdict:
    return Verdict(NOT_APPLICABLE, summary)
