"""Every engine run in MLflow, checked against the engine's own numbers on real SQLite stores (a run recorded
through a real server: tests/test_tracking.py, which shares its server among its tests)."""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from scipy import stats as scipy_stats
from omegaconf import OmegaConf

from conftest import as_a_command, experiment_runs, free_port
from paraphina import run as run_command
from paraphina.config.loading import compose_config, to_plain
from paraphina.engine.simulate import SERIES_KEYS
from paraphina.research import summary
from paraphina.world_model.summary import format_summary, global_summary, per_profile_summary, top_runs
from paraphina.formats.telemetry import load_telemetry, run_metrics
from paraphina.runner.job import execute
from paraphina.runner.batch import config_hash, run_batch
from paraphina.runner.telemetry import telemetry_paths
from paraphina.core.names import KNOB_CONFIG_KEYS, METRIC_KEYS, MICROSTRUCTURE_KEYS, ROW_KNOBS
from paraphina.tracking.datasets import load_dataset
from paraphina.tracking.runs import PARENT_TAG, flatten_params
from paraphina.tracking.store import sqlite_path

SUBPROCESS_TIMEOUT_S = 180


def compose(tracking_uri: str, *overrides: str):
    """The real config with few ticks, recording into `tracking_uri`; no PARAPHINA_* environment."""
    return compose_config(["ticks=120", f"tracking.uri={tracking_uri}", *overrides], environ={})


def engine_only(cfg):
    """The same runs with tracking and telemetry off: the engine's own numbers."""
    plain = OmegaConf.merge(cfg, {"tracking": {"enabled": False}, "telemetry": {"mode": "off", "path": None}})
    return run_batch(plain)[0]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without settings that would redirect the engine or the store."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PARAPHINA_", "MLFLOW_"))}
    env.update(extra)
    return env


def run_cli(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "paraphina.run", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=SUBPROCESS_TIMEOUT_S)  # fmt: skip


