"""The status line of long phases (issue 10 #4): one line per phase in a log, none under -q."""

from __future__ import annotations

import pytest

from pytest_rigcheck.progress import format_status, no_progress

PHASES = """
import time

from pytest_rigcheck.progress import progress_for


def test_phases(pytestconfig):
    with progress_for(pytestconfig) as progress:
        for what in ("GPU load on 2 GPUs (5 s window)", "P2P copies, 2 GPU pairs and host links"):
            for t in range(20):
                progress(what, t * 0.5, 120)
"""


def test_one_line_per_phase_in_a_log(pytester: pytest.Pytester) -> None:
    """Not a terminal (a CI log): each phase once, with its deadline; every poll after that is silent."""
    pytester.makepyfile(PHASES)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s")
    result.assert_outcomes(passed=1)
    lines = [x for x in result.stdout.lines if "rigcheck:" in x]
    assert lines == [
        "rigcheck: GPU load on 2 GPUs (5 s window), 0 s (deadline 120 s)",
        "rigcheck: P2P copies, 2 GPU pairs and host links, 0 s (deadline 120 s)",
    ], result.stdout.str()


def test_quiet_under_q(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(PHASES)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=1)
    assert "rigcheck:" not in result.stdout.str()


class _Tr:
    def __init__(self) -> None:
        self.out: list[tuple[str, str]] = []
        self._tw = type("tw", (), {"fullwidth": 40})()

    def isatty(self) -> bool:
        return True

    def rewrite(self, line: str, erase: bool = False) -> None:
        self.out.append(("rewrite", line))

    def write(self, text: str) -> None:
        self.out.append(("write", text))

    def write_line(self, line: str) -> None:
        self.out.append(("line", line))

    def ensure_newline(self) -> None:
        pass


def test_rewritten_in_place_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """A terminal: the line is rewritten (cut to the width), throttled, and erased when the phase ends;
    ``CI`` set makes it a log even on a terminal."""
    from pytest_rigcheck.progress import StatusLine, status_line

    tr = _Tr()
    line = StatusLine(tr, None, tty=True)
    line("vLLM start-up and readiness (GET /health)", 3, 900)
    line("vLLM start-up and readiness (GET /health)", 3.1, 900)  # within TTY_EVERY_S: not redrawn
    line.close()
    kinds = [k for k, _ in tr.out]
    assert kinds == ["write", "rewrite", "rewrite", "write"]
    assert tr.out[1][1] == "rigcheck: vLLM start-up and readiness (GET /he"[:39]
    monkeypatch.setenv("CI", "true")
    config = type(
        "C",
        (),
        {
            "pluginmanager": type(
                "P", (), {"get_plugin": staticmethod(lambda n: tr if n == "terminalreporter" else None)}
            )(),
            "get_verbosity": staticmethod(lambda: 0),
        },
    )()
    s = status_line(config)  # type: ignore[arg-type]
    assert s is not None and not s.tty


def test_default_callback_and_text() -> None:
    assert no_progress("x", 1.0, 2.0) is None
    assert format_status("NCCL all-reduce sweep, 1 group", 12.4, 120) == (
        "rigcheck: NCCL all-reduce sweep, 1 group, 12 s (deadline 120 s)"
    )
    assert format_status("soak", 5, None, "GPU0 70 C") == "rigcheck: soak, 5 s  GPU0 70 C"


def test_launcher_tells_progress_each_phase(tmp_path) -> None:
    """``Launcher.run_phase`` tells the callback the phase's label, elapsed seconds and deadline."""
    import sys

    from pytest_rigcheck.p2p.launch import Launcher, Worker

    seen: list[tuple[str, float, float | None]] = []
    code = (
        "import pathlib,sys,time; d=pathlib.Path(sys.argv[1]); (d/'ready.w').touch();"
        "[time.sleep(0.01) for _ in iter(lambda: (d/'go.p').exists(), True)];"
        "(d/'result.w.json').write_text('{}')"
    )
    with Launcher(tmp_path, 30, progress=lambda w, e, d: seen.append((w, e, d))) as launcher:
        launcher.start([Worker("w", "p", [sys.executable, "-c", code, str(tmp_path)], {})])
        out = launcher.run_phase("p", label="P2P copies, 1 GPU pair and host links")
    assert out.ok, out
    assert seen and {w for w, _, _ in seen} == {"P2P copies, 1 GPU pair and host links"}
    assert seen[0][2] == 30 and all(e >= 0 for _, e, _ in seen)


def test_launcher_passes_the_workers_step(tmp_path) -> None:
    """A worker's ``step.<name>`` file (the pair it measures now) reaches the status line as its detail."""
    import sys

    from pytest_rigcheck.p2p.launch import Launcher, Worker

    seen: list[str] = []
    code = (
        "import pathlib,sys,time; d=pathlib.Path(sys.argv[1]); (d/'ready.w').touch();"
        "[time.sleep(0.01) for _ in iter(lambda: (d/'go.p').exists(), True)];"
        "(d/'step.w').write_text('pair 03:00.0->04:00.0 (unidir)'); time.sleep(1.2);"
        "(d/'result.w.json').write_text('{}')"
    )

    def progress(what: str, elapsed: float, deadline: float | None, detail: str = "") -> None:
        seen.append(detail)

    with Launcher(tmp_path, 30, progress=progress) as launcher:
        launcher.start([Worker("w", "p", [sys.executable, "-c", code, str(tmp_path)], {})])
        assert launcher.run_phase("p", label="P2P copies").ok
    assert "pair 03:00.0->04:00.0 (unidir)" in seen
