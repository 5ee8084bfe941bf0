"""`python -m paraphina.bench`: engine run-ticks per second per batch size and thread count, the random draws'
floor, compile and start-up times, and peak memory; each batch size runs in a fresh process, best of `repeats`."""
from __future__ import annotations

import multiprocessing as mp
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from omegaconf import DictConfig

from paraphina.config.commands import hydra_command, task_overrides
from paraphina.config.loading import compose_config
from paraphina.core.errors import ParaphinaError


def _best_of(repeats: int, call) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best


def _measure(overrides: list[str], runs: int) -> tuple[dict[int, float], float, float]:
    from paraphina.engine.kernel import draws_only
    from paraphina.engine.market import fixed_draws
    from paraphina.engine.rng import seed_states
    from paraphina.engine.simulate import Threads, simulate
    from paraphina.runner.batch import engine_params, run_seeds

    cfg = compose_config([*overrides, f"runs={runs}", "telemetry.mode=off"], "bench")
    exp = cfg.experiment
    params, seeds = engine_params(cfg, runs), run_seeds(cfg)
    seconds = {}
    for threads in exp.thread_counts:
        setting = Threads(threads=threads, serial_below=cfg.execution.serial_below)
        simulate(params, min(cfg.ticks, 10), seeds, setting)  # load the compiled kernel before timing
        seconds[threads] = _best_of(exp.repeats, lambda: simulate(params, cfg.ticks, seeds, setting))
    counts = fixed_draws(params.n_venues)
    states = seed_states(seeds)
    draws_only(states.copy(), 1, *counts)
    floor = _best_of(exp.repeats, lambda: draws_only(states.copy(), cfg.ticks, *counts))
    return seconds, floor, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure(overrides: list[str], runs: int) -> tuple[dict[int, float], float, float]:
    """({threads: best engine seconds}, best seconds of the draws alone (a tick's without market orders: the floor
    a run-tick cannot go below), peak RSS MiB) in a fresh process, so the peak is this batch's alone; an error there
    is raised here, and a process that dies is reported, rather than waited for."""
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        try:
            return pool.submit(_measure, overrides, runs).result()
        except BrokenProcessPool as exc:
            raise ParaphinaError(f"the benchmark process of {runs} runs died ({exc}); "
                                 "try fewer runs or ticks") from exc


def _timed_command(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, *args], env={**os.environ, **env}, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def start_up_times(cfg: DictConfig) -> tuple[float, float]:
    """(cold compile, warm start-up) in seconds: a fresh process running `paraphina.run` without tracking,
    once with an empty compile cache and once with the cache that run left."""
    command = ["-m", "paraphina.run", "tracking.enabled=false", f"ticks={cfg.ticks}"]
    with tempfile.TemporaryDirectory() as cache:
        # both kernels (serial and thread pool) compile on the first run of a batch at least serial_below
        cold = _timed_command([*command, f"runs={max(cfg.execution.serial_below, 1)}"], {"NUMBA_CACHE_DIR": cache})
        _timed_command(command, {"NUMBA_CACHE_DIR": cache})
        warm = _timed_command(command, {"NUMBA_CACHE_DIR": cache})
    return cold, warm


def bench(cfg: DictConfig) -> None:
    """Print the benchmark table of `cfg`; each batch size runs in a process of its own, composed again from
    the command line's overrides."""
    overrides = task_overrides()
    exp = cfg.experiment
    threads = list(exp.thread_counts)
    print(f"engine benchmark: profile={cfg.profile_name} market={cfg.market.scenario} ticks={cfg.ticks}, "
          f"telemetry off, best of {exp.repeats}, one process per batch size")
    header = "".join(f" {f'{t} thread':>12} {'ns/run-tick':>11}" for t in threads)
    print(f"{'runs':>6}{header} {'draws ns':>9} {'x draws':>8} {'peak MiB':>9}   (run-ticks/s)")
    for runs in exp.batch_sizes:
        seconds, floor, peak = measure(overrides, runs)
        cells = "".join(f" {runs * cfg.ticks / seconds[t]:>12,.0f} {seconds[t] / (runs * cfg.ticks) * 1e9:>11.0f}"
                        for t in threads)
        floor_ns = floor / (runs * cfg.ticks) * 1e9
        print(f"{runs:>6}{cells} {floor_ns:>9.0f} {seconds[threads[0]] / floor:>7.1f}x {peak:>9.0f}")
    if len(threads) > 1:
        print(f"(the last size on {threads[-1]} threads against {threads[0]}: "
              f"{seconds[threads[0]] / seconds[threads[-1]]:.2f}x)")
    cold, warm = start_up_times(cfg)
    print(f"start-up: cold compile (empty cache) {cold:.1f} s; `python -m paraphina.run tracking.enabled=false` "
          f"with a warm cache {warm:.2f} s wall")


main = hydra_command("bench", bench)

if __name__ == "__main__":
    main()
