"""``nvidia-smi topo -m`` text -> the GPU-pair matrix and the NVLinks it shows.

The legend is nvidia-smi's: ``X`` self, ``SYS``/``NODE``/``PHB``/``PXB``/``PIX`` PCIe paths, ``NV#``
a bonded set of # NVLinks. A GPU whose row shows no ``NV#`` tells nothing about NVLinks that are down,
so its NVLink state is left unknown.
"""

from __future__ import annotations

import re
from typing import Any

from .lspci import PasteError

_CELL = re.compile(r"^(X|SYS|NODE|PHB|PXB|PIX|NV\d+|SOC|PXN|N/A)$")


def parse_topo(text: str, where: str) -> dict[str, Any]:
    """Return ``{"matrix": {"GPU0": {"GPU1": "NV4", ...}}, "nvlinks": {0: {"0": 1, ...}, ...}}``."""
    header: list[str] | None = None
    has_numa = False
    numa: dict[int, int] = {}
    matrix: dict[str, dict[str, str]] = {}
    for raw in text.split("\n"):
        cols = raw.split()
        if not cols:
            continue
        if header is None and cols[0].startswith("GPU0"):
            header = [c for c in cols if re.match(r"^(GPU\d+|NIC\d+|mlx\S+)$", c)]
            has_numa = "NUMA Affinity" in " ".join(cols)
            continue
        if header and re.match(r"^GPU\d+$", cols[0]) and len(cols) > len(header):
            cells = cols[1 : 1 + len(header)]
            if not all(_CELL.match(c) for c in cells):
                raise PasteError(f"{where}: row {cols[0]} has cells {cells}: not nvidia-smi topo -m output")
            matrix[cols[0]] = dict(zip(header, cells, strict=True))
            extra = cols[1 + len(header) :]  # CPU Affinity, NUMA Affinity, GPU NUMA ID
            if has_numa and len(extra) >= 2 and extra[1].isdigit():
                numa[int(cols[0][3:])] = int(extra[1])
    if not matrix:
        raise PasteError(f"{where}: no GPU0 GPU1 ... header and rows: not nvidia-smi topo -m output")
    return {"matrix": matrix, "nvlinks": nvlink_states(matrix), "numa": numa}


def nvlink_states(matrix: dict[str, dict[str, str]]) -> dict[int, dict[str, int]]:
    """Per-link states where the matrix tells them, else nothing.

    ``NV#`` counts a GPU's active links to one peer, not its links in all. Only the NVSwitch pattern
    (every GPU row shows ``NV#`` to every other GPU, one count per row) tells the total: the largest
    count of any row; a row with fewer has that many links down. A mesh (counts differ per peer) or a
    matrix missing rows tells no total, so nothing is claimed.
    """
    gpus = sorted((int(k[3:]) for k in matrix), key=int)
    if len(gpus) < 2 or gpus != list(range(len(gpus))):
        return {}
    for i in gpus:
        for j in gpus:
            if i != j and matrix[f"GPU{i}"].get(f"GPU{j}") != matrix[f"GPU{j}"].get(f"GPU{i}"):
                return {}  # a matrix that disagrees with itself tells nothing
    per: dict[int, int] = {}
    for i in gpus:
        cells = [c for k, c in matrix[f"GPU{i}"].items() if k.startswith("GPU") and k != f"GPU{i}"]
        if len(cells) != len(gpus) - 1 or not all(c.startswith("NV") for c in cells):
            return {}
        counts = {int(c[2:]) for c in cells}
        if len(counts) != 1:
            return {}
        per[i] = counts.pop()
    total = max(per.values())
    return {i: {str(k): int(k < n) for k in range(total)} for i, n in per.items()}
