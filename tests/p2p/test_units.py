"""Pure parts of the P2P/NCCL checks: parsers, thresholds and the judging rule, path capacity, plugin import cost."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_rigcheck.errors import ProfileError
from pytest_rigcheck.p2p import thresholds as th
from pytest_rigcheck.p2p.launch import PhaseOutcome
from pytest_rigcheck.p2p.measure import _fold_control, parse_nccl_version, parse_transports, transport_kinds
from pytest_rigcheck.p2p.reference import parse_allreduce_perf, parse_p2p_matrices
from pytest_rigcheck.profile import Profile, load_profile
from pytest_rigcheck.rig import Rig
from pytest_rigcheck.snapshot import open_snapshot

from ..conftest import REPO, SNAPSHOTS

CAPTURE = REPO.parent / "shared" / "captures" / "h200x2-nvlink"


class TestTransports:
    @pytest.mark.parametrize(
        ("line", "want"),
        [
            ("vm:1:1 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[1] via P2P/CUMEM/read", {"P2P/CUMEM/read": 1}),
            (
                "vm:1:1 [0] NCCL INFO Channel 01 : 1[1] -> 0[0] via SHM/direct/direct",
                {"SHM/direct/direct": 1},
            ),
            (
                "h:2:3 [1] NCCL INFO Channel 00/0 : 0[6000] -> 1[7000] [send] via NET/Socket/0",
                {"NET/Socket/0": 1},
            ),
            ("h NCCL INFO Connected all rings", {}),
            ("Channel 00/0 : 0[0] -> 1[1] via P2P/IPC (no NCCL INFO prefix)", {}),
        ],
    )
    def test_parse(self, line: str, want: dict[str, int]) -> None:
        """Channel lines give their transport; anything else gives nothing."""
        assert parse_transports([line]) == want

    def test_kinds_and_version(self) -> None:
        """Kinds are the first path segment; the version comes from NCCL's banner."""
        assert transport_kinds({"P2P/CUMEM/read": 3, "SHM/direct/direct": 1}) == {"P2P", "SHM"}
        assert parse_nccl_version(["vm:1:1 [0] NCCL INFO NCCL version 2.28.9+cuda13.0"]) == "2.28.9+cuda13.0"
        assert parse_nccl_version(["nothing"]) is None


@pytest.mark.skipif(not CAPTURE.is_dir(), reason="../shared/captures is not beside this checkout")
class TestReferenceParsers:
    def test_p2pblt(self) -> None:
        """Every matrix of the sample's output, GPU and CPU latency apart, row = source GPU."""
        m = parse_p2p_matrices((CAPTURE / "p2pBandwidthLatencyTest.txt").read_text())
        assert m["Unidirectional P2P=Enabled Bandwidth (P2P Writes) Matrix (GB/s)"] == [
            [3926.19, 362.03],
            [392.79, 3955.07],
        ]
        assert m["P2P=Enabled Latency (P2P Writes) Matrix (us)"] == [[1.84, 2.22], [2.24, 1.95]]
        assert m["P2P=Enabled Latency (P2P Writes) Matrix (us) [CPU]"][0] == [3.96, 1.48]
        assert len(m) == 8

    def test_allreduce_perf(self) -> None:
        """Rows per size with out-of-place and in-place columns, and the footer."""
        r = parse_allreduce_perf((CAPTURE / "nccl-tests-all_reduce_perf.txt").read_text())
        rows = r["rows"]
        assert isinstance(rows, list) and len(rows) == 14
        assert (
            rows[-1]["bytes"] == 536870912
            and rows[-1]["oop_busbw"] == 313.94
            and rows[-1]["ip_busbw"] == 312.74
        )
        assert r["avg_busbw"] == 80.6705 and r["oob_status"] == "OK"

    def test_garbage(self) -> None:
        """Text without tables parses to nothing, not an error."""
        assert parse_p2p_matrices("hello\n1 2 3\n") == {}
        assert parse_allreduce_perf("# nothing")["rows"] == []


