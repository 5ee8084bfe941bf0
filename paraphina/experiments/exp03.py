"""Exp03 size eta x vol_ref search, driven by Optuna; objective: a tier's risk-adjusted score (maximised).

    python -m paraphina.experiments.exp03                                          # the 4 x 4 grid
    python -m paraphina.experiments.exp03 experiment.sampler=tpe experiment.n_trials=32

The grid sampler reproduces the original grid point for point; the same command again resumes its study.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from paraphina.config.commands import hydra_command
from paraphina.experiments.study import SearchOutcome, print_outcome, print_storage_note, run_search
from paraphina.formats.plots import plot_heatmap, plot_trials_scatter


def plots(outcome: SearchOutcome, folder: Path) -> list[Path]:
    """Mean final PnL over the first two knobs (rows, columns): a heatmap of the grid, else a scatter of the trials."""
    search, (study,) = outcome.search, outcome.studies
    table = study.table
    if len(search.dims) < 2:
        return []
    rows, columns = search.dims[:2]
    title = f"Exp03 mean final PnL (USD), {search.cfg.seeds} seeds x {search.cfg.ticks} ticks"
    if search.sampler == "grid":
        return [plot_heatmap(table, columns.name, rows.name, "pnl_mean", folder / "exp03_heatmap_pnl_mean.png", title)]
    best = int(np.flatnonzero(table["trial"] == study.best["trial"].iloc[0])[0])
    return [plot_trials_scatter(table[columns.name].to_numpy(), table[rows.name].to_numpy(),
                                table["pnl_mean"].to_numpy(), folder / f"exp03_{search.sampler}_pnl_mean.png", title,
                                (columns.name, rows.name, "pnl_mean"), best, log=(columns.log, rows.log))]


def run(cfg: DictConfig) -> SearchOutcome:
    """Create or resume the study on cfg's profile, judged by `experiment.tier`; returns its trials and best."""
    return run_search(cfg, [(cfg.profile_name, cfg.experiment.tier)], plots)


def command(cfg: DictConfig) -> None:
    """What the command line runs: the experiment, then its tables on the console."""
    print_storage_note(cfg)
    print_outcome(run(cfg))


main = hydra_command("exp03", command)

if __name__ == "__main__":
    main()