def test_single_run_params_tags_metrics_series_artifacts(tmp_path: Path, made_store: str) -> None:
    telemetry = tmp_path / "telemetry" / "run.jsonl"
    cfg = compose(made_store, "+profile=aggressive", "seed=7", "telemetry.mode=jsonl", f"telemetry.path={telemetry}",
                  "dataset=ds-single", "label=single-7")  # fmt: skip
    run_id = execute(cfg)
    result = engine_only(cfg)
    client = MlflowClient(made_store)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "aggressive-s7"

    knobs = {knob: str(float(OmegaConf.select(cfg, key))) for knob, key in KNOB_CONFIG_KEYS.items() if knob in ROW_KNOBS}
    run_sections = {key: value for key, value in to_plain(cfg).items()
                    if key not in ("world_model", "experiment_names", "tracking", "execution", "experiment", "seeds")}
    assert run.data.params == {**flatten_params(run_sections), **knobs}
    assert run.data.params["engine.hedge.band_base"] == knobs["band_base"] == str(cfg.engine.hedge.band_base)
    assert "market.vol_scale" in run.data.params and "world_model.confidence" not in run.data.params
    expected_tags = {"profile": "aggressive", "seed": "7", "config_hash": config_hash(cfg),
                     "market": cfg.market.scenario, "label": "single-7", "dataset": "ds-single"}  # fmt: skip
    assert expected_tags.items() <= run.data.tags.items()

    engine_metrics = result.run_metrics(0)
    for key, value in engine_metrics.items():
        if value is None:
            assert key not in run.data.metrics
        else:
            assert run.data.metrics[key] == float(value), key
    # The telemetry file condenses to the same run metrics as the engine computed online (the microstructure
    # facts need each venue's fills and later mids, which a telemetry row does not carry).
    from_file = run_metrics(load_telemetry(telemetry))
    assert from_file.keys() == set(METRIC_KEYS) and set(engine_metrics) == {*METRIC_KEYS, *MICROSTRUCTURE_KEYS}
    for key, value in ((k, engine_metrics[k]) for k in METRIC_KEYS):
        assert from_file[key] == (value if value is None else pytest.approx(value, rel=1e-12, abs=1e-9)), key

    for key in SERIES_KEYS:
        history = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
        np.testing.assert_array_equal([m.step for m in history], result.series_steps)
        np.testing.assert_array_equal([m.value for m in history], result.series[key][:, 0])
    assert 2 <= len(result.series_steps) < cfg.ticks  # downsampled; the full series is in the telemetry file
    assert result.series_steps[-1] == cfg.ticks - 1  # the series end on the last tick: the UI's latest value
    assert run.data.metrics["pnl_total"] == run.data.metrics["final_pnl"]  # is the run's final PnL

    local = Path(client.download_artifacts(run_id, "", str(tmp_path / "download")))
    assert (local / "config.yaml").read_text() == OmegaConf.to_yaml(cfg)
    assert (local / "telemetry" / "run.jsonl").read_bytes() == telemetry.read_bytes()
    assert (local / "plots" / "aggressive-s7.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    (row,) = load_dataset(made_store, "ds-single").to_dict("records")
    assert row["label"] == "single-7" and row["profile"] == "aggressive" and row["telemetry_path"] == str(telemetry)
    assert row["final_pnl"] == engine_metrics["final_pnl"] and row["band_base"] == cfg.engine.hedge.band_base


def test_batch_parent_children_and_aggregates(tmp_path: Path, made_store: str) -> None:
    # A tiny loss limit in the volatile market: one of seeds 1..4 fires the kill switch, the others do not.
    cfg = compose(made_store, "runs=4", "seed=1", "ticks=100", "market=volatile", "engine.risk.daily_loss_limit=50")
    parent_id = execute(cfg)
    client = MlflowClient(made_store)
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and PARENT_TAG not in parent.data.tags
    assert parent.data.tags["runs"] == "4" and parent.data.tags["config_hash"] == config_hash(cfg)

    children = client.search_runs([parent.info.experiment_id], f"tags.`{PARENT_TAG}` = '{parent_id}'")
    children.sort(key=lambda run: int(run.data.tags["seed"]))
    assert [run.data.tags["seed"] for run in children] == ["1", "2", "3", "4"]
    assert all(run.info.status == "FINISHED" for run in children)
    assert len(experiment_runs(client)) == 5  # the parent and its children, nothing else
    # The parent holds the config (params and config.yaml); each child its seed and the key knobs.
    assert parent.data.params["engine.risk.daily_loss_limit"] == "50.0" and parent.data.params["runs"] == "4"
    knobs = {key: parent.data.params[key] for key in cfg.tracking.child_params}
    assert knobs["engine.risk.daily_loss_limit"] == "50.0" and knobs["market.scenario"] == "volatile"
    assert [run.data.params for run in children] == [{**knobs, "seed": seed} for seed in ("1", "2", "3", "4")]
    assert [a.path for a in client.list_artifacts(parent_id)] == ["config.yaml", "plots", "tables"]
    assert all(client.list_artifacts(run.info.run_id) == [] for run in children)

    metric = {key: np.array([run.data.metrics[key] for run in children])
              for key in ("final_pnl", "max_drawdown", "kill_switch")}  # fmt: skip
    result = engine_only(cfg)
    np.testing.assert_array_equal(metric["final_pnl"], result.metrics["final_pnl"])
    kills = int(metric["kill_switch"].sum())
    assert 0 < kills < 4, "the config should make some runs, not all, fire the kill switch"

    aggregates = parent.data.metrics
    assert aggregates["runs"] == 4
    assert aggregates["pnl_mean"] == pytest.approx(np.mean(metric["final_pnl"]), rel=1e-12)
    assert aggregates["pnl_std"] == pytest.approx(np.std(metric["final_pnl"], ddof=1), rel=1e-12)
    assert aggregates["dd_mean"] == pytest.approx(np.mean(metric["max_drawdown"]), rel=1e-12)
    assert aggregates["kill_prob"] == kills / 4
    tail = (1 - cfg.world_model.confidence) / 2  # exact (Clopper-Pearson) bounds from scipy's beta quantiles
    low = 0.0 if kills == 0 else scipy_stats.beta.ppf(tail, kills, 4 - kills + 1)
    high = 1.0 if kills == 4 else scipy_stats.beta.ppf(1 - tail, kills + 1, 4 - kills)
    assert (aggregates["kill_prob_low"], aggregates["kill_prob_high"]) == pytest.approx((low, high), rel=1e-9)
    fan = [a.path for a in client.list_artifacts(parent_id, "plots")]
    assert fan == [f"plots/{parent.info.run_name}-fan.png"]


def test_batch_children_with_the_full_config(tmp_path: Path, made_store: str) -> None:
    cfg = compose(made_store, "runs=2", "seed=3", "ticks=40", "tracking.child_config=full")
    parent_id = execute(cfg)
    client = MlflowClient(made_store)
    parent = client.get_run(parent_id)
    children = client.search_runs([parent.info.experiment_id], f"tags.`{PARENT_TAG}` = '{parent_id}'")
    assert sorted(run.data.params["seed"] for run in children) == ["3", "4"]
    for run in children:  # the parent's params, but the child's own seed
        assert run.data.params == {**parent.data.params, "seed": run.data.tags["seed"]}
        local = Path(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path / run.info.run_id)))
        assert local.read_text() == OmegaConf.to_yaml(cfg)


