"""A grid sweep as one experiment step: points x seeds in one batched run, a child MLflow run per point."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from paraphina.engine.simulate import BatchResult
from paraphina.experiments import grid
from paraphina.experiments.records import ExperimentRecorder, point_summaries
from paraphina.runner.batch import run_many


@dataclass
class SweepResult:
    axes: list[grid.Axis]
    points: list[dict[str, float]]
    point_index: np.ndarray
    batch: BatchResult
    summary: pd.DataFrame   # one row per point: knobs then aggregates


def run_sweep(cfg: DictConfig, axes: list[grid.Axis], recorder: ExperimentRecorder | None) -> SweepResult:
    """Run the grid's points x `seeds`, each point a child run of the recorder's parent. Take `axes` from
    `grid.axes_from_config` before opening the recorder, so a bad grid stops first."""
    points = grid.expand(axes)
    per_run, seeds, point_index = grid.point_batch(points, axes, cfg.seeds, cfg.seed)
    batch = run_many(cfg, seeds, per_run, desc=f"{cfg.experiment.id} {len(points)} points x {cfg.seeds} seeds")
    summary = point_summaries(batch, point_index, points, cfg.world_model.confidence)
    if recorder is not None:
        names = ["-".join(f"{k}{v:g}" for k, v in point.items()) for point in points]
        params = [{a.key: point[a.name] for a in axes} for point in points]  # one name per knob: its config key
        recorder.log_points(batch, point_index, points, summary, names, params)
    return SweepResult(axes, points, point_index, batch, summary)
