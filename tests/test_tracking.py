"""The MLflow tracking layer against real stores: a SQLite file in tmp_path and a real `mlflow server` (one per
file, shared by the tests that record through it: each uses an MLflow experiment of its own)."""
from __future__ import annotations

import multiprocessing
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from omegaconf import OmegaConf

from conftest import as_a_command, experiment_runs, free_port
from paraphina import run as run_command
from paraphina.config.loading import compose_config
from paraphina.core.errors import ParaphinaError
from paraphina.formats.dataset import ROW_KEYS, make_row
from paraphina.runner.batch import config_hash, run_batch
from paraphina.tracking.datasets import list_datasets, load_dataset, row_to_record
from paraphina.tracking.runs import PARENT_TAG, RunRecord, RunWriter, flatten_params, git_commit
from paraphina.tracking.store import (
    check_reachable,
    default_tracking_uri,
    prepare_store,
    resolve_tracking_uri,
    sqlite_path,
)


@pytest.fixture
def store_uri(tmp_path: Path) -> str:
    """A fresh SQLite tracking store in the test's own folder."""
    return f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"


def sample_record(tmp_path: Path, name: str = "aggressive-s7") -> RunRecord:
    """A run with params, tags, metrics, a 200-step series, a file artifact and a text artifact."""
    telemetry = tmp_path / "telemetry.jsonl"
    telemetry.write_text('{"t": 0, "pnl_total": 0.0}\n{"t": 1, "pnl_total": 1.5}\n')
    steps = np.arange(200) * 10
    return RunRecord(
        name=name,
        params=flatten_params({"engine": {"hedge": {"band_base": 4.86}, "venues": ["a", "b"]}, "seed": 7, "x": None}),
        tags={"profile": "aggressive", "seed": "7"},
        metrics={"final_pnl": 123.456, "max_drawdown": 7.25, "time_to_kill": None},
        series={"pnl_total": (steps, np.sin(steps / 100.0) * 50.0)},
        artifacts=[(telemetry, "telemetry")],
        texts={"config.yaml": "ticks: 2000\nseed: 7\n"},
    )


def research_rows(n: int, label_prefix: str, start: int = 0) -> list[dict]:
    """Research rows made by the research module, with nulls and both kill outcomes."""
    rows = []
    for i in range(start, start + n):
        killed = i % 3 == 0
        metrics = {
            "num_ticks": 2000,
            "final_pnl": 100.0 + i * 0.1,
            "max_pnl": 150.25 + i,
            "min_pnl": -30.5 - i,
            "max_drawdown": 42.125 + i,
            "frac_normal": 0.9,
            "frac_warning": 0.07,
            "frac_hard": 0.03,
            "kill_switch": killed,
            "time_to_kill": 1500 + i if killed else None,
            "max_abs_delta_usd": 9000.5,
            "max_abs_basis_usd": 1200.75,
        }
        rows.append(
            make_row(
                metrics,
                profile=("conservative", "balanced", "aggressive")[i % 3],
                label=None if i == start else f"{label_prefix}-{i}",
                notes="first note" if i % 2 else None,
                telemetry_path=f"/data/run{i}.jsonl" if i % 2 else None,
                knobs={"band_base": 4.86, "mm_size_eta": 0.0864, "vol_ref": 0.028125, "daily_loss_limit": 2000.0,
                       "init_q_tao": float(i), "vol_scale": None},
                timestamp_utc=f"2025-01-01T00:{i // 60:02d}:{i % 60:02d}Z",
            )
        )
    return rows


