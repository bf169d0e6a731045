"""P2P bandwidth and latency, NCCL all-reduce and CUDA IPC: measured like the reference tools, replayed from snapshots.

Nothing heavy at import: torch runs only in the worker subprocesses (``workers/``).
"""
