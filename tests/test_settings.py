"""The one setting resolver: command line > RIGCHECK_* environment > ini, validated before collection.

Bad values come from gate.md D13 (``--rig-load-seconds=-1``, ``--rig-p2p-timeout=0``: 27 tracebacks and
exit 1 before) and D22 (the ini ``rig_profile`` taken from the working folder, not the ini's).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_rigcheck.options import SETTINGS

from .conftest import SNAPSHOTS

GOOD = SNAPSHOTS / "rtx3090x2-gen4"


def _usage_error(result: pytest.RunResult) -> list[str]:
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    lines = [line for line in result.stderr.lines if line.strip()]
    assert "Traceback" not in result.stderr.str() and "passed" not in result.stdout.str()
    return lines


@pytest.mark.parametrize(
    ("args", "env", "ini", "line"),
    [
        (
            ["--rig-load-seconds=-1"],
            {},
            "",
            "ERROR: --rig-load-seconds: invalid value '-1': a number of seconds from 0.5 to 120, e.g. 3",
        ),
        (
            ["--rig-p2p-timeout=0"],
            {},
            "",
            "ERROR: --rig-p2p-timeout: invalid value '0': a number of seconds from 1 to 3600, e.g. 120",
        ),
        (
            [],
            {"RIGCHECK_LOAD_SECONDS": "abc"},
            "",
            "ERROR: RIGCHECK_LOAD_SECONDS: invalid value 'abc': *0.5 to 120*",
        ),
        (
            [],
            {"RIGCHECK_P2P_TIMEOUT": "inf"},
            "",
            "ERROR: RIGCHECK_P2P_TIMEOUT: invalid value 'inf': *1 to 3600*",
        ),
        ([], {}, "rig_load_seconds = 500", "ERROR: ini rig_load_seconds: invalid value '500': *0.5 to 120*"),
        (
            ["--rig-vllm-ready-timeout=0"],
            {},
            "",
            "ERROR: --rig-vllm-ready-timeout: invalid value '0': a number of seconds from 1 to 86400*",
        ),
        ([], {"RIGCHECK_VLLM_URL": "ftp://x"}, "", "ERROR: RIGCHECK_VLLM_URL: invalid value 'ftp://x': *"),
        ([], {"RIGCHECK_RIG": "maybe"}, "", "ERROR: RIGCHECK_RIG: invalid value 'maybe': 1, true or yes*"),
        (
            ["--rig-vllm-api-key-env=not a name"],
            {},
            "",
            "ERROR: --rig-vllm-api-key-env: invalid value 'not a name': the name of an environment variable*",
        ),
        # fresh-user findings: checked at the start, not when the workers or the soak need them
        (
            ["--rig-p2p-python=/nonexistent/python3"],
            {},
            "",
            "ERROR: --rig-p2p-python: invalid value '/nonexistent/python3': *is not a file",
        ),
        (
            [],
            {"RIGCHECK_P2P_PYTHON": "no-such-python-here"},
            "",
            "ERROR: RIGCHECK_P2P_PYTHON: invalid value 'no-such-python-here': *no 'no-such-python-here' is on PATH",
        ),
        (
            ["--rig-soak-save=/"],
            {},
            "",
            "ERROR: --rig-soak-save: invalid value '/': a file path, but this is a directory*",
        ),
        (
            ["--rig-soak-save=/nonexistent/soak.json"],
            {},
            "",
            "ERROR: --rig-soak-save: invalid value '/nonexistent/soak.json': *does not exist (create it first)",
        ),
        (
            ["--rig-soak=5x"],
            {},
            "",
            "ERROR: --rig-soak: invalid value '5x': seconds or a length such as 600*",
        ),
        (
            ["--rig-model-dir=/nonexistent"],
            {},
            "",
            "ERROR: --rig-model-dir: invalid value '/nonexistent': a directory*",
        ),
        (
            ["--rig-prometheus=x.txt"],
            {},
            "",
            "ERROR: --rig-prometheus: invalid value 'x.txt': a file ending in .prom*",
        ),
        (
            [],
            {"RIGCHECK_BRIEF": "perhaps"},
            "",
            "ERROR: RIGCHECK_BRIEF: invalid value 'perhaps': 1, true or yes*",
        ),
    ],
)
def test_bad_value_is_one_usage_error(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    env: dict[str, str],
    ini: str,
    line: str,
) -> None:
    """One line naming the value, where it came from and what is allowed; exit 4; no check runs."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    if ini:
        pytester.makeini(f"[pytest]\n{ini}\n")
    result = pytester.runpytest_subprocess(f"--rig-snapshot={GOOD}", "-p", "no:cacheprovider", *args)
    lines = _usage_error(result)
    assert len(lines) == 1, lines
    result.stderr.fnmatch_lines([line])


