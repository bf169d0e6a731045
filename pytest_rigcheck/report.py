"""``--rig-report FILE``: every rig check's outcome as one JSON document, for rollout records and dashboards.

Built on the controller from test reports (with pytest-xdist too, since reports travel from the workers with
their ``user_properties``). Per check: the node id, the rig, the target, the status (``pass``, ``warn``,
``fail``, ``unreadable``, ``n/a``), measured, expected, unit, the message and the fix lines, all read from
the fields ``rig_check`` recorded (``Verdict.fields()`` as the ``rig_result`` property), never scraped out of
the failure text. Each rig is an object: name, source, kind, GPUs, driver, kernel, profile.

The path is checked when the run starts (``plugin.REPORT``: an existing folder this user can write, not a
directory), and the file is written once at the end, atomically; also when pytest is stopped by SIGTERM or
SIGINT, with what was measured until then (``exit_status`` 2, ``stopped_by``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .rig import Rig

REPORT_OPTION = "--rig-report"
REPORT_DESC = "Write every rig check's outcome, measured values and fix lines to this JSON file"
FORMAT = 1
RESULT_PROPERTY = "rig_result"  # the verdict's fields as JSON (plugin.record_verdict)
_FLAT = ("rig_status", "rig_measured", "rig_expected", "rig_unit", RESULT_PROPERTY)


class RigReport:
    """Collects reports during the run and writes the JSON file at the end (registered by the plugin)."""

    def __init__(self, config: pytest.Config, path: Path) -> None:
        self.config = config
        self.path = Path(path)
        self.results: dict[str, dict[str, Any]] = {}
        self.error: str | None = None

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
                elif report.failed and "summary" not in entry:
                    entry["message"] = _message(report)  # no verdict: an assert, an error in set-up
            if report.when == "call":
                entry["duration_s"] = round(report.duration, 4)
        if entry is not None and report.user_properties:
            _fill(entry, report.user_properties)
        if entry is not None:
            if entry.get("summary"):  # the verdict's own words; the failure text only where there is none
                entry["message"] = entry["summary"]
            entry["status"] = _status(entry)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        from . import __version__
        from .plugin import rig_session, stopped_by

        rs = rig_session(self.config)
        rigs = [rig_record(r) for r in rs.rigs] if rs.enabled and rs._rigs is not None else []
        multi = len(rigs) > 1
        results = list(self.results.values())
        for r in results:
            r["rig"] = _rig_of(r["nodeid"], rigs, multi)
            if "target" not in r and r["nodeid"].endswith("]"):  # skipped before any verdict: the test id
                param = r["nodeid"].rsplit("[", 1)[1][:-1]
                param = param.removeprefix(f"{r['rig']}:") if multi and r["rig"] else param
                if param != r["rig"]:
                    r["target"] = {"id": param}
        counts: dict[str, int] = {}
        for r in results:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        doc: dict[str, Any] = {
            "format": FORMAT,
            "tool": f"pytest-rigcheck {__version__}",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "rigs": rigs,
            "exit_status": int(exitstatus),
            "counts": counts,
            "results": results,
        }
        if stopped_by():
            doc["stopped_by"] = stopped_by()
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            tmp.write_text(json.dumps(doc, indent=1, default=str) + "\n", encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:  # checked at the start; the folder may have gone since
            self.error = f"rigcheck: could not write the report {self.path}: {exc.strerror or exc}"
            tmp.unlink(missing_ok=True)

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.error:
            terminalreporter.write_line(self.error, red=True)
        else:
            terminalreporter.write_line(f"rigcheck: report written to {self.path}")


def rig_record(rig: Rig) -> dict[str, Any]:
    """One rig as the report records it: name, source (``live`` or the snapshot path), kind, GPUs, driver,
    kernel and profile."""
    m = rig.manifest
    if m is None:
        driver = (rig.source.read_optional("sys/module/nvidia/version") or "").strip()
        version = (rig.source.read_optional("proc/version") or "").split()
        kernel = version[2] if len(version) > 2 else ""
    else:
        driver, kernel = m.driver, m.kernel
    return {
        "name": rig.name,
        "source": "live" if rig.is_live else str(rig.snapshot.origin if rig.snapshot else rig.root),
        "kind": "live" if m is None else m.kind,
        "gpus": [
            {"bdf": g.bdf, "vendor": f"0x{g.vendor:04x}", "device": f"0x{g.device:04x}", "slot": g.slot}
            for g in rig.pcie.gpus
        ],
        "driver": driver or None,
        "kernel": kernel or None,
        "profile": rig.profile.source,
    }


def _rig_of(nodeid: str, rigs: list[dict[str, Any]], multi: bool) -> str | None:
    if not rigs:
        return None
    if not multi:
        return str(rigs[0]["name"])
    params = nodeid.rsplit("[", 1)[1].rstrip("]") if nodeid.endswith("]") else ""
    for r in rigs:  # ids are "RIG:target" (or "RIG" for a rig-wide check) with several rigs
        if params == r["name"] or params.startswith(f"{r['name']}:"):
            return str(r["name"])
    return None


def _fill(entry: dict[str, Any], properties: list[tuple[str, object]]) -> None:
    """The structured fields from ``rig_check``'s properties; other properties kept under ``properties``."""
    props = dict(properties)
    result = props.get(RESULT_PROPERTY)
    if isinstance(result, str):
        try:
            fields = json.loads(result)
        except ValueError:
            fields = {}
        entry["verdict"] = fields.get("status")
        entry["summary"] = fields.get("summary")
        for key in ("measured", "expected", "unit", "fix", "target", "path", "cause"):
            if key in fields:
                entry[key] = fields[key]
    extra = {k: _plain(v) for k, v in props.items() if k not in _FLAT}
    if extra:
        entry["properties"] = extra


def _status(entry: dict[str, Any]) -> str:
    """The check's status: the verdict's, unless the test's own outcome says otherwise."""
    outcome, verdict = entry.get("outcome"), entry.get("verdict")
    if outcome == "skipped":
        return "n/a"
    if outcome in ("failed", "error"):
        return "unreadable" if verdict == "unreadable" else "fail"
    return str(verdict) if verdict in ("pass", "warn") else "pass"


def _message(report: pytest.TestReport) -> str:
    """The failure's own text (the verdict with its measured/expected/fix lines), without the traceback."""
    crash = getattr(report.longrepr, "reprcrash", None)
    text = getattr(crash, "message", None) or report.longreprtext
    return str(text).removeprefix("AssertionError: ").removeprefix("Failed: ").split("\nassert ")[0].strip()


def _plain(value: object) -> object:
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)
