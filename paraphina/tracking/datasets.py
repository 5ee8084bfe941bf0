"""Research datasets kept in MLflow: a dataset is the set of runs tagged `dataset=<NAME>`, one research row per
run (metrics, knobs as params, text fields as tags), read back as a DataFrame; see `_rows` for which rows count."""
from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd

from paraphina.config.loading import check_dataset_name
from paraphina.core.errors import ParaphinaError
from paraphina.core.names import (DATASET_TAG, KIND_TAG, METRIC_KEYS, PARENT_TAG, RESEARCH_ROW_KIND,
                                  RESEARCH_TABLE_KIND, ROW_KEY_TAG, ROW_KNOBS)
from paraphina.formats.dataset import ROW_FIELDS, ROW_KEYS
from paraphina.formats.telemetry import BOOL, INT, NUMBER, STR
from paraphina.tracking.runs import Ending, RunRecord, RunWriter
from paraphina.tracking.store import (all_runs, describe, mark_stopped_runs, prepare_store, sqlite_path,
                                      tracking_client)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

RESEARCH_EXPERIMENT = "research"
SEED_TABLE_PATH = "tables/seeds.parquet"   # a batch's seeds as rows, in the artifacts of its run
ROW_KEY_COLUMN = "row_key"                 # the key of each row of such a table
TEXT_KEYS: tuple[str, ...] = tuple(key for key in ROW_KEYS if key not in METRIC_KEYS and key not in ROW_KNOBS)


def content_key(row: Mapping[str, Any]) -> str:
    """The key of a row that is its content: recording the same row again repeats it."""
    text = json.dumps({key: row.get(key) for key in ROW_KEYS}, sort_keys=True, default=str)
    return f"content:{hashlib.sha256(text.encode()).hexdigest()[:20]}"


def row_to_record(row: Mapping[str, Any], dataset: str, name: str, key: str | None = None) -> RunRecord:
    """A research row as a run of `dataset`: metrics (kill_switch as 0/1), knobs as params, text fields as tags,
    its key (default: its content) as a tag."""
    tags = {key: str(row[key]) for key in TEXT_KEYS if row.get(key) is not None}
    tags.update({DATASET_TAG: dataset, KIND_TAG: RESEARCH_ROW_KIND, ROW_KEY_TAG: key or content_key(row)})
    return RunRecord(
        name=name,
        params={key: row[key] for key in ROW_KNOBS if row.get(key) is not None},
        tags=tags,
        metrics={key: None if row.get(key) is None else float(row[key]) for key in METRIC_KEYS},
    )


def _stored(key: str) -> str:
    """The column of a row key in a frame of runs: its metric, param or tag."""
    kind = "metrics" if key in METRIC_KEYS else "params" if key in ROW_KNOBS else "tags"
    return f"{kind}.{key}"


def _column(runs_df: pd.DataFrame, key: str) -> pd.Series:
    """The stored column of a row key (tag, param or metric), all missing when no run has it."""
    return runs_df.get(_stored(key), pd.Series([None] * len(runs_df), index=runs_df.index, dtype=object))


def records_to_rows(runs_df: pd.DataFrame) -> pd.DataFrame:
    """Runs (as `mlflow.search_runs` returns them) back to research rows: ROW_KEYS columns, typed, by timestamp."""
    rows = pd.DataFrame(index=runs_df.index)
    for key in ROW_KEYS:
        column = _column(runs_df, key)
        field = ROW_FIELDS[key]
        missing = column.isna()
        if field.required and missing.any():
            run_id = runs_df["run_id"][missing].iloc[0] if "run_id" in runs_df else "?"
            raise ParaphinaError(
                f"{int(missing.sum())} run(s) lack '{key}' (e.g. run {run_id}), so they are not research rows; "
                f"tag only research rows with {DATASET_TAG}=..."
            )
        if field.kind is STR:
            rows[key] = column.astype("str")
        else:
            dtype = {NUMBER: float, INT: "int64" if field.required else "Int64", BOOL: bool}[field.kind]
            rows[key] = pd.to_numeric(column).astype(dtype)
    return rows.sort_values("timestamp_utc", kind="stable").reset_index(drop=True)


