"""MLflow records of an experiment: a parent run per invocation, a child per grid point or trial; CSV copies of
the tables and the plots also go to sweeps/<experiment>/ for people who want files."""
from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from paraphina.config.loading import to_plain
from paraphina.core.files import replace_atomically
from paraphina.core.names import EXPERIMENT_KIND, EXPERIMENT_TAG, KIND_TAG, METRIC_KEYS, PARENT_TAG, POINT_KIND
from paraphina.engine.simulate import BatchResult
from paraphina.core.errors import ParaphinaError
from paraphina.runner.aggregates import aggregate_metrics
from paraphina.runner.recording import TrackingSession
from paraphina.tracking.runs import RunRecord, flatten_params
from paraphina.tracking.store import all_runs, describe, resolve_tracking_uri, sqlite_path, tracking_client


def store_uri(cfg: DictConfig) -> str:
    """The tracking URI of the config's store."""
    return resolve_tracking_uri(cfg.tracking.uri, cfg.paths.store)


def sweeps_dir(cfg: DictConfig) -> Path:
    """<paths.sweeps>/<experiment>/, created on demand."""
    path = Path(cfg.paths.sweeps).absolute() / cfg.experiment.id
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ParaphinaError(f"cannot create {path} ({exc.strerror}); check the folder's permissions") from exc
    return path


def per_seed_table(result: BatchResult, rows: np.ndarray, point: Mapping[str, float]) -> pd.DataFrame:
    """One row per seed of a grid point or trial: its knobs and its run metrics."""
    return pd.DataFrame({"seed": result.seeds[rows], **point,
                         **{k: np.asarray(result.metrics[k])[rows] for k in METRIC_KEYS}})


def point_summaries(result: BatchResult, point_index: np.ndarray, points: Sequence[Mapping[str, float]],
                    confidence: float) -> pd.DataFrame:
    """The aggregate metrics of each point over its seeds, one row per point, knobs first; `runs` a count (an
    MLflow metric, so a float, in the aggregates)."""
    return pd.DataFrame([{**point, **aggregate_metrics(result, confidence, np.flatnonzero(point_index == p))}
                         for p, point in enumerate(points)]).astype({"runs": int})


def parent_metrics(table: pd.DataFrame, keys: Sequence[str], by: str | None = None) -> dict[str, float]:
    """The key aggregates of an experiment's points as metrics of its parent run: `<key>.<row's by>` for each
    row (a profile), or without `by` their range over the points (`<key>.min`, `<key>.max`)."""
    if by is not None:
        return {f"{key}.{row[by]}": float(row[key]) for _, row in table.iterrows() for key in keys}
    return {f"{key}.{end}": float(getattr(table[key], end)()) for key in keys for end in ("min", "max")}


