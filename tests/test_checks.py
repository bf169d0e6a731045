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


# -- evidence rules (issue 8 item 2; gate.md D1, D2, D6, D15, D17, D28) --------------------------------

SNAPS = Path(__file__).resolve().parent.parent / "fixtures" / "sysfs-snapshots"


def _copy(tmp_path: Path, name: str) -> Path:
    """A writable copy of a shipped snapshot, to break the way gate.md's recipes do."""
    import shutil

    dest = tmp_path / name
    shutil.copytree(SNAPS / name, dest, symlinks=True)
    return dest


def _replay(root: Path, profile: Profile | None = None) -> Rig:
    return Rig.replay(open_snapshot(root), profile or Profile())


def _by_id(verdicts: list[tuple[str, object]]) -> dict[str, object]:
    return dict(verdicts)


class TestIommuEvidence:
    def _iommu(self, rig: Rig) -> dict[str, object]:
        return {t.gpu.bdf: pcie_checks.iommu(t) for t in targets.gpus(rig)}

    def test_gpu_group_missing_is_unreadable_not_another_groups_type(self, tmp_path: Path) -> None:
        """gate.md D1: GPU1's iommu_group links to group 6, which is gone; the other groups are identity.

        Before: "IOMMU passthrough (group 6 type identity)", a pass. Now UNREADABLE naming the missing group."""
        root = _copy(tmp_path, "rtx3090x2-iommu-dma")
        for t in (root / "sys/kernel/iommu_groups").glob("*/type"):
            t.write_text("identity\n")
        (root / "sys/kernel/iommu_groups/6/type").write_text("DMA\n")
        v = self._iommu(_replay(root))["0000:4b:00.0"]
        assert v.status == "fail" and "translated (sys/kernel/iommu_groups/6/type = DMA)" in v.summary, v
        import shutil

        shutil.rmtree(root / "sys/kernel/iommu_groups/6")
        v = self._iommu(_replay(root))
        gpu1 = v["0000:4b:00.0"]
        assert gpu1.status == "unreadable", gpu1
        assert "sys/kernel/iommu_groups/6 is missing" in gpu1.summary and "identity" not in gpu1.summary
        assert v["0000:21:00.0"].ok  # GPU0's own group is identity

    def test_no_iommu_group_link_while_groups_exist(self, tmp_path: Path) -> None:
        """gate.md D17: GPU's iommu_group link removed gave "IOMMU translated (group None, type ?)"."""
        root = _copy(tmp_path, "rtx3090x2-iommu-dma")
        (root / "sys/devices/pci0000:00/0000:00:03.1/0000:4b:00.0/iommu_group").unlink()
        v = self._iommu(_replay(root))["0000:4b:00.0"]
        assert v.status == "unreadable" and "no iommu_group link" in v.summary, v
        assert "group None" not in v.summary and "type ?" not in v.summary

    def test_both_gpu_groups_removed(self, tmp_path: Path) -> None:
        """gate.md D17: both GPUs' group directories removed from the DMA-FQ snapshot."""
        import shutil

        root = _copy(tmp_path, "rtx3090x2-iommu-dma")
        rig = _replay(root)
        groups = {t.gpu.iommu_group for t in targets.gpus(rig)}
        for g in groups:
            shutil.rmtree(root / "sys/kernel/iommu_groups" / str(g))
        for bdf, v in self._iommu(_replay(root)).items():
            assert v.status == "unreadable" and "is missing" in v.summary, (bdf, v)

    @pytest.mark.parametrize(
        ("cmdline", "status", "words"),
        [
            ("ro quiet iommu=pt", "pass", "passthrough (kernel command line iommu=pt"),
            ("ro quiet", "unreadable", "CONFIG_IOMMU_DEFAULT_PASSTHROUGH"),
            ("ro iommu.passthrough=0", "fail", "translated (kernel command line iommu.passthrough=0"),
        ],
    )
    def test_kernel_before_5_11_judged_from_cmdline(
        self, tmp_path: Path, cmdline: str, status: str, words: str
    ) -> None:
        """Without iommu_groups/N/type (added in Linux 5.11), the command line decides, else UNREADABLE."""
        root = _copy(tmp_path, "rtx3090x2-iommu-dma")
        for t in (root / "sys/kernel/iommu_groups").glob("*/type"):
            t.unlink()
        (root / "proc/cmdline").write_text(cmdline + "\n")
        for v in self._iommu(_replay(root)).values():
            assert v.status == status and words in v.summary, v

    def test_iommu_pt_without_groups_is_passthrough(self, tmp_path: Path) -> None:
        """iommu=pt with the AMD IOMMU not switched off is evidence of passthrough (kernel-parameters.txt)."""
        b = RigBuilder("pt", cpu="amd", iommu="identity", cmdline="ro iommu=pt")
        rp = b.root_port(b.host_bridge(), "0000:00:01.1")
        b.gpu(rp, "0000:01:00.0", GPU_MODELS["rtx3090"])
        b.write(tmp_path / "pt")
        import shutil

        shutil.rmtree(tmp_path / "pt/sys/kernel/iommu_groups")  # a trimmed capture: no groups kept
        v = self._iommu(_replay(tmp_path / "pt"))["0000:01:00.0"]
        assert v.ok and "passthrough (kernel command line iommu=pt)" in v.summary, v

    def test_refused_cmdline_is_unreadable_not_a_traceback(self, tmp_path: Path) -> None:
        """gate.md D15: proc/cmdline -> ../../outside/cmdline raised SourceError inside the IOMMU check."""
        root = _copy(tmp_path, "rtx3090x2-gen4")
        (tmp_path / "outside").mkdir()
        (tmp_path / "outside/cmdline").write_text("amd_iommu=off\n")
        (root / "proc/cmdline").unlink()
        (root / "proc/cmdline").symlink_to("../../outside/cmdline")
        for v in self._iommu(_replay(root)).values():
            assert (
                v.status == "unreadable"
                and "proc/cmdline: symlink proc/cmdline -> ../../outside/cmdline leaves the snapshot"
                in v.summary
            ), v

    def test_group_not_listing_the_gpu_is_unreadable(self, tmp_path: Path) -> None:
        """FRESH3 F-I4: every group identity, GPU1's link names group 6, whose devices/ no longer lists it:
        passed "IOMMU passthrough". The two sysfs views contradict: UNREADABLE naming both."""
        root = _copy(tmp_path, "rtx3090x2-iommu-dma")
        for t in (root / "sys/kernel/iommu_groups").glob("*/type"):
            t.write_text("identity\n")
        (root / "sys/kernel/iommu_groups/6/devices/0000:4b:00.0").unlink()
        v = self._iommu(_replay(root))
        gpu1 = v["0000:4b:00.0"]
        assert gpu1.status == "unreadable", gpu1
        assert "sys/kernel/iommu_groups/6/devices does not list 0000:4b:00.0" in gpu1.summary, gpu1
        assert v["0000:21:00.0"].ok

    def test_iommu_unit_without_groups_is_not_off(self, tmp_path: Path) -> None:
        """FRESH3 F-I7: sys/class/iommu/ivhd0 present, sys/kernel/iommu_groups empty, no IOMMU switch on the
        command line: passed "IOMMU off (no IOMMU group)". A registered unit groups every device."""
        root = _copy(tmp_path, "rtx3090x2-gen4")
        assert not (
            root / "sys/kernel/iommu_groups"
        ).exists()  # kept as an empty directory (MANIFEST empty_dirs)
        (root / "sys/class/iommu/ivhd0").mkdir(parents=True)
        (root / "proc/cmdline").write_text("BOOT_IMAGE=/boot/vmlinuz root=/dev/x ro quiet\n")
        for v in self._iommu(_replay(root)).values():
            assert v.status == "unreadable", v
            assert "sys/class/iommu lists IOMMU unit(s) ivhd0" in v.summary, v
            assert "sys/kernel/iommu_groups holds no group" in v.summary and "IOMMU off" not in v.summary, v

    @pytest.mark.parametrize("text", ["bogus", "identity\nDMA", "dma", ""])
    def test_group_type_the_kernel_never_writes_is_corrupt(self, tmp_path: Path, text: str) -> None:
        """FRESH3 (rough edge): a group type of "bogus" FAILed "neither passthrough nor off". The kernel writes
        only DMA, DMA-FQ, identity, blocked, unmanaged or unknown (drivers/iommu/iommu.c
        iommu_group_show_type): anything else is a corrupt file, UNREADABLE."""
        root = _copy(tmp_path, "rtx3090x2-iommu-dma")
        for t in (root / "sys/kernel/iommu_groups").glob("*/type"):
            t.write_text(text + "\n")
        for v in self._iommu(_replay(root)).values():
            assert v.status == "unreadable" and "is not a value the kernel writes" in v.summary, v


