"""Pure PCIe parsers: BDFs, link speeds, config space."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_rigcheck.errors import ConfigSpaceError
from pytest_rigcheck.pcie import (
    PortType,
    decode_acs,
    link_above_capability,
    no_pcie_cap_why,
    normalize_bdf,
    parse_config,
    parse_link_speed,
)

from .conftest import SNAPSHOTS


class TestNormalizeBdf:
    @pytest.mark.parametrize(
        ("text", "want"),
        [
            ("0000:17:00.0", "0000:17:00.0"),
            ("00000000:17:00.0", "0000:17:00.0"),  # NVML's 8-digit domain
            ("17:00.0", "0000:17:00.0"),  # lspci without domain
            ("0000:AB:1F.7", "0000:ab:1f.7"),
            ("10000:01:00.0", "00010000:01:00.0"),  # VMD domains
        ],
    )
    def test_accepts(self, text: str, want: str) -> None:
        """Every spelling of an address normalizes to the sysfs one."""
        assert normalize_bdf(text) == want

    @pytest.mark.parametrize("text", ["", "0000:17:00", "0000:17:20.0", "zz:00.0", "0000:17:00.8", "../etc"])
    def test_rejects(self, text: str) -> None:
        """Anything that is not an address is a ValueError naming it."""
        with pytest.raises(ValueError, match="PCI"):
            normalize_bdf(text)


class TestParseLinkSpeed:
    @pytest.mark.parametrize(
        ("text", "gen"),
        [
            ("2.5 GT/s PCIe", 1),
            ("5.0 GT/s PCIe", 2),
            ("8.0 GT/s PCIe", 3),
            ("16.0 GT/s PCIe", 4),
            ("32.0 GT/s PCIe", 5),
            ("64.0 GT/s PCIe", 6),
            ("8 GT/s", 3),
            ("16 GT/s", 4),
            ("Unknown", None),
        ],
    )
    def test_table(self, text: str, gen: int | None) -> None:
        """Kernel >= 5.7 and older spellings both parse."""
        assert parse_link_speed(text) == gen

    @pytest.mark.parametrize("text", ["", "16", "fast", "3.0 GT/s PCIe"])
    def test_rejects(self, text: str) -> None:
        """Unparsable speeds raise ValueError."""
        with pytest.raises(ValueError):
            parse_link_speed(text)


class TestConfigSpace:
    def test_real_h200(self) -> None:
        """The captured H200 config space parses: endpoint, Gen5 x16, hidden first extended capability skipped."""
        data = (SNAPSHOTS / "h200x2-nvlink/sys/devices/pci0000:00/0000:00:06.0/config").read_bytes()
        cfg = parse_config("0000:00:06.0", data)
        assert cfg.port_type == PortType.ENDPOINT
        assert cfg.link is not None
        assert (cfg.link.cap_speed, cfg.link.cap_width, cfg.link.sta_speed, cfg.link.sta_width) == (
            5,
            16,
            5,
            16,
        )
        assert cfg.acs is None
        assert cfg.aer is not None

    def test_nonroot_64_bytes(self) -> None:
        """A 64-byte read (non-root) parses the header only: no link, no ACS."""
        data = (SNAPSHOTS / "h100x1-nonroot/sys/devices/pci0000:00/0000:00:06.0/config").read_bytes()
        cfg = parse_config("0000:00:06.0", data)
        assert cfg.size == 64 and cfg.link is None and cfg.acs is None and not cfg.has_capabilities

    def test_modelled_switch_port_acs(self) -> None:
        """A modelled Switchtec downstream port carries ACS with the control value it was built with."""
        snap = SNAPSHOTS / "rtxpro6000x4-acs-switch/sys/bus/pci/devices/0000:02:01.0"
        cfg = parse_config("0000:02:01.0", (snap / "config").read_bytes())
        assert cfg.port_type == PortType.DOWNSTREAM
        assert cfg.acs is not None and cfg.acs.ctrl == 0x001D
        assert (
            decode_acs(cfg.acs.ctrl)
            == "SrcValid+ TransBlk- ReqRedir+ CmpltRedir+ UpstreamFwd+ EgressCtrl- DirectTrans-"
        )

    @pytest.mark.parametrize(
        ("patch", "match"),
        [
            ({0x34: 0x20}, "outside config space"),  # capability pointer into the header
            ({0x34: 0x40, 0x40: 0x01, 0x41: 0x40}, "loops"),
        ],
    )
    def test_malformed(self, patch: dict[int, int], match: str) -> None:
        """Malformed capability lists raise ConfigSpaceError naming the flaw."""
        data = bytearray(256)
        data[0:2] = (0x10DE).to_bytes(2, "little")
        data[6] = 0x10
        for off, val in patch.items():
            data[off] = val
        with pytest.raises(ConfigSpaceError, match=match):
            parse_config("0000:01:00.0", bytes(data))

    @pytest.mark.parametrize(
        ("header", "at", "match"),
        [
            (b"\xff\xff\xff\xff", 0x100, "reads 0xffffffff, the value of a failed config read"),
            (b"\x00\x00\x00\x00", 0x100, "0x100 reads 0x00000000 on a PCI Express port"),
            (b"\xff\xff\xff\xff", 0x2A0, "at 0x2a0 reads 0xffffffff"),  # the ACS header itself
        ],
    )
    def test_extended_header_all_ones_or_zero_on_a_port(self, header: bytes, at: int, match: str) -> None:
        """gate.md D2: an all-ones header (a failed config read) or zeros at 0x100 of a PCIe port hid the ACS
        capability at 0x2a0, and the port passed as "no ACS capability". Now it is a ConfigSpaceError."""
        path = SNAPSHOTS / "rtx3090x2-acs-root-port/sys/devices/pci0000:00/0000:00:01.1/config"
        data = bytearray(path.read_bytes())
        assert parse_config("0000:00:01.1", bytes(data)).acs is not None
        data[at : at + 4] = header
        with pytest.raises(ConfigSpaceError, match=match):
            parse_config("0000:00:01.1", bytes(data))

    def test_second_acs_capability_is_a_config_space_error(self) -> None:
        """Fresh-user finding: an extra ACS capability with ACSCtl 0x0000 inserted ahead of the real one
        (redirect on) made the port pass "ACSCtl 0x0000". A function has one ACS capability (PCIe Base Spec
        7.7.8): two is no real config space, and which one the hardware obeys is unknown."""
        path = SNAPSHOTS / "rtx3090x2-acs-root-port/sys/devices/pci0000:00/0000:00:01.1/config"
        data = bytearray(path.read_bytes())
        acs = parse_config("0000:00:01.1", bytes(data)).acs
        assert acs is not None
        # a fake ACS at 0xf00 (ACSCtl 0) that the first capability now points to, then on to the rest
        first = int.from_bytes(data[0x100:0x104], "little")
        data[0xF00:0xF04] = (0x000D | (1 << 16) | (((first >> 20) & 0xFFC) << 20)).to_bytes(4, "little")
        data[0xF04:0xF08] = bytes(4)
        data[0x100:0x104] = ((first & 0xFFFFF) | (0xF00 << 20)).to_bytes(4, "little")
        with pytest.raises(ConfigSpaceError, match="two ACS extended capabilities"):
            parse_config("0000:00:01.1", bytes(data))

    def test_zero_at_0x100_of_an_endpoint_is_the_end(self) -> None:
        """An endpoint (here a GPU) may have no extended capability: zeros at 0x100 end the list (PCIe Base
        Spec 7.6.3). Only PCIe ports, which always carry some, are held to more."""
        path = SNAPSHOTS / "rtx3090x2-gen4/sys/devices/pci0000:00/0000:00:01.1/0000:21:00.0/config"
        data = bytearray(path.read_bytes())
        data[0x100:0x104] = bytes(4)
        cfg = parse_config("0000:21:00.0", bytes(data))
        assert cfg.port_type == PortType.ENDPOINT and cfg.aer is None

    @given(st.binary(max_size=4096))
    def test_any_bytes_parse_or_raise_clearly(self, data: bytes) -> None:
        """Any bytes as config space either parse or raise ConfigSpaceError, nothing else."""
        try:
            parse_config("0000:01:00.0", data)
        except ConfigSpaceError as exc:
            assert exc.bdf == "0000:01:00.0"

    @given(st.dictionaries(st.integers(0, 4095), st.integers(0, 255), max_size=96))
    def test_any_extended_space(self, pokes: dict[int, int]) -> None:
        """4 KiB config space with random bytes poked in (capability pointers included) parses or raises clearly."""
        buf = bytearray(4096)
        for off, val in pokes.items():
            buf[off] = val
        buf[0:2], buf[6] = b"\xde\x10", buf[6] | 0x10
        data = bytes(buf)
        try:
            parse_config("0000:01:00.0", data)
        except ConfigSpaceError:
            pass


def test_snapshot_dir_exists() -> None:
    """The shipped snapshots are in the checkout."""
    assert Path(SNAPSHOTS).is_dir()


@pytest.mark.parametrize(
    ("cap", "now", "why"),
    [
        ((4, 16), (4, 32), "LnkSta width = 32 (x32) is above the link's own maximum LnkCap width = 16 (x16)"),
        ((4, 16), (5, 16), "LnkSta speed = 5 (Gen5) is above the link's own maximum LnkCap speed = 4 (Gen4)"),
        ((4, 16), (5, None), None),  # link down: LnkSta's speed is undefined
        ((4, 16), (4, 16), None),
        ((4, 16), (1, 8), None),
        ((None, None), (4, 32), None),
    ],
)
def test_link_above_capability(cap: tuple, now: tuple, why: str | None) -> None:
    """The one rule (tree.PciFunction.link_errors, import-lspci _check_links): LnkSta within LnkCap."""
    assert link_above_capability(cap, now) == why


def test_no_pcie_cap_why() -> None:
    """FRESH3 F-A12: the reason names what hides the PCIe capability."""
    cfg = bytearray(256)
    cfg[0:4] = b"\x22\x10\x83\x14"
    cfg[0x06] = 0x10
    cfg[0x34] = 0x40
    cfg[0x40:0x42] = b"\x01\x50"
    cfg[0x50:0x52] = b"\x05\x00"
    assert no_pcie_cap_why("x", bytes(cfg)) == (
        "the capability list 0x40 (ID 0x01) -> 0x50 (ID 0x05) ends without a PCI Express capability (ID 0x10)"
    )
    assert parse_config("x", bytes(cfg)).port_type is None
    cfg[0x34] = 0
    assert no_pcie_cap_why("x", bytes(cfg)) == "the capabilities pointer at 0x34 is 0"
    cfg[0x06] = 0
    assert "bit 4 (Capabilities List) is clear" in no_pcie_cap_why("x", bytes(cfg))
