"""Exceptions of pytest-rigcheck. Each carries the identifiers an engineer needs to act on it."""

from __future__ import annotations


class RigcheckError(Exception):
    """Base of every error this package raises on purpose."""


class SourceError(RigcheckError):
    """Something under the rig's root could not be read, or was refused for safety.

    Args:
        path: the path below the root, as the live filesystem spells it (``sys/bus/pci/...``).
        reason: why it could not be read.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class RefusedError(SourceError):
    """A path was refused for safety, not merely unreadable: it leaves the snapshot (an absolute path,
    a ``..`` escape, a symlink out) or is not a regular file (a FIFO, device node or socket, refused
    with ``lstat`` before any ``open``)."""


class SnapshotError(RigcheckError):
    """A snapshot is corrupt, partial or unsafe to replay."""


class ProfileError(RigcheckError):
    """A rig profile value is not allowed: names the key, the value and what is allowed."""

    def __init__(self, where: str, key: str, value: object, allowed: str) -> None:
        self.where = where
        self.key = key
        self.value = value
        self.allowed = allowed
        if key == "(file)":  # the file itself is unusable (not TOML, unreadable): say that, not a key
            super().__init__(f"{where}: {allowed}")
        else:
            super().__init__(f"{where}: invalid value {value!r} for {key!r}: {allowed}")


class ConfigSpaceError(RigcheckError):
    """PCI config space is too short or malformed for the register asked for."""

    def __init__(self, bdf: str, reason: str) -> None:
        self.bdf = bdf
        self.reason = reason
        super().__init__(f"{bdf}: {reason}")