def test_database_file_alone_holds_every_run_after_the_command_exits(tmp_path: Path, tracking_uri: str) -> None:
    done = run_cli(["ticks=20", "runs=2", f"tracking.uri={tracking_uri}"], tmp_path, clean_env())
    assert done.returncode == 0, done.stderr
    copy = tmp_path / "copy.db"
    shutil.copyfile(sqlite_path(tracking_uri), copy)  # the database file only, without its write-ahead log
    with closing(sqlite3.connect(copy)) as connection:
        assert connection.execute("SELECT count(*) FROM runs").fetchone() == (3,)  # the parent and 2 children


def test_multirun_groups_jobs_under_one_parent(tmp_path: Path, made_store: str, monkeypatch) -> None:
    as_a_command(monkeypatch, tmp_path)
    run_command.main(["-m", "seed=1,2", "ticks=50", f"tracking.uri={made_store}"])   # the main of the command
    runs = experiment_runs(MlflowClient(made_store))
    (parent,) = [run for run in runs if run.data.tags.get("paraphina.kind") == "multirun"]
    children = [run for run in runs if run.data.tags.get(PARENT_TAG) == parent.info.run_id]
    assert sorted(run.data.tags["seed"] for run in children) == ["1", "2"]
    assert len(runs) == 3 and {run.info.status for run in runs} == {"FINISHED"}


def test_dataset_of_several_runs_summarises_like_pandas(tmp_path: Path, made_store: str, capsys) -> None:
    jobs = [("conservative", 1), ("conservative", 2), ("aggressive", 1), ("aggressive", 3), ("balanced", 5)]
    expected = []
    for profile, seed in jobs:
        label = f"sum-{profile}-{seed}"
        cfg = compose(made_store, f"+profile={profile}", f"seed={seed}", "ticks=80", "dataset=ds-sum",
                      f"label={label}", "engine.risk.daily_loss_limit=60")  # fmt: skip
        execute(cfg)
        expected.append({"label": label, "profile": profile, **engine_only(cfg).run_metrics(0)})
    capsys.readouterr()
    rows = load_dataset(made_store, "ds-sum")
    assert sorted(rows["label"]) == sorted(row["label"] for row in expected)

    frame = pd.DataFrame(expected)
    frame["kill_switch"] = frame["kill_switch"].astype(bool)
    assert global_summary(rows) == pytest.approx({
        "runs": len(frame), "mean_final_pnl": frame["final_pnl"].mean(),
        "mean_max_drawdown": frame["max_drawdown"].mean(), "kill_fraction": frame["kill_switch"].mean(),
    }, rel=1e-12)  # fmt: skip
    grouped = frame.groupby("profile")
    want = pd.DataFrame({
        "runs": grouped["final_pnl"].count(), "final_pnl_mean": grouped["final_pnl"].mean(),
        "final_pnl_std": grouped["final_pnl"].std(), "max_drawdown_mean": grouped["max_drawdown"].mean(),
        "kill_fraction": grouped["kill_switch"].mean(),
    })  # fmt: skip
    pd.testing.assert_frame_equal(per_profile_summary(rows), want, check_dtype=False, rtol=1e-12)
    frame["utility"] = frame["final_pnl"] - 0.5 * frame["max_drawdown"]
    best = frame.sort_values("utility", ascending=False)["label"].head(3).tolist()
    assert top_runs(rows, 3, 0.5)["label"].tolist() == best

    summary.main(["--dataset", "ds-sum", "--tracking-uri", made_store, "--top", "3"])
    out = capsys.readouterr().out
    assert out == format_summary(rows, 3, 0.5) + "\n"
    assert f"runs               {len(jobs)}" in out and best[0] in out


