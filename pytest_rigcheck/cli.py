"""The ``rigcheck`` command: ``capture OUT``, ``topo [SNAPSHOT] [--tree]``, ``diff A B``, ``import-lspci``,
``merge REPORT... --out DIR``."""

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
    topo.add_argument(
        "--tree",
        action="store_true",
        help="The hop tree: root port -> switch ports -> GPU, gen/width per hop",
    )
    dif = sub.add_parser(
        "diff",
        help="What changed between two snapshots or --rig-report files (worse first; exit 1 if worse)",
    )
    dif.add_argument("a", type=Path, help="Before: a snapshot (directory or .tar.gz) or a --rig-report JSON")
    dif.add_argument("b", type=Path, help="After: a snapshot or a --rig-report JSON")
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
        "exit 0 all pass, 1 a node fails, 2 a report is missing or unreadable (or one node given twice)",
    )
    mrg.add_argument("reports", nargs="+", type=Path, help="Each node's --rig-report JSON")
    mrg.add_argument(
        "--out",
        type=Path,
        required=True,
        help="Folder for fleet.json, fleet.xml, fleet.html (made if new; its parent must exist)",
    )
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
        if args.cmd == "diff":
            from .diff import run_diff

            return run_diff(args.a, args.b)
        if args.cmd == "import-lspci":
            from .importer.cli import run_import

            return run_import(args)
        return _topo(args)
    except (RigcheckError, ValueError) as exc:
        print(f"rigcheck: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a disk that filled or a folder removed midway: one line, not a traceback
        print(f"rigcheck: {args.cmd} failed: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 1


def _topo(args: argparse.Namespace) -> int:
    """``rigcheck topo [SNAPSHOT] [--tree]``, read through the same ``Rig`` the suites use; a rig without a
    GPU is one line on stderr, exit 1."""
    from .profile import Profile
    from .rig import Rig
    from .topology import hop_tree, topo_matrix

    if args.snapshot:
        from .snapshot import open_snapshot

        rig = Rig.replay(open_snapshot(args.snapshot), Profile())
    else:
        rig = Rig.live(Profile())
    try:
        tree = rig.pcie
        if not tree.gpus:
            left = tree.left_out_text()
            where = f"snapshot {args.snapshot}" if args.snapshot else "this machine"
            print(
                f"rigcheck: no GPU on {where} (no NVIDIA or AMD accelerator in sys/bus/pci/devices)"
                + (f"; display devices not counted: {left}" if left else ""),
                file=sys.stderr,
            )
            return 1
        print(hop_tree(rig) if args.tree else topo_matrix(rig))
        left = tree.left_out_text()
        if left:
            print(f"\ndisplay devices not counted as GPUs: {left}")
    finally:
        rig.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