def expected_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows as the typed DataFrame load_dataset promises, sorted by timestamp."""
    text = ("timestamp_utc", "label", "profile", "notes", "telemetry_path")
    dtypes = {key: "str" if key in text else "float64" for key in ROW_KEYS}
    dtypes.update(num_ticks="int64", kill_switch="bool", time_to_kill="Int64")
    frame = pd.DataFrame(rows, columns=list(ROW_KEYS)).astype(dtypes)
    return frame.sort_values("timestamp_utc").reset_index(drop=True)


def test_uri_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = tmp_path / "mlruns"
    assert default_tracking_uri(store) == f"sqlite:////{str(store / 'mlflow.db').lstrip('/')}"
    assert resolve_tracking_uri(None, store) == default_tracking_uri(store)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_tracking_uri(None, store) == "http://127.0.0.1:5000"
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri("sqlite:///rel/mlflow.db", store) == f"sqlite:///{tmp_path / 'rel' / 'mlflow.db'}"


def test_flatten_params() -> None:
    flat = flatten_params({"engine": {"hedge": {"band_base": 5.625}, "gamma": [0.1, 0.09]}, "label": None})
    assert flat == {"engine.hedge.band_base": "5.625", "engine.gamma": "[0.1, 0.09]", "label": "None"}


def test_git_commit_without_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable anywhere on PATH
    git_commit.cache_clear()  # the commit is asked once per process
    try:
        assert git_commit() is None
    finally:
        git_commit.cache_clear()


def test_record_round_trip(tmp_path: Path, store_uri: str) -> None:
    experiment_id = prepare_store(store_uri, ["paraphina"])["paraphina"]
    assert prepare_store(store_uri, ["paraphina"]) == {"paraphina": experiment_id}  # idempotent
    with closing(sqlite3.connect(sqlite_path(store_uri))) as connection:  # the store writes through a WAL
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    record = sample_record(tmp_path)
    run_id = RunWriter(store_uri, experiment_id).log(record)

    client = MlflowClient(store_uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith(str(tmp_path / "mlruns" / "artifacts" / "paraphina"))
    assert run.data.params == record.params
    assert run.data.tags["mlflow.runName"] == "aggressive-s7"
    assert record.tags.items() <= run.data.tags.items()
    assert run.data.metrics["final_pnl"] == 123.456
    assert run.data.metrics["max_drawdown"] == 7.25
    assert "time_to_kill" not in run.data.metrics
    history = sorted(client.get_metric_history(run_id, "pnl_total"), key=lambda m: m.step)
    steps, values = record.series["pnl_total"]
    assert [m.step for m in history] == steps.tolist()
    assert [m.value for m in history] == values.tolist()

    local = Path(client.download_artifacts(run_id, "", str(tmp_path / "download")))
    assert (local / "telemetry" / "telemetry.jsonl").read_text() == (tmp_path / "telemetry.jsonl").read_text()
    assert (local / "config.yaml").read_text() == record.texts["config.yaml"]


def test_failed_write_marks_run_failed(tmp_path: Path, made_store: str) -> None:
    experiment_id = prepare_store(made_store, ["paraphina"])["paraphina"]
    record = RunRecord(name="broken", artifacts=[(tmp_path / "missing.png", None)])
    with pytest.raises(ParaphinaError) as error:
        RunWriter(made_store, experiment_id).log(record)
    assert "\n" not in str(error.value) and "broken" in str(error.value)
    (run,) = MlflowClient(made_store).search_runs([experiment_id], "attributes.run_name = 'broken'")
    assert run.info.status == "FAILED"


def test_parent_with_children(tmp_path: Path, made_store: str) -> None:
    experiment_id = prepare_store(made_store, ["batch"])["batch"]
    writer = RunWriter(made_store, experiment_id)
    parent_id = writer.start_parent(RunRecord(name="aggressive-x3", params={"runs": 3}, texts={"config.yaml": "a: 1"}))
    client = MlflowClient(made_store)
    assert client.get_run(parent_id).info.status == "RUNNING"
    child_ids = {writer.log(RunRecord(name=f"aggressive-s{s}", metrics={"final_pnl": s}), parent_id) for s in range(3)}
    fan = tmp_path / "fan.png"
    fan.write_bytes(b"png")
    writer.finish(parent_id, metrics={"pnl_mean": 1.0}, artifacts=[(fan, "plots")])

    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.metrics == {"pnl_mean": 1.0}
    assert [a.path for a in client.list_artifacts(parent_id, "plots")] == ["plots/fan.png"]
    found = client.search_runs([experiment_id], f"tags.`{PARENT_TAG}` = '{parent_id}'")
    assert {run.info.run_id for run in found} == child_ids
    assert all(run.data.tags[PARENT_TAG] == parent_id for run in found)


def test_dataset_round_trip(made_store: str) -> None:
    experiment_id = prepare_store(made_store, ["research"])["research"]
    writer = RunWriter(made_store, experiment_id)
    rows = research_rows(7, "exp13")
    for i, row in enumerate(reversed(rows)):  # written out of order: loading sorts by timestamp
        writer.log(row_to_record(row, "ds-main", f"row-{i}"))
    writer.log(row_to_record(research_rows(1, "other")[0], "ds-other", "other"))

    loaded = load_dataset(made_store, "ds-main")
    assert list(loaded.columns) == list(ROW_KEYS)
    pd.testing.assert_frame_equal(loaded, expected_frame(rows))
    assert list_datasets(made_store) == ["ds-main", "ds-other"]


def test_missing_dataset_lists_existing(made_store: str) -> None:
    experiment_id = prepare_store(made_store, ["research"])["research"]
    RunWriter(made_store, experiment_id).log(row_to_record(research_rows(1, "a")[0], "alpha", "r"))
    with pytest.raises(ParaphinaError) as error:
        load_dataset(made_store, "beta")
    message = str(error.value)
    assert "\n" not in message and "beta" in message and "alpha" in message


def _write_rows_in_worker(uri: str, worker: int, n: int, barrier) -> None:
    """Spawned worker: prepare the (possibly fresh) store itself, then write n research rows."""
    barrier.wait()
    experiment_id = prepare_store(uri, ["research"])["research"]
    writer = RunWriter(uri, experiment_id)
    for row in research_rows(n, f"w{worker}", start=worker * n):
        writer.log(row_to_record(row, "shared", row["label"] or f"w{worker}-first"))


def test_concurrent_writers_lose_no_rows(store_uri: str) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [context.Process(target=_write_rows_in_worker, args=(store_uri, k, 30, barrier)) for k in range(2)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=120)
    assert [process.exitcode for process in workers] == [0, 0]
    loaded = load_dataset(store_uri, "shared")
    pd.testing.assert_frame_equal(loaded, expected_frame(research_rows(30, "w0") + research_rows(30, "w1", start=30)))


def test_check_reachable_closed_port() -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ParaphinaError) as error:
        check_reachable(uri, timeout_s=2.0)
    message = str(error.value)
    assert "\n" not in message and uri in message and "unreachable" in message


def test_http_server_round_trip(tmp_path: Path, mlflow_server: str) -> None:
    uri = mlflow_server
    check_reachable(uri, timeout_s=2.0)
    experiment_id = prepare_store(uri, ["remote"])["remote"]
    record = sample_record(tmp_path, name="remote-s1")
    run_id = RunWriter(uri, experiment_id).log(record)

    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == record.params
    assert run.data.metrics["final_pnl"] == 123.456
    assert len(client.get_metric_history(run_id, "pnl_total")) == 200
    local = Path(client.download_artifacts(run_id, "", str(tmp_path / "download")))
    assert (local / "config.yaml").read_text() == record.texts["config.yaml"]


def test_engine_cli_records_on_a_real_server(tmp_path: Path, mlflow_server: str, monkeypatch, capsys) -> None:
    overrides = ["+profile=conservative", "seed=5", "ticks=60"]
    as_a_command(monkeypatch, tmp_path, MLFLOW_TRACKING_URI=mlflow_server)
    run_command.main(overrides)   # the main of the command
    out = capsys.readouterr().out
    client = MlflowClient(mlflow_server)  # everything below is read back over HTTP
    (run,) = experiment_runs(client)
    assert run.info.run_id in out and mlflow_server in out
    cfg = compose_config([*overrides, "tracking.enabled=false"], environ={})
    result = run_batch(cfg)[0]
    assert run.data.tags["profile"] == "conservative" and run.data.tags["seed"] == "5"
    assert run.data.tags["config_hash"] == config_hash(cfg)
    for key, value in result.run_metrics(0).items():
        if value is not None:
            assert run.data.metrics[key] == float(value), key
    history = client.get_metric_history(run.info.run_id, "pnl_total")
    assert sorted(m.step for m in history) == result.series_steps.tolist()
    local = Path(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path / "download")))
    assert OmegaConf.create(local.read_text()).seed == 5
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()
