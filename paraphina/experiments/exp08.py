"""Exp08 profile validation: each profile over N seeds; mean/std final PnL, drawdowns, kill probability.

    python -m paraphina.experiments.exp08 [seeds=20 ticks=1000 experiment.profiles=[conservative,aggressive]]

All profiles run in one engine batch over the same seeds, so their differences are the profiles' own. The seeds
start at seed + experiment.seed_offset, apart from the design seeds (Exp04, Exp09), so Exp10's gap measures the
winner's curse. target=decisive runs each profile through its sequential plan until its budgets are decided.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from paraphina.config.commands import hydra_command, task_overrides
from paraphina.config.experiments import Target
from paraphina.core.names import PROFILE_KNOBS, SEED_OFFSET_TAG
from paraphina.experiments.cli import print_horizon_note, print_table
from paraphina.experiments.profiles import config_knobs, profiles_batch
from paraphina.experiments.records import ExperimentRecorder, parent_metrics, point_summaries, sweeps_dir
from paraphina.experiments.sequential_runs import (ProfileRuns, SequentialPlan, announced_plans, check_plans,
                                                   sequential_rounds)
from paraphina.engine.simulate import BatchResult
from paraphina.runner.batch import merge

VERDICT_COLUMNS = ("kill_verdict", "dd_verdict", "pnl_verdict")
"""Under target=decisive: each profile's sequential verdict on its tier's budgets."""
SUMMARY_COLUMNS = ("profile", "runs", "pnl_mean", "pnl_std", "dd_mean", "dd_min", "dd_worst", "kill_prob",
                   "kill_prob_low", "kill_prob_high", "frac_warning", "frac_hard")


def run(cfg: DictConfig, overrides: Sequence[str]) -> pd.DataFrame:
    """Validate `experiment.profiles`; `overrides` are those `cfg` was composed from (every profile gets them).
    Returns one row per profile: its knobs, then the aggregate metrics of its seeds."""
    profiles = list(cfg.experiment.profiles)
    decisive = cfg.target == Target.decisive
    if decisive:
        check_plans(cfg, profiles, 0)
    first_seed = cfg.seed + cfg.experiment.seed_offset
    batch = profiles_batch(profiles, overrides, cfg.experiment.id, cfg.seeds, first_seed)
    with ExperimentRecorder(cfg, extra_tags={SEED_OFFSET_TAG: str(cfg.experiment.seed_offset),
                                             "first_seed": str(first_seed)}) as recorder:
        if decisive:
            result, index, plans = sequential_validation(cfg, overrides, profiles, first_seed)
        else:
            result, index, plans = (batch.run(f"exp08 {len(profiles)} profiles x {cfg.seeds} seeds"),
                                    batch.profile_index, {})
        points = [{"profile": name, **config_knobs(batch.configs[name])} for name in profiles]
        table = point_summaries(result, index, points, cfg.world_model.confidence)
        keys = dict.fromkeys([*PROFILE_KNOBS.values(), *batch.per_run])
        params = [{key: OmegaConf.select(batch.configs[name], key) for key in keys} for name in profiles]
        verdicts = [{f"{b}_verdict": v for b, v in plans[name].verdicts.items()} if plans else {} for name in profiles]
        recorder.log_points(result, index, points, table, profiles, params,
                            tags=[{"profile": name, **v} for name, v in zip(profiles, verdicts)])
        table = table.assign(**pd.DataFrame(verdicts, index=table.index)) if plans else table
        recorder.finish(tables={"exp08_profile_summary": table},
                        metrics=parent_metrics(table, cfg.tracking.parent_metrics, by="profile"))
    return table


def sequential_validation(cfg: DictConfig, overrides: Sequence[str], profiles: list[str],
                          first_seed: int) -> tuple[BatchResult, np.ndarray, dict[str, SequentialPlan]]:
    """target=decisive: each profile's sequential plan on fresh seeds; the runs of all rounds as one result,
    each run's profile (an index into `profiles`), and the plans with their verdicts."""
    measured = {p: ProfileRuns() for p in profiles}

    def run(group: list[str], seeds: int, start: int) -> tuple[BatchResult, np.ndarray]:
        batch = profiles_batch(group, overrides, cfg.experiment.id, seeds, first_seed + start)
        result = batch.run(f"exp08 {len(group)} profiles x {seeds} seeds")
        for p in group:
            measured[p].add(result.metrics, batch.rows(p))
        return result, np.array([profiles.index(group[i]) for i in batch.profile_index])

    plans = announced_plans(cfg, profiles)
    rounds = sequential_rounds(cfg, plans, measured, run)
    parts, index = zip(*rounds)
    return merge(parts), np.concatenate(index), plans


def command(cfg: DictConfig) -> None:
    """What the command line runs: the experiment, then its tables on the console."""
    overrides = task_overrides()
    print_horizon_note(cfg)
    table = run(cfg, overrides)
    first = cfg.seed + cfg.experiment.seed_offset
    runs = "fresh seeds" if cfg.target == Target.decisive else f"{cfg.seeds} fresh seeds"
    print_table(table, [*SUMMARY_COLUMNS, *VERDICT_COLUMNS],
                title=f"Exp08 profile validation: {runs} ({first}, {first + 1}, ...) x {cfg.ticks} ticks")
    print(f"summary in {sweeps_dir(cfg)}")


main = hydra_command("exp08", command)

if __name__ == "__main__":
    main()
