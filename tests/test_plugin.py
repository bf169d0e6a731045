"""The plugin's wiring: options, header, collection only under --rig, fixtures, errors, import cost."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pytest_rigcheck.plugin import (
    FEATURE_FIXTURES,
    FEATURE_PLUGINS,
    PROFILE_OPTION,
    RIG_OPTION,
    SNAPSHOT_OPTION,
)

from .conftest import SNAPSHOTS

GOOD = SNAPSHOTS / "rtxpro6000x4-switch"


def test_help(pytester: pytest.Pytester) -> None:
    """--help lists the rigcheck group and its options and ini keys."""
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(
        [
            "*multi-GPU rig checks*",
            f"*{RIG_OPTION} *",
            f"*{SNAPSHOT_OPTION}=PATH*",
            f"*{PROFILE_OPTION}=FILE|PRESET*",
            "*rig_profile (string)*",
        ]
    )


def test_without_rig_nothing_runs(pytester: pytest.Pytester) -> None:
    """Without --rig the user's tests run and no suite is collected, no header line."""
    pytester.makepyfile("def test_mine(): pass")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "rigcheck:" not in result.stdout.str()


def test_user_test_with_rig_fixture_skips_without_rig(pytester: pytest.Pytester) -> None:
    """A user's test taking a rig target skips, saying it needs --rig."""
    pytester.makepyfile("def test_mine(rig_gpu): pass")
    result = pytester.runpytest("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*needs --rig or --rig-snapshot*"])


def test_header_names_rig(pytester: pytest.Pytester) -> None:
    """The header names the snapshot, its kind, kernel and profile."""
    result = pytester.runpytest(f"--rig-snapshot={GOOD}", "--collect-only")
    result.stdout.fnmatch_lines(
        ["rigcheck: snapshot rtxpro6000x4-switch [[]modelled] (kernel *), 4 GPUs, profile preset *"]
    )


def test_user_tests_beside_suites(pytester: pytest.Pytester) -> None:
    """With paths, the user's own rig tests run beside the shipped suites."""
    pytester.makepyfile(test_mine="def test_mine(rig_gpu):\n    assert rig_gpu.gpu.vendor == 0x10de\n")
    result = pytester.runpytest(
        f"--rig-snapshot={GOOD}", "test_mine.py", "-v", "-p", "no:cacheprovider", "-k", "mine or acs"
    )
    result.stdout.fnmatch_lines(
        ["*test_mine.py::test_mine[[]0000:03:00.0] PASSED*", "*test_acs_redirect_off*PASSED*"]
    )
    assert result.parseoutcomes()["passed"] == 4 + 5


def test_fixtures_documented(pytester: pytest.Pytester) -> None:
    """pytest --fixtures documents every rig fixture."""
    result = pytester.runpytest("--fixtures")
    out = result.stdout.str()
    for name in (
        "rig_rigs",
        "rig ",
        "rig_pcie",
        "rig_profile",
        "rig_gpu",
        "rig_gpu_pair",
        "rig_bridge",
        "rig_link",
        "rig_lane_group",
        "rig_check",
        *FEATURE_FIXTURES,
    ):
        assert f"{name}" in out, name
    assert "no docstring available" not in out.split("fixtures defined from pytest_rigcheck")[-1]


def test_feature_fixtures_listed() -> None:
    """FEATURE_FIXTURES (what a run without --rig skips on) is exactly the feature plugins' fixtures."""
    import importlib

    from _pytest.fixtures import FixtureFunctionDefinition

    found = set()
    for name in FEATURE_PLUGINS:
        module = importlib.import_module(name)
        found |= {n for n, v in vars(module).items() if isinstance(v, FixtureFunctionDefinition)}
    assert found == set(FEATURE_FIXTURES)


