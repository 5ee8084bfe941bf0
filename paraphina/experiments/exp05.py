"""Exp05 calibration report: the best settings of the latest Exp02, Exp03 and Exp04 records, by tier score.

    python -m paraphina.experiments.exp05 [experiment.tier=conservative experiment.top_n=10]

Reads MLflow only (no engine runs), so it can be re-run with another tier or depth at no cost.
"""
from __future__ import annotations

import pandas as pd
from omegaconf import DictConfig

from paraphina.config.commands import hydra_command
from paraphina.core.errors import ParaphinaError
from paraphina.experiments.cli import print_table
from paraphina.experiments.records import ExperimentRecorder, latest_points, sweeps_dir
from paraphina.world_model.presets import METRIC_COLUMNS
from paraphina.world_model.tiers import RiskTier, budget_margins, tier_score, tiers_from_mapping

SHOWN_COLUMNS = ("rank", "run_name", "score", "within_budgets", *METRIC_COLUMNS)


def rank_points(points: pd.DataFrame, tier: RiskTier) -> pd.DataFrame:
    """Points (with METRIC_COLUMNS) by descending tier score, with their budget margins; ties keep input order."""
    m = {c: points[c].astype(float) for c in METRIC_COLUMNS}
    checks = budget_margins(tier, m["pnl_mean"], m["dd_mean"], m["kill_prob"])
    table = points.assign(score=tier_score(tier, **m), **checks)
    table["within_budgets"] = table["kill_ok"] & table["dd_ok"] & table["pnl_ok"]
    table = table.sort_values("score", ascending=False, kind="stable", ignore_index=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    return table


def source_points(cfg: DictConfig, source: str) -> tuple[pd.DataFrame, str] | None:
    """The latest finite-metric points of `source` and its parent's run id; None (said in one line) if unusable."""
    try:
        points, parent = latest_points(cfg, source)
    except ParaphinaError as exc:
        print(f"{source}: left out of the report: {exc}")
        return None
    missing = [c for c in METRIC_COLUMNS if c not in points.columns]
    if missing:
        print(f"{source}: left out of the report: its latest records lack {', '.join(missing)}")
        return None
    return points.dropna(subset=list(METRIC_COLUMNS)), parent["run_id"]


def run(cfg: DictConfig) -> dict[str, pd.DataFrame]:
    """Rank every available source; record the report as a parent run. Returns source -> its top-N table."""
    tiers = tiers_from_mapping(cfg.world_model.tiers)
    if cfg.experiment.tier not in tiers:
        raise ParaphinaError(f"experiment.tier={cfg.experiment.tier} is not a risk tier; tiers: {', '.join(tiers)}")
    tier = tiers[cfg.experiment.tier]
    found = {source: got for source in cfg.experiment.sources if (got := source_points(cfg, source)) is not None}
    if not found:
        raise ParaphinaError(f"none of {', '.join(cfg.experiment.sources)} has records to report on; run them first")
    ranked = {source: rank_points(points, tier) for source, (points, _) in found.items()}
    top = {source: table.head(cfg.experiment.top_n) for source, table in ranked.items()}
    tags = {f"source.{source}": parent for source, (_, parent) in found.items()} | {"tier": tier.name}
    with ExperimentRecorder(cfg, tags) as recorder:
        recorder.finish(tables={f"exp05_{source}_ranked": table for source, table in ranked.items()}
                        | {"exp05_top": pd.concat([t.assign(experiment=s) for s, t in top.items()], ignore_index=True)},
                        metrics={f"{source}_best_score": float(table["score"].iloc[0])
                                 for source, table in ranked.items() if len(table)})
    return top


def command(cfg: DictConfig) -> None:
    """What the command line runs: the experiment, then its tables on the console."""
    for source, table in run(cfg).items():
        print_table(table, SHOWN_COLUMNS, title=f"\n{source}: top {len(table)} by {cfg.experiment.tier} tier score")
    print(f"\nranked tables in {sweeps_dir(cfg)}")


main = hydra_command("exp05", command)

if __name__ == "__main__":
    main()
