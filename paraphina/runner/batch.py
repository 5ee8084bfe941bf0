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
from paraphina.engine.simulate import BatchResult, Observer, simulate
from paraphina.runner.telemetry import TelemetryWriter, telemetry_paths


def run_seeds(cfg: DictConfig) -> np.ndarray:
    """Run i of a batch started with seed s has seed s + i."""
    return cfg.seed + np.arange(cfg.runs, dtype=np.int64)


def series_every(cfg: DictConfig) -> int:
    """Ticks between the points of the per-tick series kept for MLflow and plots."""
    return max(1, cfg.ticks // cfg.tracking.series_points)


# Engine settings that change speed and memory, never results: left out of the config hash.
SPEED_ONLY_ENGINE_KEYS = ("rng_block_ticks", "rng_max_block_cells")


def config_hash(cfg: DictConfig) -> str:
    """Short hash of what decides a run's path apart from its seed: engine, market and ticks."""
    plain = to_plain(cfg)
    engine = {k: v for k, v in plain["engine"].items() if k not in SPEED_ONLY_ENGINE_KEYS}
    payload = json.dumps({"engine": engine, "market": plain["market"], "ticks": plain["ticks"]}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def engine_params(cfg: DictConfig, runs: int, per_run: Mapping[str, Sequence[float]] | None = None) -> Params:
    """The engine's parameters for a batch of `runs` described by the config, knobs in `per_run` varying per run."""
    plain = to_plain(cfg)
    return build_params(plain["engine"], plain["market"], runs, per_run)


def run_batch(cfg: DictConfig, seeds: Sequence[int] | None = None,
              per_run: Mapping[str, Sequence[float]] | None = None, observers: Sequence[Observer] = (),
              profiles: Sequence[str] | None = None, job: int | None = None) -> tuple[BatchResult, list]:
    """Run the batch the config describes (or `seeds` with `per_run` knobs), writing telemetry if on.

    Returns the result and the telemetry files written (empty when telemetry is off). Telemetry paths
    are checked before the engine starts; files appear only when the batch completes.
    """
    seeds = run_seeds(cfg) if seeds is None else np.asarray(seeds, dtype=np.int64)
    params = engine_params(cfg, len(seeds), per_run)
    writer = None
    if cfg.telemetry.mode == "jsonl":
        names = profiles or [cfg.profile_name] * len(seeds)
        writer = TelemetryWriter(telemetry_paths(cfg.telemetry.path, seeds, names, job), params.engine.venues.names)
    with writer if writer else contextlib.nullcontext():
        result = simulate(params, cfg.ticks, seeds, [*observers, *([writer] if writer else [])],
                          series_every=series_every(cfg))
    return result, (writer.paths if writer else [])

