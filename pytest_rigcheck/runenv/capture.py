"""Record the run's environment into a snapshot's ``env.json`` (``rigcheck capture`` calls ``capture_env``)."""

from __future__ import annotations

import json
from pathlib import Path

from .state import ENV_JSON, read_live


def capture_env(out_dir: Path | str) -> dict[str, str]:
    """Write ``out_dir/env.json`` from this process's environment; returns notes for the manifest."""
    from ..source import Source

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    env = read_live(Source("/"))
    env.origin = env.origin.replace("read live", "captured live", 1)
    (out / ENV_JSON).write_text(json.dumps(env.to_json(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    unread = [
        k for k in ("shm", "memlock", "meminfo", "dev_nvidia") if "unavailable" in str(env.to_json()[k])
    ]
    return {
        "env": f"{ENV_JSON}: {len(env.variables())} NCCL/CUDA variable(s), "
        + ("in a container" if env.in_container else "not in a container")
        + (f"; not readable: {', '.join(unread)}" if unread else "")
    }
