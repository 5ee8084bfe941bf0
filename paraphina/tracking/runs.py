"""Write finished engine runs to MLflow fast: one create, one batched log, one terminate per run; callers
describe a run as a RunRecord and hand it to a RunWriter."""
from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from omegaconf import OmegaConf

from paraphina.core.errors import ParaphinaError
from paraphina.core.names import PARENT_TAG
from paraphina.core.stops import on_stop, uninterrupted
from paraphina.tracking.store import describe, process_tags, tracking_client

if TYPE_CHECKING:
    from mlflow.entities import Metric


@dataclass
class RunRecord:
    """Everything recorded for one run: params, tags, scalar metrics, per-tick series and files."""

    name: str
    params: dict[str, object] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float | None] = field(default_factory=dict)
    series: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    artifacts: list[tuple[Path, str | None]] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)


def param_text(value: object) -> str:
    """A param value as MLflow stores it: sequences (lists, arrays, ListConfigs; not text) as JSON, None as "None",
    the rest as str()."""
    if isinstance(value, (Sequence, np.ndarray)) and not isinstance(value, (str, bytes)):
        return json.dumps(value, default=_json_ready)
    return str(value)


def _json_ready(value: object) -> object:
    """What json.dumps cannot write itself: OmegaConf containers and numpy values."""
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    raise TypeError(f"a param value of type {type(value).__name__} has no JSON form")


def flatten_params(mapping: Mapping, prefix: str = "") -> dict[str, str]:
    """Nested mappings (dicts, OmegaConf configs) to dotted keys like `engine.hedge.band_base`."""
    flat: dict[str, str] = {}
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, f"{dotted}."))
        else:
            flat[dotted] = param_text(value)
    return flat


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The checked-out commit of the project, or None outside a git checkout or without git (asked once)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
        )
    except OSError:
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and commit else None


@dataclass(frozen=True)
class Ending:
    """How hard a writer tries to end a run while the store answers "database is locked" (conf `tracking`)."""

    attempts: int = 1
    wait_s: float = 0.0

    @classmethod
    def of(cls, tracking: Mapping) -> "Ending":
        return cls(int(tracking["end_attempts"]), float(tracking["end_wait_s"]))


def ended_status(exc: BaseException) -> str:
    """KILLED for a stop (a signal, Ctrl-C, or an error raised while handling one), FAILED for any other error."""
    stopped = isinstance(exc, KeyboardInterrupt) or isinstance(exc.__context__, KeyboardInterrupt)
    return "KILLED" if stopped else "FAILED"


class _Ended:
    """The runs this process has open, the number it ended because its command stopped (by status) and those it
    could not end: what the stop note says."""

    open: dict[str, "RunWriter"] = {}
    by_status: dict[str, int] = {}
    stuck: list[str] = []


def _end_open_runs(exc: BaseException) -> str | None:
    """Stop hook: end every run still open as KILLED or FAILED; a note saying what became of them."""
    for run_id, writer in list(_Ended.open.items()):
        writer.abort(run_id, exc)
    notes = [f"{n} unfinished run(s) marked {status}" for status, n in _Ended.by_status.items()]
    if _Ended.stuck:
        notes.append(f"{len(_Ended.stuck)} run(s) left RUNNING (store busy; python -m paraphina.tracking.clean "
                     f"marks them)")
    _forget_ended()
    return ", ".join(notes) + "; finished runs are recorded" if notes else None


def _forget_ended() -> None:
    """Start a command's count of ended runs afresh."""
    _Ended.by_status, _Ended.stuck = {}, []


