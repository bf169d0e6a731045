"""One GPU measurement at a time on a machine, and one measurement per test run shared by xdist workers.

``measure_lock()`` is an exclusive ``flock`` on a file in the temp directory, held while measuring:
xdist workers of one run, and other pytest runs on the machine, wait their turn. With xdist, the first
worker to take the lock measures and leaves the figures in a file named by the run's ``testrunuid``;
the others read them instead of measuring again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOCK_NAME = "rigcheck-gpu-measure.lock"


@contextlib.contextmanager
def measure_lock(timeout_s: float = 1800.0, directory: Path | None = None) -> Iterator[None]:
    """Hold the machine-wide measurement lock; ``TimeoutError`` names the holder if it never frees."""
    path = (directory or Path(tempfile.gettempdir())) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                    raise TimeoutError(
                        f"another GPU measurement (pid {holder}) has held {path} for over {timeout_s:.0f} s"
                    ) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def shared_result_path(testrunuid: str | None, rig_name: str, directory: Path | None = None) -> Path | None:
    """Where xdist workers of one run share a rig's figures; None outside xdist."""
    if not testrunuid:
        return None
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{testrunuid}-{rig_name}")
    return (directory or Path(tempfile.gettempdir())) / f"rigcheck-p2p-{safe}.json"


def read_shared(path: Path | None) -> dict[str, Any] | None:
    if path is None or not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def write_shared(path: Path | None, data: dict[str, Any]) -> None:
    if path is None:
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)
