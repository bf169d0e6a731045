"""The ``rigcheck`` command: ``rigcheck capture OUT``, ``rigcheck topo [SNAPSHOT]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="rigcheck", description="Capture and inspect multi-GPU rigs (pytest-rigcheck)."
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    cap = sub.add_parser("capture", help="Capture this machine as a snapshot (run as root for ACS/AER)")
    cap.add_argument("out", type=Path, help="Output directory, or a path ending in .tar.gz")
    cap.add_argument("--name", help="Snapshot name (default: the hostname)")
    topo = sub.add_parser("topo", help="Print the GPU topology matrix (like nvidia-smi topo -m) from sysfs")
    topo.add_argument("snapshot", nargs="?", type=Path, help="A snapshot (default: the live machine)")
    args = ap.parse_args(argv)

    from .errors import RigcheckError

    try:
        if args.cmd == "capture":
            from .capture import capture

            if args.out.exists() and any(args.out.iterdir() if args.out.is_dir() else [args.out]):
                print(f"rigcheck: {args.out} exists and is not empty; choose a new path", file=sys.stderr)
                return 2
            path = capture(args.out, name=args.name)
            print(f"rigcheck: snapshot written to {path}; replay with: pytest --rig-snapshot {path}")
            return 0
        return _topo(args.snapshot)
    except (RigcheckError, ValueError) as exc:
        print(f"rigcheck: {exc}", file=sys.stderr)
        return 2


def _topo(snapshot: Path | None) -> int:
    """Print the GPU matrix of a snapshot or the live machine; a rig without a GPU is one line, exit 1."""
    from .source import Source
    from .topology import matrix
    from .tree import PcieTree

    snap = None
    if snapshot:
        from .snapshot import open_snapshot

        snap = open_snapshot(snapshot)
    try:
        source = Source(snap.root if snap is not None else "/")
        tree = PcieTree.read(source)
        if not tree.gpus:
            left = tree.left_out_text()
            where = f"snapshot {snapshot}" if snapshot else "this machine"
            print(
                f"rigcheck: no GPU on {where} (no NVIDIA or AMD accelerator in sys/bus/pci/devices)"
                + (f"; display devices not counted: {left}" if left else ""),
                file=sys.stderr,
            )
            return 1
        print(matrix(tree, _recorded_nvlinks(source) if snap is not None else None))
        return 0
    finally:
        if snap is not None:
            snap.close()


def _recorded_nvlinks(source: object) -> dict[frozenset[str], int]:
    """NVLink peers a snapshot's ``nvml.json`` records (``gpus[].nvlink_remote``), read through the rooted reader."""
    import json

    from .errors import SourceError
    from .topology import nvlink_peers

    try:
        data = json.loads(source.read_text("nvml.json"))  # type: ignore[attr-defined]
    except (KeyError, SourceError, ValueError):
        return {}
    return nvlink_peers(data.get("gpus") if isinstance(data, dict) else None)


if __name__ == "__main__":
    raise SystemExit(main())
