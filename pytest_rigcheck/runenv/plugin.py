"""Feature plugin for the run-environment suite: the ``rig_runenv`` fixture.

Registered by the core plugin (``FEATURE_PLUGINS``). Imports stdlib and pytest only; the environment is
read when a check first asks for it (live: this process's; replayed: the snapshot's ``env.json``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ..rig import Rig
    from .state import RunEnv


@pytest.fixture
def rig_runenv(request: pytest.FixtureRequest, rig: Rig) -> RunEnv:
    """The environment the rig's GPU processes run in (``RunEnv``): NCCL/CUDA variables, NCCL config files,
    ``/dev/shm``, the locked-memory limit, host memory, ``/dev/nvidia*`` and container evidence.

    Live it is this process's; replayed, the snapshot's ``env.json``. A snapshot without one skips the checks
    that need it, saying so; a corrupt one fails them as UNREADABLE (a FAILED check, not a setup error:
    ``availability.provide``).

    Example::

        def test_p2p_not_disabled(rig_runenv):
            assert rig_runenv.nccl("NCCL_P2P_DISABLE") is None
    """
    __tracebackhide__ = True
    from ..availability import provide
    from .state import RunEnv, RunEnvMissing, run_env

    missing: list[str] = []

    def obtain() -> RunEnv:
        try:
            return run_env(rig)
        except RunEnvMissing as exc:  # not recorded: the checks cannot apply, a skip that says why
            missing.append(str(exc))
            return RunEnv(origin="not recorded")

    env = provide(request, rig, obtain, RunEnv(origin="unreadable"))
    if missing:
        pytest.skip(missing[0])
    return env
