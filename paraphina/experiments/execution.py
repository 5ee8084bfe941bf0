"""Running big engine batches: split into chunks (progress, flat memory) over worker processes.

Workers only simulate; results come back to the parent, which alone writes to the tracking store.
"""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Mapping, Sequence

import numpy as np
from omegaconf import DictConfig

from paraphina.config.loading import to_plain
from paraphina.engine.params import build_params
from paraphina.engine.simulate import BatchResult, simulate
from paraphina.runner.batch import series_every


def _simulate_chunk(engine: dict, market: dict, ticks: int, seeds: np.ndarray, per_run: dict,
                    every: int) -> BatchResult:
    params = build_params(engine, market, len(seeds), per_run)
    return simulate(params, ticks, seeds, series_every=every)


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
    from tqdm import tqdm

    plain = to_plain(cfg)
    ex = cfg.execution
    n = len(seeds)
    workers = ex.workers if n >= ex.workers * ex.min_runs_per_worker else 1
    per_chunk = min(ex.chunk_runs, -(-n // workers))
    bounds = [(lo, min(lo + per_chunk, n)) for lo in range(0, n, per_chunk)]
    every = series_every(cfg) if series else 0
    args = [(plain["engine"], plain["market"], cfg.ticks, seeds[lo:hi],
             {k: np.asarray(v)[lo:hi] for k, v in per_run.items()}, every) for lo, hi in bounds]
    parts: list[BatchResult] = []
    with tqdm(total=n * cfg.ticks, desc=desc, unit="run-tick", unit_scale=True, leave=False) as bar:
        if workers == 1:
            for a in args:
                parts.append(_simulate_chunk(*a))
                bar.update(len(a[3]) * cfg.ticks)
        else:
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                for part in pool.map(_simulate_chunk, *zip(*args)):
                    parts.append(part)
                    bar.update(len(part.seeds) * cfg.ticks)
    return merge(parts)