class TestAcsEvidence:
    @pytest.mark.parametrize("header", [b"\xff\xff\xff\xff", b"\x00\x00\x00\x00"])
    def test_bad_first_extended_header_is_unreadable(self, tmp_path: Path, header: bytes) -> None:
        """gate.md D2: an all-ones (or zero) header at 0x100 passed the port as "no ACS capability"."""
        root = _copy(tmp_path, "rtx3090x2-acs-root-port")
        cfg = root / "sys/devices/pci0000:00/0000:00:01.1/config"
        data = bytearray(cfg.read_bytes())
        data[0x100:0x104] = header
        cfg.write_bytes(bytes(data))
        v = {t.bridge.bdf: pcie_checks.acs(t) for t in targets.bridges(_replay(root))}["0000:00:01.1"]
        assert v.status == "unreadable" and "extended capability header at 0x100" in v.summary, v
        assert not any("run as root" in f for f in v.fix)  # root read it; the reading itself is bad


class TestPcieCapabilityNotReachable:
    """FRESH3 F-A12: a root port whose capability list does not reach its PCI Express capability (byte 0x51 = 0,
    so 0x40 PM -> 0x50 MSI -> end; or cap pointer 0x34 = 0; or Status bit 4 clear), its config cut to 256 bytes,
    passed ACS as "a conventional PCI bridge (no extended config space)" although sysfs has its
    current_link_speed/max_link_speed, which the kernel writes only for PCIe functions
    (drivers/pci/pci-sysfs.c pcie_dev_attrs_are_visible). Every check that needs the PCIe capability is
    UNREADABLE naming the function and why; ASPM no longer blames "Link Control is past the config space read"."""

    RP = "sys/devices/pci0000:00/0000:00:03.1"
    GPU = "sys/devices/pci0000:00/0000:00:03.1/0000:4b:00.0"

    @staticmethod
    def _cut(cfg: Path, how: str, size: int = 256) -> None:
        data = bytearray(cfg.read_bytes())
        if how == "chain":
            data[0x51] = 0  # the capability after MSI at 0x50: the PCIe capability at 0x60 unlinked
        elif how == "pointer":
            data[0x34] = 0
        else:  # the Status register's Capabilities List bit
            data[0x06] &= 0xEF
        cfg.write_bytes(bytes(data[:size]))

    @pytest.mark.parametrize(
        ("how", "why"),
        [
            (
                "chain",
                "the capability list 0x40 (ID 0x01) -> 0x50 (ID 0x05) ends without a PCI Express capability",
            ),
            ("pointer", "the capabilities pointer at 0x34 is 0"),
            ("status", "bit 4 (Capabilities List) is clear"),
        ],
    )
    @pytest.mark.parametrize("size", [256, 4096])
    def test_root_port_is_unreadable_not_conventional_pci(
        self, tmp_path: Path, how: str, why: str, size: int
    ) -> None:
        """256 bytes: the finding. 4096 bytes: the same contradiction, though the ACS registers are there (only
        a snapshot `rigcheck import-lspci` wrote may hide the PCIe capability it was not shown)."""
        from pytest_rigcheck import linkhealth

        root = _copy(tmp_path, "rtx3090x2-acs-root-port")
        for rp in ("sys/devices/pci0000:00/0000:00:01.1", self.RP):
            self._cut(root / rp / "config", how, size)
        rig = _replay(root)
        for v in (pcie_checks.acs(t) for t in targets.bridges(rig)):
            assert v.status == "unreadable", v
            assert "conventional" not in v.summary and "root port" in v.summary, v
            assert "no reachable PCI Express capability" in v.summary and why in v.summary, v
            assert "current_link_speed" in v.summary, v
        for check, ts in (
            (pcie_checks.link, targets.links(rig)),
            (pcie_checks.bifurcation, targets.lane_groups(rig)),
            (linkhealth.aspm, targets.gpus(rig)),
            (linkhealth.aer_counters, targets.gpus(rig)),
        ):
            for t in ts:
                v = check(t)
                assert v.status == "unreadable" and "no reachable PCI Express capability" in v.summary, (
                    check,
                    v,
                )
                assert "past the config space read" not in v.summary, v

    def test_end_to_end_exit_code(self, pytester: pytest.Pytester, tmp_path: Path) -> None:
        """The finding as the user ran it: `pytest --rig-snapshot=COPY -k acs_redirect` exited 0."""
        root = _copy(tmp_path, "rtx3090x2-acs-root-port")
        for rp in ("sys/devices/pci0000:00/0000:00:01.1", self.RP):
            self._cut(root / rp / "config", "chain")
        result = pytester.runpytest(
            f"--rig-snapshot={root}", "-p", "no:cacheprovider", "-k", "acs_redirect", "-rf"
        )
        out = result.stdout.str()
        assert result.ret == 1, out
        assert "FAILED test_acs.py::test_acs_redirect_off[0000:00:03.1] - UNREADABLE" in out, out
        assert "conventional PCI bridge" not in out and "Traceback" not in out

    def test_gpu_endpoint_too(self, tmp_path: Path) -> None:
        """The same for an endpoint: GPU1's own config with its PCIe capability (0x60) cut out of the list."""
        from pytest_rigcheck import linkhealth

        root = _copy(tmp_path, "rtx3090x2-gen4")
        cfg = root / self.GPU / "config"
        data = bytearray(cfg.read_bytes())
        chain, ptr = [], data[0x34]
        while ptr and data[ptr] != 0x10:
            chain.append(ptr)
            ptr = data[ptr + 1]
        assert ptr == 0x60 and chain, chain
        data[chain[-1] + 1] = data[0x61]  # skip the PCIe capability
        cfg.write_bytes(bytes(data[:256]))
        rig = _replay(root)
        link = {t.down.bdf: pcie_checks.link(t) for t in targets.links(rig)}
        aspm = {t.gpu.bdf: linkhealth.aspm(t) for t in targets.gpus(rig)}
        for v in (link["0000:4b:00.0"], aspm["0000:4b:00.0"]):
            assert v.status == "unreadable" and "0000:4b:00.0" in v.summary, v
            assert "no reachable PCI Express capability" in v.summary, v
        assert link["0000:21:00.0"].ok and aspm["0000:21:00.0"].ok  # the other GPU is untouched

    def test_4096_bytes_zero_extended_header_on_a_pcie_bridge(self, tmp_path: Path) -> None:
        """All 4096 bytes with the PCIe capability unlinked and zeros at 0x100: sysfs shows a PCIe port, so
        the zero header is "extended space not read" (as for any PCIe port), never "no ACS capability"."""
        root = _copy(tmp_path, "rtx3090x2-acs-root-port")
        cfg = root / self.RP / "config"
        self._cut(cfg, "chain", size=4096)
        data = bytearray(cfg.read_bytes())
        data[0x100:] = bytes(len(data) - 0x100)
        cfg.write_bytes(bytes(data))
        v = {t.bridge.bdf: pcie_checks.acs(t) for t in targets.bridges(_replay(root))}["0000:00:03.1"]
        assert v.status == "unreadable" and "extended capability header at 0x100" in v.summary, v

    def test_aspm_names_the_missing_capability(self, tmp_path: Path) -> None:
        """Where no sysfs link attribute says PCIe either, ASPM is still unknown, for the true reason."""
        root = _copy(tmp_path, "rtx3090x2-gen4")
        self._cut(root / self.RP / "config", "chain")
        for name in ("current_link_speed", "current_link_width", "max_link_speed", "max_link_width"):
            (root / self.RP / name).unlink()
        from pytest_rigcheck import linkhealth

        v = {t.gpu.bdf: linkhealth.aspm(t) for t in targets.gpus(_replay(root))}["0000:4b:00.0"]
        assert (
            v.status == "unreadable" and "no PCI Express capability (which holds Link Control)" in v.summary
        ), v
        assert "past the config space read" not in v.summary