class TestJudge:
    LINE = th.Threshold(25.0, 22.5, True, "GB/s", "test")
    LAT = th.Threshold(0.45, 0.5, False, "us", "test")

    @pytest.mark.parametrize(
        ("readings", "status", "value"),
        [
            ([26.0], "pass", 26.0),
            ([26.0, 10.0], "pass", 26.0),
            ([24.0], "warn", 24.0),
            ([21.0], "fail", 21.0),
            ([21.0, 25.5], "pass", 25.5),
            ([21.0, 23.0], "warn", 23.0),
        ],
    )
    def test_bandwidth(self, readings: list[float], status: str, value: float) -> None:
        """The first reading decides if it passes; otherwise the best retry does."""
        j = th.judge(readings, self.LINE)
        assert (j.status, j.value) == (status, value)

    @pytest.mark.parametrize(
        ("readings", "status"),
        [([0.41], "pass"), ([0.47], "warn"), ([0.9, 0.44], "pass"), ([0.9, 0.6], "fail")],
    )
    def test_latency(self, readings: list[float], status: str) -> None:
        """For latency lower is better and the band lies above the line."""
        assert th.judge(readings, self.LAT).status == status

    def test_no_reading(self) -> None:
        """No reading is an error, never a verdict."""
        with pytest.raises(ValueError):
            th.judge([], self.LINE)


def _rig(name: str, profile: Profile | None = None) -> Rig:
    snap = open_snapshot(SNAPSHOTS / name)
    return Rig.replay(snap, profile or Profile())


