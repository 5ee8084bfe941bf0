"""Every engine run as an MLflow run: params, tags, metrics, stepped series, telemetry and plots; a batch is one
run (aggregates, a fan chart, its seeds' research rows as a Parquet table) and, when small or asked, one per seed."""
from __future__ import annotations

import tempfile
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from paraphina.config.loading import to_plain
from paraphina.config.schema import SeedChildren
from paraphina.core.names import (DATASET_SOURCE_TAG, DATASET_TAG, ENGINE_RUN_KIND, KIND_TAG, KNOB_CONFIG_KEYS,
                                  METRIC_KEYS, MICROSTRUCTURE_KEYS, RESEARCH_TABLE_KIND, ROW_KNOBS)
from paraphina.engine.simulate import SERIES_KEYS, BatchResult
from paraphina.formats.dataset import make_row, utc_timestamp
from paraphina.formats.plots import load_plotting, plot_fan, plot_run
from paraphina.runner.aggregates import aggregate_metrics
from paraphina.tracking.datasets import ROW_KEY_COLUMN, SEED_TABLE_PATH, row_to_record
from paraphina.tracking.runs import Ending, RunRecord, RunWriter, flatten_params, git_commit
from paraphina.tracking.store import prepare_store, reachable_uri

TABLE_FILE = Path(SEED_TABLE_PATH)


def batch_knobs(cfg: DictConfig, per_run: Mapping[str, Sequence[float]] | None, runs: np.ndarray
                ) -> dict[str, np.ndarray]:
    """The structural knobs of runs `runs` of a batch: their per-run values where the batch varies them, else
    the config's."""
    per_run = per_run or {}
    keys = {knob: KNOB_CONFIG_KEYS[knob] for knob in ROW_KNOBS}
    return {knob: (np.asarray(per_run[key], dtype=float)[runs] if key in per_run
                   else np.full(len(runs), float(OmegaConf.select(cfg, key)))) for knob, key in keys.items()}


def seed_children(cfg: DictConfig, runs: int) -> bool:
    """Whether a batch of `runs` records a child run per seed besides its table (conf/tracking `seed_children`)."""
    mode = SeedChildren(cfg.tracking.seed_children)
    return mode is SeedChildren.always or (mode is SeedChildren.auto and runs < cfg.tracking.seed_children_below)


def engine_row_key(label: str | None, name: str, chash: str, seed: int) -> str:
    """The key of engine run `name`'s research row: the same run recorded again replaces it."""
    return f"engine:{label}:{name}:{chash}:s{seed}"


def seed_table(cfg: DictConfig, result: BatchResult, chash: str, runs: np.ndarray, names: Sequence[str],
               telemetry: Sequence[Path | None], per_run: Mapping[str, Sequence[float]] | None = None,
               labels: Sequence[str] | None = None) -> pd.DataFrame:
    """Runs `runs` of a batch as research rows (ROW_KEYS, and the key each would have as child run `names[j]`;
    `labels` default to the config's label), with their seeds and microstructure facts: the table a run holds."""
    runs = np.asarray(runs, dtype=np.int64)
    seeds = np.asarray(result.seeds, dtype=np.int64)[runs]
    label = cfg.get("label")  # read once: a config lookup costs more than a row's key
    table = pd.DataFrame({"timestamp_utc": utc_timestamp(), "label": label if labels is None else list(labels),
                          "profile": cfg.profile_name, "notes": cfg.get("notes"),
                          "telemetry_path": [None if path is None else str(path) for path in telemetry]})
    for key in METRIC_KEYS:
        table[key] = np.asarray(result.metrics[key])[runs]
    table = table.astype({"num_ticks": "int64", "kill_switch": bool})
    for knob, values in batch_knobs(cfg, per_run, runs).items():
        table[knob] = values
    table["seed"] = seeds
    for key in MICROSTRUCTURE_KEYS:
        table[key] = np.asarray(result.metrics[key])[runs]
    table[ROW_KEY_COLUMN] = [engine_row_key(label, name, chash, seed) for name, seed in zip(names, seeds.tolist())]
    return table


