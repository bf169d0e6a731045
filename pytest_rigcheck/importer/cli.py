"""``rigcheck import-lspci``: read the files (``-`` is standard input), import, print one line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .build import Inputs, import_lspci
from .lspci import MAX_INPUT, PasteError


def _read(path: str | None, what: str, stdin_used: list[bool]) -> tuple[str, bytes] | None:
    """The bytes of one input (at most ``MAX_INPUT + 1``: more is refused as not command output).

    ``-`` is standard input (once). A pipe or FIFO (``<(cat /proc/cmdline)``) is read like a file; a
    directory, a missing path, a device or socket that cannot be opened or read is one ``PasteError``
    line saying which.
    """
    if path is None:
        return None
    if path == "-":
        if stdin_used[0]:
            raise PasteError("only one input can be read from standard input (-)")
        stdin_used[0] = True
        if sys.stdin is None:
            raise PasteError(f"-: standard input is closed ({what})")
        try:
            data = sys.stdin.buffer.read(MAX_INPUT + 1)
        except (OSError, ValueError) as exc:  # closed, a directory as stdin (EISDIR), ...
            raise PasteError(f"-: standard input cannot be read ({what}): {_why(exc)}") from None
        return ("<stdin>", data)
    p = Path(path)
    if p.is_dir():
        raise PasteError(f"{path}: is a directory, not a file ({what}): give the text file in it")
    if not p.exists():
        why = "a dangling symbolic link" if p.is_symlink() else "no such file"
        raise PasteError(f"{path}: {why} ({what})")
    try:
        with p.open("rb") as f:
            return (path, f.read(MAX_INPUT + 1))
    except (OSError, ValueError) as exc:
        raise PasteError(f"{path}: cannot be read ({what}): {_why(exc)}") from None


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


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
    notes = f"; {'; '.join(built.notes)} (MANIFEST.toml [imported] notes)" if built.notes else ""
    print(
        f"rigcheck: imported {built.devices} PCI functions ({built.gpus} GPU(s)) into {built.out}; "
        f"{len(built.unknown)} thing(s) the text does not show are unreadable (MANIFEST.toml [imported] unknown)"
        f"{notes}; judge it with: pytest --rig --rig-snapshot={built.out}"
    )
    return 0