class TestThresholds:
    def test_switch_pair_from_topology(self) -> None:
        """Without a profile, a pair behind one Gen4 switch gets 80 % of Gen4 x16 (31.5 GB/s)."""
        rig = _rig("rtxpro6000x4-switch")
        a, b = (g.bdf for g in rig.pcie.gpus[:2])
        line = th.p2p_threshold(rig, a, b, "unidir", {})
        assert (
            line is not None and line.pass_line == pytest.approx(0.8 * 31.504) and "Gen4 x16" in line.source
        )
        bi = th.p2p_threshold(rig, a, b, "bidir", {})
        assert bi is not None and bi.pass_line == pytest.approx(0.72 * 2 * 31.504)

    def test_profile_wins(self) -> None:
        """The preset's [p2p] figures are the pass lines, and say so."""
        rig = _rig("rtxpro6000x4-switch", load_profile("4x-rtxpro6000-gen4-switch"))
        a, b = (g.bdf for g in rig.pcie.gpus[:2])
        line = th.p2p_threshold(rig, a, b, "bidir", {})
        assert line is not None and line.pass_line == 50.4 and "[p2p] min_bidir_gbps" in line.source
        lat = th.latency_threshold(rig, None)
        assert lat is not None and lat.pass_line == 0.45 and not lat.higher_is_better

    def test_nvlink(self) -> None:
        """NVML's NVLink P2P OK and 18 active links each: NVLink4 x18 = 450 GB/s per direction."""
        rig = _rig("h200x2-nvlink")
        a, b = (g.bdf for g in rig.pcie.gpus)
        data = {
            "pairs": {f"{a}->{b}": {"nvml": {"nvlink": 0}}},
            "gpus": {a: {"nvlink": {"active": 18}, "name": "NVIDIA H200"}, b: {"nvlink": {"active": 18}}},
        }
        cap = th.path_capacity(rig, a, b, data)
        assert cap is not None and cap.kind == "nvlink" and cap.gbps == 450
        pcie = th.path_capacity(rig, a, b, {})
        assert pcie is not None and pcie.kind == "pcie" and pcie.gbps == pytest.approx(63.0, rel=0.01)

    @pytest.mark.parametrize(
        ("raw", "gbps", "said"),
        [
            (6, 450, "NVML NVLink 4.0"),  # nvmlNvlinkVersion_t 6 = NVLink 4.0: H200's live reading
            (7, 450, "NVML reports 5.0"),  # Hopper seen reporting 5.0: the name decides
            (4, 450, "NVML reports 3.0"),  # an old driver's raw 4 read as the enum's 3.0: same rate
            (None, 450, "assumed for H200"),
        ],
    )
    def test_nvlink_version_from_nvml(self, raw: int | None, gbps: float, said: str) -> None:
        """Issue 9.6: the live 2x H200 run got PCIe lines (50.4 GB/s) because NVML's NVLink version is an
        nvmlNvlinkVersion_t (6 = NVLink 4.0), not the generation; every reading now gives 18 x 25 GB/s."""
        rig = _rig("h200x2-nvlink")
        a, b = (g.bdf for g in rig.pcie.gpus)
        nv = {"active": 18, "version": raw, "remotes": {}}
        data = {
            "pairs": {f"{a}->{b}": {"nvml": {"nvlink": 0}}},
            "gpus": {a: {"nvlink": nv, "name": "NVIDIA H200"}, b: {"nvlink": nv, "name": "NVIDIA H200"}},
        }
        cap = th.path_capacity(rig, a, b, data)
        assert cap is not None and cap.kind == "nvlink" and cap.gbps == gbps
        assert "18 links x 25 GB/s per direction, NVLink gen 4" in cap.text and said in cap.text
        uni = th.p2p_threshold(rig, a, b, "unidir", data)
        assert uni is not None and uni.pass_line == pytest.approx(0.7 * 450)
        assert uni.classify(386.3) == th.PASS and uni.classify(141.0) == th.FAIL
        assert uni.share(141.0) == "; 31% of the theoretical 450 GB/s"
        bus = th.busbw_threshold(
            rig, [a, b], {**data, "pairs": {**data["pairs"], f"{b}->{a}": data["pairs"][f"{a}->{b}"]}}
        )
        assert bus is not None and bus.classify(312.17) == th.PASS and bus.classify(141.0) == th.FAIL

    def test_nvlink_latency_line(self) -> None:
        """NVLink peers: latency judged against 10 us (measured 2.2 us), not half the staged copy."""
        rig = _rig("h200x2-nvlink")
        a, b = (g.bdf for g in rig.pcie.gpus)
        data = {
            "pairs": {f"{a}->{b}": {"nvml": {"nvlink": 0}}},
            "gpus": {a: {"nvlink": {"active": 18}, "name": "NVIDIA H200"}, b: {"nvlink": {"active": 18}}},
        }
        line = th.latency_threshold(rig, 1370.0, (a, b), data)
        assert line is not None and line.pass_line == th.NVLINK_LATENCY_US and "NVLink peers" in line.source
        assert line.classify(2.2) == th.PASS and line.classify(685.0) == th.FAIL

    def test_ga102_nvlink_rate(self) -> None:
        """RTX 3090's NVLink 3 bridge: 4 links x 14.0625 GB/s per direction (GA102 whitepaper)."""
        assert th.nvlink_rate(3, "NVIDIA GeForce RTX 3090") == 14.0625
        assert th.nvlink_version({"version": 4}, "NVIDIA GeForce RTX 3090") == (3, "NVML NVLink 3.0")
        assert th.nvlink_rate(5, "NVIDIA B200") == 50.0

    def test_latency_from_control(self) -> None:
        """Without a profile, latency must be under half the host-staged latency."""
        line = th.latency_threshold(_rig("h200x2-nvlink"), 17.0)
        assert line is not None and line.pass_line == 8.5

    @pytest.mark.parametrize(
        "raw",
        [
            {"p2p": {"min_unidir": 3}},
            {"p2p": {"min_unidir_gbps": "fast"}},
            {"p2p": {"warn_band": 1.5}},
            {"p2p": {"required": "no"}},
        ],
    )
    def test_bad_profile_keys(self, raw: dict[str, dict[str, object]]) -> None:
        """A bad [p2p] key or value is named in the error."""
        rig = _rig("rtxpro6000x4-switch", Profile(raw=raw))
        a, b = (g.bdf for g in rig.pcie.gpus[:2])
        with pytest.raises(ProfileError, match="p2p"):
            th.p2p_threshold(rig, a, b, "unidir", {})