class ExperimentRecorder:
    """Parent run (resolved config) and children (grid points or trials) of one experiment invocation."""

    def __init__(self, cfg: DictConfig, extra_tags: Mapping[str, str] | None = None, resume_tag: str | None = None):
        """`resume_tag` names one of `extra_tags`: the latest parent carrying the same value is reopened instead
        of starting a new one, so a resumed Optuna search keeps one parent run."""
        self.cfg = cfg
        self.session = TrackingSession.open(cfg, cfg.experiment.name)
        tags = {KIND_TAG: EXPERIMENT_KIND, EXPERIMENT_TAG: cfg.experiment.id, **(extra_tags or {})}
        reopened = None if resume_tag is None else self._reopen(resume_tag, tags[resume_tag])
        self.parent_id = reopened or self.session.writer.start_parent(RunRecord(
            name=cfg.experiment.run_name, params=flatten_params(to_plain(cfg)), tags=tags,
            texts={"config.yaml": OmegaConf.to_yaml(cfg)}))
        self._tmp = tempfile.TemporaryDirectory(prefix=f"paraphina-{cfg.experiment.id}-")
        self.tmp = Path(self._tmp.name)

    def _reopen(self, tag: str, value: str) -> str | None:
        """The latest parent run of this experiment tagged `tag=value`, set RUNNING again; None if there is none."""
        from mlflow.exceptions import MlflowException

        client = tracking_client(self.session.uri)
        try:
            runs = client.search_runs([self.session.experiment_id],
                                      f"tags.`{KIND_TAG}` = '{EXPERIMENT_KIND}' and tags.`{tag}` = '{value}'",
                                      order_by=["attributes.start_time DESC"], max_results=1)
            if runs:
                self.session.writer.reopen(runs[0].info.run_id)
        except MlflowException as exc:
            raise ParaphinaError(f"cannot reopen the {tag}={value} run in {self.session.uri}: {describe(exc)}") from exc
        return runs[0].info.run_id if runs else None

    def log_point(self, name: str, params: Mapping[str, object], metrics: Mapping[str, float],
                  table: pd.DataFrame | None = None, tags: Mapping[str, str] | None = None,
                  texts: Mapping[str, str] = {}) -> str:
        """A child run: the point's knobs as params, its aggregates as metrics, its per-seed table as CSV."""
        record = RunRecord(name=name, params=dict(params), metrics=dict(metrics), texts=dict(texts),
                           tags={KIND_TAG: POINT_KIND, EXPERIMENT_TAG: self.cfg.experiment.id, **(tags or {})})
        if table is not None:
            record.texts["per_seed.csv"] = table.to_csv(index=False)
        return self.session.writer.log(record, self.parent_id)

    def log_points(self, batch: BatchResult, point_index: np.ndarray, points: Sequence[Mapping[str, object]],
                   summary: pd.DataFrame, names: Sequence[str], params: Sequence[Mapping[str, object]],
                   tags: Sequence[Mapping[str, str]] | None = None) -> None:
        """A child per point (runs `point_index == p`): its params, its `summary` row less the point's own
        columns as metrics, and its per-seed table."""
        for p, point in enumerate(points):
            metrics = summary.iloc[p].drop(labels=list(point)).to_dict()
            table = per_seed_table(batch, np.flatnonzero(point_index == p), point)
            self.log_point(names[p], params[p], metrics, table, tags[p] if tags else None)

    def finish(self, tables: Mapping[str, pd.DataFrame] = {}, plots: Sequence[Path] = (),
               metrics: Mapping[str, float] | None = None, texts: Mapping[str, str] = {}) -> None:
        """Copy tables (CSV), plots and texts to sweeps/<experiment>/, then attach them to the parent and end it.

        The files are written in this command's own folder (plots too: draw them into `self.tmp`), so the parent
        gets this command's files; each copy under sweeps/ replaces the last in one step, so commands writing the
        same file at once each leave it whole. A copy that fails stops the command before its parent finishes."""
        out = sweeps_dir(self.cfg)
        artifacts = []
        for name, table in tables.items():
            table.to_csv(self.tmp / f"{name}.csv", index=False)
            artifacts.append((self.tmp / f"{name}.csv", "tables"))
        for name, text in texts.items():
            (self.tmp / name).write_text(text)
            artifacts.append((self.tmp / name, None))
        artifacts += [(Path(plot), "plots") for plot in plots]
        for path, _ in artifacts:
            if path.parent != out:
                replace_atomically(out / path.name, functools.partial(shutil.copyfile, path))
        self.session.writer.finish(self.parent_id, metrics=dict(metrics or {}), artifacts=artifacts)
        self._tmp.cleanup()

    def __enter__(self) -> "ExperimentRecorder":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is not None:  # the parent ends KILLED for a stop, FAILED for an error
            self.session.writer.abort(self.parent_id, exc)
            self._tmp.cleanup()
        return False


def latest_points(cfg: DictConfig, experiment_id: str) -> tuple[pd.DataFrame, dict]:
    """The children of the latest finished invocation of an experiment (params as floats, metrics) and its
    parent's run id, start time and params, and each child's tags; the error when there is none names the
    command to run."""
    uri = store_uri(cfg)
    path = sqlite_path(uri)   # a store not made yet holds no records: opening a client on it would make it
    client = None if path is not None and not path.exists() else tracking_client(uri)
    experiment = client and client.get_experiment_by_name(cfg.experiment_names[experiment_id])
    parents = [] if experiment is None else client.search_runs(
        [experiment.experiment_id], f"tags.`{KIND_TAG}` = '{EXPERIMENT_KIND}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=1)
    if not parents:
        raise ParaphinaError(f"no finished {experiment_id} records in {uri}; "
                             f"run python -m paraphina.experiments.{experiment_id} first")
    parent = parents[0]
    children = all_runs(client, [experiment.experiment_id], f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'")
    rows = []
    for run in children:
        row = {"run_id": run.info.run_id, "run_name": run.data.tags.get("mlflow.runName", "")}
        for key, value in run.data.params.items():
            try:
                row[key] = float(value)
            except ValueError:
                row[key] = value
        row.update(run.data.metrics)
        rows.append(row)
    return pd.DataFrame(rows), {"run_id": parent.info.run_id, "start_time": parent.info.start_time,
                                "params": dict(parent.data.params),
                                "child_tags": [dict(run.data.tags) for run in children]}
