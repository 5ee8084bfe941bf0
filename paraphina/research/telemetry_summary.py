"""`python -m paraphina.research.telemetry_summary` (the original `tools/manual_telemetry_summary.py`): summarise
one telemetry JSONL file, recording nothing; its block of a run's metrics is also what `research.ticks` prints."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from paraphina.config.loading import compose_config
from paraphina.core.cli import ToolParser, cli_errors
from paraphina.formats.telemetry import load_telemetry, run_metrics


def format_metrics(metrics: Mapping[str, Any], title: str, weight: float) -> str:
    """The run-level metrics of one telemetry series (spec section 5) as a readable block; `weight` is the
    utility's drawdown weight (world_model.utility_dd_weight)."""
    kill = f"FIRED at t={metrics['time_to_kill']}" if metrics["kill_switch"] else "not fired"
    utility = metrics["final_pnl"] - weight * metrics["max_drawdown"]
    return "\n".join(
        [
            f"=== {title} ===",
            f"ticks              {metrics['num_ticks']}",
            f"final_pnl          {metrics['final_pnl']:,.2f} USD   (min {metrics['min_pnl']:,.2f}, "
            f"max {metrics['max_pnl']:,.2f})",
            f"max_drawdown       {metrics['max_drawdown']:,.2f} USD",
            f"utility            {utility:,.2f}   (final_pnl - {weight:g} * max_drawdown)",
            f"regimes            Normal {metrics['frac_normal']:.1%}  Warning {metrics['frac_warning']:.1%}  "
            f"HardLimit {metrics['frac_hard']:.1%}",
            f"kill_switch        {kill}",
            f"max |delta|        {metrics['max_abs_delta_usd']:,.2f} USD",
            f"max |basis|        {metrics['max_abs_basis_usd']:,.2f} USD",
        ]
    )


def build_parser() -> ToolParser:
    parser = ToolParser(
        prog="python -m paraphina.research.telemetry_summary",
        description="Summarise one telemetry JSONL file (ours or the original engine's) without recording it.",
    )
    parser.add_argument("--telemetry", required=True, metavar="FILE", help="telemetry JSONL, one object per tick")
    return parser


@cli_errors
def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    weight = compose_config().world_model.utility_dd_weight
    print(format_metrics(run_metrics(load_telemetry(args.telemetry)), f"Telemetry summary: {args.telemetry}", weight))


if __name__ == "__main__":
    main()
