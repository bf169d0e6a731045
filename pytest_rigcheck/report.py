"""``--rig-report FILE``: every rig check's outcome as one JSON document, for rollout records and dashboards.

Format 2, documented by the JSON Schema shipped as ``pytest_rigcheck/schemas/report-2.schema.json``
(``schema_path()``). Format 2 adds to format 1 (whose keys it keeps): per rig ``identity`` facts (CUDA,
GPU names and indexes), ``topology``, ``p2p`` (matrices), ``nccl`` (sweeps) and ``served_model``; per
result ``id``, ``check``, a fuller ``target`` (BDF, GPU index, name, path from the root port) and
``cause`` (the id of the check it follows from, ``causes.assign_causes``). ``load_report`` reads both.

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
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .rig import Rig

REPORT_OPTION = "--rig-report"
FORMAT = 2
FORMATS = (1, 2)  # what load_report reads
SCHEMA = "report-2.schema.json"
RESULT_PROPERTY = "rig_result"  # the verdict's fields as JSON (plugin.record_verdict)
_FLAT = ("rig_status", "rig_measured", "rig_expected", "rig_unit", RESULT_PROPERTY)


class RigResults:
    """Collects every rig check's result during the run (on the controller, xdist or not), builds the
    format-2 document once at the end (``doc``), and writes ``--rig-report`` and ``--rig-html`` when asked.

    Registered by the plugin whenever ``--rig`` is on: the terminal summary reads the same ``doc``.
    """

    def __init__(self, config: pytest.Config, path: Path | None = None, html: Path | None = None) -> None:
        self.config = config
        self.path = Path(path) if path else None
        self.html = Path(html) if html else None
        self.results: dict[str, dict[str, Any]] = {}
        self.error: str | None = None
        self.written: list[str] = []
        self.doc: dict[str, Any] | None = None

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

    def build(self, exitstatus: int) -> dict[str, Any]:
        """The format-2 document (built once; causes assigned, targets filled from the topology)."""
        if self.doc is not None:
            self.doc["exit_status"] = int(exitstatus)
            return self.doc
        from . import __version__
        from .causes import assign_causes, check_name
        from .facts import rig_facts
        from .plugin import rig_session
        from .runtime import stopped_by

        rs = rig_session(self.config)
        live = rs.rigs if rs.enabled and rs._rigs is not None else []
        rigs = []
        for rig in live:
            rec = rig_record(rig)
            facts = rig_facts(rig)
            rec["identity"] = facts["identity"]
            rec["topology"] = facts["topology"]
            rec["p2p"] = facts["p2p"]
            rec["nccl"] = facts["nccl"]
            rec["served_model"] = None
            rigs.append(rec)
        multi = len(rigs) > 1
        results = list(self.results.values())
        for r in results:
            r["id"] = r["nodeid"]
            r["check"] = check_name(r["nodeid"])
            r["rig"] = _rig_of(r["nodeid"], rigs, multi)
            if "target" not in r and r["nodeid"].endswith("]"):  # skipped before any verdict: the test id
                param = r["nodeid"].rsplit("[", 1)[1][:-1]
                param = param.removeprefix(f"{r['rig']}:") if multi and r["rig"] else param
                if param != r["rig"]:
                    r["target"] = {"id": param}
        topologies = {str(x["name"]): x["topology"] for x in rigs}
        assign_causes(results, topologies)
        for r in results:
            r.setdefault("cause", None)
            _fill_target(r, topologies.get(str(r.get("rig"))))
        if rigs:
            served = served_model(self.config, results)
            if served is not None:
                rigs[0]["served_model"] = served
        counts: dict[str, int] = {}
        for r in results:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        doc: dict[str, Any] = {
            "format": FORMAT,
            "tool": f"pytest-rigcheck {__version__}",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": socket.gethostname(),  # the node, for `rigcheck merge`
            "rigs": rigs,
            "exit_status": int(exitstatus),
            "counts": counts,
            "results": results,
        }
        if stopped_by():
            doc["stopped_by"] = stopped_by()
        self.doc = doc
        return doc

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        doc = self.build(int(exitstatus))
        errors = []
        if self.path is not None:
            err = _write_atomic(self.path, json.dumps(doc, indent=1, default=str) + "\n")
            if err:
                errors.append(f"rigcheck: could not write the report {self.path}: {err}")
            else:
                self.written.append(f"rigcheck: report written to {self.path}")
        if self.html is not None:
            from .html import render

            err = _write_atomic(self.html, render(doc))
            if err:
                errors.append(f"rigcheck: could not write the HTML page {self.html}: {err}")
            else:
                self.written.append(f"rigcheck: HTML page written to {self.html}")
        self.error = "\n".join(errors) or None

    @pytest.hookimpl
    def pytest_unconfigure(self, config: pytest.Config) -> None:
        # Stopped before the session had started (SIGTERM while the rigs load): pytest then calls no
        # pytest_sessionfinish. The report is still written, saying the run was stopped and nothing ran.
        if self.doc is not None or (self.path is None and self.html is None):
            return
        from .runtime import stopped_by

        if stopped_by():
            import sys

            self.pytest_sessionfinish(None, int(pytest.ExitCode.INTERRUPTED))  # type: ignore[arg-type]
            for line in [*(self.error or "").splitlines(), *self.written]:
                sys.stderr.write(line + "\n")

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.error:
            for line in self.error.splitlines():
                terminalreporter.write_line(line, red=True)
        for line in self.written:
            terminalreporter.write_line(line)


RigReport = RigResults  # the name before format 2


def _write_atomic(path: Path, text: str) -> str | None:
    """Write ``text`` to ``path`` through a temporary file in its folder; the error text, or None."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:  # checked at the start; the folder may have gone since
        tmp.unlink(missing_ok=True)
        return str(exc.strerror or exc)
    return None


