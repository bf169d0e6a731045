"""Model storage: a real read of a temporary file, mountinfo and block-device parsing, the judge."""

from __future__ import annotations

import json
import os

import pytest

from pytest_rigcheck import storage
from pytest_rigcheck.errors import ProfileError
from pytest_rigcheck.source import Source
from pytest_rigcheck.verdict import Status

from ..conftest import SNAPSHOTS

# proc(5) example lines, plus a mount point with a space (escaped \040).
MOUNTINFO = """\
22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
36 22 259:5 / /models rw,relatime shared:2 - xfs /dev/nvme1n1p1 rw
40 22 0:45 / /mnt/big\\040disk rw - nfs4 nas:/export rw
"""


def test_mount_of_picks_the_longest_mount_point():
    assert storage.mount_of("/models/llama/x.safetensors", MOUNTINFO) == {
        "mount_point": "/models",
        "dev": "259:5",
        "fstype": "xfs",
        "source": "/dev/nvme1n1p1",
    }
    assert storage.mount_of("/home/u/m", MOUNTINFO)["dev"] == "259:2"
    assert storage.mount_of("/mnt/big disk/m", MOUNTINFO)["fstype"] == "nfs4"
    with pytest.raises(ValueError):
        storage.mount_of("/x", "not mountinfo\n")


def test_block_device_follows_nvme_to_its_pci_link(tmp_path):
    root = tmp_path
    pci = root / "sys/devices/pci0000:40/0000:40:01.1/0000:41:00.0"
    part = pci / "nvme/nvme1/nvme1n1/nvme1n1p1"
    part.mkdir(parents=True)
    (part / "partition").write_text("1\n")
    (part.parent / "queue").mkdir()
    (part.parent / "queue/rotational").write_text("0\n")
    (part.parent / "device").mkdir()
    (part.parent / "device/model").write_text("Samsung SSD 990 PRO 4TB\n")
    for name, value in (
        ("current_link_speed", "8.0 GT/s PCIe"),
        ("current_link_width", "2"),
        ("max_link_speed", "16.0 GT/s PCIe"),
        ("max_link_width", "4"),
    ):
        (pci / name).write_text(value + "\n")
    (root / "sys/dev/block").mkdir(parents=True)
    os.symlink(
        "../../devices/pci0000:40/0000:40:01.1/0000:41:00.0/nvme/nvme1/nvme1n1/nvme1n1p1",
        root / "sys/dev/block/259:5",
    )
    d = storage.block_device(Source(root), "259:5")
    assert d["disk"] == "nvme1n1" and d["model"] == "Samsung SSD 990 PRO 4TB" and d["rotational"] is False
    assert d["pcie"] == {"bdf": "0000:41:00.0", "gen": 3, "width": 2, "max_gen": 4, "max_width": 4}
    r = storage.StorageReading(
        "/models/m", 1, 10**9, 10**8, 1.0, "O_DIRECT", "/models/m/a.safetensors", device=d
    )
    v = storage.judge(r, storage.StorageExpect(min_read_gbps=2))
    assert v.status == Status.FAIL and any("trained below its capability" in f for f in v.fix)


