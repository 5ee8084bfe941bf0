"""Exp04 risk-regime sweep: initial position x daily loss limit; kill probability, regime fractions.

    python -m paraphina.experiments.exp04 [ticks=500 seeds=2 experiment.grid.q0.values=[0,25]]
"""
from __future__ import annotations

import pandas as pd
from omegaconf import DictConfig

from paraphina.config.commands import hydra_command
from paraphina.core.names import REGIME_NAMES
from paraphina.experiments.cli import print_horizon_note, print_table
from paraphina.experiments.grid import axes_from_config
from paraphina.experiments.records import ExperimentRecorder, parent_metrics, sweeps_dir
from paraphina.experiments.sweep import run_sweep


def run(cfg) -> pd.DataFrame:
    axes = axes_from_config(cfg.experiment.grid, cfg)
    with ExperimentRecorder(cfg) as recorder:
        table = run_sweep(cfg, axes, recorder)
        finals = table[[f"final_{r.lower()}_frac" for r in REGIME_NAMES]].to_numpy()
        table.insert(len(axes), "final_regime", [REGIME_NAMES[i] for i in finals.argmax(axis=1)])
        recorder.finish(tables={"exp04_risk_regime": table}, metrics=parent_metrics(table, cfg.tracking.parent_metrics))
    return table


def command(cfg: DictConfig) -> None:
    """What the command line runs: the experiment, then its tables on the console."""
    print_horizon_note(cfg)
    table = run(cfg)
    print_table(table, [*cfg.experiment.grid, "pnl_mean", "dd_mean", "kill_prob", "frac_normal", "frac_warning",
                        "frac_hard", "final_regime"])
    print(f"tables in {sweeps_dir(cfg)}")


main = hydra_command("exp04", command)

if __name__ == "__main__":
    main()
