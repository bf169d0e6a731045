"""Feature plugin for the sustained checks: the soak (``--rig-soak``), link health over the run, model storage.

Settings, each from the command line, else the ``RIGCHECK_*`` environment variable, else the ini key,
all validated at session start (a bad one is one usage error, exit 4, before any check):

- ``--rig-soak SECONDS|90s|10m|1h`` / ``RIGCHECK_SOAK`` / ``rig_soak``: soak length; off by default.
- ``--rig-soak-save FILE`` / ``RIGCHECK_SOAK_SAVE`` / ``rig_soak_save``: write the live soak's samples as
  ``soak.json`` (put it in a snapshot to replay them).
- ``--rig-model-dir DIR`` / ``RIGCHECK_MODEL_DIR`` / ``rig_model_dir``: the model whose storage is measured
  (default: the profile's ``[vllm] model`` when it is a local directory).

The profile's ``[soak]`` and ``[storage]`` sections are validated at session start too. The soak and the
window's closing link-health check run after every other check (``rig_late`` marker), so the soak's heat
and traffic count in the AER growth window. Imports stdlib and pytest only until a check runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ..options import MODEL_DIR, SOAK, SOAK_SAVE

if TYPE_CHECKING:
    from ..rig import Rig
    from ..storage import StorageExpect, StorageReading
    from ..targets import GpuTarget
    from ..verdict import Verdict
    from .judge import SoakExpect, SoakRecord

SOAK_OPTION = SOAK.option
MODEL_DIR_OPTION = MODEL_DIR.option
EXTRAS_KEY = "soak"
LOG_EVERY_S = 30.0  # progress lines when the output is not a terminal


class Settings:
    """This plugin's settings, from the one resolver (``options``: validated before collection)."""

    def __init__(self, config: pytest.Config) -> None:
        from ..options import resolve

        self.soak_s: float = resolve(config, SOAK).value
        self.soak_save: Path | None = resolve(config, SOAK_SAVE).value
        model = resolve(config, MODEL_DIR)
        self.model_dir: Path | None = model.value
        self.model_where = model.where if model.given else ""


SETTINGS_KEY = pytest.StashKey[Settings]()


def settings(config: pytest.Config) -> Settings:
    if SETTINGS_KEY not in config.stash:
        config.stash[SETTINGS_KEY] = Settings(config)
    return config.stash[SETTINGS_KEY]


def pytest_sessionstart(session: pytest.Session) -> None:
    from ..errors import RigcheckError
    from ..plugin import iter_rigs, rig_session

    if session.config.option.help or not rig_session(session.config).enabled:
        return
    settings(session.config)
    for rig in iter_rigs(session.config):
        if rig.is_live:
            from ..linkhealth import start_reading

            try:
                start_reading(rig)  # the AER window opens here; test_link_errors_not_growing closes it
            except RigcheckError:
                pass  # the checks report an unreadable tree themselves


def expectations(rig: Rig) -> tuple[SoakExpect, StorageExpect]:
    """``[soak]`` and ``[storage]`` of the rig's profile (parsed and validated when the profile loaded)."""
    return rig.profile.section("soak"), rig.profile.section("storage")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Checks marked ``rig_late(n)`` after every other check, in order of ``n`` (stable otherwise): the
    soak (1), then the link-health window's end (2)."""

    def late(item: pytest.Item) -> int:
        mark = item.get_closest_marker("rig_late")
        return 0 if mark is None else int(mark.args[0]) if mark.args else 1

    items.sort(key=late)


# -- the soak ---------------------------------------------------------------------------------------


