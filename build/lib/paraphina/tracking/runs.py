"""Write finished engine runs to MLflow fast: one create, one batched log, one terminate per run.

The engine knows nothing of this module; callers describe a run as a RunRecord and hand it to a RunWriter.
"""
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

from paraphina.core.errors import ParaphinaError
from paraphina.core.names import PARENT_TAG
from paraphina.tracking.store import describe, tracking_client

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
    """A param value as MLflow stores it: sequences as JSON, None as "None", the rest as str()."""
    if _is_sequence(value):
        return json.dumps(_plain(value))
    return str(value)


def _is_sequence(value: object) -> bool:
    """Lists, tuples, arrays and OmegaConf ListConfigs, but not text."""
    return isinstance(value, (Sequence, np.ndarray)) and not isinstance(value, (str, bytes))


def _plain(value: object) -> object:
    """Nested containers (OmegaConf, numpy) as plain JSON-ready Python values."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if _is_sequence(value):
        return [_plain(item) for item in value]
    return value.item() if isinstance(value, np.generic) else value


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


class RunWriter:
    """Writes RunRecords into one experiment of one tracking store with MlflowClient batch calls."""

    def __init__(self, tracking_uri: str, experiment_id: str) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self._client = tracking_client(tracking_uri)

    def log(self, record: RunRecord, parent_run_id: str | None = None) -> str:
        """Write one finished run (status FINISHED), optionally as a child of `parent_run_id`; returns its run_id."""
        run_id = self._create(record, parent_run_id)
        self._guarded(run_id, record.name, lambda: self._write(run_id, record, "FINISHED"))
        return run_id

    def start_parent(self, record: RunRecord, parent_run_id: str | None = None) -> str:
        """Create a parent run (itself a child of `parent_run_id` if given) and leave it RUNNING; end it with `finish`."""
        run_id = self._create(record, parent_run_id)
        self._guarded(run_id, record.name, lambda: self._write(run_id, record, None))
        return run_id

    def finish(
        self,
        run_id: str,
        status: str = "FINISHED",
        metrics: dict[str, float | None] | None = None,
        artifacts: Sequence[tuple[Path, str | None]] = (),
    ) -> None:
        """End a run started with `start_parent`, adding final metrics and artifacts."""
        record = RunRecord(name=run_id, metrics=dict(metrics or {}), artifacts=list(artifacts))
        self._guarded(run_id, run_id, lambda: self._write(run_id, record, status))

    def _create(self, record: RunRecord, parent_run_id: str | None) -> str:
        """Create the run with its tags (so even a failed run is findable) and its name."""
        tags = dict(record.tags)
        if parent_run_id is not None:
            tags[PARENT_TAG] = parent_run_id
        try:
            run = self._client.create_run(self.experiment_id, tags=tags, run_name=record.name)
        except Exception as exc:
            raise ParaphinaError(f"cannot create run {record.name} in {self.tracking_uri}: {describe(exc)}") from exc
        return run.info.run_id

    def _write(self, run_id: str, record: RunRecord, status: str | None) -> None:
        """Params and metrics in one log_batch (the client splits it at the request limits), files at once, status."""
        from mlflow.entities import Param

        params = [Param(key, param_text(value)) for key, value in record.params.items()]
        self._client.log_batch(run_id, metrics=_metrics(record), params=params)
        if record.artifacts or record.texts:
            with tempfile.TemporaryDirectory(prefix="paraphina-artifacts-") as folder:
                self._client.log_artifacts(run_id, str(_stage_files(record, Path(folder))))
        if status is not None:
            self._client.set_terminated(run_id, status)

    def _guarded(self, run_id: str, name: str, write: Callable[[], None]) -> None:
        """Run `write`; if it fails, mark the run FAILED (never left RUNNING) and raise a one-line error."""
        try:
            write()
        except BaseException as exc:
            try:
                self._client.set_terminated(run_id, "FAILED")
            except Exception:  # the store itself is gone; the original error says why
                pass
            if isinstance(exc, Exception):
                raise ParaphinaError(f"writing run {name} to {self.tracking_uri} failed: {describe(exc)}") from exc
            raise


def _metrics(record: RunRecord) -> list[Metric]:
    """Scalar metrics (None skipped) at step 0 and every series point at its step, all with one timestamp."""
    from mlflow.entities import Metric

    now_ms = int(time.time() * 1000)
    metrics = [Metric(key, float(value), now_ms, 0) for key, value in record.metrics.items() if value is not None]
    for key, (steps, values) in record.series.items():
        steps_list = np.asarray(steps, dtype=np.int64).tolist()
        values_list = np.asarray(values, dtype=float).tolist()
        metrics.extend(Metric(key, value, now_ms, step) for step, value in zip(steps_list, values_list))
    return metrics


def _stage_files(record: RunRecord, folder: Path) -> Path:
    """Lay out the record's files and texts in `folder` as they will appear in the run's artifacts.

    One upload of the folder looks the run up once; one upload per file would look it up every time.
    """
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
