"""The launcher-worker handshake, through files in the run's directory (stdlib only).

A worker writes ``ready.<name>`` once set up (torch imported, CUDA and NCCL initialised), waits for
``go.<phase>``, measures, and writes ``result.<name>.json`` atomically. Files, not pipes: nothing to
deadlock on, and a worker whose parent is gone exits on its own.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any


def mark_ready(run_dir: str, name: str) -> None:
    with open(os.path.join(run_dir, f"ready.{name}"), "w", encoding="utf-8") as f:
        f.write(str(os.getpid()))


def wait_go(run_dir: str, phase: str, parent: int) -> None:
    """Block until the launcher says go; exit if the launcher died meanwhile."""
    path = os.path.join(run_dir, f"go.{phase}")
    while not os.path.exists(path):
        if os.getppid() != parent:
            sys.exit(3)
        time.sleep(0.002)


def write_result(run_dir: str, name: str, data: dict[str, Any]) -> None:
    path = os.path.join(run_dir, f"result.{name}.json")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(path + ".tmp", path)


def mark_step(run_dir: str, name: str, text: str) -> None:
    """What the worker measures now (``step.<name>``), for the launcher's status line; best effort."""
    path = os.path.join(run_dir, f"step.{name}")
    try:
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
    except OSError:
        pass


def finish(code: int) -> None:
    """Exit now, once the result is written: flush Python's and C's output (NCCL's INFO lines are C stdio,
    block-buffered into the log file), then ``os._exit``, skipping the interpreter's and torch's finalizers
    and NCCL's communicator teardown, which took 0.8-1.5 s a worker on 2x H200 while the launcher waited.
    The driver frees the process's GPU memory when it exits, as on any exit."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)  # every C stdio stream (fflush(NULL), C11 7.21.5.2)
    except (OSError, AttributeError):
        pass
    os._exit(code)


def log(*parts: object) -> None:
    print("[rigcheck-worker]", *parts, flush=True)
