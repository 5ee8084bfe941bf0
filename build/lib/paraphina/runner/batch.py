"""From a composed config to an engine batch: seeds, per-run parameters, config hash, telemetry."""
from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Mapping, Sequence

import numpy as np
from omegaconf import DictConfig

from paraphina.config.loading import to_plain
from paraphina.engine.params import Params, build_params
from paraphina.engine.simulate import BatchResult, RowRequest, Threads, simulate
from paraphina.runner.telemetry import TelemetryWriter, telemetry_paths


def run_seeds(cfg: DictConfig) -> np.ndarray:
    """Run i of a batch started with seed s has seed s + i."""
    return cfg.seed + np.arange(cfg.runs, dtype=np.int64)


def series_every(cfg: DictConfig) -> int:
    """Ticks between the points of the per-tick series kept for MLflow and plots."""
    return max(1, cfg.ticks // cfg.tracking.series_points)


def engine_threads(cfg: DictConfig) -> Threads:
    """How the engine spreads a batch over threads (conf `execution`)."""
    return Threads(threads=cfg.execution.threads, serial_below=cfg.execution.serial_below)


def config_hash(cfg: DictConfig) -> str:
    """Short hash of what decides a run's path apart from its seed: engine, market and ticks."""
    plain = to_plain(cfg)
    payload = json.dumps({"engine": plain["engine"], "market": plain["market"], "ticks": plain["ticks"]},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def engine_params(cfg: DictConfig, runs: int, per_run: Mapping[str, Sequence[float]] | None = None) -> Params:
    """The engine's parameters for a batch of `runs` described by the config, knobs in `per_run` varying per run."""
    plain = to_plain(cfg)
    return build_params(plain["engine"], plain["market"], runs, per_run)


def run_batch(cfg: DictConfig, seeds: Sequence[int] | None = None,
              per_run: Mapping[str, Sequence[float]] | None = None, profiles: Sequence[str] | None = None,
              job: int | None = None, rows_every: int | None = None) -> tuple[BatchResult, list]:
    """Run the batch the config describes (or `seeds` with `per_run` knobs), writing telemetry if on.

    Returns the result and the telemetry files written (empty when telemetry is off). Telemetry paths are
    checked before the engine starts; files appear only when the batch completes. `rows_every` asks for
    every run's rows in the result (calibration probes); telemetry rows come every `telemetry.every` ticks.
    """
    seeds = run_seeds(cfg) if seeds is None else np.asarray(seeds, dtype=np.int64)
    params = engine_params(cfg, len(seeds), per_run)
    writer = None
    every = rows_every
    if cfg.telemetry.mode == "jsonl":
        names = profiles or [cfg.profile_name] * len(seeds)
        writer = TelemetryWriter(telemetry_paths(cfg.telemetry.path, seeds, names, job), params.venue_names)
        every = cfg.telemetry.every
    record = RowRequest(runs=tuple(range(len(seeds))), every=every) if every else None
    with writer if writer else contextlib.nullcontext():
        result = simulate(params, cfg.ticks, seeds, engine_threads(cfg), series_every=series_every(cfg),
                          record=record)
        if writer:
            writer.write(result.rows)
    return result, (writer.paths if writer else [])
