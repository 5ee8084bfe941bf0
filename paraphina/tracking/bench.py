"""`python -m paraphina.tracking.bench`: what MLflow tracking adds per engine run, measured by writing the records
of runs simulated once (a single run, a batch in each `tracking.child_config`) to a fresh SQLite store."""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from omegaconf import DictConfig

from paraphina.config.commands import hydra_command, task_overrides
from paraphina.config.loading import compose_config
from paraphina.runner.batch import config_hash, run_batch
from paraphina.runner.recording import TrackingSession
from paraphina.tracking.store import SQLITE_PREFIX

CONFIG_NAME = "tracking_bench"


def record_seconds(session: TrackingSession, cfg: DictConfig, result) -> float:
    """Wall time of recording one engine result (a single run or a whole batch)."""
    started = time.perf_counter()
    session.record_batch(cfg, result, config_hash(cfg))
    return time.perf_counter() - started


def tracking_bench(_: DictConfig) -> None:
    """Print what recording costs; the configs measured are composed from the command line's overrides."""
    base = [*task_overrides(), "telemetry.mode=off"]
    with tempfile.TemporaryDirectory(prefix="paraphina-tracking-bench-") as folder:
        uri = f"tracking.uri={SQLITE_PREFIX}{Path(folder) / 'mlflow.db'}"
        single_cfg = compose_config([*base, uri, "runs=1"], CONFIG_NAME)
        exp = single_cfg.experiment
        batch_cfg = compose_config([*base, uri, f"runs={exp.batch_runs}"], CONFIG_NAME)
        full_cfg = compose_config([*base, uri, f"runs={exp.batch_runs}", "tracking.child_config=full"], CONFIG_NAME)
        print(f"tracking benchmark: profile={single_cfg.profile_name} ticks={single_cfg.ticks} "
              f"series_points={single_cfg.tracking.series_points}, fresh SQLite store, engine time excluded")
        session = TrackingSession.open(single_cfg)
        single, _ = run_batch(single_cfg)
        batch, _ = run_batch(batch_cfg)
        first = record_seconds(session, single_cfg, single)
        again = [record_seconds(session, single_cfg, single) for _ in range(exp.single_repeats)]
        parent_mode = record_seconds(session, batch_cfg, batch)
        full_mode = record_seconds(session, full_cfg, batch)
    n = exp.batch_runs
    print(f"{'record':<66} {'ms per run':>10}")
    print(f"{'single run, first in the process (params, config.yaml, PNG)':<66} {first * 1000:>10.1f}")
    print(f"{'single run, median of the next ' + str(exp.single_repeats):<66} {statistics.median(again) * 1000:>10.1f}")
    print(f"{f'batch of {n}, children with seed and key knobs (child_config=parent)':<66} {parent_mode / n * 1000:>10.1f}")
    print(f"{f'batch of {n}, children with the whole config (child_config=full)':<66} {full_mode / n * 1000:>10.1f}")
    print("(a batch's figure is its whole record, parent and fan chart included, divided by its runs)")


main = hydra_command(CONFIG_NAME, tracking_bench)

if __name__ == "__main__":
    main()