class TestLinkBothEnds:
    def _gen4(self, tmp_path: Path) -> Path:
        """gate.md D6: root port 0000:00:03.1 set to x8 in current_link_width and LnkSta; GPU end left x16."""
        root = _copy(tmp_path, "rtx3090x2-gen4")
        rp = root / "sys/devices/pci0000:00/0000:00:03.1"
        (rp / "current_link_width").write_text("8\n")
        data = bytearray((rp / "config").read_bytes())
        sta = int.from_bytes(data[0x72:0x74], "little")
        data[0x72:0x74] = ((sta & ~0x03F0) | (8 << 4)).to_bytes(2, "little")
        (rp / "config").write_bytes(bytes(data))
        return root

    def test_root_port_end_x8_fails_and_names_the_disagreement(self, tmp_path: Path) -> None:
        rig = _replay(self._gen4(tmp_path))
        v = {t.down.bdf: pcie_checks.link(t) for t in targets.links(rig)}["0000:4b:00.0"]
        assert v.status == "fail" and "trained to x8, expected x16" in v.summary, v
        note = " ".join(v.notes)
        assert (
            "disagree" in note
            and "0000:00:03.1 LnkSta Gen4 x8" in note
            and "0000:4b:00.0 LnkSta Gen4 x16" in note
        )

    def test_trained_above_capability_is_unreadable(self, tmp_path: Path) -> None:
        """Root port max_link_width edited to 8 while both ends read x16 trained: contradictory, UNREADABLE
        for the link (and the lane group fails: its port is narrower than the GPU)."""
        root = _copy(tmp_path, "rtx3090x2-gen4")
        rp = root / "sys/devices/pci0000:00/0000:00:03.1"
        (rp / "max_link_width").write_text("8\n")
        data = bytearray((rp / "config").read_bytes())  # LnkCap too: the same register read two ways
        cap = int.from_bytes(data[0x6C:0x70], "little")
        data[0x6C:0x70] = ((cap & ~0x3F0) | (8 << 4)).to_bytes(4, "little")
        (rp / "config").write_bytes(bytes(data))
        rig = _replay(root)
        v = {t.down.bdf: pcie_checks.link(t) for t in targets.links(rig)}["0000:4b:00.0"]
        assert (
            v.status == "unreadable" and "trained width 16 above 0000:00:03.1's capability 8" in v.summary
        ), v
        b = {t.key: pcie_checks.bifurcation(t) for t in targets.lane_groups(rig)}["0000:00:03"]
        assert b.status == "fail"

    @pytest.mark.parametrize(
        ("bdf", "lnksta", "what"),
        [
            (
                "0000:4b:00.0",
                0x0204,
                "LnkSta width = 32 (x32) is above the link's own maximum LnkCap width = 16 (x16)",
            ),  # FRESH3 F-L3
            (
                "0000:4b:00.0",
                0x0105,
                "LnkSta speed = 5 (Gen5) is above the link's own maximum LnkCap speed = 4 (Gen4)",
            ),  # FRESH3 F-L5
            (
                "0000:00:03.1",
                0x0204,
                "LnkSta width = 32 (x32) is above the link's own maximum LnkCap width = 16 (x16)",
            ),  # the port's end
        ],
    )
    def test_lnksta_above_its_own_lnkcap_is_unreadable(
        self, tmp_path: Path, bdf: str, lnksta: int, what: str
    ) -> None:
        """FRESH3 F-L3/F-L5: config LnkSta wider or faster than the same function's LnkCap (sysfs left Gen4 x16)
        passed as "Gen4 x16": the lesser-of-readings rule hid it. A link never exceeds its own capability (PCIe
        Base Spec 7.5.3.6, 7.5.3.8; import-lspci refuses the same in pasted text): UNREADABLE naming LnkSta
        vs LnkCap, and the sysfs reading it disagrees with."""
        root = _copy(tmp_path, "rtx3090x2-gen4")
        fn = "sys/devices/pci0000:00/0000:00:03.1" + ("/0000:4b:00.0" if bdf != "0000:00:03.1" else "")
        cfg = root / fn / "config"
        data = bytearray(cfg.read_bytes())
        assert data[0x60] == 0x10  # the PCIe capability at 0x60: LnkCap 0x6c, LnkSta 0x72
        data[0x72:0x74] = lnksta.to_bytes(2, "little")
        cfg.write_bytes(bytes(data))
        rig = _replay(root)
        v = {t.down.bdf: pcie_checks.link(t) for t in targets.links(rig)}["0000:4b:00.0"]
        assert v.status == "unreadable" and what in v.summary and f"{fn}/config" in v.summary, v
        assert "sysfs current_link_* says Gen4 x16" in v.summary, v
        assert any("disagree" in n for n in v.notes), v.notes
        from pytest_rigcheck.pcie import link_above_capability

        assert link_above_capability((4, 16), ((lnksta & 0xF), (lnksta >> 4) & 0x3F)) == what

    def test_bifurcation_sees_the_root_port_width(self, tmp_path: Path) -> None:
        """gate.md D6: bifurcation reported "0000:00:03.1 x16" and passed silently while the port ran x8.

        The split is still x16 (the link check fails the lost lanes); the lane group now says the port
        trained x8, as a WARN, so the one fault is not reported twice."""
        rig = _replay(self._gen4(tmp_path))
        v = {t.key: pcie_checks.bifurcation(t) for t in targets.lane_groups(rig)}["0000:00:03"]
        assert v.status == "warn" and "0000:00:03.1 x16 (trained x8)" in v.summary, v
        assert any("trained x8" in n and "not the split" in n for n in v.notes)

    @pytest.mark.parametrize(
        ("fn", "attr", "text", "why"),
        [
            ("0000:00:03.1", None, None, "sysfs max_link_width says x16 but config LnkCap says x8"),
            (
                "0000:00:03.1/0000:4b:00.0",
                "max_link_width",
                "32",
                "max_link_width says x32 but config LnkCap says x16",
            ),
            (
                "0000:00:03.1/0000:4b:00.0",
                "max_link_speed",
                "8.0 GT/s PCIe",
                "max_link_speed says Gen3 but config LnkCap says Gen4",
            ),
        ],
        ids=["port-lnkcap-x8", "gpu-sysfs-x32", "gpu-sysfs-gen3"],
    )
    def test_capability_read_two_ways_disagreeing_is_unreadable(
        self, tmp_path: Path, fn: str, attr: str | None, text: str | None, why: str
    ) -> None:
        """FRESH4 finding 9: GPU 0000:4b:00.0's sysfs max_link_width 32 beside its LnkCap x16 passed. sysfs
        max_link_width/max_link_speed are LnkCap read by the kernel (pcie_get_width_cap/pcie_get_speed_cap):
        one register read two ways cannot disagree (unlike current readings, taken at different moments),
        so the disagreement is corrupt: UNREADABLE for the link and the lane group, naming both readings.
        (Before: a root port whose LnkCap said x8 beside sysfs x16 took the lesser.)"""
        root = _copy(tmp_path, "rtx3090x2-gen4")
        d = root / "sys/devices/pci0000:00" / fn
        if attr is None:
            data = bytearray((d / "config").read_bytes())
            cap = int.from_bytes(data[0x6C:0x70], "little")
            data[0x6C:0x70] = ((cap & ~0x3F0) | (8 << 4)).to_bytes(4, "little")
            (d / "config").write_bytes(bytes(data))
        else:
            (d / attr).write_text(f"{text}\n")
        rig = _replay(root)
        v = {t.down.bdf: pcie_checks.link(t) for t in targets.links(rig)}["0000:4b:00.0"]
        assert v.status == "unreadable" and why in v.summary and "contradictory readings" in v.summary, v
        b = {t.key: pcie_checks.bifurcation(t) for t in targets.lane_groups(rig)}["0000:00:03"]
        assert b.status == "unreadable", b

    def test_width_fault_fails_with_speed_unknown(self, tmp_path: Path) -> None:
        """A known x8 fails even when the current speed is Unknown in sysfs and LnkSta was not read (64 bytes)."""
        b = RigBuilder("t", root=False)
        rp = b.root_port(b.host_bridge(), "0000:00:01.1", cap=(4, 16))
        b.gpu(rp, "0000:01:00.0", GPU_MODELS["rtx3090"], link=(4, 8))
        b.write(tmp_path / "t")
        for f in (tmp_path / "t").glob("sys/devices/**/current_link_speed"):
            f.write_text("Unknown\n")
        v = pcie_checks.link(targets.links(_replay(tmp_path / "t"))[0])
        assert v.status == "fail" and "trained to x8, expected x16" in v.summary, v
        assert any("current speed" in n for n in v.notes)

    def test_width_fault_fails_with_garbage_speed_text(self, tmp_path: Path) -> None:
        """A garbage current_link_speed leaves the known x8 standing: FAIL on width, the garbage named."""
        b = _one_gpu((4, 8))
        b.write(tmp_path / "t")
        gpu_dir = next((tmp_path / "t").glob("sys/devices/**/0000:01:00.0"))
        (gpu_dir / "current_link_speed").write_text("fast\n")
        v = pcie_checks.link(targets.links(_replay(tmp_path / "t"))[0])
        assert v.status == "fail" and "trained to x8, expected x16" in v.summary, v
        assert any("current_link_speed: unreadable link speed 'fast'" in n for n in v.notes), v.notes

    def test_speed_and_width_short_named_in_one_verdict(self, tmp_path: Path) -> None:
        """Gen3 x8 on a Gen4 x16 link retrained for reliability (LBMS): both faults in one summary."""
        rig = _rig(tmp_path, _one_gpu((3, 8), lbms=True))
        v = pcie_checks.link(targets.links(rig)[0])
        assert v.status == "fail", v
        assert "trained to x8, expected x16" in v.summary and "trained to Gen3, expected Gen4" in v.summary
        assert "Gen4 (" in v.expected and "x16 (" in v.expected

    def test_idle_speed_beside_width_fault_is_a_note(self, tmp_path: Path) -> None:
        """An idle Gen1 downshift is not a second fault beside a narrow link: said in a note."""
        rig = _rig(tmp_path, _one_gpu((1, 8)))
        v = pcie_checks.link(targets.links(rig)[0])
        assert v.status == "fail" and "Gen1" not in v.summary and any("idle" in n for n in v.notes), v


