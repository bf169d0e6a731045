"""``--rig-prometheus FILE.prom``: every check's status and figures as a node-exporter textfile.

Point node-exporter's textfile collector at the folder (``--collector.textfile.directory``) and the
Prometheus and Grafana a team already runs pick the verdicts up. The file is written once at the end of the
run, atomically (a temporary file in the same folder, then ``os.replace``), as node-exporter's textfile
collector asks, so it never reads half a file
(https://github.com/prometheus/node_exporter#textfile-collector); the text follows Prometheus' exposition
format (https://prometheus.io/docs/instrumenting/exposition_formats/).

Metrics, labelled by ``rig``, ``check`` (the test function), ``device`` (the check's target: a BDF, a pair
``A->B``, a GPU group) and ``nodeid`` (unique per result):

- ``rigcheck_check_status{...,status="pass|warn|fail|unreadable|n/a"} 1``: the status of each check;
- ``rigcheck_check_ok{...}`` 1 when it passes (pass or warn), 0 when it fails or could not be read;
- ``rigcheck_measured{...,unit=}``: the measured value where it is a number;
- ``rigcheck_figure{...,figure=}``: each numeric figure the check recorded (``unidir_gbps``, ``pass_line``...);
- ``rigcheck_checks{rig,status}``, ``rigcheck_exit_status``, ``rigcheck_last_run_timestamp_seconds``.

Read from the same structured results as ``--rig-report`` (the ``rig_result`` user property the
``rig_check`` fixture records, collected by ``report.RigReport``), never from the failure text.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import pytest

from ..options import PROMETHEUS

PROM_OPTION = PROMETHEUS.option


@pytest.hookimpl(trylast=True)  # after the core's pytest_configure made the rig session
def pytest_configure(config: pytest.Config) -> None:
    from ..options import value
    from ..plugin import rig_session

    if config.option.help or hasattr(config, "workerinput"):  # xdist: the controller writes it
        return
    if not rig_session(config).enabled:
        return
    path = value(config, PROMETHEUS)
    if path:
        config.pluginmanager.register(PrometheusTextfile(config, path), "rigcheck-prometheus")


class PrometheusTextfile:
    """Collects the run's results (as ``RigReport`` does) and writes the textfile at the end."""

    def __init__(self, config: pytest.Config, path: Path) -> None:
        from ..report import RigReport

        self.path = Path(path)
        self.collector = RigReport(config, self.path)  # its results only: never registered, never written
        self.config = config
        self.error: str | None = None

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.collector.pytest_runtest_logreport(report)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        from ..plugin import rig_session
        from ..report import _rig_of

        rs = rig_session(self.config)
        names = [{"name": r.name} for r in rs.rigs] if rs.enabled and rs._rigs is not None else []
        results = list(self.collector.results.values())
        for r in results:
            r.setdefault("rig", _rig_of(r["nodeid"], names, len(names) > 1))
        text = textfile(results, int(exitstatus), time.time())
        tmp = self.path.with_name(f".{self.path.name}.tmp")  # same folder: os.replace is atomic
        try:
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            self.error = f"rigcheck: could not write {self.path}: {exc.strerror or exc}"
            tmp.unlink(missing_ok=True)

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.error:
            terminalreporter.write_line(self.error, red=True)
        else:
            terminalreporter.write_line(f"rigcheck: Prometheus textfile written to {self.path}")


STATUSES = ("pass", "warn", "fail", "unreadable", "n/a")


def textfile(results: list[dict[str, Any]], exit_status: int, now: float) -> str:
    """The exposition text for ``results`` (``RigReport`` entries: nodeid, status, measured, unit, ...)."""
    status_lines, ok_lines, measured_lines, figure_lines = [], [], [], []
    counts: dict[tuple[str, str], int] = {}
    for r in results:
        nodeid = str(r.get("nodeid", ""))
        check = nodeid.split("[", 1)[0].rsplit("::", 1)[-1]
        rig = str(r.get("rig") or "")
        base = {"rig": rig, "check": check, "device": _device(r), "nodeid": nodeid}
        status = str(r.get("status", "unreadable"))
        counts[(rig, status)] = counts.get((rig, status), 0) + 1
        status_lines.append(f"rigcheck_check_status{_labels({**base, 'status': status})} 1")
        if status != "n/a":
            ok_lines.append(f"rigcheck_check_ok{_labels(base)} {int(status in ('pass', 'warn'))}")
        value = _number(r.get("measured"))
        if value is not None:
            measured_lines.append(
                f"rigcheck_measured{_labels({**base, 'unit': str(r.get('unit') or '')})} {_fmt(value)}"
            )
        raw = r.get("properties")
        props: dict[str, Any] = raw if isinstance(raw, dict) else {}
        for key, prop in sorted(props.items()):
            value = _number(prop)
            if value is not None:
                figure_lines.append(f"rigcheck_figure{_labels({**base, 'figure': key})} {_fmt(value)}")
    out = [
        "# HELP rigcheck_check_status Status of each rig check (1 for its status: pass, warn, fail, unreadable, n/a).",
        "# TYPE rigcheck_check_status gauge",
        *status_lines,
        "# HELP rigcheck_check_ok 1 when the check passes (pass or warn), 0 when it fails or could not be read.",
        "# TYPE rigcheck_check_ok gauge",
        *ok_lines,
        "# HELP rigcheck_measured The value the check measured, in its unit label.",
        "# TYPE rigcheck_measured gauge",
        *measured_lines,
        "# HELP rigcheck_figure Each numeric figure a check recorded (bandwidths in GB/s, pass lines, samples).",
        "# TYPE rigcheck_figure gauge",
        *figure_lines,
        "# HELP rigcheck_checks Number of checks per rig and status.",
        "# TYPE rigcheck_checks gauge",
        *(f"rigcheck_checks{_labels({'rig': k[0], 'status': k[1]})} {n}" for k, n in sorted(counts.items())),
        "# HELP rigcheck_exit_status pytest's exit status for the run (0 all passed, 1 a check failed).",
        "# TYPE rigcheck_exit_status gauge",
        f"rigcheck_exit_status {exit_status}",
        "# HELP rigcheck_last_run_timestamp_seconds When the run ended (Unix time).",
        "# TYPE rigcheck_last_run_timestamp_seconds gauge",
        f"rigcheck_last_run_timestamp_seconds {now:.3f}",
    ]
    return "\n".join(out) + "\n"


def _device(r: dict[str, Any]) -> str:
    t = r.get("target")
    if isinstance(t, dict):
        return str(t.get("id") or t.get("bdf") or t.get("name") or "")
    nodeid = str(r.get("nodeid", ""))
    return nodeid.rsplit("[", 1)[1][:-1] if nodeid.endswith("]") else ""


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _fmt(value: float) -> str:
    return repr(value) if not value.is_integer() else str(int(value))


def _labels(labels: dict[str, str]) -> str:
    """``{k="v",...}`` with the exposition format's escapes (backslash, double quote, line feed)."""
    esc = ((k, v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")) for k, v in labels.items())
    return "{" + ",".join(f'{k}="{v}"' for k, v in esc) + "}"
