"""The research summary of a dataset (global, per profile, top runs by utility), as numbers and as text.

Computation and printing are apart so the CLIs, MLflow steps and tests share the same numbers.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from paraphina.errors import ParaphinaError



def default_dd_weight() -> float:
    """The utility's drawdown weight, from conf/world_model/tiers.yaml like every other entry point."""
    from omegaconf import OmegaConf

    from paraphina.config.loading import CONF_DIR

    return float(OmegaConf.load(CONF_DIR / "world_model" / "tiers.yaml").utility_dd_weight)
TOP_COLUMNS: tuple[str, ...] = ("label", "profile", "final_pnl", "max_drawdown", "utility", "kill_switch")


def utility(df: pd.DataFrame, dd_weight: float | None = None) -> pd.Series:
    """Utility of each run: final PnL minus `dd_weight` (default: the configured one) times its max drawdown."""
    weight = default_dd_weight() if dd_weight is None else dd_weight
    return df["final_pnl"] - weight * df["max_drawdown"]


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


def top_runs(df: pd.DataFrame, n: int = 10, dd_weight: float | None = None) -> pd.DataFrame:
    """The `n` rows of highest utility (column added), best first; ties keep dataset order."""
    ranked = df.assign(utility=utility(df, dd_weight))
    return ranked.sort_values("utility", ascending=False, kind="stable").head(n)


def format_summary(df: pd.DataFrame, top_n: int = 10, dd_weight: float | None = None) -> str:
    """A readable report: global numbers, the per-profile table, the top runs by utility."""
    dd_weight = default_dd_weight() if dd_weight is None else dd_weight
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


def main(argv: list[str] | None = None) -> None:
    """`python -m paraphina.research.summary --input FILE.jsonl | --dataset NAME [--top N]` (the original
    `tools/research_summary.py`): global summary, per-profile summary and the top runs by utility."""
    from paraphina.errors import cli_errors

    cli_errors(_summary_cli)(argv)


def _summary_cli(argv: list[str] | None) -> None:
    from paraphina.research.dataset import read_rows
    from paraphina.research.telemetry_summary import ToolParser, positive_int
    from paraphina.research.ticks import add_tracking_argument, existing_store_uri
    from paraphina.tracking.datasets import load_dataset

    parser = ToolParser(
        prog="python -m paraphina.research.summary",
        description="Summarise a research dataset: global, per profile, and the top runs by utility.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", metavar="FILE.jsonl", help="a JSONL dataset file (ours or the original's)")
    source.add_argument("--dataset", metavar="NAME", help="a dataset recorded in MLflow (tag dataset=NAME)")
    parser.add_argument("--top", type=positive_int, default=10, metavar="N", help="top runs to list (default: 10)")
    add_tracking_argument(parser)
    args = parser.parse_args(argv)
    if args.input is not None:
        df = read_rows(args.input)
    else:
        df = load_dataset(existing_store_uri(args.tracking_uri), args.dataset)
    print(format_summary(df, args.top))


if __name__ == "__main__":
    main()