class SoakSession:
    """One rig's soak: recorded (``soak.json`` of a snapshot) or run live once, on first use."""

    def __init__(self, rig: Rig, config: pytest.Config) -> None:
        self.rig, self.config = rig, config
        self._record: SoakRecord | Verdict | str | None = None
        self.saved = ""  # what became of --rig-soak-save, for the verdicts' notes

    def record(self) -> SoakRecord | Verdict | str:
        """The samples; a reason string when there is no soak to judge; an UNREADABLE verdict when corrupt."""
        if self._record is None:
            self._record = self._replay() if not self.rig.is_live else self._live()
        return self._record

    def _replay(self) -> SoakRecord | Verdict | str:
        from ..errors import SourceError
        from ..verdict import unreadable
        from .judge import SOAK_JSON, SoakRecord

        try:
            data = self.rig.source.read_json(SOAK_JSON)
        except KeyError:
            return f"snapshot {self.rig.name} holds no soak samples ({SOAK_JSON})"
        except SourceError as exc:
            return unreadable(f"{self.rig.name}: {exc}")
        try:
            return SoakRecord.from_json(data, f"{SOAK_JSON} of snapshot {self.rig.name}")
        except ValueError as exc:
            return unreadable(
                f"{self.rig.name}: {SOAK_JSON} is corrupt: {exc}",
                fix=[
                    "capture the soak again on the rig (pytest --rig --rig-soak 10m --rig-soak-save soak.json)"
                ],
            )

    def _live(self) -> SoakRecord | Verdict | str:
        from ..errors import RigcheckError
        from ..gpu.nvml import NvmlUnavailable
        from ..gpu.plugin import gpu_session
        from ..linkhealth import hops
        from ..verdict import unreadable
        from .run import run_soak

        s = settings(self.config)
        if not s.soak_s:
            return f"soak off: {SOAK_OPTION} 10m (or RIGCHECK_SOAK, ini rig_soak) runs one"
        gs = gpu_session(self.rig, self.config)
        try:
            nvml = gs.nvml
            index = {g.bdf: g.index for g in nvml.system().gpus}
        except NvmlUnavailable as exc:  # the one cannot-measure-here policy: UNREADABLE where NVIDIA GPUs are
            from ..availability import decision

            applies, message = decision(self.rig, exc)
            return unreadable(f"{self.rig.name}: no soak: {message}") if applies else message
        except RigcheckError as exc:
            return unreadable(f"{self.rig.name}: no soak: {exc}")
        tree = self.rig.pcie
        gpus = {fn.bdf: index[fn.bdf] for fn in tree.gpus if fn.bdf in index}
        labels = {fn.bdf: f"GPU{tree.gpu_index(fn.bdf)}" for fn in tree.gpus}
        names = {fn.bdf: tree.gpu_label(fn) for fn in tree.gpus}
        progress = self._progress()
        rec = run_soak(
            nvml,  # type: ignore[arg-type]
            gpus,
            {b: hops(self.rig, b) for b in gpus},
            labels,
            s.soak_s,
            gs.python,
            progress,
        )
        if progress is not None:
            progress.note(f"soak done: {rec.stopped}")
        for b, g in rec.gpus.items():
            g.name = names.get(b, g.name)
        if s.soak_save is not None:
            try:
                s.soak_save.write_text(json.dumps(rec.to_json(), indent=1) + "\n", encoding="utf-8")
                self.saved = f"samples saved to {s.soak_save}"
            except OSError as exc:
                self.saved = f"samples NOT saved to {s.soak_save}: {exc.strerror or exc}"
        return rec

    def _progress(self) -> Any:
        """The run's status line (``progress.StatusLine``): rewritten in place each second on a terminal,
        one line every ``LOG_EVERY_S`` in a log; None under -q."""
        from ..progress import status_line

        return status_line(self.config, log_every_s=LOG_EVERY_S)

    def verdict(self, t: GpuTarget) -> Verdict:
        from ..linkhealth import aer_kept, link_max
        from ..verdict import Verdict, not_applicable
        from .judge import judge

        rec = self.record()
        if isinstance(rec, str):
            return not_applicable(f"{t.label}: {rec}")
        if isinstance(rec, Verdict):
            return rec
        expect, _ = expectations(t.rig)
        path = [t.rig.pcie.path_text(t.gpu.bdf)]
        v = judge(
            rec, t.gpu.bdf, t.label, expect, path, link_max(t.rig, t.gpu.bdf), aer_kept(t.rig, t.gpu.bdf)
        )
        if self.saved:
            v.notes.append(self.saved)
        return v


@pytest.fixture
def rig_soak(rig: Rig, pytestconfig: pytest.Config) -> SoakSession:
    """The rig's soak (``SoakSession``): ``.verdict(rig_gpu)`` judges one GPU's samples; the soak runs
    once per rig, all GPUs at once (live, with ``--rig-soak``) or replays ``soak.json`` of a snapshot.

    Example::

        def test_soak(rig_gpu, rig_soak, rig_check):
            assert rig_check(rig_soak.verdict(rig_gpu)).ok
    """
    s = rig.extras.get(EXTRAS_KEY)
    if not isinstance(s, SoakSession):
        s = SoakSession(rig, pytestconfig)
        rig.extras[EXTRAS_KEY] = s
    return s


# -- model storage --------------------------------------------------------------------------------


def model_dir(rig: Rig, config: pytest.Config) -> tuple[Path | None, str]:
    """The model directory to measure and where it came from, or ``(None, why not)``."""
    s = settings(config)
    if s.model_dir is not None:
        return s.model_dir, s.model_where
    model = (rig.profile.raw.get("vllm") or {}).get("model")
    if isinstance(model, str) and model:
        p = Path(model).expanduser()
        if p.is_absolute() or model.startswith("."):
            if p.is_dir():
                return p, f"[vllm] model of {rig.profile.source}"
            return None, f"[vllm] model {model!r} is not a directory on this machine"
        return (
            None,
            f"[vllm] model {model!r} is a hub name, not a local directory: pass {MODEL_DIR_OPTION} DIR",
        )
    return (
        None,
        f"no model to measure: pass {MODEL_DIR_OPTION} DIR (or RIGCHECK_MODEL_DIR, ini rig_model_dir)",
    )


def storage_verdict(rig: Rig, config: pytest.Config) -> Verdict:
    """The model storage verdict: recorded (``storage.json``) for a snapshot, measured live."""
    from ..errors import SourceError
    from ..storage import STORAGE_JSON, StorageReading, judge, measure
    from ..verdict import not_applicable, unreadable

    _, expect = expectations(rig)
    reading: StorageReading
    if not rig.is_live:
        try:
            reading = StorageReading.from_json(rig.source.read_json(STORAGE_JSON))
        except KeyError:
            return not_applicable(f"{rig.name}: snapshot holds no storage measurement ({STORAGE_JSON})")
        except SourceError as exc:
            return unreadable(f"{rig.name}: {exc}")
        except ValueError as exc:
            return unreadable(f"{rig.name}: {STORAGE_JSON} is corrupt: {exc}")
        v = judge(reading, expect)
        v.notes.append(f"recorded in {STORAGE_JSON} of snapshot {rig.name}")
        return v
    path, why = model_dir(rig, config)
    if path is None:
        return not_applicable(f"{rig.name}: {why}")
    return judge(measure(path, rig.source), expect)