def table_artifact(table: pd.DataFrame, folder: Path) -> tuple[Path, str]:
    """Write `table` as `folder/seeds.parquet`: the artifact that puts it at SEED_TABLE_PATH in a run."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / TABLE_FILE.name
    table.to_parquet(path, index=False)
    return path, str(TABLE_FILE.parent)


def run_params(cfg: DictConfig) -> dict[str, str]:
    """The config sections that decide a run, as dotted params (`engine.hedge.band_base`, ...). The harness's own
    settings (`tracking.unlogged_sections`) stay in the run's config.yaml only: they would double the params of
    every run, and params are the costliest part of a run's record."""
    unlogged = set(cfg.tracking.unlogged_sections)
    return flatten_params({key: value for key, value in to_plain(cfg).items() if key not in unlogged})


def open_session(cfg: DictConfig) -> Future[TrackingSession]:
    """The TrackingSession of `cfg`, opened in a background thread while the engine runs (the engine releases
    Python's lock): importing MLflow and preparing the store take about 1.5 s, and the plots' library 0.3-0.5 s
    more. The store is checked for reachability at once, so an unusable store still stops the command first."""
    reachable_uri(cfg.tracking.uri, cfg.paths.store, cfg.tracking.reachability_timeout_s)
    # requests silences urllib3's warning that SOCKS proxies need PySocks as MLflow imports it; a first compile
    # of the engine meanwhile restores the warning filters it saved, dropping that silence (a warning on stderr)
    warnings.filterwarnings("ignore", module="urllib3.contrib.socks")

    def opened() -> TrackingSession:
        session = TrackingSession.open(cfg)
        load_plotting()
        return session

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tracking-open")
    try:
        return pool.submit(opened)
    finally:
        pool.shutdown(wait=False)   # its thread ends once the session is open, not when the interpreter exits