def test_all_bad_values_in_one_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(
        f"--rig-snapshot={GOOD}", "--rig-load-seconds=-1", "--rig-p2p-timeout=0"
    )
    lines = _usage_error(result)
    assert len(lines) == 2 and "--rig-load-seconds" in lines[0] and "--rig-p2p-timeout" in lines[1]


def test_precedence_and_source(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """Command line > environment > ini > default, and each value knows where it came from."""
    pytester.makeini("[pytest]\nrig_load_seconds = 7\nrig_p2p_timeout = 30\n")
    pytester.makeconftest(
        """
        from pytest_rigcheck.options import SETTINGS, resolve

        def pytest_sessionstart(session):
            for opt in ("--rig-load-seconds", "--rig-p2p-timeout", "--rig-vllm-ready-timeout"):
                r = resolve(session.config, SETTINGS[opt])
                print(f"SETTING {opt}={r.value} from {r.where}")
        """
    )
    monkeypatch.setenv("RIGCHECK_LOAD_SECONDS", "5")
    monkeypatch.setenv("RIGCHECK_P2P_TIMEOUT", "60")
    result = pytester.runpytest_subprocess(  # live (collect only): load seconds is a live-run setting
        "--rig", "--rig-load-seconds=2", "-s", "--collect-only", "-q"
    )
    result.stdout.fnmatch_lines(
        [
            "SETTING --rig-load-seconds=2.0 from --rig-load-seconds",
            "SETTING --rig-p2p-timeout=60.0 from RIGCHECK_P2P_TIMEOUT",
            "SETTING --rig-vllm-ready-timeout=None from default",
        ]
    )
    monkeypatch.delenv("RIGCHECK_P2P_TIMEOUT")
    result = pytester.runpytest_subprocess(f"--rig-snapshot={GOOD}", "-s", "--collect-only", "-q")
    result.stdout.fnmatch_lines(
        [
            "SETTING --rig-load-seconds=5.0 from RIGCHECK_LOAD_SECONDS",
            "SETTING --rig-p2p-timeout=30.0 from ini rig_p2p_timeout",
        ]
    )


def test_every_setting_has_env_and_ini() -> None:
    """Each setting of each plugin is in the one table, with a RIGCHECK_* variable and a rig_* ini key."""
    assert {
        "--rig",
        "--rig-snapshot",
        "--rig-profile",
        "--rig-report",
        "--rig-html",
        "--rig-brief",
        "--rig-prometheus",
        "--rig-load-seconds",
        "--rig-p2p-timeout",
        "--rig-p2p-python",
        "--rig-vllm-url",
        "--rig-vllm-api-key-env",
        "--rig-vllm-launch",
        "--rig-vllm-ready-timeout",
        "--rig-vllm-gpu-memory",
        "--rig-soak",
        "--rig-soak-save",
        "--rig-model-dir",
    } == set(SETTINGS)
    for option, s in SETTINGS.items():
        assert s.env == "RIGCHECK_" + option.removeprefix("--rig-").removeprefix("--").upper().replace(
            "-", "_"
        )
        assert s.ini == option.lstrip("-").replace("-", "_")


def test_no_option_outside_the_table(pytester: pytest.Pytester) -> None:
    """Every rigcheck option pytest knows comes from the one table (no plugin adds its own)."""
    pytester.makeconftest(
        """
        def pytest_configure(config):
            group = config._parser.getgroup("rigcheck")
            print("OPTIONS", sorted(name for o in group.options for name in o.names()))
        """
    )
    result = pytester.runpytest_subprocess("-s", "--co", "-q", f"--rig-snapshot={GOOD}")
    line = next(x for x in result.stdout.lines if x.startswith("OPTIONS"))
    assert line == "OPTIONS " + str(sorted(SETTINGS)), line


def test_ini_profile_from_ini_folder(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """gate D22: ``rig_profile = myprof.toml`` in pytest.ini is found when pytest runs from a subfolder."""
    (pytester.path / "myprof.toml").write_text('[rig]\nname = "mine"\ngpus = 2\n')
    pytester.makeini(f"[pytest]\nrig_snapshot = {GOOD}\nrig_profile = myprof.toml\n")
    monkeypatch.chdir(pytester.mkdir("sub"))
    result = pytester.runpytest_subprocess("--collect-only", "-p", "no:cacheprovider")
    assert result.ret == 0, result.stderr.str()
    result.stdout.fnmatch_lines(["rigcheck: *profile*myprof.toml*"])


def test_ini_preset_name_stays_a_name(pytester: pytest.Pytester) -> None:
    """A preset name in the ini is not turned into a path."""
    pytester.makeini(f"[pytest]\nrig_snapshot = {GOOD}\nrig_profile = 2x-rtx3090-gen4\n")
    result = pytester.runpytest_subprocess("--collect-only", "-p", "no:cacheprovider")
    assert result.ret == 0, result.stderr.str()
    result.stdout.fnmatch_lines(["rigcheck: *preset 2x-rtx3090-gen4*"])


def test_empty_values_are_usage_errors(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--rig-report=` or `RIGCHECK_REPORT=` (an unset CI variable expanded to nothing) stops the run with one
    line instead of silently writing no report (a new user's finding)."""
    snap = str(SNAPSHOTS / "rtx3090x2-gen4")
    result = pytester.runpytest_subprocess(f"--rig-snapshot={snap}", "--rig-report=")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--rig-report: empty value" in result.stderr.str()
    monkeypatch.setenv("RIGCHECK_REPORT", "")
    result = pytester.runpytest_subprocess(f"--rig-snapshot={snap}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "RIGCHECK_REPORT: empty value" in result.stderr.str()


def test_profile_not_toml_says_so(pytester: pytest.Pytester) -> None:
    """A profile that is not TOML says "not valid TOML" without an invented key (gate.md D24's wording)."""
    snap = str(SNAPSHOTS / "rtx3090x2-gen4")
    bad = pytester.path / "bad.toml"
    bad.write_text("this is not toml\n")
    result = pytester.runpytest_subprocess(f"--rig-snapshot={snap}", f"--rig-profile={bad}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "not valid TOML" in err and "'(file)'" not in err


@pytest.mark.parametrize(
    ("env", "ini", "line"),
    [
        (
            {"RIGCHECK_LOAD_SECOND": "5"},
            "",
            "ERROR: RIGCHECK_LOAD_SECOND: no such setting (did you mean RIGCHECK_LOAD_SECONDS?): rename or unset it",
        ),
        (
            {},
            "rig_load_second = 5",
            "ERROR: ini rig_load_second in *: no such rigcheck setting (did you mean rig_load_seconds?)",
        ),
        (
            {},
            "rig_colour = red",
            "ERROR: ini rig_colour in *: no such rigcheck setting (the rigcheck ini keys: rig, *",
        ),
    ],
)
def test_setting_under_a_wrong_name(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], ini: str, line: str
) -> None:
    """A typo'd variable or ini key is a usage error in a rig run (exit 4), not a default silently kept."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    if ini:
        pytester.makeini(f"[pytest]\n{ini}\n")
    result = pytester.runpytest_subprocess(f"--rig-snapshot={GOOD}", "-p", "no:cacheprovider")
    lines = _usage_error(result)
    assert len(lines) == 1, lines
    result.stderr.fnmatch_lines([line])


def test_unrelated_rigcheck_variable_left_alone(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A RIGCHECK_* variable of the user's own scripts, close to no setting, does not stop the run."""
    monkeypatch.setenv("RIGCHECK_SITE_NAME", "rack 12")
    monkeypatch.setenv("RIGCHECK_HC_TIMEOUT", "900")  # the Slurm health-check wrapper's own variable
    result = pytester.runpytest_subprocess(
        f"--rig-snapshot={GOOD}", "-p", "no:cacheprovider", "-k", "gpu_count"
    )
    assert result.ret == 0, result.stderr.str()


@pytest.mark.parametrize(
    ("ini", "line"),
    [
        ("rig_report =", "ERROR: ini rig_report in *: empty value: give a value, or remove the line"),
        ("rig_load_seconds =", "ERROR: ini rig_load_seconds in *: empty value*"),
        ("rig_snapshot =\nrig = true", "ERROR: ini rig_snapshot in *: empty value*"),
        ("rig = maybe", "ERROR: ini rig in *: *'maybe'*: true or false (1/0, yes/no)"),
    ],
)
def test_empty_or_bad_ini_value(pytester: pytest.Pytester, ini: str, line: str) -> None:
    """Fresh-user finding: `rig_report =` and the like were silently "not given" (an empty RIGCHECK_*
    variable was already a usage error), and `rig = maybe` said only "invalid truth value 'maybe'"."""
    pytester.makeini(f"[pytest]\n{ini}\n")
    args = [] if "rig_snapshot" in ini else ["--rig-snapshot=" + str(GOOD)]
    result = pytester.runpytest_subprocess(*args, "-p", "no:cacheprovider")
    lines = _usage_error(result)
    assert len(lines) == 1, lines
    result.stderr.fnmatch_lines([line])


def test_ini_snapshot_by_name_and_by_path(pytester: pytest.Pytester) -> None:
    """Fresh-user finding: `rig_snapshot = rtx3090x2-gen4` in the ini was taken as a path in the ini's folder
    ("no such snapshot ... not a shipped snapshot: ..., rtx3090x2-gen4, ..."): a shipped name stays a name,
    a relative path is taken from the ini's folder, several on a line or one per line."""
    import shutil

    shutil.copytree(SNAPSHOTS / "rtx3090x2-gen4", pytester.path / "snaps" / "mine", symlinks=True)
    pytester.makeini("[pytest]\nrig_snapshot = snaps/mine rtxpro6000x4-switch\n")
    sub = pytester.mkdir("sub")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", "--co", str(sub / ".."))
    assert result.ret == 0, result.stderr.str()
    out = result.stdout.str()
    assert "rtx3090x2-gen4" in out and "rtxpro6000x4-switch" in out, out


def test_two_outputs_on_one_file(pytester: pytest.Pytester) -> None:
    """Fresh-user finding: --rig-report and --junitxml on the same path overwrote each other silently."""
    result = pytester.runpytest_subprocess(
        f"--rig-snapshot={GOOD}", "-p", "no:cacheprovider", "--rig-report=out.xml", "--junitxml=out.xml"
    )
    lines = _usage_error(result)
    assert len(lines) == 1, lines
    result.stderr.fnmatch_lines(
        ["ERROR: --junitxml: out.xml is also given to --rig-report: one would overwrite*"]
    )


def test_live_only_setting_on_a_replay(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """A live-measurement option given beside --rig-snapshot is a usage error (the run would silently not
    do it: FRESH3 --rig-soak / --rig-model-dir / --rig-vllm-url on a replay exited 0); from a variable or
    the ini file (shared by live and replay jobs) the header says it is not used."""
    result = pytester.runpytest_subprocess(
        f"--rig-snapshot={GOOD}", "--rig-soak=60", "--rig-vllm-url=http://127.0.0.1:1", "--rig-model-dir=."
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    for opt in ("--rig-soak", "--rig-vllm-url", "--rig-model-dir"):
        assert f"{opt}: applies to a live run" in err, err
    assert "Traceback" not in err
    monkeypatch.setenv("RIGCHECK_SOAK", "60")
    result = pytester.runpytest_subprocess(f"--rig-snapshot={GOOD}", "--collect-only")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["rigcheck: RIGCHECK_SOAK (--rig-soak) applies to live runs only: not used*"])


def test_output_inside_the_replayed_snapshot_is_refused(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """FRESH4: --rig-report pointed at the snapshot's own nvml.json overwrote it (exit 0; the next replay had
    no NVML state). Any output inside a replayed snapshot is a usage error, and the file is left alone."""
    import shutil

    snap = tmp_path / "snap"
    shutil.copytree(GOOD, snap, symlinks=True)
    before = (snap / "nvml.json").read_bytes()
    result = pytester.runpytest_subprocess(f"--rig-snapshot={snap}", f"--rig-report={snap / 'nvml.json'}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "is inside the snapshot this run replays" in result.stderr.str()
    assert (snap / "nvml.json").read_bytes() == before


def test_snapshot_variable_of_separators_only(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FRESH4: RIGCHECK_SNAPSHOT='::' ran no rig check and collected the folder (exit 5): a usage error."""
    monkeypatch.setenv("RIGCHECK_SNAPSHOT", "::")
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "RIGCHECK_SNAPSHOT='::': only separators" in result.stderr.str()
