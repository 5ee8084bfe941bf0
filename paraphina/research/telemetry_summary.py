"""`python -m paraphina.research.telemetry_summary`: summarise one telemetry JSONL file, recording nothing.

The original `tools/manual_telemetry_summary.py`. Also holds what the research tools share on the command line:
a parser whose errors are one line (exit 2) and the readable block of a run's metrics.

    python -m paraphina.research.telemetry_summary --telemetry runs/manual_telemetry/test_run.jsonl
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from paraphina.errors import ParaphinaError, cli_errors
from paraphina.research.summary import default_dd_weight
from paraphina.research.telemetry import load_telemetry, run_metrics


class ToolParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line (`error: ...; see --help`) with exit code 2."""

    def error(self, message: str) -> NoReturn:
        raise ParaphinaError(f"{self.prog}: {message}; see {self.prog} --help")


def finite_float(text: str) -> float:
    """argparse type: a finite number."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def format_metrics(metrics: Mapping[str, Any], title: str) -> str:
    """The run-level metrics of one telemetry series (spec section 5) as a readable block."""
    kill = f"FIRED at t={metrics['time_to_kill']}" if metrics["kill_switch"] else "not fired"
    weight = default_dd_weight()
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
    print(format_metrics(run_metrics(load_telemetry(args.telemetry)), f"Telemetry summary: {args.telemetry}"))


if __name__ == "__main__":
    main()
