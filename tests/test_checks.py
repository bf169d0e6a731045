"""PCIe checks on trees built in code: idle downshift vs real downtrain, targets, topology classes."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_rigcheck import pcie_checks, targets
from pytest_rigcheck.profile import Profile, parse_profile
from pytest_rigcheck.rig import Rig
from pytest_rigcheck.snapshot import open_snapshot
from pytest_rigcheck.testing import GPU_MODELS, RigBuilder
from pytest_rigcheck.topology import pair_class


def _rig(tmp_path: Path, b: RigBuilder, profile: Profile | None = None) -> Rig:
    b.write(tmp_path / b.name)
    return Rig.replay(open_snapshot(tmp_path / b.name), profile or Profile())


def _one_gpu(
    link: tuple[int, int], *, lbms: bool = False, target: int | None = None, hasd: bool = False
) -> RigBuilder:
    b = RigBuilder("t")
    host = b.host_bridge()
    rp = b.root_port(host, "0000:00:01.1", cap=(4, 16), lbms=lbms, target=target)
    b.gpu(rp, "0000:01:00.0", GPU_MODELS["rtx3090"], link=link, hasd=hasd)
    return b


class TestLink:
    def test_idle_downshift_passes_and_says_so(self, tmp_path: Path) -> None:
        """An NVIDIA GPU at Gen1 with full width, target Gen4 and no LBMS is the idle downshift."""
        rig = _rig(tmp_path, _one_gpu((1, 16)))
        v = pcie_checks.link(targets.links(rig)[0])
        assert v.ok and "idle" in v.summary and v.properties["link_state"] == "idle-downshift"

    @pytest.mark.parametrize(
        ("link", "lbms", "hasd", "want"),
        [
            ((2, 16), False, False, None),  # 5 GT/s: RTX PRO 6000 cycles 32 -> 5 -> 2.5 GT/s at idle
            ((3, 16), False, False, "drops to Gen1 or Gen2"),  # a riser's Gen3 is not an idle state
            ((1, 16), True, False, "LBMS set"),
            ((1, 16), False, True, "Hardware Autonomous Speed Disable set on 0000:01:00.0"),
        ],
    )
    def test_what_counts_as_idle_without_load(
        self, tmp_path: Path, link: tuple[int, int], lbms: bool, hasd: bool, want: str | None
    ) -> None:
        """Without a reading under load, only Gen1/Gen2 with nothing pinning or retraining the link is idle."""
        rig = _rig(tmp_path, _one_gpu(link, lbms=lbms, hasd=hasd))
        v = pcie_checks.link(targets.links(rig)[0])
        if want is None:
            assert v.ok and v.properties["link_state"] == "idle-downshift", v
        else:
            assert not v.ok and want in v.summary and "expected Gen4" in v.summary, v

    def test_sysfs_and_lnksta_disagree_the_lesser_counts(self, tmp_path: Path) -> None:
        """sysfs says x16, config LnkSta x8 (an edited snapshot, or a link that changed between reads): x8 fails."""
        b = _one_gpu((4, 8))
        b.write(tmp_path / "t")
        for f in (tmp_path / "t").glob("sys/devices/**/current_link_width"):
            f.write_text("16\n")
        rig = Rig.replay(open_snapshot(tmp_path / "t"), Profile())
        v = pcie_checks.link(targets.links(rig)[0])
        assert not v.ok and "trained to x8, expected x16" in v.summary, v

    def test_reading_under_load_decides(self, tmp_path: Path) -> None:
        """A reading under load overrides the idle reading: Gen3 under load fails."""
        rig = _rig(tmp_path, _one_gpu((1, 16)))
        rig.extras["link_under_load"] = {"0000:01:00.0": (3, 16)}
        v = pcie_checks.link(targets.links(rig)[0])
        assert not v.ok and "under load" in v.summary

    def test_target_speed_cap_fails(self, tmp_path: Path) -> None:
        """A BIOS-forced target speed below capability fails with the BIOS fix."""
        rig = _rig(tmp_path, _one_gpu((3, 16), target=3))
        v = pcie_checks.link(targets.links(rig)[0])
        assert not v.ok and "Target Link Speed" in v.summary and any("BIOS" in f for f in v.fix)

    def test_width_fails_with_slot(self, tmp_path: Path) -> None:
        """A narrow link fails naming the width, the device and a reseat fix."""
        rig = _rig(tmp_path, _one_gpu((4, 4)))
        v = pcie_checks.link(targets.links(rig)[0])
        assert not v.ok and "x4, expected x16" in v.summary and "0000:01:00.0" in v.summary

    def test_profile_expectation(self, tmp_path: Path) -> None:
        """A profile asking for Gen5 fails a Gen4 link and says where the expectation came from."""
        rig = _rig(tmp_path, _one_gpu((4, 16)), parse_profile({"links": {"gen": 5}}, "rig.toml"))
        v = pcie_checks.link(targets.links(rig)[0])
        assert not v.ok and "rig.toml" in v.expected


class TestTopology:
    def test_classes(self, tmp_path: Path) -> None:
        """Same switch is PIX, cascaded switches PXB, different root ports PHB, other host bridge NODE/SYS."""
        b = RigBuilder("topo")
        h0 = b.host_bridge(0, 0, numa=0)
        h1 = b.host_bridge(0, 0x80, numa=1)
        h2 = b.host_bridge(0, 0x40, numa=0)
        rp = b.root_port(h0, "0000:00:01.1")
        _, downs = b.switch(rp, "0000:01:00.0", ["0000:02:00.0", "0000:02:01.0", "0000:02:02.0"])
        m = GPU_MODELS["h100"]
        b.gpu(downs[0], "0000:03:00.0", m)
        b.gpu(downs[1], "0000:04:00.0", m)
        _, downs2 = b.switch(downs[2], "0000:05:00.0", ["0000:06:00.0"], mgmt_endpoint=False)
        b.gpu(downs2[0], "0000:07:00.0", m)
        rp2 = b.root_port(h0, "0000:00:03.1")
        b.gpu(rp2, "0000:10:00.0", m)
        rp3 = b.root_port(h1, "0000:80:01.1")
        b.gpu(rp3, "0000:81:00.0", m)
        rp4 = b.root_port(h2, "0000:40:01.1")
        b.gpu(rp4, "0000:41:00.0", m)
        tree = _rig(tmp_path, b).pcie
        assert pair_class(tree, "0000:03:00.0", "0000:04:00.0") == "PIX"
        assert pair_class(tree, "0000:03:00.0", "0000:07:00.0") == "PXB"
        assert pair_class(tree, "0000:03:00.0", "0000:10:00.0") == "PHB"
        assert pair_class(tree, "0000:03:00.0", "0000:41:00.0") == "NODE"
        assert pair_class(tree, "0000:03:00.0", "0000:81:00.0") == "SYS"


class TestAcs:
    @pytest.mark.parametrize(
        ("ctrl", "ok"),
        [
            (0x0000, True),
            (0x0001, True),
            (0x0002, True),
            (0x0004, False),
            (0x0008, False),
            (0x0010, False),
            (0x0020, False),
            (0x0040, True),
            (0x001D, False),
            (0x007F, False),
        ],
    )
    def test_each_bit(self, tmp_path: Path, ctrl: int, ok: bool) -> None:
        """Redirect, forwarding and egress bits fail; SrcValid, TransBlk and DirectTrans alone do not."""
        b = RigBuilder("acs")
        host = b.host_bridge()
        rp = b.root_port(host, "0000:00:01.1")
        _, downs = b.switch(rp, "0000:01:00.0", ["0000:02:00.0", "0000:02:01.0"], acs_ctrl=ctrl)
        b.gpu(downs[0], "0000:03:00.0", GPU_MODELS["rtxpro6000"])
        b.gpu(downs[1], "0000:04:00.0", GPU_MODELS["rtxpro6000"])
        rig = _rig(tmp_path, b)
        verdicts = {t.bridge.bdf: pcie_checks.acs(t) for t in targets.bridges(rig)}
        assert set(verdicts) == {"0000:01:00.0", "0000:02:00.0", "0000:02:01.0"}
        assert verdicts["0000:02:00.0"].ok is ok
        if not ok:
            assert "setpci -s 0000:02:00.0 ECAP_ACS+0x6.w=0000" in str(verdicts["0000:02:00.0"])

    def _two_gpus_under_switch(self) -> tuple[RigBuilder, list]:
        b = RigBuilder("acs")
        rp = b.root_port(b.host_bridge(), "0000:00:01.1")
        _, downs = b.switch(rp, "0000:01:00.0", ["0000:02:00.0", "0000:02:01.0"])
        b.gpu(downs[0], "0000:03:00.0", GPU_MODELS["rtxpro6000"])
        b.gpu(downs[1], "0000:04:00.0", GPU_MODELS["rtxpro6000"])
        return b, downs

    def test_pcie_port_without_extended_config_is_unreadable(self, tmp_path: Path) -> None:
        """A PCIe port whose config space was read only to 256 bytes cannot show ACS: unreadable, not a pass."""
        b, downs = self._two_gpus_under_switch()
        downs[0].config_size = 256
        rig = _rig(tmp_path, b)
        v = {t.bridge.bdf: pcie_checks.acs(t) for t in targets.bridges(rig)}["0000:02:00.0"]
        assert v.status == "unreadable" and "only 256 bytes" in v.summary, v

    def test_config_of_another_device_is_unreadable(self, tmp_path: Path) -> None:
        """A config file whose header names another device (a corrupt snapshot) is not parsed as this one's."""
        b, _ = self._two_gpus_under_switch()
        b.write(tmp_path / "acs")
        cfg = next((tmp_path / "acs").glob("sys/devices/**/0000:02:00.0/config"))
        data = bytearray(cfg.read_bytes())
        data[0:2] = (0x10B5).to_bytes(2, "little")
        cfg.write_bytes(bytes(data))
        rig = Rig.replay(open_snapshot(tmp_path / "acs"), Profile())
        v = {t.bridge.bdf: pcie_checks.acs(t) for t in targets.bridges(rig)}["0000:02:00.0"]
        assert v.status == "unreadable" and "header says 10b5:4084, sysfs says 11f8:4084" in v.summary, v


def test_gpu_count_missing_gpu(tmp_path: Path) -> None:
    """A profile count above what is on the bus fails with the list of GPUs found."""
    rig = _rig(tmp_path, _one_gpu((4, 16)), parse_profile({"rig": {"gpus": 2}}, "rig.toml"))
    v = pcie_checks.gpu_count(rig)
    assert not v.ok and "1 GPU(s) on the PCIe bus, expected 2" in v.summary


def test_slow_link_with_unreadable_registers_is_unreadable(tmp_path: Path) -> None:
    """Gen1 at idle, no reading under load, and config space read only to 64 bytes: not taken as idle."""
    b = RigBuilder("t", root=False)  # captured as non-root: 64 bytes of config space per function
    rp = b.root_port(b.host_bridge(), "0000:00:01.1", cap=(4, 16))
    b.gpu(rp, "0000:01:00.0", GPU_MODELS["rtx3090"], link=(1, 16))
    rig = _rig(tmp_path, b)
    v = pcie_checks.link(targets.links(rig)[0])
    assert v.status == "unreadable" and "cannot be told from a downtrain" in v.summary, v