def test_real_read_of_a_temporary_model(tmp_path):
    """A real measurement on this machine: 32 MiB file, read bypassing the page cache."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "model-00001-of-00001.safetensors").write_bytes(os.urandom(32 << 20))
    (model / "config.json").write_text("{}")
    r = storage.measure(model)
    assert r.unavailable is None, r.unavailable
    assert r.files == 1 and r.total_bytes == 32 << 20 and r.read_bytes == 32 << 20
    assert r.method == "O_DIRECT" or r.method.startswith("posix_fadvise")
    v = storage.judge(r, storage.StorageExpect(min_read_gbps=0.01))
    assert v.status == Status.PASS, str(v)
    assert v.unit == "GB/s" and v.properties["storage_load_s"] >= 0 and "load in" in v.summary


def test_slow_read_fails_with_load_time():
    r = storage.StorageReading("/models/m", 30, 141 * 10**9, 2 * 10**9, 10.0, "O_DIRECT", "/models/m/a")
    v = storage.judge(r, storage.StorageExpect())
    assert v.status == Status.FAIL and "0.20 GB/s" in v.summary and "705 s to load" in v.summary
    assert v.measured_value == 0.2 and v.expected_value == 0.5


def test_no_measurement_is_unreadable():
    assert (
        storage.judge(storage.StorageReading("/m", unavailable="x"), storage.StorageExpect()).status
        == Status.UNREADABLE
    )
    assert storage.judge(storage.StorageReading("/m"), storage.StorageExpect()).status == Status.UNREADABLE
    assert storage.measure(storage.Path("/nonexistent-dir")).unavailable


def test_profile_section():
    assert storage.parse_storage({"min_read_gbps": 2}, "rig.toml").min_read_gbps == 2.0
    for table in ({"min_read_gbps": 0}, {"min_read_gbps": "fast"}, {"speed": 1}):
        with pytest.raises(ProfileError):
            storage.parse_storage(table, "rig.toml")


def test_corrupt_record():
    with pytest.raises(ValueError):
        storage.StorageReading.from_json({"model_dir": "/m", "read_bytes": -1})


NVME = {"bdf": "0000:41:00.0", "gen": 4, "max_gen": 4, "width": 4, "max_width": 4}


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"device": {"pcie": {**NVME, "gen": 9}}}, "device.pcie.gen = 9 is not a PCIe generation"),
        ({"device": {"pcie": {**NVME, "width": 5}}}, "device.pcie.width = 5 is not a PCIe link width"),
        (
            {"device": {"pcie": {**NVME, "gen": 5}}},
            r"device.pcie.gen = 5 \(Gen5\) is above the link's own maximum max_gen = 4",
        ),
        ({"total_bytes": 0}, "total_bytes = 0 is smaller than read_bytes = 1"),
        ({"device": {"pcie": "Gen4"}}, "device.pcie is not an object"),
        ({"file": "/etc/passwd"}, "is not under model_dir"),
    ],
    ids=["gen9", "x5", "above-cap", "total-below-read", "not-object", "file-outside"],
)
def test_impossible_record_is_corrupt(change, why):
    """Impossible or self-contradictory storage.json readings are corrupt, never quoted in a pass."""
    data = {
        "model_dir": "/models/m",
        "file": "/models/m/a.safetensors",
        "read_bytes": 1,
        "total_bytes": 1,
        "seconds": 1.0,
    }
    with pytest.raises(ValueError, match=why):
        storage.StorageReading.from_json({**data, **change})


HEALTHY = {
    "model_dir": "/models/m",
    "file": "/models/m/a.safetensors",
    "files": 30,
    "total_bytes": 141_107_412_992,
    "read_bytes": 4 << 30,
    "seconds": 0.71,
    "method": "O_DIRECT",
    "device": {"disk": "nvme1n1", "pcie": NVME},
}


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (
            {"seconds": 0.1},
            "reads at 42.95 GB/s (4294967296 bytes in 0.1 s), above the 7.88 GB/s its device's PCIe link",
        ),
        (
            {"seconds": 0.5, "device": {"pcie": {**NVME, "gen": 3, "width": 2}}},
            "above the 1.97 GB/s its device's PCIe link 0000:41:00.0 Gen3 x2",
        ),
        (
            {"read_bytes": 4096, "seconds": 0.000001},
            "read 4096 bytes of the model's 141107412992 in 1e-06 s: too small",
        ),
        ({"read_bytes": 60 << 20, "seconds": 0.1}, "too small to be evidence of disk speed"),
    ],
    ids=["above-gen4-x4", "above-trained-gen3-x2", "4-KiB", "60-MiB"],
)
def test_read_no_disk_can_give_is_unreadable(change, why):
    """FRESH3 F-St1/St7: a read faster than the named device's own PCIe link can carry (42.95 GB/s on a Gen4
    x4 NVMe), or a few KiB "read", is no evidence of disk speed: UNREADABLE saying why, never a pass."""
    assert (
        storage.judge(storage.StorageReading.from_json(HEALTHY), storage.StorageExpect()).status
        == Status.PASS
    )
    v = storage.judge(storage.StorageReading.from_json({**HEALTHY, **change}), storage.StorageExpect())
    assert v.status == Status.UNREADABLE and why in v.summary, v.summary


def test_small_reads_that_are_evidence():
    """A small read is evidence when it is the whole model, or when a slow disk ran out the time limit."""
    whole = {**HEALTHY, "total_bytes": 32 << 20, "read_bytes": 32 << 20, "seconds": 0.02}
    assert (
        storage.judge(storage.StorageReading.from_json(whole), storage.StorageExpect()).status == Status.PASS
    )
    slow = {**HEALTHY, "read_bytes": 40 << 20, "seconds": 10.0}
    assert (
        storage.judge(storage.StorageReading.from_json(slow), storage.StorageExpect()).status == Status.FAIL
    )


SLOW_DISK = json.loads((SNAPSHOTS / "rtx3090x2-slow-disk" / "storage.json").read_text())


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (
            {"read_bytes": 4_000_000_000, "seconds": 1.0},
            "reads at 4.00 GB/s from sdb 'ST8000DM004-2U91', a rotating disk (queue/rotational = 1): no single "
            "hard disk reads above 0.6 GB/s",
        ),
        ({"method": None}, "read by method '(none recorded)', not one that bypasses the page cache"),
        ({"method": "cat"}, "read by method 'cat', not one that bypasses the page cache"),
        ({"method": "page cache"}, "read by method 'page cache'"),
        ({"files": 0}, "files = 0 beside 1932735283 bytes read of a 141107412992-byte model (contradictory)"),
    ],
    ids=["hdd-at-4GBps", "no-method", "method-cat", "method-page-cache", "no-files"],
)
def test_storage_record_no_disk_read_gives_is_unreadable(change, why):
    """FRESH4 finding 3: rtx3090x2-slow-disk's storage.json (ST8000DM004, a 5400 rpm SATA disk) passed at
    4 GB/s, and with `method` deleted, "cat" or "page cache" (maybe a cached read), and with `files` 0 beside
    141 GB. Each is UNREADABLE saying why; the shipped record still judges (FAIL at 0.19 GB/s)."""
    assert (
        storage.judge(storage.StorageReading.from_json(SLOW_DISK), storage.StorageExpect()).status
        == Status.FAIL
    )
    data = {**SLOW_DISK, **change}
    data = {k: v for k, v in data.items() if v is not None}
    v = storage.judge(storage.StorageReading.from_json(data), storage.StorageExpect())
    assert v.status == Status.UNREADABLE and why in v.summary, v.summary


def test_rotational_array_is_not_held_to_one_disk():
    """md/dm devices stripe several disks (their rotational flag is their members'): no one-disk ceiling."""
    data = {**SLOW_DISK, "read_bytes": 1_500_000_000, "seconds": 1.0}
    data["device"] = {**SLOW_DISK["device"], "disk": "md0", "name": "md0"}
    assert (
        storage.judge(storage.StorageReading.from_json(data), storage.StorageExpect()).status == Status.PASS
    )


def test_read_methods_are_what_read_file_writes(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"\0" * (1 << 20))
    assert storage.read_file(f)[2] in storage.READ_METHODS