def _runs_frame(runs: Iterable[Run]) -> pd.DataFrame:
    """Runs as a DataFrame with the columns of `mlflow.search_runs` (run_id, metrics.*, params.*, tags.*), each
    with its row's key and start time."""
    return pd.DataFrame.from_records([
        {"run_id": run.info.run_id, "key": run.data.tags.get(ROW_KEY_TAG, run.info.run_id),
         "start_time": run.info.start_time,
         **{f"{kind}.{key}": value for kind in ("metrics", "params", "tags")
            for key, value in getattr(run.data, kind).items()}}
        for run in runs
    ])


def _table_frame(client: MlflowClient, run: Run) -> pd.DataFrame:
    """The rows a run holds as a table (SEED_TABLE_PATH), laid out as `_runs_frame` lays out runs."""
    with tempfile.TemporaryDirectory(prefix="paraphina-rows-") as folder:
        table = pd.read_parquet(client.download_artifacts(run.info.run_id, SEED_TABLE_PATH, folder))
    frame = pd.DataFrame({_stored(key): table[key] for key in ROW_KEYS})
    frame.insert(0, "run_id", run.info.run_id)
    frame.insert(1, "key", table[ROW_KEY_COLUMN])
    frame.insert(2, "start_time", run.info.start_time)
    return frame


def _search_all(tracking_uri: str, filter_string: str) -> list[Run]:
    """Every active run of every active experiment matching `filter_string`, oldest first (none in a store not
    made yet, which a client would make)."""
    path = sqlite_path(tracking_uri)
    if path is not None and not path.exists():
        return []
    client = tracking_client(tracking_uri)
    try:
        return all_runs(client, None, filter_string, ["attributes.start_time ASC"])
    except Exception as exc:
        raise ParaphinaError(f"cannot search runs in {tracking_uri}: {describe(exc)}") from exc


def list_datasets(tracking_uri: str) -> list[str]:
    """Names of the datasets in the store (distinct `dataset` tags over all experiments), sorted."""
    runs = _search_all(tracking_uri, f"tags.{DATASET_TAG} LIKE '%'")
    return sorted({run.data.tags[DATASET_TAG] for run in runs})


def _counts(run: Run, unfinished: set[str], ended: set[str], under: str | None) -> bool:
    """A row counts when its run is FINISHED and so is the parent it was written under; read `under` that parent
    (as the command writing them does), a parent still running will do, one that was stopped never does."""
    parent = run.data.tags.get(PARENT_TAG)
    return run.info.status == "FINISHED" and parent not in (ended if under is not None else unfinished)


def _rows(tracking_uri: str, name: str, under: str | None) -> tuple[pd.DataFrame, int, int]:
    """(the rows that count, as a frame of runs with their keys: the latest of each key; the runs found; how many
    runs of commands that did not finish were skipped). Rows come from row runs and from the tables of runs
    of kind RESEARCH_TABLE_KIND; the runs of stopped commands found on the way are marked KILLED."""
    check_dataset_name(name)
    if under is not None and "'" in under:
        raise ParaphinaError(f"run id {under!r} contains a quote")
    where = f"tags.{DATASET_TAG} = '{name}'" + ("" if under is None else f" and tags.`{PARENT_TAG}` = '{under}'")
    runs = _search_all(tracking_uri, where)
    if not runs:
        return pd.DataFrame(columns=["key"]), 0, 0
    client = tracking_client(tracking_uri)
    unfinished = _search_all(tracking_uri, "attributes.status != 'FINISHED'")
    stopped = mark_stopped_runs(client, unfinished)
    unfinished_ids = {run.info.run_id for run in unfinished}
    ended = {run.info.run_id for run in unfinished if run.info.status != "RUNNING"} | stopped
    finished = [run for run in runs if _counts(run, unfinished_ids, ended, under)]
    tables = [run for run in finished if run.data.tags.get(KIND_TAG) == RESEARCH_TABLE_KIND]
    try:
        frames = [_runs_frame([run for run in finished if run not in tables]),
                  *(_table_frame(client, run) for run in tables)]
    except Exception as exc:
        raise ParaphinaError(f"cannot read the rows of dataset '{name}' in {tracking_uri}: {describe(exc)}") from exc
    rows = pd.concat([frame for frame in frames if len(frame)] or [pd.DataFrame(columns=["key"])], ignore_index=True)
    if len(rows):  # a rerun's row replaces the row it repeats
        rows = rows.sort_values("start_time", kind="stable").drop_duplicates("key", keep="last")
    return rows, len(runs), len(runs) - len(finished)


