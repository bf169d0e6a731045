"""Record P2P and NCCL figures into a snapshot's ``p2p.json`` so the P2P/NCCL checks replay without GPUs.

``rigcheck capture DIR`` calls ``capture_p2p(DIR)``; it also runs alone:
``python -m pytest_rigcheck.p2p.capture DIR [--timeout S]``. It measures exactly as ``pytest --rig`` does
(thresholds from the hardware, for the retry decisions) and needs PyTorch; without it, or without a driver,
it records nothing and says why.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

from .figures import P2P_JSON


def capture_p2p(out_dir: Path | str, timeout_s: float = 120.0, python: str | None = None) -> dict[str, str]:
    """Measure the live rig and write ``out_dir/p2p.json``; returns notes for the manifest."""
    from ..profile import Profile
    from ..rig import Rig
    from .session import P2pSession

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rig = Rig.live(Profile())
    session = P2pSession(rig, timeout_s, python, None)
    kind, value = session.outcome()
    if kind != "ok" and session.busy_data is not None:  # the busy record replays as the same UNREADABLE
        (out / P2P_JSON).write_text(json.dumps(session.busy_data, indent=1, sort_keys=True) + "\n", "utf-8")
        return {"p2p": f"{P2P_JSON}: nothing measured: {value}"}
    if kind != "ok":
        return {"p2p": f"not captured: {value}"}
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    value["origin"] = f"captured live with pytest-rigcheck on {rig.name}, {when}"
    # A figure no hardware gives is a figures.Corrupt (checked as measured): kept as its reason text, which
    # replay finds corrupt again.
    text = json.dumps(value, indent=1, sort_keys=True, default=str)
    (out / P2P_JSON).write_text(text + "\n", encoding="utf-8")
    runs = value.get("runs", {})
    return {
        "p2p": f"{P2P_JSON}: {len(value.get('pairs', {}))} GPU pair(s), {len(value['nccl']['groups'])} NCCL "
        f"group(s), {runs.get('total_wall_s')} s"
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pytest_rigcheck.p2p.capture", description=__doc__)
    p.add_argument("out_dir")
    p.add_argument(
        "--timeout", type=float, default=120.0, help="seconds per phase before a run counts as hung"
    )
    p.add_argument("--python", default=None, help="interpreter with PyTorch for the workers")
    a = p.parse_args(argv)
    for k, v in capture_p2p(a.out_dir, a.timeout, a.python).items():
        print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