class TestGarbageSysfs:
    def test_garbage_link_width_is_unreadable_naming_the_file(self, tmp_path: Path) -> None:
        """gate.md D15: current_link_width "x16" raised SourceError with a 40-line traceback."""
        root = _copy(tmp_path, "rtx3090x2-gen4")
        f = root / "sys/devices/pci0000:00/0000:00:03.1/0000:4b:00.0/current_link_width"
        f.write_text("x16\n")
        rig = _replay(root)
        v = {t.down.bdf: pcie_checks.link(t) for t in targets.links(rig)}["0000:4b:00.0"]
        assert v.status == "unreadable", v
        assert "0000:4b:00.0/current_link_width: unreadable link width 'x16'" in v.summary
        # The other checks that only show the path still judge (the path says the link is unreadable).
        acs = {t.bridge.bdf: pcie_checks.acs(t) for t in targets.bridges(rig)}
        assert all(a.ok for a in acs.values())
        assert "link unreadable (sys/" in rig.pcie.path_text("0000:4b:00.0")
        # Bifurcation is judged on capability (max_link_width still reads): it passes, saying what it could not show.
        bif = {t.key: pcie_checks.bifurcation(t) for t in targets.lane_groups(rig)}["0000:00:03"]
        assert bif.ok and any("current_link_width" in n for n in bif.notes), bif

    def test_garbage_max_width_reaches_the_checks_that_need_it(self, tmp_path: Path) -> None:
        """An impossible max_link_width (x99) is UNREADABLE where capability is needed, named by file."""
        root = _copy(tmp_path, "rtx3090x2-gen4")
        (root / "sys/devices/pci0000:00/0000:00:03.1/0000:4b:00.0/max_link_width").write_text("99\n")
        rig = _replay(root)
        v = {t.down.bdf: pcie_checks.link(t) for t in targets.links(rig)}["0000:4b:00.0"]
        assert v.status == "unreadable" and "max_link_width: impossible link width '99'" in v.summary, v

    def test_plugin_turns_source_errors_into_unreadable(self, pytester: pytest.Pytester) -> None:
        """Any rig test (here a user's own) that hits a SourceError fails as UNREADABLE in one message."""
        mine = pytester.makepyfile(
            "from pytest_rigcheck.errors import SourceError\n"
            "def test_mine(rig):\n"
            "    raise SourceError('sys/bus/pci/devices/0000:01:00.0/numa_node', 'not a number')\n"
        )
        result = pytester.runpytest(
            str(mine),
            f"--rig-snapshot={SNAPS / 'rtx3090x2-gen4'}",
            "-p",
            "no:cacheprovider",
            "-k",
            "test_mine",
        )
        out = result.stdout.str()
        assert "UNREADABLE, not a pass: sys/bus/pci/devices/0000:01:00.0/numa_node: not a number" in out
        assert "raise SourceError" not in out, out
        assert result.ret == 1

    def test_every_check_is_wrapped(self) -> None:
        """Each check is wrapped by ``judged``, so a garbage reading anywhere ends as UNREADABLE."""
        for name in ("acs", "bifurcation", "gpu_count", "iommu", "link", "topology"):
            assert getattr(getattr(pcie_checks, name), "__wrapped__", None) is not None, name

    def test_pytest_output_has_no_traceback(self, pytester: pytest.Pytester, tmp_path: Path) -> None:
        """End to end: the garbage width and the escaping cmdline are UNREADABLE failures, no SourceError traceback."""
        root = _copy(tmp_path, "rtx3090x2-gen4")
        (root / "sys/devices/pci0000:00/0000:00:03.1/0000:4b:00.0/current_link_width").write_text("x16\n")
        (root / "proc/cmdline").unlink()
        (root / "proc/cmdline").symlink_to("../../outside/cmdline")
        result = pytester.runpytest_subprocess(
            f"--rig-snapshot={root}", "-p", "no:cacheprovider", "-k", "link_trained or iommu", "-rf"
        )
        out = result.stdout.str()
        assert "SourceError" not in out and "Traceback" not in out, out
        assert "UNREADABLE" in out and "current_link_width: unreadable link width 'x16'" in out
        assert "proc/cmdline -> ../../outside/cmdline leaves the snapshot" in out
        assert result.ret == 1