def load_dataset(tracking_uri: str, name: str, under: str | None = None) -> pd.DataFrame:
    """The research rows of dataset `name` that count (optionally only those written under run `under`); the
    rows of commands that did not finish are skipped with a note on stderr. A dataset without rows is an error."""
    rows, found, stopped = _rows(tracking_uri, name, under)
    if not found:
        if under is not None:
            raise ParaphinaError(f"no research rows of dataset '{name}' under run {under} in {tracking_uri}")
        existing = ", ".join(list_datasets(tracking_uri)) or "none yet"
        raise ParaphinaError(f"no dataset '{name}' in {tracking_uri}; datasets there: {existing}")
    if stopped:
        print(f"note: dataset '{name}': skipped the rows of {stopped} run(s) of commands that did not finish; "
              f"python -m paraphina.tracking.clean removes them", file=sys.stderr)
    if not len(rows):
        raise ParaphinaError(f"dataset '{name}' in {tracking_uri} has no finished rows ({stopped} run(s) of "
                             f"commands that did not finish); run python -m paraphina.tracking.clean and record "
                             f"it again")
    return records_to_rows(rows)


def held_rows(tracking_uri: str, name: str) -> tuple[set[str], pd.DataFrame | None]:
    """The keys and the research rows of dataset `name` that count, from one search; (empty, None) when there
    is no such dataset (what an import checks its rows against)."""
    rows = _rows(tracking_uri, name, None)[0]
    return set(rows["key"]), (records_to_rows(rows) if len(rows) else None)


def research_writer(uri: str, ending: Ending = Ending()) -> RunWriter:
    """A writer into the `research` experiment of a checked store, created (with the store) if missing."""
    experiment_id = prepare_store(uri, [RESEARCH_EXPERIMENT])[RESEARCH_EXPERIMENT]
    return RunWriter(uri, experiment_id, ending)


def remove_unfinished_rows(tracking_uri: str) -> tuple[int, int]:
    """Delete (MLflow's soft delete) the research rows of commands that ended without finishing, and the ended
    parents they were written under; returns (rows, parents). Rows of commands still running are kept."""
    client = tracking_client(tracking_uri)
    ended = {run.info.run_id: run for run in _search_all(tracking_uri, "attributes.status != 'FINISHED'")
             if run.info.status != "RUNNING"}
    rows = [run for run in _search_all(tracking_uri, f"tags.{DATASET_TAG} LIKE '%'")
            if run.info.run_id in ended or run.data.tags.get(PARENT_TAG) in ended]
    parents = {run.data.tags[PARENT_TAG] for run in rows if run.data.tags.get(PARENT_TAG) in ended}
    try:
        for run_id in [*(run.info.run_id for run in rows), *parents]:
            client.delete_run(run_id)
    except Exception as exc:
        raise ParaphinaError(f"cannot delete runs in {tracking_uri}: {describe(exc)}") from exc
    return len(rows), len(parents)
