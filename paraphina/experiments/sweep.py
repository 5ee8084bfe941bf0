"""A grid sweep as one experiment step: points x seeds in one batched run, a child MLflow run per point."""
from __future__ import annotations

import pandas as pd
from omegaconf import DictConfig

from paraphina.experiments import grid
from paraphina.experiments.records import ExperimentRecorder, point_summaries
from paraphina.runner.batch import run_many


def run_sweep(cfg: DictConfig, axes: list[grid.Axis], recorder: ExperimentRecorder | None) -> pd.DataFrame:
    """Run the grid's points x `seeds`, each point a child run of the recorder's parent: one row per point, its
    knobs then its aggregates. Take `axes` from `grid.axes_from_config` before opening the recorder, so a bad
    grid stops first."""
    points = grid.expand(axes)
    per_run, seeds, point_index = grid.point_batch(points, axes, cfg.seeds, cfg.seed)
    batch = run_many(cfg, seeds, per_run, desc=f"{cfg.experiment.id} {len(points)} points x {cfg.seeds} seeds")
    summary = point_summaries(batch, point_index, points, cfg.world_model.confidence)
    if recorder is not None:
        names = ["-".join(f"{k}{v:g}" for k, v in point.items()) for point in points]
        params = [{a.key: point[a.name] for a in axes} for point in points]  # one name per knob: its config key
        recorder.log_points(batch, point_index, points, summary, names, params)
    return summary
