"""``rigcheck import-lspci``: read the files (``-`` is standard input), import, print one line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .build import Inputs, import_lspci
from .lspci import MAX_INPUT, PasteError


def _read(path: str | None, what: str, stdin_used: list[bool]) -> tuple[str, bytes] | None:
    if path is None:
        return None
    if path == "-":
        if stdin_used[0]:
            raise PasteError("only one input can be read from standard input (-)")
        stdin_used[0] = True
        data = sys.stdin.buffer.read(MAX_INPUT + 1)
        return ("<stdin>", data)
    p = Path(path)
    if not p.exists() or p.is_dir():  # a pipe such as <(cat /proc/cmdline) is fine
        raise PasteError(f"{path}: no such file ({what})")
    with p.open("rb") as f:
        return (path, f.read(MAX_INPUT + 1))


def run_import(args: argparse.Namespace) -> int:
    stdin = [False]
    try:
        inputs = Inputs(
            lspci=_read(args.lspci, "lspci text", stdin),  # type: ignore[arg-type]
            cmdline=_read(args.cmdline, "--cmdline", stdin),
            smi_q=_read(args.smi_q, "--nvidia-smi-q", stdin),
            topo=_read(args.topo, "--topo", stdin),
        )
        built = import_lspci(inputs, args.out, name=args.name)
    except (PasteError, OSError, ValueError) as exc:
        print(f"rigcheck: import-lspci: {exc}", file=sys.stderr)
        return 2
    print(
        f"rigcheck: imported {built.devices} PCI functions ({built.gpus} GPU(s)) into {built.out}; "
        f"{len(built.unknown)} thing(s) the text does not show are unreadable (MANIFEST.toml [imported] unknown); "
        f"judge it with: pytest --rig --rig-snapshot={built.out}"
    )
    return 0
