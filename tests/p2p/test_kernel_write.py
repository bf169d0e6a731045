"""The custom all-reduce write path (issue 9.9): a peer's kernel stores into this GPU's buffer through
the IPC mapping; a wrong write fails with --disable-custom-all-reduce as the fix. Replayed from p2p.json
(``nccl.ipc.pairs["WRITER->OWNER"].kernel_write``); the worker side runs live only (two GPUs).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace
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
            "this rigcheck needs only PyTorch for it",
        ),
        (None, "not recorded"),  # a p2p.json from before the write check
        ({"ok": False, "error": "CudaError: cudaIpcOpenMemHandle failed: cudaError 217"}, "cudaError 217"),
    ],
)
def test_not_run_is_unreadable(
    pytester: pytest.Pytester, tmp_path: Path, kernel: dict[str, Any] | None, said: str
) -> None:
    """Not run (an older rigcheck without Triton), or no record: UNREADABLE (the gate fails), never a pass; a faulting write fails."""
    out, rc = _run(pytester, tmp_path, kernel)
    assert rc == 1 and "2 failed" in out and said in out, out


# -- the worker's side, two ranks as threads over a modelled address space ------------------------------


class _Mem:
    """One address space shared by the 'GPUs' (IPC mappings are the same addresses): int32 words."""

    def __init__(self) -> None:
        self.blocks: dict[int, list[int]] = {}
        self.next = 0x1000

    def alloc(self, words: int, fill: int = 0) -> int:
        base, self.next = self.next, self.next + words * 4 + 0x1000
        self.blocks[base] = [fill] * words
        return base

    def at(self, ptr: int) -> tuple[list[int], int]:
        for base, words in self.blocks.items():
            if base <= ptr < base + len(words) * 4:
                return words, (ptr - base) // 4
        raise ValueError(f"bad pointer {ptr:#x}")

    def copy(self, dst: int, src: int, nbytes: int) -> None:
        (d, i), (s, j) = self.at(dst), self.at(src)
        d[i : i + nbytes // 4] = s[j : j + nbytes // 4]


def _fake_torch(mem: _Mem) -> Any:
    import contextlib
    import types

    class T:
        def __init__(self, values: list[int]) -> None:
            self.ptr = mem.alloc(len(values))
            mem.blocks[self.ptr][:] = values

        @property
        def v(self) -> list[int]:
            return mem.blocks[self.ptr]

        def _set(self, f: Any) -> Any:
            self.v[:] = [f(x) for x in self.v]
            return self

        def mul_(self, k: int) -> Any:
            return self._set(lambda x: x * k)

        def add_(self, k: int) -> Any:
            return self._set(lambda x: x + k)

        def bitwise_and_(self, k: int) -> Any:
            return self._set(lambda x: x & k)

        def to(self, dtype: Any) -> Any:
            return self

        def data_ptr(self) -> int:
            return self.ptr

        def numel(self) -> int:
            return len(self.v)

        def __ne__(self, other: Any) -> Any:  # type: ignore[override]
            return SimpleNamespace(
                sum=lambda: SimpleNamespace(
                    item=lambda: sum(a != b for a, b in zip(self.v, other.v, strict=True))
                )
            )

    t = types.SimpleNamespace(int64="int64", int32="int32")
    t.arange = lambda n, dtype=None, device=None: T(list(range(n)))
    t.full = lambda shape, val, dtype=None, device=None: T([val] * shape[0])
    t.cuda = types.SimpleNamespace(synchronize=lambda *a: None, device=lambda d: contextlib.nullcontext())
    return t


def _simulate(monkeypatch: pytest.MonkeyPatch, write_delta: int, triton: bool = True) -> list[dict[str, Any]]:
    import importlib.util
    import threading

    workers = Path(__file__).resolve().parents[2] / "pytest_rigcheck" / "p2p" / "workers"
    monkeypatch.syspath_prepend(str(workers))
    spec = importlib.util.spec_from_file_location("_nccl_worker_sim", workers / "nccl_worker.py")
    assert spec and spec.loader
    w = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(w)
    mem = _Mem()
    torch = _fake_torch(mem)
    import types

    def kernel_write(torch_: Any, src: Any, remote: int, device: Any) -> None:
        words, i = mem.at(remote)
        words[i : i + src.numel()] = [x + write_delta for x in src.v]

    def kernel_read(torch_: Any, remote: int, numel: int, device: Any) -> Any:
        out = torch.full((numel,), -1)
        mem.copy(out.data_ptr(), remote, numel * 4)
        return out

    monkeypatch.setitem(sys.modules, "_kernel_read", types.SimpleNamespace(kernel_read=kernel_read))
    if triton:
        monkeypatch.setitem(sys.modules, "_kernel_write", types.SimpleNamespace(kernel_write=kernel_write))
    else:
        monkeypatch.setitem(sys.modules, "_kernel_write", None)  # import fails: no Triton
    rt = SimpleNamespace(
        set_device=lambda i: None,
        malloc=lambda n: mem.alloc(n // 4),
        memcpy=mem.copy,
        synchronize=lambda: None,
        ipc_get_handle=lambda p: str(p).encode(),
        ipc_open=lambda h: int(h.decode()),
        ipc_close=lambda p: None,
        free=lambda p: None,
    )
    world, slots, gate = 2, [None, None], threading.Barrier(2)
    lock = threading.Lock()

    def all_gather(out: list[Any], obj: Any, rank: int) -> None:
        with lock:
            slots[rank] = obj
        gate.wait()
        out[:] = list(slots)
        gate.wait()

    results: list[dict[str, Any]] = [{}, {}]
    ranks = ["0000:00:06.0", "0000:00:07.0"]

    def rank_main(r: int) -> None:
        dist = SimpleNamespace(
            all_gather_object=lambda out, obj: all_gather(out, obj, r), barrier=lambda device_ids: gate.wait()
        )
        results[r] = w.ipc_check(
            rt, torch, dist, r, world, SimpleNamespace(index=r), {"ranks": ranks, "ipc_elems": 16}
        )

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_worker_write_then_owner_verifies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each rank's kernel writes its slot of the peer's inbox; the owner finds it intact (key WRITER->OWNER)."""
    r0, r1 = _simulate(monkeypatch, 0)
    assert r0["0000:00:07.0->0000:00:06.0"]["kernel_write"] == {"ok": True, "mismatches": 0, "bytes": 64}
    assert r1["0000:00:06.0->0000:00:07.0"]["kernel_write"]["ok"] is True
    assert r0["0000:00:07.0->0000:00:06.0"]["ok"] is True  # the read round trip is unchanged


def test_worker_wrong_write_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stores that land wrong (a patched P2P driver): every word counted by the owner."""
    r0, _ = _simulate(monkeypatch, 1)
    assert r0["0000:00:07.0->0000:00:06.0"]["kernel_write"] == {"ok": False, "mismatches": 16, "bytes": 64}


def test_worker_without_triton_says_not_run(monkeypatch: pytest.MonkeyPatch) -> None:
    r0, _ = _simulate(monkeypatch, 0, triton=False)
    kw = r0["0000:00:07.0->0000:00:06.0"]["kernel_write"]
    assert kw["ok"] is None and kw["error"].startswith("not run")
