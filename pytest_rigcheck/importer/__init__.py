"""Import pasted command output (``lspci -vvv``, ``nvidia-smi -q``, ``topo -m``, ``/proc/cmdline``) as a snapshot."""

from __future__ import annotations

from .build import Built, Inputs, import_lspci
from .lspci import PasteError

__all__ = ["Built", "PasteError", "Inputs", "import_lspci"]