def test_plugin_import_is_light(tmp_path: Path) -> None:
    """Importing the feature plugin pulls in neither torch nor pynvml nor the workers."""
    code = (
        "import sys, pytest_rigcheck.p2p.plugin; "
        "bad = [m for m in ('torch', 'pynvml', 'pytest_rigcheck.p2p.measure', 'pytest_rigcheck.p2p.checks') "
        "if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_xdist_replay(pytester: pytest.Pytester) -> None:
    """With -n 2 the measurement checks keep to one xdist group and every verdict is the same as without."""
    pytest.importorskip("xdist")
    import shutil

    from pytest_rigcheck.p2p.models import modelled_p2p

    dest = pytester.path / "snap"
    shutil.copytree(SNAPSHOTS / "rtxpro6000x4-switch", dest, symlinks=True)
    gpus = sorted(
        d.name
        for d in (dest / "sys/bus/pci/devices").iterdir()
        if (d / "class").read_text().startswith("0x03")
    )
    data = modelled_p2p("rtxpro6000x4-switch", gpus)
    assert data is not None
    data.pop("expect_fail")
    import json

    (dest / "p2p.json").write_text(json.dumps(data))
    suites = [str(REPO / "suites" / f) for f in ("test_p2p_bandwidth.py", "test_nccl_allreduce.py")]
    result = pytester.runpytest_subprocess(
        f"--rig-snapshot={dest}", *suites, "-n", "2", "--dist", "loadgroup", "-p", "no:cacheprovider", "-q"
    )
    result.assert_outcomes(passed=12 * 4 + 8 + 3)


class TestFoldControl:
    RANKS = ["0000:01:00.0", "0000:02:00.0", "0000:03:00.0", "0000:04:00.0"]

    def _results(self) -> dict[str, dict[str, object]]:
        def sweep(gbps: float) -> list[dict[str, object]]:
            return [{"bytes": 1 << 29, "busbw_gbps": gbps, "wrong": 0, "nan": 0}]

        groups = [
            {"members": [0, 1, 2, 3], "sweep": sweep(9.0)},
            {"members": [0, 1], "sweep": sweep(11.0)},
            {"members": [2, 3], "sweep": sweep(12.0)},
        ]
        return {"control.0": {"groups": groups}}

    def test_each_group_gets_its_control(self) -> None:
        """Every group's control lands in its entry; the all-GPU one also at the top, as format 1 had it."""
        groups = [self.RANKS, self.RANKS[:2], self.RANKS[2:]]
        data: dict[str, Any] = {"nccl": {"groups": {}}}
        _fold_control(data, PhaseOutcome("control", self._results()), groups, self.RANKS, {})
        by_key = data["nccl"]["groups"]
        assert [by_key["+".join(g)]["control"]["busbw_gbps"] for g in groups] == [9.0, 11.0, 12.0]
        assert data["nccl"]["control"]["busbw_gbps"] == 9.0

    def test_hung_control_is_recorded_per_group(self) -> None:
        hung = {"stage": "measure", "left": []}
        data: dict[str, Any] = {"nccl": {"groups": {}}}
        _fold_control(data, PhaseOutcome("control", hung=hung), [self.RANKS[:2]], self.RANKS[:2], {})
        assert data["nccl"]["groups"]["+".join(self.RANKS[:2])]["control"]["hung"] == hung


def test_capture_keeps_a_corrupt_live_figure_as_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A live figure found impossible (``figures.Corrupt``) is written as its reason, not a TypeError."""
    import json as _json

    from pytest_rigcheck.p2p import capture, session
    from pytest_rigcheck.p2p.figures import Corrupt

    class FakeRig:
        name = "live"

    figures = {"format": 1, "pairs": {"a->b": {"latency_us": Corrupt("latency_us: -1.0 is impossible")}}}
    figures["nccl"] = {"groups": {}}
    monkeypatch.setattr(Rig, "live", staticmethod(lambda profile: FakeRig()))
    monkeypatch.setattr(session.P2pSession, "outcome", lambda self: ("ok", figures))
    notes = capture.capture_p2p(tmp_path)
    assert "1 GPU pair" in notes["p2p"]
    data = _json.loads((tmp_path / "p2p.json").read_text())
    assert data["pairs"]["a->b"]["latency_us"] == "latency_us: -1.0 is impossible"
