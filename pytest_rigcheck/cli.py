"""The ``rigcheck`` command: ``rigcheck capture OUT``, ``rigcheck topo [SNAPSHOT]``, ``rigcheck merge``."""

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
    imp = sub.add_parser(
        "import-lspci",
        help="Make a snapshot from pasted lspci -vvv (and nvidia-smi -q, topo -m, /proc/cmdline) text",
    )
    imp.add_argument("lspci", help="lspci -vvv / -nn / -t / -xxx text; - reads standard input")
    imp.add_argument("out", type=Path, help="Snapshot directory to write (must not exist, or be empty)")
    imp.add_argument("--cmdline", help="/proc/cmdline text (IOMMU switches)")
    imp.add_argument("--nvidia-smi-q", dest="smi_q", help="nvidia-smi -q text")
    imp.add_argument("--topo", help="nvidia-smi topo -m text")
    imp.add_argument("--name", help="Snapshot name (default: OUT's name)")
    mrg = sub.add_parser(
        "merge",
        help="Merge nodes' --rig-report files into DIR/fleet.json, fleet.xml (JUnit) and fleet.html; "
        "exit 0 all pass, 1 a node fails, 2 a report is missing or unreadable",
    )
    mrg.add_argument("reports", nargs="+", type=Path, help="Each node's --rig-report JSON")
    mrg.add_argument("--out", type=Path, required=True, help="Folder for fleet.json, fleet.xml, fleet.html")
    args = ap.parse_args(argv)

    from .errors import RigcheckError

    try:
        if args.cmd == "capture":
            from .capture import capture_with_gaps

            path, gaps = capture_with_gaps(args.out, name=args.name)
            print(f"rigcheck: snapshot written to {path}")
            for gap in gaps:
                print(f"rigcheck: not captured: {gap}")
            # With "=": pytest picks its rootdir from path-like arguments, and a bare PATH is one.
            print(f"rigcheck: replay with: pytest --rig-snapshot={path}")
            return 0
        if args.cmd == "merge":
            from .fleet.merge import run_merge

            return run_merge(args.reports, args.out)
        if args.cmd == "import-lspci":
            from .importer.cli import run_import

            return run_import(args)
        from .source import Source
        from .topology import matrix
        from .tree import PcieTree

        if args.snapshot:
            from .snapshot import open_snapshot

            snap = open_snapshot(args.snapshot)
            try:
                print(matrix(PcieTree.read(Source(snap.root))))
            finally:
                snap.close()
        else:
            print(matrix(PcieTree.read(Source("/"))))
        return 0
    except (RigcheckError, ValueError) as exc:
        print(f"rigcheck: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a disk that filled or a folder removed midway: one line, not a traceback
        print(f"rigcheck: {args.cmd} failed: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