class RunWriter:
    """Writes RunRecords into one experiment of one tracking store with MlflowClient batch calls.

    Every write runs whole (a stop signal waits for it: a write cut short would hold the store's lock), and a
    run this writer leaves open when its command stops is ended as KILLED (see `core.stops`).
    """

    def __init__(self, tracking_uri: str, experiment_id: str, ending: Ending = Ending()) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.ending = ending
        self._client = tracking_client(tracking_uri)
        on_stop(_end_open_runs, _forget_ended)

    def log(self, record: RunRecord, parent_run_id: str | None = None) -> str:
        """Write one finished run (status FINISHED), optionally as a child of `parent_run_id`; returns its run_id."""
        return self._create(record, parent_run_id, "FINISHED")

    def start_parent(self, record: RunRecord, parent_run_id: str | None = None) -> str:
        """Create a parent run (a child of `parent_run_id` if given) and leave it RUNNING; end it with `finish`."""
        return self._create(record, parent_run_id, None)

    def finish(self, run_id: str, status: str = "FINISHED", metrics: dict[str, float | None] | None = None,
               artifacts: Sequence[tuple[Path, str | None]] = ()) -> None:
        """End a run started with `start_parent`, adding final metrics and artifacts."""
        record = RunRecord(name=run_id, metrics=dict(metrics or {}), artifacts=list(artifacts))
        self._guarded(run_id, run_id, lambda: self._write(run_id, record, status))

    def reopen(self, run_id: str) -> None:
        """Set a finished run RUNNING again, as a run of this process (a resumed search keeps its parent run)."""
        from mlflow.entities import RunTag

        with uninterrupted():
            self._client.log_batch(run_id, tags=[RunTag(key, value) for key, value in process_tags().items()])
            self._client.update_run(run_id, status="RUNNING")
            _Ended.open[run_id] = self

    def abort(self, run_id: str, exc: BaseException) -> None:
        """End a run that `exc` stopped, KILLED or FAILED (see `ended_status`), if it is still open."""
        if run_id not in _Ended.open:
            return
        status = ended_status(exc)
        try:
            with uninterrupted():
                self._terminate(run_id, status)
        except Exception:  # the store itself is gone or stays locked; the next command or the clean marks it
            _Ended.open.pop(run_id, None)
            _Ended.stuck.append(run_id)
            return
        _Ended.by_status[status] = _Ended.by_status.get(status, 0) + 1

    def _create(self, record: RunRecord, parent_run_id: str | None, status: str | None) -> str:
        """Create the run with its tags (so even a failed run is findable), its name and the process writing it;
        then write the record, ending the run with `status` unless None."""
        tags = {**record.tags, **process_tags()}
        if parent_run_id is not None:
            tags[PARENT_TAG] = parent_run_id
        try:
            with uninterrupted():
                run = self._client.create_run(self.experiment_id, tags=tags, run_name=record.name)
                _Ended.open[run.info.run_id] = self
        except Exception as exc:
            raise ParaphinaError(f"cannot create run {record.name} in {self.tracking_uri}: {describe(exc)}") from exc
        run_id = run.info.run_id
        self._guarded(run_id, record.name, lambda: self._write(run_id, record, status))
        return run_id

    def _write(self, run_id: str, record: RunRecord, status: str | None) -> None:
        """Params and metrics in one log_batch (the client splits it at the request limits), files at once, status."""
        from mlflow.entities import Param

        params = [Param(key, param_text(value)) for key, value in record.params.items()]
        with uninterrupted():
            self._client.log_batch(run_id, metrics=_metrics(record), params=params)
            if record.artifacts or record.texts:
                with tempfile.TemporaryDirectory(prefix="paraphina-artifacts-") as folder:
                    self._client.log_artifacts(run_id, str(_stage_files(record, Path(folder))))
            if status is not None:
                self._terminate(run_id, status)

    def _terminate(self, run_id: str, status: str) -> None:
        """Set the run's final status, trying again while the store is locked by another writer."""
        for attempt in range(1, self.ending.attempts + 1):
            try:
                self._client.set_terminated(run_id, status)
                break
            except Exception as exc:
                if attempt == self.ending.attempts or "locked" not in str(exc):
                    raise
                time.sleep(self.ending.wait_s)
        _Ended.open.pop(run_id, None)

    def _guarded(self, run_id: str, name: str, write: Callable[[], None]) -> None:
        """Run `write`; if it fails, end the run FAILED or KILLED (never left RUNNING) and raise a one-line error."""
        try:
            write()
        except BaseException as exc:
            self.abort(run_id, exc)
            if isinstance(exc, Exception):
                raise ParaphinaError(f"writing run {name} to {self.tracking_uri} failed: {describe(exc)}") from exc
            raise


def _metrics(record: RunRecord) -> list[Metric]:
    """Scalar metrics (None skipped) at step 0 and every series point at its step, all with one timestamp."""
    from mlflow.entities import Metric

    now_ms = int(time.time() * 1000)
    metrics = [Metric(key, float(value), now_ms, 0) for key, value in record.metrics.items() if value is not None]
    for key, (steps, values) in record.series.items():
        points = zip(np.asarray(steps, dtype=np.int64).tolist(), np.asarray(values, dtype=float).tolist())
        metrics.extend(Metric(key, value, now_ms, step) for step, value in points)
    return metrics


def _stage_files(record: RunRecord, folder: Path) -> Path:
    """Lay out the record's files and texts in `folder` as they will appear in the run's artifacts (one upload
    of the folder looks the run up once; one upload per file would look it up every time)."""
    for path, artifact_dir in record.artifacts:
        target = folder / (artifact_dir or "") / Path(path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:  # another file system: copy instead
            shutil.copyfile(path, target)
    for file_name, text in record.texts.items():
        target = folder / file_name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return folder