class TestBifurcationReport:
    def test_each_path_once_and_no_sibling_functions(self, tmp_path: Path) -> None:
        """gate.md D28: 8 path lines for 4 GPUs, and the switch's management function 01:00.1 counted as a
        device below the port."""
        rig = _replay(SNAPS / "rtxpro6000x4-bifurcated-x8x8")
        v = {t.key: pcie_checks.bifurcation(t) for t in targets.lane_groups(rig)}["0000:00:01"]
        assert v.status == "fail"
        assert len(v.path) == 4 and len(set(v.path)) == 4, v.path
        assert len(v.notes) == 1 and "0000:01:00.0" in v.notes[0]
        assert "01:00.1" not in str(v)


class TestWhatCountsAsGpu:
    def _rig_with_bmc(self, tmp_path: Path, model: str = "ast2600") -> Rig:
        """2x H100 on their own root ports, plus the board's BMC VGA behind its own bridge on another port."""
        b = RigBuilder("bmc", cpu="intel")
        host = b.host_bridge()
        for port, gpu in (("0000:00:01.0", "0000:17:00.0"), ("0000:00:03.0", "0000:65:00.0")):
            b.gpu(b.root_port(host, port, cap=(5, 16)), gpu, GPU_MODELS["h100"])
        bmc_port = b.root_port(host, "0000:00:1c.0", cap=(2, 1))
        b.bmc(bmc_port, "0000:03:00.0", model=model)
        return _rig(tmp_path, b, parse_profile({"rig": {"gpus": 2}}, "rig.toml"))

    @pytest.mark.parametrize("model", ["ast2600", "g200"])
    def test_bmc_display_is_not_a_gpu(self, tmp_path: Path, model: str) -> None:
        """issue 9 item 8: an ASPEED AST2600 (1a03:2000) or Matrox G200eR2 (102b:0534) VGA, class 0x0300, is
        the BMC's console: the GPU count passes at 2, names what it left out, and no pair involves it."""
        rig = self._rig_with_bmc(tmp_path, model)
        bmc = "0000:03:00.0"
        assert [g.bdf for g in rig.pcie.gpus] == ["0000:17:00.0", "0000:65:00.0"]
        v = pcie_checks.gpu_count(rig)
        assert v.ok and v.measured_value == 2, v
        assert any(bmc in n and "BMC display controller" in n for n in v.notes), v.notes
        assert bmc in rig.header()
        every = [
            *(t.id for t in targets.gpus(rig)),
            *(t.id for t in targets.gpu_pairs(rig)),
            *(t.id for t in targets.bridges(rig)),
            *(t.id for t in targets.links(rig)),
            *(t.id for t in targets.lane_groups(rig)),
        ]
        assert not any(bmc in i or "00:1c" in i for i in every), every
        assert len(targets.gpu_pairs(rig)) == 1

    def test_amd_instinct_counts(self, tmp_path: Path) -> None:
        """AMD Instinct MI300X (1002:74a1, class 0x1200 processing accelerator) is a GPU; an Intel iGPU is not."""
        from pytest_rigcheck.testing import GpuModel

        b = RigBuilder("amd")
        host = b.host_bridge()
        b.gpu(
            b.root_port(host, "0000:00:01.1", cap=(5, 16)),
            "0000:05:00.0",
            GpuModel(0x1002, 0x74A1, 0x120000, (5, 16)),
        )
        b.gpu(b.root_port(host, "0000:00:02.1"), "0000:06:00.0", GpuModel(0x8086, 0x56A0, 0x030000, (4, 16)))
        rig = _rig(tmp_path, b)
        assert [g.bdf for g in rig.pcie.gpus] == ["0000:05:00.0"]
        assert any(
            "0000:06:00.0" in n and "only NVIDIA and AMD" in n for n in pcie_checks.gpu_count(rig).notes
        )


