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
        if args.cmd == "import-lspci":
            from .importer.cli import run_import

            return run_import(args)
        return _topo(args.snapshot)
    except (RigcheckError, ValueError) as exc:
        print(f"rigcheck: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a disk that filled or a folder removed midway: one line, not a traceback
        print(f"rigcheck: {args.cmd} failed: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 1


def _topo(snapshot: Path | None) -> int:
    """Print the GPU matrix of a snapshot or the live machine; a rig without a GPU is one line, exit 1."""
    from .profile import Profile
    from .rig import Rig
    from .topology import matrix

    snap = None
    if snapshot:
        from .snapshot import open_snapshot

        snap = open_snapshot(snapshot)
    try:
        rig = Rig.replay(snap, Profile()) if snap is not None else Rig.live(Profile())
        tree = rig.pcie
        if not tree.gpus:
            left = tree.left_out_text()
            where = f"snapshot {snapshot}" if snapshot else "this machine"
            print(
                f"rigcheck: no GPU on {where} (no NVIDIA or AMD accelerator in sys/bus/pci/devices)"
                + (f"; display devices not counted: {left}" if left else ""),
                file=sys.stderr,
            )
            return 1
        print(matrix(tree, _nvlinks(rig)))
        return 0
    finally:
        if snap is not None:
            snap.close()


def _nvlinks(rig: object) -> dict[frozenset[str], int]:
    """NVLink peers the rig's records show (``p2p.nvlink``: p2p.json's per-link remotes, nvml.json's P2P
    status and active links), as ``{frozenset({a, b}): links}`` (-1: peers, count unknown)."""
    from itertools import combinations

    from .errors import SourceError
    from .p2p.nvlink import nvlink_links

    try:
        figures = rig.source.read_json("p2p.json") if not rig.is_live else None  # type: ignore[attr-defined]
    except (KeyError, SourceError):
        figures = None
    out: dict[frozenset[str], int] = {}
    for a, b in combinations(rig.pcie.gpus, 2):  # type: ignore[attr-defined]
        n = nvlink_links(rig, figures if isinstance(figures, dict) else None, a.bdf, b.bdf)  # type: ignore[arg-type]
        if n:
            out[frozenset((a.bdf, b.bdf))] = n
    return out


if __name__ == "__main__":
    raise SystemExit(main())
