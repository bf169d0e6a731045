"""``--rig-report FILE``: every rig check's outcome as one JSON document, for rollout records and dashboards.

Built on the controller from test reports (with pytest-xdist too, since reports travel from the workers with
their ``user_properties``): per check the node id, outcome, the verdict's summary, the measured values
``rig_check`` recorded, and the failure text with its fix lines. Written once at the end, atomically.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

REPORT_OPTION = "--rig-report"
REPORT_DESC = "Write every rig check's outcome, measured values and fix lines to this JSON file"
FORMAT = 1


class RigReport:
    """Collects reports during the run and writes the JSON file at the end (registered by the plugin)."""

    def __init__(self, config: pytest.Config, path: Path) -> None:
        self.config = config
        self.path = path
        self.results: dict[str, dict[str, Any]] = {}

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        entry = self.results.get(report.nodeid)
        if report.when == "call" or report.outcome != "passed":
            if entry is None:
                entry = self.results[report.nodeid] = {"nodeid": report.nodeid}
            outcome = "error" if report.failed and report.when != "call" else report.outcome
            if not (entry.get("outcome") in ("failed", "error") and outcome == "passed"):
                entry["outcome"] = outcome
                entry["when"] = report.when
                if report.skipped and isinstance(report.longrepr, tuple):
                    entry["message"] = str(report.longrepr[2]).removeprefix("Skipped: ")
                elif report.failed:
                    entry["message"] = _message(report)
            if report.when == "call":
                entry["duration_s"] = round(report.duration, 4)
        if entry is not None and report.user_properties:
            props = dict(report.user_properties)
            summary = props.pop("rig_verdict", None)
            if summary is not None:
                entry["summary"] = summary
            entry["properties"] = {k: _plain(v) for k, v in props.items()}

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        from . import __version__
        from .plugin import rig_session

        rs = rig_session(self.config)
        results = list(self.results.values())
        counts: dict[str, int] = {}
        for r in results:
            counts[r.get("outcome", "?")] = counts.get(r.get("outcome", "?"), 0) + 1
        doc = {
            "format": FORMAT,
            "tool": f"pytest-rigcheck {__version__}",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "rigs": [r.header() for r in rs.rigs] if rs.enabled else [],  # each names its profile
            "exit_status": int(exitstatus),
            "counts": counts,
            "results": results,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        terminalreporter.write_line(f"rigcheck: report written to {self.path}")


def _message(report: pytest.TestReport) -> str:
    """The failure's own text (the verdict with its measured/expected/fix lines), without the traceback."""
    crash = getattr(report.longrepr, "reprcrash", None)
    text = getattr(crash, "message", None) or report.longreprtext
    return str(text).removeprefix("AssertionError: ").removeprefix("Failed: ").split("\nassert ")[0].strip()


def _plain(value: object) -> object:
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)
