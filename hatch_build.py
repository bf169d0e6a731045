"""Build hook: the shipped snapshots travel in the wheel as ``pytest_rigcheck/snapshots/NAME.tar.gz``.

A wheel is a zip file and keeps no symlinks, while a snapshot is mostly the kernel's relative symlinks
(``sys/bus/pci/devices/* -> ../../../devices/...``); so each ``fixtures/sysfs-snapshots/NAME`` directory
is packed as a tarball (links kept as links, about 120 KB for all of them), and ``--rig-snapshot=NAME``
opens it like any other ``.tar.gz`` snapshot. Empty directories are not in git either: the manifests
list them (``empty_dirs``), so a snapshot reads the same from a checkout, a tarball or a wheel.
An editable install reads the directories in the checkout instead. The sdist carries the same
tarballs in place of the directories (its tar writer does not keep the links either), so a wheel built
from it (``python -m build``) has them too.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SNAPSHOTS = Path("fixtures") / "sysfs-snapshots"
DEST = "pytest_rigcheck/snapshots"


def _reset(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Reproducible members: no owners, one timestamp, plain modes."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "315532800"))
    if info.isdir():
        info.mode = 0o755
    elif info.isfile():
        info.mode = 0o644
    return info


def pack(directory: Path, archive: Path) -> None:
    """``directory`` as a gzip'd tarball, sorted, links kept as links (never followed)."""
    paths = sorted(p for p in directory.rglob("*"))
    with gzip.GzipFile(archive, "wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for p in paths:
            rel = p.relative_to(directory).as_posix()
            tar.add(p, arcname=rel, recursive=False, filter=_reset)


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name not in ("wheel", "sdist") or version == "editable":
            return
        src = Path(self.root) / SNAPSHOTS
        if not src.is_dir():
            return  # a wheel built from the sdist: the tarballs are already in pytest_rigcheck/snapshots
        self._tmp = tempfile.mkdtemp(prefix="rigcheck-snapshots-")
        for snap in sorted(src.iterdir()):
            if not (snap / "MANIFEST.toml").is_file():
                continue
            archive = Path(self._tmp) / f"{snap.name}.tar.gz"
            pack(snap, archive)
            build_data["force_include"][str(archive)] = f"{DEST}/{snap.name}.tar.gz"

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        tmp = getattr(self, "_tmp", None)
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
