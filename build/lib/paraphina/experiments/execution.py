"""Running big engine batches: split into chunks (progress, flat memory), each over the engine's threads.

The engine runs in this process, so results stay here and one process writes to the tracking store.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

from paraphina.engine.simulate import BatchResult, simulate
from paraphina.runner.batch import engine_params, engine_threads, series_every


def merge(parts: Sequence[BatchResult]) -> BatchResult:
    """One result from chunk results, runs in chunk order."""
    return BatchResult(
        seeds=np.concatenate([p.seeds for p in parts]),
        metrics={k: np.concatenate([p.metrics[k] for p in parts]) for k in parts[0].metrics},
        final_regime=np.concatenate([p.final_regime for p in parts]),
        series_steps=parts[0].series_steps,
        series={k: np.concatenate([p.series[k] for p in parts], axis=1) for k in parts[0].series},
    )


def run_many(cfg: DictConfig, seeds: np.ndarray, per_run: Mapping[str, np.ndarray], desc: str,
             series: bool = False) -> BatchResult:
    """Simulate runs (seed i with the i-th value of each per-run knob) with a progress bar."""
    n = len(seeds)
    chunk = cfg.execution.chunk_runs
    every = series_every(cfg) if series else 0
    parts: list[BatchResult] = []
    with tqdm(total=n * cfg.ticks, desc=desc, unit="run-tick", unit_scale=True, leave=False) as bar:
        for lo in range(0, n, chunk):
            hi = min(lo + chunk, n)
            params = engine_params(cfg, hi - lo, {k: np.asarray(v)[lo:hi] for k, v in per_run.items()})
            parts.append(simulate(params, cfg.ticks, seeds[lo:hi], engine_threads(cfg), series_every=every))
            bar.update((hi - lo) * cfg.ticks)
    return merge(parts)