def test_feature_fixture_without_rig_skips(pytester: pytest.Pytester) -> None:
    """A user's test asking for a feature plugin's fixture (not registered without --rig) is skipped with
    the reason, directly or through a fixture of its own, as one asking for a core fixture is."""
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture
        def my_gpus(rig_gpus):
            return rig_gpus
        """
    )
    pytester.makepyfile(
        test_mine="""
        def test_direct(rig_p2p):
            pass

        def test_through_mine(my_gpus):
            pass

        def test_core(rig_gpu):
            pass

        def test_plain():
            pass
        """
    )
    result = pytester.runpytest("-rs", "-p", "no:cacheprovider")
    assert result.parseoutcomes() == {"passed": 1, "skipped": 3}, result.stdout.str()
    result.stdout.fnmatch_lines(["*needs --rig or --rig-snapshot*"])


def test_run_without_rig_loads_only_the_entry_point(pytester: pytest.Pytester) -> None:
    """Without --rig a pytest run imports the entry point and the options table, and registers no
    per-test hook of rigcheck: nothing else is imported (issue 8: plugin import <= 5 ms)."""
    pytester.makeconftest(
        """
        import sys

        def pytest_sessionfinish(session):
            mods = sorted(m for m in sys.modules if m.startswith("pytest_rigcheck"))
            names = sorted(n for n, _ in session.config.pluginmanager.list_name_plugin() if "rigcheck" in str(n))
            print("MODULES", mods)
            print("PLUGINS", names)
        """
    )
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(
        [
            "*MODULES [[]'pytest_rigcheck', 'pytest_rigcheck.options', 'pytest_rigcheck.plugin'[]]",
            "PLUGINS ['rigcheck']",
        ]
    )


def test_bad_profile_is_usage_error(pytester: pytest.Pytester, tmp_path) -> None:
    """A bad profile value stops the run with exit 4, naming key, value and allowed values."""
    bad = tmp_path / "rig.toml"
    bad.write_text("[links]\ngen = 9\n")
    result = pytester.runpytest(f"--rig-snapshot={GOOD}", f"--rig-profile={bad}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--rig-profile*invalid value 9 for 'links.gen'*whole number from 1 to 6*"])


def test_corrupt_snapshot_is_usage_error(pytester: pytest.Pytester, tmp_path) -> None:
    """A corrupt snapshot stops the run with a clear error and nothing runs."""
    (tmp_path / "junk.tar.gz").write_bytes(b"not an archive")
    result = pytester.runpytest(f"--rig-snapshot={tmp_path / 'junk.tar.gz'}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*junk.tar.gz*neither a directory nor a tar archive*"])


def test_profile_overrides_manifest(pytester: pytest.Pytester) -> None:
    """A CLI profile wins over the snapshot's own: a Gen5 expectation fails the Gen4 switch rig."""
    result = pytester.runpytest(
        f"--rig-snapshot={GOOD}",
        f"{PROFILE_OPTION}=8x-h100-nvlink",
        "-q",
        "-p",
        "no:cacheprovider",
        "-k",
        "link or count",
    )
    result.stdout.fnmatch_lines(["*4 GPU(s) on the PCIe bus, expected 8*", "*at most Gen4, expected Gen5*"])


def test_env_profile(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """RIGCHECK_PROFILE is honoured below the command line."""
    monkeypatch.setenv("RIGCHECK_PROFILE", "8x-h100-nvlink")
    result = pytester.runpytest(f"--rig-snapshot={GOOD}", "-q", "-p", "no:cacheprovider", "-k", "count")
    result.stdout.fnmatch_lines(["*expected 8*"])


def test_import_is_light() -> None:
    """Loading the plugin imports no heavy module and no hardware code."""
    code = (
        "import sys, pytest_rigcheck.plugin; "
        "bad=[m for m in ('torch','pynvml','pyudev','hypothesis','numpy','pytest_rigcheck.tree') if m in sys.modules]; "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("count", [1, 2])
def test_live_only_reason_same_for_any_number_of_snapshots(pytester: pytest.Pytester, count: int) -> None:
    """gate D29: the vLLM checks (live-only) skip with one reason with one snapshot or several."""
    snaps = [f"--rig-snapshot={GOOD}", f"--rig-snapshot={SNAPSHOTS / 'rtx3090x2-gen4'}"][:count]
    result = pytester.runpytest(*snaps, "-rs", "-p", "no:cacheprovider", "-k", "vllm_e2e")
    skips = [line for line in result.stdout.lines if line.startswith("SKIPPED")]
    assert len(skips) == 1, skips
    assert "live-only check: this run replays snapshots, not the live machine" in skips[0]