@dataclass
class TrackingSession:
    """An open tracking store with the experiment to write in; created before the engine runs."""

    uri: str
    experiment_id: str
    writer: RunWriter

    @classmethod
    def open(cls, cfg: DictConfig, experiment: str | None = None) -> "TrackingSession":
        uri = reachable_uri(cfg.tracking.uri, cfg.paths.store, cfg.tracking.reachability_timeout_s)
        name = experiment or cfg.tracking.experiment
        experiment_id = prepare_store(uri, [name])[name]
        return cls(uri, experiment_id, RunWriter(uri, experiment_id, Ending.of(cfg.tracking)))

    def base_tags(self, cfg: DictConfig, chash: str) -> dict[str, str]:
        tags = {"profile": cfg.profile_name, "config_hash": chash, "market": cfg.market.scenario,
                KIND_TAG: ENGINE_RUN_KIND}
        commit = git_commit()
        if commit:
            tags["git_commit"] = commit
        for key in ("label", "dataset", "notes"):
            if cfg.get(key):
                tags[key] = str(cfg[key])
        return tags

    def run_record(self, cfg: DictConfig, result: BatchResult, i: int, chash: str, flat: dict[str, str],
                   per_run: Mapping[str, Sequence[float]] | None = None, telemetry: Path | None = None,
                   plot: bool = True, plot_dir: Path | None = None, name: str | None = None,
                   config_yaml: str | None = None):
        """The record of engine run i of a batch: `flat` params (its own seed and per-run knobs added) and,
        unless `config_yaml` is None, the config as config.yaml."""
        seed = int(result.seeds[i])
        name = name or f"{cfg.profile_name}-s{seed}"
        params = {**flat, "seed": str(seed), **{key: str(float(values[i])) for key, values in (per_run or {}).items()}}
        metrics = result.run_metrics(i)
        tags = {**self.base_tags(cfg, chash), "seed": str(seed)}
        record = RunRecord(name=name, params=params, tags=tags,
                           metrics={k: (float(v) if v is not None else None) for k, v in metrics.items()},
                           series={k: (result.series_steps, result.series[k][:, i]) for k in SERIES_KEYS},
                           texts={} if config_yaml is None else {"config.yaml": config_yaml})
        if telemetry is not None:
            record.artifacts.append((Path(telemetry), "telemetry"))
        if plot and plot_dir is not None and len(result.series_steps):
            png = plot_run(result.series_steps, result.series["pnl_total"][:, i], result.series["q_global_tao"][:, i],
                           plot_dir / f"{name}.png", f"{name}: PnL and inventory")
            record.artifacts.append((png, "plots"))
        if cfg.get("dataset"):
            knobs = {knob: float(values[0]) for knob, values in batch_knobs(cfg, per_run, np.array([i])).items()}
            row = make_row(metrics, profile=cfg.profile_name, label=cfg.get("label"), notes=cfg.get("notes"),
                           telemetry_path=str(telemetry) if telemetry else None, knobs=knobs)
            research = row_to_record(row, cfg.dataset, name, engine_row_key(cfg.get("label"), name, chash, seed))
            record.tags.update(research.tags)
            record.params.update({k: str(v) for k, v in research.params.items()})
        return record

    def record_batch(self, cfg: DictConfig, result: BatchResult, chash: str, telemetry: Sequence[Path] = (),
                     parent_run_id: str | None = None) -> str:
        """Record a single run, or a batch as one run (with a child per seed if `seed_children` says so); returns
        the top run's id."""
        with tempfile.TemporaryDirectory(prefix="paraphina-plots-") as tmp:
            plot_dir, n = Path(tmp), len(result.seeds)
            paths = list(telemetry) or [None] * n
            flat = run_params(cfg)
            config_yaml = OmegaConf.to_yaml(cfg)
            if n == 1:
                record = self.run_record(cfg, result, 0, chash, flat, telemetry=paths[0], plot_dir=plot_dir,
                                         config_yaml=config_yaml)
                return self.writer.log(record, parent_run_id)
            name = f"{cfg.profile_name}-s{cfg.seed}-x{n}"
            children = seed_children(cfg, n)
            tags = {**self.base_tags(cfg, chash), "seed": str(cfg.seed), "runs": str(n)}
            if DATASET_TAG in tags and children:  # the dataset's rows are the children, not their parent
                tags[DATASET_SOURCE_TAG] = tags.pop(DATASET_TAG)
            elif DATASET_TAG in tags:  # the dataset's rows are the rows of the batch run's table
                tags[KIND_TAG] = RESEARCH_TABLE_KIND
            names = [f"{cfg.profile_name}-s{seed}" for seed in result.seeds.tolist()]
            table = seed_table(cfg, result, chash, np.arange(n), names, paths)
            fan = plot_fan(result.series_steps, result.series["pnl_total"], plot_dir / f"{name}-fan.png",
                           f"{name}: PnL across seeds")
            aggregates = aggregate_metrics(result, cfg.world_model.confidence)
            artifacts = [table_artifact(table, plot_dir), (fan, "plots")]
            batch = RunRecord(name=name, params=flat, tags=tags, texts={"config.yaml": config_yaml})
            if not children:
                batch.metrics, batch.artifacts = aggregates, artifacts
                return self.writer.log(batch, parent_run_id)
            parent_id = self.writer.start_parent(batch, parent_run_id)
            full = cfg.tracking.child_config == "full"
            child_flat = flat if full else {key: flat[key] for key in cfg.tracking.child_params if key in flat}
            try:
                for i in range(n):
                    child = self.run_record(cfg, result, i, chash, child_flat, telemetry=paths[i],
                                            plot=cfg.tracking.child_plots, plot_dir=plot_dir,
                                            config_yaml=config_yaml if full else None)
                    self.writer.log(child, parent_id)
            except BaseException as exc:
                self.writer.abort(parent_id, exc)
                raise
            self.writer.finish(parent_id, metrics=aggregates, artifacts=artifacts)
            return parent_id