def _fill_target(r: dict[str, Any], topo: dict[str, Any] | None) -> None:
    """Add BDF, GPU index, name and the path from the root port to a result's target, from the topology."""
    from .causes import target_id

    tid = target_id(r)
    if not tid or not topo:
        return
    t = r.setdefault("target", {"id": tid})
    nodes, paths = topo.get("nodes") or {}, topo.get("paths") or {}
    bdf = t.get("bdf") or (tid if tid in nodes else None)
    if "->" in tid:
        a, _, b = tid.partition("->")
        t.setdefault("gpus", [nodes.get(x, {}).get("gpu_index") for x in (a, b)])
        return
    if bdf and bdf in nodes:
        n = nodes[bdf]
        t.setdefault("bdf", bdf)
        t.setdefault("name", n.get("name"))
        if n.get("gpu_index") is not None:
            t.setdefault("gpu_index", n["gpu_index"])
        path = paths.get(bdf) or next((p[: p.index(bdf) + 1] for p in paths.values() if bdf in p), None)
        if path:
            t.setdefault("path", path)


def served_model(config: pytest.Config, results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The served model's record (URL or launch command, id, local path, revision, server version, flags,
    ready and stop times), when the vLLM suite had a server to check; unknown fields are None."""
    try:
        from .vllm.plugin import SERVED, SETTINGS_KEY
    except ImportError:
        return None
    s = config.stash.get(SETTINGS_KEY, None)
    if s is None or not getattr(s, "configured", False):
        return None
    props: dict[str, Any] = {}
    for r in results:
        props.update(r.get("properties") or {})
    model = getattr(s, "model", None)
    local = model if model and Path(model).expanduser().is_dir() else None
    return {
        "url": SERVED.get("url") or s.url,
        "launch": SERVED.get("launch") or (None if s.url else s.launch),
        "model": model,
        "id": props.get("served_model_id") or s.served_model_name,
        "local_path": local,
        "revision": props.get("model_revision"),
        "weights_hash": props.get("weights_hash"),
        "server_version": props.get("vllm_version"),
        "flags": list(s.flags),
        "tensor_parallel_size": s.tensor_parallel_size,
        "ready_s": SERVED.get("ready_s"),
        "ready_at": SERVED.get("ready_at"),
        "stopped_at": SERVED.get("stopped_at"),
        "stop_s": SERVED.get("stop_s"),
    }


def schema_path() -> Path:
    """The shipped JSON Schema of report format 2."""
    return Path(__file__).resolve().parent / "schemas" / SCHEMA


REPORT_LIMIT = 64 << 20  # bytes: a report of 8 GPUs with topology and NCCL sweeps is well under 1 MiB


def read_report_json(path: str | Path) -> Any:
    """The JSON document in a report file (``--rig-report``, a fleet node's), read through the one rooted
    reader (``Source("/")``: the path is the user's own, so a symlink there is followed): a FIFO, device
    node, socket or directory is refused by ``lstat`` before any ``open`` (opening a FIFO would block until
    a writer comes); a file above ``REPORT_LIMIT`` is refused, not cut short.

    Raises ``KeyError`` when there is no such file, ``ValueError`` with one line otherwise.
    """
    from .errors import SourceError
    from .source import Source

    try:
        return Source("/").read_json(str(Path(path).absolute()).lstrip("/"), REPORT_LIMIT, finite=True)
    except SourceError as exc:
        raise ValueError(exc.reason) from None


def read_valid_report(path: str | Path) -> dict[str, Any]:
    """A report file read (``read_report_json``) and validated (``validate_report``): the one way ``load_report``
    and ``rigcheck merge`` get a report. Raises ``KeyError`` when there is no such file, ``ValueError`` with
    one line otherwise."""
    doc = read_report_json(path)
    validate_report(doc)
    return doc  # type: ignore[no-any-return]  # an object: validate_report refused anything else


def load_report(path: str | Path) -> dict[str, Any]:
    """Read a ``--rig-report`` file of format 1 or 2 (``rigcheck diff``, ``html.render``); a format-1
    report comes back with the format-2 keys it lacks (``id``, ``check``, ``cause`` per result;
    ``topology``, ``p2p``, ``nccl``, ``served_model`` per rig) set from what it has or ``None``.

    Checked by ``validate_report``, as ``rigcheck merge`` checks each node's. Raises ``ValueError`` with one
    line, starting with the path, saying what is wrong."""
    from .causes import check_name

    try:
        doc = read_valid_report(path)
    except KeyError:
        raise ValueError(f"{path}: cannot read: no such file") from None
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    if not isinstance(doc.get("results"), list) or not isinstance(doc.get("rigs"), list):
        raise ValueError(f"{path}: a rigcheck report needs 'rigs' and 'results' lists")
    for rig in doc["rigs"]:
        if isinstance(rig, dict):
            for key in ("identity", "topology", "p2p", "nccl", "served_model"):
                rig.setdefault(key, None)
    for r in doc["results"]:
        r.setdefault("id", r.get("nodeid"))
        r.setdefault("check", check_name(str(r.get("nodeid", ""))))
        r.setdefault("cause", None)
    return doc


def validate_report(doc: Any) -> None:
    """Refuse a document that is not a usable rigcheck report. The one home of these checks: ``load_report``
    (``rigcheck diff``, ``html.render``) and ``fleet.merge.load_report`` (``rigcheck merge``) call it.

    Refused (``ValueError``, one line): not an object with a ``format`` this version reads (``FORMATS``);
    no list of results (``results``, or ``checks`` as older ``multinode collect`` wrote); a value that
    contradicts the shipped schema (``contradiction``); and a report in which nothing was checked.

    Nothing was checked: no result is judged (pass, warn, fail or unreadable), because there are none or
    all do not apply (``n/a``). Such a report is no evidence that the rig is right, so it is UNREADABLE
    ("nothing was checked"), never a pass (a pass needs evidence), and ``rigcheck diff`` would otherwise
    compare nothing and say "no changes".
    """
    if not isinstance(doc, dict) or "format" not in doc:
        raise ValueError("not a rigcheck report (no 'format')")
    if doc["format"] not in FORMATS:
        raise ValueError(
            f"not a rigcheck report this version reads (format {_show(doc['format'])}; reads {FORMATS})"
        )
    results = doc.get("results", doc.get("checks"))
    if not isinstance(results, list):
        raise ValueError("no list of results")
    bad = contradiction(doc)
    if bad:
        raise ValueError(f"corrupt report: {bad} ({SCHEMA_NAME})")
    if not any(r["status"] in JUDGED for r in results):
        n = len(results)
        raise ValueError(
            "nothing was checked: "
            + (f"all {n} results are n/a (none applied)" if n else "the report has no results")
            + "; no evidence is not a pass"
        )


JUDGED = ("pass", "warn", "fail", "unreadable")  # the statuses that are a judgement (n/a is not)
# The statuses each pytest outcome allows (``_status``): a pass whose test failed is a contradiction.
_OUTCOME_STATUSES = {
    "passed": ("pass", "warn"),
    "failed": ("fail", "unreadable"),
    "error": ("fail", "unreadable"),
    "skipped": ("n/a",),
}


# -- what a report must be to be read: the shipped schema, and no contradiction --------------------------

SCHEMA_NAME = "pytest_rigcheck/schemas/report-2.schema.json"
_SCHEMA: dict[str, Any] = {}


def _schema() -> dict[str, Any]:
    if not _SCHEMA:
        _SCHEMA.update(json.loads(schema_path().read_text(encoding="utf-8")))
    return _SCHEMA


def contradiction(doc: dict[str, Any]) -> str | None:
    """The first value of a report that contradicts the shipped report schema, in one line; ``None`` if
    none does.

    Every result must be an object with a ``status`` of the schema's five (pass, warn, fail, unreadable,
    n/a) and an ``id`` or ``nodeid``: a status merge does not know must never be counted as a pass or a
    fail. A format-2 report is then validated against ``report-2.schema.json`` with ``jsonschema``, every
    key's type, enum, pattern and minimum, except the schema's ``required`` lists (keys merge does not
    need may be absent; unknown keys are ignored). Format 1 (older reports, ``multinode collect``) has no
    schema of its own: only the status and id are checked there. Then, in either format, what no report
    written by rigcheck can say (``_inconsistency``).
    """
    statuses = _schema()["$defs"]["status"]["enum"]
    results = doc.get("results", doc.get("checks")) or []
    for i, r in enumerate(results, 1):
        if not isinstance(r, dict):
            return f"result #{i} is {_json_type(r)}, not an object"
        rid = r.get("id", r.get("nodeid"))
        name = f"result #{i} ({rid})" if isinstance(rid, str) and rid else f"result #{i}"
        if "status" not in r:
            return f"{name}: no 'status' (one of {', '.join(statuses)})"
        if r["status"] not in statuses:
            return f"{name}: status {_show(r['status'])} is not one of {', '.join(statuses)}"
        if not isinstance(rid, str) or not rid:
            return f"{name}: no 'id' or 'nodeid' naming the check"
    errors = sorted(_validator().iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])
    if doc.get("format") != 2 or not errors:
        return _inconsistency(doc, results)
    e = errors[0]
    path = list(e.absolute_path)
    if len(path) >= 2 and path[0] == "results" and isinstance(path[1], int):
        r = results[path[1]]
        where = f"result #{path[1] + 1} ({r.get('id', r.get('nodeid'))})"
        rest = ".".join(str(p) for p in path[2:])
        return f"{where}: {rest + ' ' if rest else ''}{_show(e.instance)}: {e.message}"
    return f"{'.'.join(str(p) for p in path) or 'the report'}: {e.message}"


def _inconsistency(doc: dict[str, Any], results: list[dict[str, Any]]) -> str | None:
    """A report that contradicts itself, in one line; ``None`` if it does not. A report written by
    ``RigResults.build`` cannot say any of these, so one that does was edited or cut and is corrupt:

    - a result whose ``status`` contradicts its pytest ``outcome`` (``_status``: passed -> pass or warn,
      failed or error -> fail or unreadable, skipped -> n/a), such as a pass whose test failed;
    - a pass or warn whose message says the check could not be judged (``availability.UNREADABLE_PREFIX``,
      "UNREADABLE, not a pass: ...");
    - ``counts`` that disagree with the statuses of its results (41 pass counted, no result listed).
    """
    from .availability import UNREADABLE_PREFIX

    for i, r in enumerate(results, 1):
        name = f"result #{i} ({r.get('id', r.get('nodeid'))})"
        status, outcome = r["status"], r.get("outcome")
        if outcome is not None and status not in _OUTCOME_STATUSES.get(outcome, (status,)):
            return f"{name}: status {_show(status)} contradicts its outcome {_show(outcome)}"
        msg = r.get("message")
        if status in ("pass", "warn") and isinstance(msg, str) and msg.startswith(UNREADABLE_PREFIX.strip()):
            return f"{name}: status {_show(status)} but its message says {_show(msg)}"
    counts = doc.get("counts")
    if counts is not None:
        tally: dict[str, int] = {}
        for r in results:
            tally[r["status"]] = tally.get(r["status"], 0) + 1
        given = {k: v for k, v in counts.items() if v} if isinstance(counts, dict) else counts
        if given != tally:
            return (
                f"counts {_show(counts)} disagree with its {len(results)} results "
                f"({_show(tally) if tally else 'none'})"
            )
    return None


_VALIDATOR: list[Any] = []


def _validator() -> Any:
    """A ``jsonschema`` validator of the shipped report schema without its ``required`` lists (once)."""
    if not _VALIDATOR:
        import jsonschema

        def lenient(node: Any) -> Any:
            if isinstance(node, dict):
                return {k: lenient(v) for k, v in node.items() if k != "required"}
            return [lenient(v) for v in node] if isinstance(node, list) else node

        _VALIDATOR.append(jsonschema.Draft202012Validator(lenient(_schema())))
    return _VALIDATOR[0]


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    return {dict: "an object", list: "an array", str: "a string", int: "an integer", float: "a number"}.get(
        type(v), type(v).__name__
    )


def _show(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def driver_and_kernel(rig: Rig) -> tuple[str, str]:
    """The NVIDIA driver and kernel versions: the snapshot's manifest, else read live (empty when unknown)."""
    m = rig.manifest
    if m is not None:
        return m.driver, m.kernel
    driver = (rig.source.read_optional("sys/module/nvidia/version") or "").strip()
    version = (rig.source.read_optional("proc/version") or "").split()
    return driver, version[2] if len(version) > 2 else ""


def rig_record(rig: Rig) -> dict[str, Any]:
    """One rig as the report records it: name, source (``live`` or the snapshot path), kind, GPUs, driver,
    kernel and profile."""
    m = rig.manifest
    driver, kernel = driver_and_kernel(rig)
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
