"""The custom all-reduce write path (issue 9.9): a peer's kernel stores into this GPU's buffer through
the IPC mapping; a wrong write fails with --disable-custom-all-reduce as the fix. Replayed from p2p.json
(``nccl.ipc.pairs["WRITER->OWNER"].kernel_write``); the worker side runs live only (Triton, two GPUs).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from .test_replay import DATA, SNAPSHOTS

SUITE = str(Path(__file__).resolve().parents[2] / "suites" / "test_cuda_ipc.py")


def _run(pytester: pytest.Pytester, tmp_path: Path, kernel: dict[str, Any] | None) -> tuple[str, int]:
    import shutil

    snap = tmp_path / "h200"
    shutil.copytree(SNAPSHOTS / "h200x2-nvlink", snap, symlinks=True)
    data = json.loads((DATA / "h200x2-live-p2p.json").read_text())
    for entry in data["nccl"]["ipc"]["pairs"].values():
        entry.pop("kernel_write", None)
        if kernel is not None:
            entry["kernel_write"] = kernel
    (snap / "p2p.json").write_text(json.dumps(data))
    r = pytester.runpytest_subprocess(
        f"--rig-snapshot={snap}", SUITE, "-k", "kernel_write", "-rfEsw", "-p", "no:cacheprovider"
    )
    return r.stdout.str(), r.ret


def test_intact_write_passes(pytester: pytest.Pytester, tmp_path: Path) -> None:
    out, rc = _run(pytester, tmp_path, {"ok": True, "mismatches": 0, "bytes": 4194304})
    assert rc == 0, out
    assert len(re.findall(r"passed", out)) >= 1 and "2 passed" in out


def test_wrong_write_fails_with_the_vllm_fix(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """Stores that land wrong: FAIL, both GPUs named, --disable-custom-all-reduce as the fix."""
    out, rc = _run(pytester, tmp_path, {"ok": False, "mismatches": 1048576, "bytes": 4194304})
    assert rc == 1 and "2 failed" in out, out
    assert "custom all-reduce write path broken" in out and "1048576 of 1048576 int32 wrong" in out
    assert "--disable-custom-all-reduce" in out and "0000:00:06.0" in out and "0000:00:07.0" in out


@pytest.mark.parametrize(
    ("kernel", "said"),
    [
        (
            {"ok": None, "error": "not run: ModuleNotFoundError: No module named 'triton'"},
            "pip install triton",
        ),
        (None, "not recorded"),  # a p2p.json from before the write check
        ({"ok": False, "error": "CudaError: cudaIpcOpenMemHandle failed: cudaError 217"}, "cudaError 217"),
    ],
)
def test_not_run_is_unreadable(
    pytester: pytest.Pytester, tmp_path: Path, kernel: dict[str, Any] | None, said: str
) -> None:
    """No Triton, or no record: UNREADABLE (the gate fails), never a pass; a faulting write fails."""
    out, rc = _run(pytester, tmp_path, kernel)
    assert rc == 1 and "2 failed" in out and said in out, out
