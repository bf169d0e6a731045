"""pytest-rigcheck: prove a multi-GPU LLM rig is wired and configured right.

Nothing heavy is imported here: pytest loads ``pytest_rigcheck.plugin`` in every run of its users.
"""

from __future__ import annotations

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    # Lazy, so that importing the package does not read distribution metadata (structlog does the same).
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("pytest-rigcheck")
        except PackageNotFoundError:  # running from a checkout that was never installed
            return "0+unknown"
    raise AttributeError(name)
