"""Measure what MLflow tracking adds per engine run, so the cost of recording many runs is known, not guessed.

Usage: python -m paraphina.tracking.bench [--runs 100]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from paraphina.tracking.runs import RunRecord, RunWriter
from paraphina.tracking.store import SQLITE_PREFIX, prepare_store


def sample_record(index: int, n_params: int, n_metrics: int, n_series: int, n_steps: int) -> RunRecord:
    """A run shaped like an engine run: many config params, a dozen metrics, a few per-tick series."""
    rng = np.random.default_rng(index)
    steps = np.arange(n_steps) * 10
    return RunRecord(
        name=f"bench-s{index}",
        params={f"engine.group{k // 10}.knob{k}": float(rng.normal()) for k in range(n_params)},
        tags={"profile": "balanced", "seed": str(index)},
        metrics={f"metric_{k}": float(rng.normal()) for k in range(n_metrics)},
        series={f"series_{k}": (steps, rng.normal(size=n_steps).cumsum()) for k in range(n_series)},
    )


def mean_cost_ms(runs: int, n_params: int, n_metrics: int, n_series: int, n_steps: int) -> float:
    """Mean wall time of RunWriter.log per run on a fresh temporary SQLite store (store creation excluded)."""
    with tempfile.TemporaryDirectory() as folder:
        uri = f"{SQLITE_PREFIX}{Path(folder) / 'mlflow.db'}"
        experiment_id = prepare_store(uri, ["bench"])["bench"]
        writer = RunWriter(uri, experiment_id)
        records = [sample_record(i, n_params, n_metrics, n_series, n_steps) for i in range(runs)]
        start = time.perf_counter()
        for record in records:
            writer.log(record)
        return (time.perf_counter() - start) / runs * 1000


def main() -> None:
    """Print the mean tracking cost per run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--params", type=int, default=120)
    parser.add_argument("--metrics", type=int, default=15)
    parser.add_argument("--series", type=int, default=4)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    cost = mean_cost_ms(args.runs, args.params, args.metrics, args.series, args.steps)
    print(
        f"{cost:.1f} ms per run (mean of {args.runs} runs: {args.params} params, {args.metrics} metrics, "
        f"{args.series} series x {args.steps} steps, SQLite)"
    )


if __name__ == "__main__":
    main()
