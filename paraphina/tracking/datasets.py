"""Research datasets kept in MLflow: a dataset is the set of runs tagged `dataset=<NAME>`, one research row per run.

Rows go in as metrics (run metrics), params (profile knobs) and tags (text fields) and come back as a DataFrame.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd

from paraphina.config.loading import check_dataset_name
from paraphina.core.errors import ParaphinaError
from paraphina.core.names import DATASET_TAG, KIND_TAG, METRIC_KEYS, RESEARCH_ROW_KIND, ROW_KNOBS
from paraphina.formats.dataset import ROW_FIELDS, ROW_KEYS
from paraphina.formats.telemetry import BOOL, INT, NUMBER
from paraphina.tracking.runs import RunRecord, RunWriter
from paraphina.tracking.store import all_runs, describe, prepare_store, tracking_client

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.store.entities import PagedList

RESEARCH_EXPERIMENT = "research"
TEXT_KEYS: tuple[str, ...] = tuple(key for key in ROW_KEYS if key not in METRIC_KEYS and key not in ROW_KNOBS)


def row_to_record(row: Mapping[str, Any], dataset: str, name: str) -> RunRecord:
    """A research row as a run of `dataset`: metrics (kill_switch as 0/1), knobs as params, text fields as tags."""
    tags = {key: str(row[key]) for key in TEXT_KEYS if row.get(key) is not None}
    tags.update({DATASET_TAG: dataset, KIND_TAG: RESEARCH_ROW_KIND})
    return RunRecord(
        name=name,
        params={key: row[key] for key in ROW_KNOBS if row.get(key) is not None},
        tags=tags,
        metrics={key: None if row.get(key) is None else float(row[key]) for key in METRIC_KEYS},
    )


def _column(runs_df: pd.DataFrame, key: str) -> pd.Series:
    """The stored column of a row key (tag, param or metric), all missing when no run has it."""
    kind = "metrics" if key in METRIC_KEYS else "params" if key in ROW_KNOBS else "tags"
    column = f"{kind}.{key}"
    if column not in runs_df.columns:
        return pd.Series([None] * len(runs_df), index=runs_df.index, dtype=object)
    return runs_df[column]


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
        if field.kind is NUMBER:
            rows[key] = pd.to_numeric(column).astype(float)
        elif field.kind is INT:
            rows[key] = pd.to_numeric(column).astype("int64" if field.required else "Int64")
        elif field.kind is BOOL:
            rows[key] = pd.to_numeric(column).astype(bool)
        else:
            rows[key] = column.astype("str")
    return rows.sort_values("timestamp_utc", kind="stable").reset_index(drop=True)


def _runs_frame(runs: Iterable[Run]) -> pd.DataFrame:
    """Runs as a DataFrame with the columns of `mlflow.search_runs` (run_id, metrics.*, params.*, tags.*)."""
    return pd.DataFrame.from_records(
        [
            {
                "run_id": run.info.run_id,
                **{f"metrics.{key}": value for key, value in run.data.metrics.items()},
                **{f"params.{key}": value for key, value in run.data.params.items()},
                **{f"tags.{key}": value for key, value in run.data.tags.items()},
            }
            for run in runs
        ]
    )


def _all_pages(fetch: Callable[[str | None], PagedList]) -> list:
    """Every item of a paged MLflow search; `fetch(page_token)` returns one page."""
    items: list = []
    token = None
    while True:
        page = fetch(token)
        items.extend(page)
        token = page.token
        if not token:
            return items


def _search_all(tracking_uri: str, filter_string: str) -> list[Run]:
    """Every active run of every active experiment matching `filter_string`, oldest first."""
    client = tracking_client(tracking_uri)
    try:
        experiments = _all_pages(lambda token: client.search_experiments(page_token=token))
        experiment_ids = [experiment.experiment_id for experiment in experiments]
        return all_runs(client, experiment_ids, filter_string, ["attributes.start_time ASC"])
    except Exception as exc:
        raise ParaphinaError(f"cannot search runs in {tracking_uri}: {describe(exc)}") from exc


def list_datasets(tracking_uri: str) -> list[str]:
    """Names of the datasets in the store (distinct `dataset` tags over all experiments), sorted."""
    runs = _search_all(tracking_uri, f"tags.{DATASET_TAG} LIKE '%'")
    return sorted({run.data.tags[DATASET_TAG] for run in runs})


def load_dataset(tracking_uri: str, name: str) -> pd.DataFrame:
    """The research rows of dataset `name`; a missing dataset is an error listing those that exist."""
    check_dataset_name(name)
    runs = _search_all(tracking_uri, f"tags.{DATASET_TAG} = '{name}'")
    if not runs:
        existing = ", ".join(list_datasets(tracking_uri)) or "none yet"
        raise ParaphinaError(f"no dataset '{name}' in {tracking_uri}; datasets there: {existing}")
    return records_to_rows(_runs_frame(runs))


def research_writer(uri: str) -> RunWriter:
    """A writer into the `research` experiment of a checked store, created (with the store) if missing."""
    experiment_id = prepare_store(uri, [RESEARCH_EXPERIMENT])[RESEARCH_EXPERIMENT]
    return RunWriter(uri, experiment_id)
