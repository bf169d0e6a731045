"""The GPU suites' package: NVML state (live or recorded in a snapshot's ``nvml.json``) and the checks on it.

Nothing here imports ``pynvml`` or torch at import time; ``nvml.py`` is the only module that imports
``pynvml``, inside the functions that read the live machine.
"""

from __future__ import annotations
