"""Every engine run as an MLflow run: params, tags, metrics, stepped series, telemetry and plots.

A batch is a parent run (aggregates and a fan chart) with one child per engine run. The tracking
store is opened and checked before the engine starts, and only this process writes to it.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from omegaconf import DictConfig, OmegaConf

from paraphina.config.loading import to_plain
from paraphina.core.names import DATASET_SOURCE_TAG, DATASET_TAG, ENGINE_RUN_KIND, KIND_TAG, KNOB_CONFIG_KEYS, ROW_KNOBS
from paraphina.engine.simulate import SERIES_KEYS, BatchResult
from paraphina.formats.dataset import make_row
from paraphina.formats.plots import plot_fan, plot_run
from paraphina.runner.aggregates import aggregate_metrics
from paraphina.tracking.datasets import row_to_record
from paraphina.tracking.runs import Ending, RunRecord, RunWriter, flatten_params, git_commit
from paraphina.tracking.store import check_reachable, prepare_store, resolve_tracking_uri


def run_knobs(cfg: DictConfig, per_run: Mapping[str, Sequence[float]] | None, i: int) -> dict[str, float]:
    """The structural knobs of run i: its per-run value where the batch varies it, else the config's."""
    per_run = per_run or {}
    keys = {knob: KNOB_CONFIG_KEYS[knob] for knob in ROW_KNOBS}
    return {knob: float(per_run[key][i]) if key in per_run else float(OmegaConf.select(cfg, key))
            for knob, key in keys.items()}


def run_params(cfg: DictConfig) -> dict[str, str]:
    """The config sections that decide a run, as dotted params (`engine.hedge.band_base`, ...).

    The harness's own settings (`tracking.unlogged_sections`) stay in the run's config.yaml only: they would
    double the params of every run, and params are the costliest part of a run's record.
    """
    unlogged = set(cfg.tracking.unlogged_sections)
    return flatten_params({key: value for key, value in to_plain(cfg).items() if key not in unlogged})


@dataclass
class TrackingSession:
    """An open tracking store with the experiment to write in; created before the engine runs."""

    uri: str
    experiment_id: str
    writer: RunWriter

    @classmethod
    def open(cls, cfg: DictConfig, experiment: str | None = None) -> "TrackingSession":
        uri = resolve_tracking_uri(cfg.tracking.uri, cfg.paths.store)
        check_reachable(uri, cfg.tracking.reachability_timeout_s)
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
        params = {**flat, "seed": str(seed)}
        for key, values in (per_run or {}).items():
            params[key] = str(float(values[i]))
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
            row = make_row(metrics, profile=cfg.profile_name, label=cfg.get("label"), notes=cfg.get("notes"),
                           telemetry_path=str(telemetry) if telemetry else None, knobs=run_knobs(cfg, per_run, i))
            research = row_to_record(row, cfg.dataset, name, f"engine:{cfg.get('label')}:{name}:{chash}:s{seed}")
            record.tags.update(research.tags)
            record.params.update({k: str(v) for k, v in research.params.items()})
        return record

    def record_batch(self, cfg: DictConfig, result: BatchResult, chash: str, telemetry: Sequence[Path] = (),
                     parent_run_id: str | None = None) -> str:
        """Record a single run, or a batch as a parent with one child per run; returns the top run's id."""
        with tempfile.TemporaryDirectory(prefix="paraphina-plots-") as tmp:
            return self._record_batch(cfg, result, chash, list(telemetry), parent_run_id, Path(tmp))

    def _record_batch(self, cfg: DictConfig, result: BatchResult, chash: str, telemetry: list[Path],
                      parent_run_id: str | None, plot_dir: Path) -> str:
        flat = run_params(cfg)
        config_yaml = OmegaConf.to_yaml(cfg)
        n = len(result.seeds)
        paths = telemetry or [None] * n
        if n == 1:
            record = self.run_record(cfg, result, 0, chash, flat, telemetry=paths[0], plot_dir=plot_dir,
                                     config_yaml=config_yaml)
            return self.writer.log(record, parent_run_id)
        name = f"{cfg.profile_name}-s{cfg.seed}-x{n}"
        tags = self.base_tags(cfg, chash)
        if DATASET_TAG in tags:  # the dataset is the set of research rows: the children, not their parent
            tags[DATASET_SOURCE_TAG] = tags.pop(DATASET_TAG)
        parent = RunRecord(name=name, params=flat, tags={**tags, "seed": str(cfg.seed), "runs": str(n)},
                           texts={"config.yaml": config_yaml})
        parent_id = self.writer.start_parent(parent, parent_run_id)
        full = cfg.tracking.child_config == "full"
        child_flat = flat if full else {key: flat[key] for key in cfg.tracking.child_params if key in flat}
        try:
            for i in range(n):
                self.writer.log(self.run_record(cfg, result, i, chash, child_flat,
                                                telemetry=paths[i], plot=cfg.tracking.child_plots, plot_dir=plot_dir,
                                                config_yaml=config_yaml if full else None), parent_id)
        except BaseException as exc:
            self.writer.abort(parent_id, exc)
            raise
        fan = plot_fan(result.series_steps, result.series["pnl_total"], plot_dir / f"{name}-fan.png",
                       f"{name}: PnL across seeds")
        self.writer.finish(parent_id, metrics=aggregate_metrics(result, cfg.world_model.confidence),
                           artifacts=[(fan, "plots")])
        return parent_id