class TestTopoCommand:
    def test_no_gpu_says_so(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """gate.md D23: on a rig with no GPU, `rigcheck topo` printed a bare header and exited 0."""
        from pytest_rigcheck.cli import main

        b = RigBuilder("nogpu", cpu="intel")
        b.bmc(b.root_port(b.host_bridge(), "0000:00:1c.0", cap=(2, 1)), "0000:03:00.0")
        b.write(tmp_path / "nogpu")
        assert main(["topo", str(tmp_path / "nogpu")]) == 1
        out, err = capsys.readouterr()
        assert out == "" and len(err.strip().splitlines()) == 1, err
        assert "no GPU" in err and "0000:03:00.0 ASPEED" in err

    def test_matrix_leaves_the_bmc_out(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """The matrix has the two GPUs only, and says which display device it left out."""
        from pytest_rigcheck.cli import main

        rig = TestWhatCountsAsGpu()._rig_with_bmc(tmp_path)
        assert main(["topo", str(rig.root)]) == 0
        out = capsys.readouterr().out
        assert out.splitlines()[0].startswith("\tGPU0\tGPU1\tCPU Affinity")
        assert "\nGPU2" not in out and "not counted as GPUs: 0000:03:00.0" in out

    def test_nvlink_peers_show_nv(self, capsys: pytest.CaptureFixture[str]) -> None:
        """gate.md D23: on the NVLink H200 capture topo showed PHB where `nvidia-smi topo -m` shows NV18
        (captures/h200x2-nvlink/nvidia-smi-topo.txt). The recorded NVML state says they are NVLink peers."""
        from pytest_rigcheck.cli import main

        assert main(["topo", str(SNAPS / "h200x2-nvlink")]) == 0
        out = capsys.readouterr().out
        rows = out.splitlines()[1:3]
        assert rows[0].startswith("GPU0\t X \tNV18\t") and not any("PHB" in r for r in rows), out


def test_nvlinks_down_on_one_end_is_not_an_nvlink_pair(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """A link has two ends: with GPU1's 18 NVLinks all down (GPU0's up), the H200 pair cannot use NVLink, so
    test_topology_class judges the PCIe path rather than passing "NVLink peers"; test_nvlinks_up fails GPU1."""
    import json
    import shutil

    snap = tmp_path / "h200"
    shutil.copytree(SNAPS / "h200x2-nvlink", snap, symlinks=True)
    data = json.loads((snap / "nvml.json").read_text())
    data["gpus"][1]["nvlink_states"] = {str(k): 0 for k in range(18)}
    (snap / "nvml.json").write_text(json.dumps(data))
    report = tmp_path / "r.json"
    pytester.runpytest(
        "-p",
        "no:cacheprovider",
        f"--rig-snapshot={snap}",
        f"--rig-report={report}",
        "-k",
        "topology or nvlinks",
    )
    results = {r["nodeid"].rsplit("::", 1)[-1]: r for r in json.loads(report.read_text())["results"]}
    topo = next(r for t, r in results.items() if t.startswith("test_topology_class"))
    assert "NVLink" not in topo["message"] and topo["properties"]["topology"] != "NV18", topo
    assert results["test_nvlinks_up[0000:00:07.0]"]["status"] == "fail"


def test_eight_gpu_server_with_bmc_end_to_end(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """issue 9 item 8, end to end: 8x H100 behind two switches plus the board's ASPEED AST2600 behind its own
    bridge (1a03:1150 -> 1a03:2000, class 0x0300, driver ast). Before, the count read "9 GPU(s)" and the BMC got
    pair checks. Now the count passes at 8, the header names what was left out, and no test id names the BMC."""
    b = RigBuilder("hgx-bmc", cpu="intel", iommu="identity")
    h0, h1 = b.host_bridge(0, 0x00, numa=0), b.host_bridge(0, 0x80, numa=1)
    for host, rp_bdf, bus in ((h0, "0000:00:01.0", 0x10), (h1, "0000:80:01.0", 0x90)):
        rp = b.root_port(host, rp_bdf, cap=(5, 16))
        _, downs = b.switch(
            rp,
            f"0000:{bus:02x}:00.0",
            [f"0000:{bus + 1:02x}:{i:02x}.0" for i in range(4)],
            vendor=0x1000,
            device=0xC030,
            cap=(5, 16),
            down_cap=(5, 16),
        )
        for i, d in enumerate(downs):
            b.gpu(d, f"0000:{bus + 2 + i:02x}:00.0", GPU_MODELS["h100"])
    b.bmc(b.root_port(h0, "0000:00:1c.0", cap=(2, 1)), "0000:03:00.0", model="ast2600")
    b.write(tmp_path / "hgx-bmc")
    prof = tmp_path / "p.toml"
    prof.write_text("[rig]\ngpus = 8\n")
    args = [f"--rig-snapshot={tmp_path / 'hgx-bmc'}", f"--rig-profile={prof}", "-p", "no:cacheprovider"]
    pcie = "(gpu_count or acs or topology or iommu or link_trained or bifurcation) and not seen_by_nvml"
    result = pytester.runpytest_subprocess(*args, "-k", pcie, "-v", "-rfE")
    out = result.stdout.str()
    assert "test_gpu_count[hgx-bmc] PASSED" in out, out
    assert "8 GPUs (+1 display device not counted: 0000:03:00.0 ASPEED BMC)" in out
    assert "0000:03:00.0" not in "\n".join(line for line in out.splitlines() if "::" in line)
    assert "00:1c.0" not in out
    assert result.ret == 0, out
    ids = pytester.runpytest_subprocess(*args, "--collect-only", "-q").stdout.str()
    assert ids.count("test_topology_class[") == 28 and "0000:03:00.0" not in ids  # 8 choose 2 pairs


def test_acs_registers_all_ones_are_unreadable(tmp_path: Path) -> None:
    """An ACS capability whose Capability/Control registers read 0xffff (a failed read; Control bits 15:7 are
    reserved) is UNREADABLE, not "redirect on" or "off"."""
    root = _copy(tmp_path, "rtx3090x2-acs-root-port")
    cfg = root / "sys/devices/pci0000:00/0000:00:03.1/config"
    data = bytearray(cfg.read_bytes())
    data[0x2A4:0x2A8] = b"\xff" * 4
    cfg.write_bytes(bytes(data))
    v = {t.bridge.bdf: pcie_checks.acs(t) for t in targets.bridges(_replay(root))}["0000:00:03.1"]
    assert v.status == "unreadable" and "failed config read" in v.summary, v


def test_iommu_groups_link_out_of_the_snapshot(tmp_path: Path) -> None:
    """sys/kernel/iommu_groups as a link out of the snapshot: the IOMMU check is UNREADABLE naming the refusal,
    and an ACS failure on the same rig is still a FAIL (its IOMMU note is left out)."""
    import shutil

    root = _copy(tmp_path, "rtx3090x2-acs-root-port")
    shutil.rmtree(root / "sys/kernel/iommu_groups", ignore_errors=True)
    (tmp_path / "outside").mkdir()
    (root / "sys/kernel").mkdir(parents=True, exist_ok=True)
    (root / "sys/kernel/iommu_groups").symlink_to("../../../outside")
    rig = _replay(root)
    for t in targets.gpus(rig):
        v = pcie_checks.iommu(t)
        assert v.status == "unreadable" and "leaves the snapshot" in v.summary, v
    acs = {t.bridge.bdf: pcie_checks.acs(t) for t in targets.bridges(rig)}
    assert acs["0000:00:03.1"].status == "fail"


class TestImpossibleLinkReadings:
    """Readings that cannot be are corrupt: UNREADABLE naming the file, never a pass on the surviving reading.

    LnkSta/LnkCap fields per PCIe Base Spec 7.5.3.6/7.5.3.8 (width 0 only on a down link, speed code 0 and
    codes above the defined rates reserved); a new user's report (sysfs width 0 + "Unknown" beside a Gen4
    x16 LnkSta passed as "Gen4 x16").
    """

    GPU1 = "sys/devices/pci0000:00/0000:00:03.1/0000:4b:00.0"
    PORT = "sys/devices/pci0000:00/0000:00:03.1"

    @staticmethod
    def _edit_lnk(path: Path, reg: int, mask: int, value: int) -> None:
        from pytest_rigcheck.pcie import CAP_ID_PCIE, _find_cap

        data = bytearray(path.read_bytes())
        cap = _find_cap("x", bytes(data), CAP_ID_PCIE)
        assert cap is not None
        off = cap + reg
        v = int.from_bytes(data[off : off + 2], "little")
        data[off : off + 2] = ((v & ~mask) | value).to_bytes(2, "little")
        path.write_bytes(bytes(data))

    def _run(self, pytester: pytest.Pytester, root: Path) -> tuple[str, int]:
        result = pytester.runpytest_subprocess(
            f"--rig-snapshot={root}", "-p", "no:cacheprovider", "-k", "link_trained", "-rf"
        )
        return result.stdout.str(), int(result.ret)

    def test_sysfs_down_beside_lnksta_up(self, pytester: pytest.Pytester, tmp_path: Path) -> None:
        root = _copy(tmp_path, "rtx3090x2-gen4")
        (root / self.GPU1 / "current_link_width").write_text("0\n")
        (root / self.GPU1 / "current_link_speed").write_text("Unknown\n")
        out, rc = self._run(pytester, root)
        assert "1 failed, 1 passed" in out, out  # GPU0's link passes, GPU1's does not
        assert "UNREADABLE link 0000:00:03.1 -> 0000:4b:00.0" in out, out
        assert "test_link_trained[0000:4b:00.0]" in out, out
        assert rc == 1

    @pytest.mark.parametrize(
        ("mask", "value"),
        [(0x3F0, 0), (0xF, 0)],
        ids=["LnkSta-width-0", "LnkSta-speed-0"],
    )
    def test_lnksta_reserved_or_zero_at_both_ends(
        self, pytester: pytest.Pytester, tmp_path: Path, mask: int, value: int
    ) -> None:
        root = _copy(tmp_path, "rtx3090x2-gen4")
        for d in (self.PORT, self.GPU1):
            self._edit_lnk(root / d / "config", 0x12, mask, value)
        out, rc = self._run(pytester, root)
        assert "1 failed, 1 passed" in out, out
        assert "UNREADABLE link 0000:00:03.1 -> 0000:4b:00.0" in out, out
        assert rc == 1

    def test_max_link_width_zero(self, pytester: pytest.Pytester, tmp_path: Path) -> None:
        root = _copy(tmp_path, "rtx3090x2-gen4")
        (root / self.GPU1 / "max_link_width").write_text("0\n")
        out, rc = self._run(pytester, root)
        assert "UNREADABLE" in out and "max_link_width" in out, out
        assert rc == 1


@pytest.mark.parametrize(
    ("attr", "text", "why"),
    [
        ("current_link_width", "32", "width x32 above max_link_width x16"),
        ("current_link_speed", "64.0 GT/s PCIe", "speed Gen6 above max_link_speed Gen4"),
    ],
)
def test_link_status_above_its_capability_is_unreadable(
    pytester: pytest.Pytester, tmp_path: Path, attr: str, text: str, why: str
) -> None:
    """Fresh-user finding: sysfs current_link_width 32 (max x16) or 64 GT/s (max 16 GT/s) passed as
    "Gen4 x16". LnkSta never exceeds LnkCap (PCIe Base Spec 7.5.3.8): UNREADABLE naming the attribute."""
    import shutil

    from .conftest import SNAPSHOTS

    snap = tmp_path / "s"
    shutil.copytree(SNAPSHOTS / "rtx3090x2-gen4", snap, symlinks=True)
    f = (snap / "sys/bus/pci/devices/0000:4b:00.0").resolve() / attr
    f.unlink()
    f.write_text(text + "\n")
    result = pytester.runpytest_subprocess(
        f"--rig-snapshot={snap}", "-p", "no:cacheprovider", "-k", "link_trained"
    )
    out = result.stdout.str()
    assert result.ret == 1 and why in out and "UNREADABLE" in out, out
