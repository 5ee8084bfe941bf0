"""`python -m paraphina.bench`: engine run-ticks per second per batch size, and peak memory.

Each batch size runs in a fresh process (so peak RSS belongs to that batch alone); the best of
`repeats` timings is reported, and ratios against the single run, all from this one invocation.
"""
from __future__ import annotations

import multiprocessing as mp
import resource
import time

from paraphina.config.loading import compose_config
from paraphina.config.commands import command_overrides
from paraphina.core.cli import cli_errors
from paraphina.runner.batch import engine_params, run_seeds
from paraphina.engine.simulate import simulate


def _measure(overrides: list[str], runs: int, repeats: int, queue) -> None:
    cfg = compose_config([*overrides, f"runs={runs}", "telemetry.mode=off"], "bench")
    params = engine_params(cfg, runs)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        simulate(params, cfg.ticks, run_seeds(cfg))
        best = min(best, time.perf_counter() - started)
    queue.put((best, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0))


def measure(overrides: list[str], runs: int, repeats: int) -> tuple[float, float]:
    """(best engine seconds, peak RSS in MiB) of a batch, in a fresh process."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(overrides, runs, repeats, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


@cli_errors
def main(argv: list[str] | None = None) -> None:
    overrides = command_overrides(argv, "bench", __doc__)
    cfg = compose_config(overrides, "bench")
    exp = cfg.experiment
    print(f"engine benchmark: profile={cfg.profile_name} market={cfg.market.scenario} ticks={cfg.ticks}, "
          f"telemetry off, best of {exp.repeats}, one process per batch size")
    print(f"{'runs':>6} {'seconds':>9} {'run-ticks/s':>14} {'vs 1 run':>9} {'peak MiB':>9}")
    single = None
    for runs in exp.batch_sizes:
        seconds, peak = measure(overrides, runs, exp.repeats if runs < exp.memory_batch else 1)
        rate = runs * cfg.ticks / seconds
        single = single or rate
        print(f"{runs:>6} {seconds:>9.3f} {rate:>14,.0f} {rate / single:>8.1f}x {peak:>9.0f}")


if __name__ == "__main__":
    main()
