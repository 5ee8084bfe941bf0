"""Exp08 profile validation: each profile over N seeds; mean/std final PnL, drawdowns, kill probability.

    python -m paraphina.experiments.exp08 [seeds=20 ticks=1000 experiment.profiles=[conservative,aggressive]]

All profiles run in one engine batch over the same seeds, so their differences are the profiles' own. The
seeds start at seed + experiment.seed_offset, fresh ones apart from the design seeds the presets were chosen
on (Exp04, Exp09), so Exp10's design-vs-validation gap measures the winner's curse; the offset is recorded.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from paraphina.config.commands import hydra_command, task_overrides
from paraphina.core.names import PROFILE_KNOBS, SEED_OFFSET_TAG
from paraphina.experiments.cli import check_composed, print_horizon_note, print_table
from paraphina.experiments.profiles import config_knobs, profiles_batch
from paraphina.experiments.records import ExperimentRecorder, parent_metrics, point_summaries, sweeps_dir

SUMMARY_COLUMNS = ("profile", "runs", "pnl_mean", "pnl_std", "dd_mean", "dd_min", "dd_worst", "kill_prob",
                   "kill_prob_low", "kill_prob_high", "frac_warning", "frac_hard")


def run(cfg: DictConfig, overrides: Sequence[str] = ()) -> pd.DataFrame:
    """Validate `experiment.profiles`; `overrides` are those `cfg` was composed from (every profile gets them).

    Returns one row per profile: its knobs, then the aggregate metrics of its seeds.
    """
    check_composed(cfg, overrides)
    first_seed = cfg.seed + cfg.experiment.seed_offset
    batch = profiles_batch(cfg.experiment.profiles, overrides, cfg.experiment.id, cfg.seeds, first_seed)
    with ExperimentRecorder(cfg, extra_tags={SEED_OFFSET_TAG: str(cfg.experiment.seed_offset),
                                             "first_seed": str(first_seed)}) as recorder:
        result = batch.run(f"exp08 {len(batch.profiles)} profiles x {cfg.seeds} seeds")
        points = [{"profile": name, **config_knobs(batch.configs[name])} for name in batch.profiles]
        table = point_summaries(result, batch.profile_index, points, cfg.world_model.confidence)
        keys = dict.fromkeys([*PROFILE_KNOBS.values(), *batch.per_run])
        params = [{key: OmegaConf.select(batch.configs[name], key) for key in keys} for name in batch.profiles]
        recorder.log_points(result, batch.profile_index, points, table, batch.profiles, params,
                            tags=[{"profile": name} for name in batch.profiles])
        recorder.finish(tables={"exp08_profile_summary": table},
                        metrics=parent_metrics(table, cfg.tracking.parent_metrics, by="profile"))
    return table


def command(cfg: DictConfig) -> None:
    """What the command line runs: the experiment, then its tables on the console."""
    overrides = task_overrides()
    print_horizon_note(cfg)
    table = run(cfg, overrides)
    first = cfg.seed + cfg.experiment.seed_offset
    print_table(table, SUMMARY_COLUMNS, title=f"Exp08 profile validation: {cfg.seeds} fresh seeds ({first}, "
                                              f"{first + 1}, ...) x {cfg.ticks} ticks")
    print(f"summary in {sweeps_dir(cfg)}")


main = hydra_command("exp08", command)

if __name__ == "__main__":
    main()
