"""Capture NVML state into a snapshot's ``nvml.json``, so every GPU check replays without a GPU.

``rigcheck capture DIR`` calls ``capture_nvml(DIR)``; it also runs alone:
``python -m pytest_rigcheck.gpu.capture DIR [--load-seconds S]``. Read-only: it reads NVML and, if torch is
installed, puts a short matrix-multiply load on every GPU to record link, clocks, power and PCIe replays
while busy. The kernel log's NVRM lines (XIDs) go into ``nvml.json`` too (``/dev/kmsg`` cannot be replayed).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from .state import F_LOAD, NVML_JSON, LoadReadings


def capture_nvml(out_dir: Path | str, load_seconds: float = 3.0, load: bool = True) -> dict[str, str]:
    """Write ``out_dir/nvml.json``: every GPU through NVML, under load unless ``load`` is false, and the
    kernel log's NVRM lines. Returns notes for the snapshot's manifest (what was and was not captured).
    """
    from .nvml import LiveNvml, NvmlPermissionError, NvmlUnavailable
    from .xid import KERNEL_LOG_KEY, nvrm_lines, read_kmsg

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        nv = LiveNvml()
    except (NvmlUnavailable, NvmlPermissionError) as exc:
        return {"nvml": f"not captured: {exc}"}
    try:
        state = nv.system()
        state.origin = f"captured with pytest-rigcheck (pynvml) on {time.strftime('%Y-%m-%d')}"
        loaded = 0
        if load:
            readings = nv.under_load([g.bdf for g in state.gpus], load_seconds)
            for g in state.gpus:
                r = readings.get(g.bdf)
                if r is not None:
                    g.values[F_LOAD] = r
                    loaded += isinstance(r, LoadReadings)
        data: dict[str, Any] = state.to_json()
    finally:
        nv.close()
    log = read_kmsg()
    data[KERNEL_LOG_KEY] = nvrm_lines(log).splitlines() if isinstance(log, str) else log.to_json()
    (out / NVML_JSON).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return {
        "nvml": f"{NVML_JSON}: {len(state.gpus)} GPU(s), driver {state.driver}, "
        f"{loaded} read under a {load_seconds:g} s load",
        "kernel_log": "NVRM lines kept" if isinstance(log, str) else f"not captured: {log}",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pytest_rigcheck.gpu.capture", description=__doc__)
    p.add_argument("out_dir")
    p.add_argument("--load-seconds", type=float, default=3.0)
    p.add_argument("--no-load", action="store_true", help="read NVML at idle only")
    a = p.parse_args(argv)
    for k, v in capture_nvml(a.out_dir, a.load_seconds, not a.no_load).items():
        print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
