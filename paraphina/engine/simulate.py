"""The engine's entry point: a batch of runs through the compiled kernel, results as arrays.

A single run is a batch of one. Run i uses seed seeds[i] and record i of the parameter table; its random
stream is its own, so results do not depend on the batch, its order or the thread count.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numba
import numpy as np

from paraphina.core.names import METRIC_KEYS, MICROSTRUCTURE_KEYS
from paraphina.engine.kernel import (CALIBRATION_KEYS, OUTCOME_DTYPE, SERIES_DTYPE, SERIES_KEYS, run_parallel,
                                     run_serial, row_dtype)
from paraphina.engine.market import market_state_dtype
from paraphina.engine.params import Params
from paraphina.engine.rng import seed_states


@dataclass(frozen=True)
class Threads:
    """How a batch uses threads: `threads` for the pool (0 = every core numba sees), batches of fewer than
    `serial_below` runs on the calling thread."""

    threads: int
    serial_below: int


@dataclass(frozen=True)
class RowRequest:
    """Which runs (indices into the batch) get telemetry rows, one every `every` ticks."""

    runs: tuple[int, ...]
    every: int = 1


@dataclass
class TickRows:
    """Telemetry rows of the recorded runs: `rows[j][:counts[j]]` are run `runs[j]`'s rows (a record array
    with the keys of kernel.ROW_KEYS, ROW_VENUE_KEYS and PROBE_KEYS)."""

    runs: tuple[int, ...]
    rows: np.ndarray
    counts: np.ndarray

    def of(self, j: int) -> np.ndarray:
        """The rows of the j-th recorded run."""
        return self.rows[j, :self.counts[j]]


@dataclass
class BatchResult:
    """Metrics of every run (arrays of length runs), downsampled series (steps x runs), what calibration
    measures per run (kernel.CALIBRATION_KEYS) and, when asked for, telemetry rows."""

    seeds: np.ndarray
    metrics: dict[str, np.ndarray]
    final_regime: np.ndarray   # regime code on each run's last tick
    series_steps: np.ndarray
    series: dict[str, np.ndarray] = field(default_factory=dict)
    rows: TickRows | None = None
    calibration: dict[str, np.ndarray] = field(default_factory=dict)
    kernel_seconds: float = 0.0   # the kernel's run alone
    load_seconds: float = 0.0     # loading (or, once per machine, compiling) the kernel before it

    def run_metrics(self, i: int) -> dict:
        """Spec section 5 metrics of run i as plain Python values."""
        m = {k: float(v[i]) for k, v in self.metrics.items()}
        m["num_ticks"] = int(m["num_ticks"])
        m["kill_switch"] = bool(m["kill_switch"])
        m["time_to_kill"] = None if np.isnan(m["time_to_kill"]) else int(m["time_to_kill"])
        return m


# (kernel, parameter dtype) pairs this process has loaded: the dtype decides every record type of a call.
_LOADED: set = set()


def _drop_stale_cache() -> None:
    """Delete the compiled cache when any engine source changed since it was written.

    numba keys a cached function by its own file only, but the kernel's machine code includes every step it
    calls from the other engine modules: after an edit of market.py, a cached run_one would still run the old
    market step. A digest of all engine sources, stored beside the cache, decides.
    """
    sources = sorted(Path(__file__).resolve().parent.glob("*.py"))
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()
    folder = Path(run_serial._cache._cache_path)  # numba's own answer: NUMBA_CACHE_DIR lays folders out by a hash
    stamp = folder / "engine-sources.sha256"
    if stamp.is_file() and stamp.read_text() == digest:
        return
    for cached in (*folder.glob("*.nbi"), *folder.glob("*.nbc")):
        cached.unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    stamp.write_text(digest)


def _warm_up(kernel, args: tuple) -> None:
    """Load the kernel (from the cache, or compiled once per machine) and run it for one tick of one run on
    copies, so the first call's one-time costs (type dispatch of record arrays, starting the thread pool) are
    not counted as the batch's engine time."""
    table, states, markets, _, outcome, series, _, rows, _, every, _ = args
    kernel(table[:1], states[:1].copy(), markets[:1].copy(), 1, outcome[:1].copy(), series[:1, :0].copy(), 0,
           rows[:1, :0].copy(), np.full(1, -1, np.int64), every, np.zeros(0, np.int64))


def series_ticks(ticks: int, every: int) -> np.ndarray:
    """The ticks the stepped series keep: every `every`-th from 0, and the last tick, so a series ends on the
    session's final values (a killed run's series hold its values at the kill from the next step on); none
    when `every` is 0."""
    if not every:
        return np.zeros(0, np.int64)
    steps = np.arange(0, ticks, every)
    return steps if steps[-1] == ticks - 1 else np.append(steps, ticks - 1)


def simulate(p: Params, ticks: int, seeds: Sequence[int], threads: Threads, series_every: int = 0,
             record: RowRequest | None = None) -> BatchResult:
    """Run a batch: run i uses seed seeds[i] and record i of `p.table`."""
    seeds = np.asarray(seeds, dtype=np.int64)
    runs = len(seeds)
    if runs != p.runs:
        raise ValueError(f"{runs} seeds for a parameter table of {p.runs} runs")
    steps = series_ticks(ticks, series_every)
    outcome = np.zeros(runs, OUTCOME_DTYPE)
    series = np.zeros((runs, len(steps)), SERIES_DTYPE)
    markets = np.zeros((runs, 2), market_state_dtype(p.n_venues))
    record = record or RowRequest(runs=())
    capacity = -(-ticks // record.every) + 1 if record.runs else 0  # every `every`-th tick and the last one
    rows = np.zeros((max(len(record.runs), 1), capacity), row_dtype(p.n_venues))
    row_slot = np.full(runs, -1, np.int64)
    row_slot[list(record.runs)] = np.arange(len(record.runs))
    row_counts = np.zeros(len(record.runs), np.int64)
    args = (p.table, seed_states(seeds), markets, int(ticks), outcome, series, int(series_every), rows, row_slot,
            int(record.every), row_counts)
    serial = runs < threads.serial_below
    kernel = run_serial if serial else run_parallel
    started = time.perf_counter()
    if (kernel, p.table.dtype) not in _LOADED:
        if not _LOADED:
            _drop_stale_cache()
        _warm_up(kernel, args)
        _LOADED.add((kernel, p.table.dtype))
    loaded = time.perf_counter()
    if serial:  # no thread pool: setting its size would start it (a few ms)
        kernel(*args)
    else:
        previous = numba.get_num_threads()
        numba.set_num_threads(min(threads.threads or numba.config.NUMBA_NUM_THREADS, numba.config.NUMBA_NUM_THREADS))
        try:
            kernel(*args)
        finally:
            numba.set_num_threads(previous)
    finished = time.perf_counter()
    return BatchResult(
        seeds=seeds, metrics={k: outcome[k].copy() for k in (*METRIC_KEYS, *MICROSTRUCTURE_KEYS)},
        calibration={k: outcome[k].copy() for k in CALIBRATION_KEYS},
        final_regime=outcome["final_regime"].astype(np.int64), series_steps=steps,
        series={k: np.ascontiguousarray(series[k].T) for k in SERIES_KEYS},
        rows=TickRows(runs=tuple(record.runs), rows=rows[:len(record.runs)], counts=row_counts) if record.runs else None,
        kernel_seconds=finished - loaded, load_seconds=loaded - started)
