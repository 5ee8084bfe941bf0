"""From a composed config to an engine batch: seeds, per-run parameters, config hash, telemetry."""
from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Callable, Mapping, Sequence

import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

from paraphina.config.loading import to_plain
from paraphina.core.errors import ParaphinaError
from paraphina.core.stops import raise_if_stopped
from paraphina.engine.kernel import OUTCOME_DTYPE, SERIES_DTYPE, row_dtype
from paraphina.engine.params import Params, build_params
from paraphina.engine.simulate import BatchResult, RowRequest, Threads, TickRows, series_ticks, simulate
from paraphina.runner.telemetry import TelemetryWriter, telemetry_paths


def run_seeds(cfg: DictConfig) -> np.ndarray:
    """Run i of a batch started with seed s has seed s + i."""
    return cfg.seed + np.arange(cfg.runs, dtype=np.int64)


def series_every(cfg: DictConfig) -> int:
    """Ticks between the points of the per-tick series kept for MLflow and plots."""
    return max(1, cfg.ticks // cfg.tracking.series_points)


def telemetry_every(cfg: DictConfig) -> int:
    """Ticks between the telemetry rows each run keeps until its file is written; 0 with telemetry off."""
    return cfg.telemetry.every if cfg.telemetry.mode == "jsonl" else 0


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


def available_memory() -> int | None:
    """Bytes this machine can still give (Linux's MemAvailable); None where the system does not say."""
    try:
        with open("/proc/meminfo") as meminfo:
            return next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None


def check_memory(cfg: DictConfig, runs: int, series_every: int, rows_every: int) -> None:
    """Stop in one line before a batch whose results cannot fit in free memory: every run's results are kept
    until the batch ends, so numpy would fail, or the system kill the command, minutes into the batch."""
    rows = (-(-cfg.ticks // rows_every) + 1) * row_dtype(len(cfg.engine.venues.names)).itemsize if rows_every else 0
    per_run = OUTCOME_DTYPE.itemsize + len(series_ticks(cfg.ticks, series_every)) * SERIES_DTYPE.itemsize + rows
    need, free = cfg.execution.result_copies * runs * per_run, available_memory()
    if free is not None and need > free:
        fits, rows_fix = free // (need // runs), "telemetry.every=N keeps fewer rows" if rows_every else ""
        fix = (f"run at most {fits:,} runs per command ({rows_fix + ', ' if rows_fix else ''}or split the seeds: "
               f"seed=...)" if fits else f"not one run fits: use fewer ticks{' or ' + rows_fix if rows_fix else ''}")
        raise ParaphinaError(f"{runs:,} runs of {cfg.ticks:,} ticks keep about {need / 2**30:,.1f} GiB of results, "
                             f"more than the {free / 2**30:,.1f} GiB free here; {fix}")


def merge(parts: Sequence[BatchResult]) -> BatchResult:
    """One result from the results of consecutive chunks of a batch, runs in chunk order."""
    starts = np.cumsum([0, *(len(p.seeds) for p in parts[:-1])])
    recorded = [(start, p.rows) for start, p in zip(starts, parts) if p.rows is not None]
    rows = TickRows(runs=tuple(int(start) + r for start, part in recorded for r in part.runs),
                    rows=np.concatenate([part.rows for _, part in recorded]),
                    counts=np.concatenate([part.counts for _, part in recorded])) if recorded else None
    return BatchResult(
        seeds=np.concatenate([p.seeds for p in parts]),
        metrics={k: np.concatenate([p.metrics[k] for p in parts]) for k in parts[0].metrics},
        final_regime=np.concatenate([p.final_regime for p in parts]),
        series_steps=parts[0].series_steps,
        series={k: np.concatenate([p.series[k] for p in parts], axis=1) for k in parts[0].series},
        rows=rows,
        calibration={k: np.concatenate([p.calibration[k] for p in parts]) for k in parts[0].calibration},
        kernel_seconds=sum(p.kernel_seconds for p in parts), load_seconds=sum(p.load_seconds for p in parts))


def run_many(cfg: DictConfig, seeds: np.ndarray, per_run: Mapping[str, Sequence[float]] | None, desc: str,
             series_every: int = 0, rows_every: int = 0) -> BatchResult:
    """Simulate runs (seed i with the i-th value of each per-run knob) in chunks of `execution.chunk_runs`, so the
    engine's working memory stays flat and a progress bar shows once a batch has run `execution.progress_after_s`;
    a batch whose results cannot fit in free memory stops before it starts."""
    n, chunk = len(seeds), cfg.execution.chunk_runs
    check_memory(cfg, n, series_every, rows_every)
    threads = Threads(threads=cfg.execution.threads, serial_below=cfg.execution.serial_below)
    parts: list[BatchResult] = []
    with tqdm(total=n * cfg.ticks, desc=desc, unit="run-tick", unit_scale=True, leave=False,
              delay=cfg.execution.progress_after_s) as bar:
        for lo in range(0, n, chunk):
            hi = min(lo + chunk, n)
            params = engine_params(cfg, hi - lo, {k: np.asarray(v)[lo:hi] for k, v in (per_run or {}).items()})
            record = RowRequest(runs=tuple(range(hi - lo)), every=rows_every) if rows_every else None
            parts.append(simulate(params, cfg.ticks, seeds[lo:hi], threads, series_every=series_every, record=record))
            bar.update((hi - lo) * cfg.ticks)
            raise_if_stopped()
    return merge(parts)


def run_batch(cfg: DictConfig, seeds: Sequence[int] | None = None,
              per_run: Mapping[str, Sequence[float]] | None = None, profiles: Sequence[str] | None = None,
              job: int | None = None, rows_every: int | None = None,
              started: Callable[[], None] | None = None) -> tuple[BatchResult, list]:
    """Run the batch the config describes (or `seeds` with `per_run` knobs), writing telemetry if on.

    Returns the result and the telemetry files written (empty when telemetry is off). Telemetry paths are
    checked before the engine starts (then `started` is called: a command's header follows no error); files
    appear only when the batch completes. `rows_every` asks for every run's rows in the result (calibration
    probes); telemetry rows come every `telemetry.every` ticks.
    """
    seeds = run_seeds(cfg) if seeds is None else np.asarray(seeds, dtype=np.int64)
    writer = None
    every = telemetry_every(cfg) or rows_every or 0
    if cfg.telemetry.mode == "jsonl":
        names = profiles or [cfg.profile_name] * len(seeds)
        writer = TelemetryWriter(telemetry_paths(cfg.telemetry.path, seeds, names, job), cfg.engine.venues.names)
    with writer if writer else contextlib.nullcontext():
        if started:
            started()
        result = run_many(cfg, seeds, per_run, f"engine {len(seeds)} runs", series_every(cfg), every)
        if writer:
            writer.write(result.rows)
    return result, (writer.paths if writer else [])
