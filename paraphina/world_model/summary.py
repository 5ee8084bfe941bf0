"""The research summary of a dataset (global, per profile, top runs by utility), as numbers and, apart, as text,
so the CLIs, MLflow steps and tests share the same numbers."""
from __future__ import annotations

from typing import Any

import pandas as pd

from paraphina.core.errors import ParaphinaError

TOP_COLUMNS: tuple[str, ...] = ("label", "profile", "final_pnl", "max_drawdown", "utility", "kill_switch")


def utility(df: pd.DataFrame, dd_weight: float) -> pd.Series:
    """Utility of each run: final PnL minus `dd_weight` (world_model.utility_dd_weight) times its max drawdown."""
    return df["final_pnl"] - dd_weight * df["max_drawdown"]


def global_summary(df: pd.DataFrame) -> dict[str, Any]:
    """Runs, mean final PnL, mean max drawdown and kill fraction over all rows."""
    return {
        "runs": int(len(df)),
        "mean_final_pnl": float(df["final_pnl"].mean()),
        "mean_max_drawdown": float(df["max_drawdown"].mean()),
        "kill_fraction": float(df["kill_switch"].mean()),
    }


def per_profile_summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per profile (sorted): runs, final_pnl_mean, final_pnl_std, max_drawdown_mean, kill_fraction."""
    return df.groupby("profile").agg(
        runs=("final_pnl", "size"),
        final_pnl_mean=("final_pnl", "mean"),
        final_pnl_std=("final_pnl", "std"),
        max_drawdown_mean=("max_drawdown", "mean"),
        kill_fraction=("kill_switch", "mean"),
    )


def top_runs(df: pd.DataFrame, n: int, dd_weight: float) -> pd.DataFrame:
    """The `n` rows of highest utility (column added), best first; ties keep dataset order."""
    ranked = df.assign(utility=utility(df, dd_weight))
    return ranked.sort_values("utility", ascending=False, kind="stable").head(n)


def format_summary(df: pd.DataFrame, top_n: int, dd_weight: float) -> str:
    """A readable report: global numbers, the per-profile table, the top runs by utility."""
    if df.empty:
        raise ParaphinaError("no runs to summarise; check the dataset path and the filters")
    overall = global_summary(df)
    top = top_runs(df, top_n, dd_weight).loc[:, list(TOP_COLUMNS)]
    top.index = pd.RangeIndex(1, len(top) + 1, name="rank")
    number = "{:.2f}".format
    return "\n".join(
        [
            "=== Global summary ===",
            f"runs               {overall['runs']}",
            f"mean final_pnl     {overall['mean_final_pnl']:.2f}",
            f"mean max_drawdown  {overall['mean_max_drawdown']:.2f}",
            f"kill fraction      {overall['kill_fraction']:.3f}",
            "",
            "=== Per-profile summary ===",
            per_profile_summary(df).to_string(float_format=number),
            "",
            f"=== Top {len(top)} runs by utility (final_pnl - {dd_weight:g} * max_drawdown) ===",
            top.to_string(float_format=number),
        ]
    )
