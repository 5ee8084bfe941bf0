"""Exp09 hyperparameter search around the profile presets, driven by Optuna: one study per profile.

    python -m paraphina.experiments.exp09                                # TPE, 54 trials per profile
    python -m paraphina.experiments.exp09 experiment.multi_objective=true  # NSGA-II, Pareto fronts

Each study starts from its profile's config (+profile=NAME); its objective is the tier score of the same name
and the tier's budgets are constraints. The same command again resumes the studies.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from paraphina.config.commands import hydra_command
from paraphina.experiments.cli import print_horizon_note
from paraphina.experiments.study import SearchOutcome, print_outcome, print_storage_note, run_search
from paraphina.formats.plots import plot_pareto_fronts


def pareto_plot(outcome: SearchOutcome, folder: Path) -> list[Path]:
    """Drawdown against PnL of every trial per profile, coloured by kill probability, the Pareto front ringed."""
    panels = {}
    for study in outcome.studies:
        table = study.table
        front = table["trial"].isin(study.best["trial"]).to_numpy()
        panels[study.target.profile] = (table["pnl_mean"].to_numpy(), table["dd_mean"].to_numpy(),
                                        table["kill_prob"].to_numpy(), front)
    cfg = outcome.search.cfg
    return [plot_pareto_fronts(panels, folder / "exp09_pareto.png",
                               f"Exp09 Pareto fronts, {cfg.seeds} seeds x {cfg.ticks} ticks")]


def run(cfg: DictConfig) -> SearchOutcome:
    """Create or resume one study per profile of `experiment.profiles`; returns their trials and best."""
    targets = [(str(p), str(p)) for p in cfg.experiment.profiles]
    return run_search(cfg, targets, pareto_plot if cfg.experiment.multi_objective else (lambda outcome, folder: []))


def command(cfg: DictConfig) -> None:
    """What the command line runs: the experiment, then its tables on the console."""
    print_horizon_note(cfg)
    print_storage_note(cfg)
    print_outcome(run(cfg))


main = hydra_command("exp09", command)

if __name__ == "__main__":
    main()