def test_batch_joins_dataset_as_one_row_per_run(made_store: str) -> None:
    execute(compose(made_store, "runs=2", "ticks=50", "dataset=ds-batch", "label=batch"))
    assert len(load_dataset(made_store, "ds-batch")) == 2


def test_large_batch_is_one_run_with_its_seeds_as_rows(tmp_path: Path, made_store: str) -> None:
    table_mode = ["runs=6", "seed=2", "ticks=60", "dataset=ds-table", "label=t", "tracking.seed_children_below=4"]
    cfg = compose(made_store, *table_mode)
    run_id = execute(cfg)
    client = MlflowClient(made_store)
    (batch,) = experiment_runs(client)
    assert batch.info.run_id == run_id and batch.info.status == "FINISHED"
    assert batch.data.tags["paraphina.kind"] == "research_table" and batch.data.metrics["runs"] == 6
    assert [a.path for a in client.list_artifacts(run_id)] == ["config.yaml", "plots", "tables"]
    table = pd.read_parquet(client.download_artifacts(run_id, "tables/seeds.parquet", str(tmp_path)))
    engine = engine_only(cfg)
    assert table["seed"].tolist() == [2, 3, 4, 5, 6, 7]
    np.testing.assert_array_equal(table["final_pnl"], engine.metrics["final_pnl"])
    np.testing.assert_array_equal(table["net_edge_bps"], engine.metrics["net_edge_bps"])
    rows = load_dataset(made_store, "ds-table")
    assert sorted(rows["final_pnl"]) == sorted(engine.metrics["final_pnl"]) and set(rows["label"]) == {"t"}

    execute(compose(made_store, *table_mode, "tracking.seed_children=always"))   # children replace the rows
    again = load_dataset(made_store, "ds-table")
    assert len(experiment_runs(client)) == 1 + 1 + 6
    columns = [c for c in rows.columns if c != "timestamp_utc"]
    pd.testing.assert_frame_equal(again[columns].sort_values("final_pnl").reset_index(drop=True),
                                  rows[columns].sort_values("final_pnl").reset_index(drop=True))


def test_unreachable_server_stops_before_the_engine(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    done = run_cli(["ticks=50"], tmp_path, clean_env(MLFLOW_TRACKING_URI=uri))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "unreachable" in done.stderr and uri in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""  # no header, no engine run, no recording
    assert list(tmp_path.iterdir()) == []  # no fallback store either


@pytest.mark.parametrize("template, job, expected", [
    ("tel/run.jsonl", None, ["tel/run-s3.jsonl", "tel/run-s4.jsonl"]),
    ("tel/run.jsonl.gz", None, ["tel/run-s3.jsonl.gz", "tel/run-s4.jsonl.gz"]),   # was run.jsonl-s3.gz
    ("tel/m.jsonl.gz", 1, ["tel/m-s3-j1.jsonl.gz", "tel/m-s4-j1.jsonl.gz"]),
    ("v1.2/run", None, ["v1.2/run-s3", "v1.2/run-s4"]),                         # a dot in a folder is no extension
])
def test_each_run_s_telemetry_file_gets_its_suffix_before_the_extensions(template, job, expected):
    assert [str(p) for p in telemetry_paths(template, [3, 4], ["balanced"] * 2, job)] == expected
