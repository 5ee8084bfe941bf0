"""Exp02 hedge-band heatmap: initial position x hedge band; final PnL, drawdown, max |delta| and |basis|.

    python -m paraphina.experiments.exp02 [ticks=300 seeds=2 experiment.grid.band.values=[2.5,10]]

The heatmaps show where in the (q0, band) plane the hedge pays for itself; the table keeps the numbers.
"""
from __future__ import annotations

import pandas as pd
from omegaconf import DictConfig

from paraphina.config.commands import hydra_command
from paraphina.core.errors import ParaphinaError
from paraphina.experiments.cli import print_table
from paraphina.experiments.grid import axes_from_config
from paraphina.experiments.records import ExperimentRecorder, parent_metrics, sweeps_dir
from paraphina.experiments.sweep import run_sweep
from paraphina.formats.plots import plot_heatmap

SUMMARY_COLUMNS = ("pnl_mean", "pnl_std", "dd_mean", "dd_worst", "kill_prob", "max_abs_delta_usd",
                   "max_abs_basis_usd")
"""What the summary shows per grid point, and what a heatmap may plot."""


def run(cfg) -> pd.DataFrame:
    """Sweep the grid, record a child per point, write the summary CSV and one heatmap per configured column."""
    axes = axes_from_config(cfg.experiment.grid, cfg)
    if len(axes) != 2:
        raise ParaphinaError(f"exp02 needs exactly two grid axes for its heatmaps, got {[a.name for a in axes]}")
    unknown = [name for name in cfg.experiment.heatmaps if name not in SUMMARY_COLUMNS]
    if unknown:
        raise ParaphinaError(f"experiment.heatmaps names {unknown}; choose from {', '.join(SUMMARY_COLUMNS)}")
    rows, columns = axes
    with ExperimentRecorder(cfg) as recorder:
        table = run_sweep(cfg, axes, recorder)
        plots = [plot_heatmap(table, columns.name, rows.name, value, recorder.tmp / f"exp02_heatmap_{value}.png",
                              f"Exp02 {title}, {cfg.seeds} seeds x {cfg.ticks} ticks")
                 for value, title in cfg.experiment.heatmaps.items()]
        recorder.finish(tables={"exp02_hedge_band": table}, plots=plots,
                        metrics=parent_metrics(table, cfg.tracking.parent_metrics))
    return table


def command(cfg: DictConfig) -> None:
    """What the command line runs: the experiment, then its tables on the console."""
    table = run(cfg)
    print_table(table, [*cfg.experiment.grid, *SUMMARY_COLUMNS])
    print(f"tables and heatmaps in {sweeps_dir(cfg)}")


main = hydra_command("exp02", command)

if __name__ == "__main__":
    main()
