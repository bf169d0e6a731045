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
    """Return ``{"matrix": {"GPU0": {"GPU1": "NV4", ...}}, "nvlinks": {0: 8, ...}}``."""
    header: list[str] | None = None
    matrix: dict[str, dict[str, str]] = {}
    for raw in text.split("\n"):
        cols = raw.split()
        if not cols:
            continue
        if header is None and cols[0].startswith("GPU0"):
            header = [c for c in cols if re.match(r"^(GPU\d+|NIC\d+|mlx\S+)$", c)]
            continue
        if header and re.match(r"^GPU\d+$", cols[0]) and len(cols) > len(header):
            cells = cols[1 : 1 + len(header)]
            if not all(_CELL.match(c) for c in cells):
                raise PasteError(f"{where}: row {cols[0]} has cells {cells}: not nvidia-smi topo -m output")
            matrix[cols[0]] = dict(zip(header, cells, strict=True))
    if not matrix:
        raise PasteError(f"{where}: no GPU0 GPU1 ... header and rows: not nvidia-smi topo -m output")
    nvlinks: dict[int, int] = {}
    for row, cells in matrix.items():
        n = sum(int(c[2:]) for k, c in cells.items() if c.startswith("NV") and k.startswith("GPU"))
        if n:
            nvlinks[int(row[3:])] = n
    return {"matrix": matrix, "nvlinks": nvlinks}
