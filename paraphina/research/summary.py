"""`python -m paraphina.research.summary --input FILE.jsonl | --dataset NAME [--top N]` (the original
`tools/research_summary.py`): global summary, per-profile summary and the top runs by utility."""
from __future__ import annotations

from collections.abc import Sequence

from paraphina.config.loading import compose_config
from paraphina.core.cli import ToolParser, add_tracking_argument, cli_errors, positive_int
from paraphina.formats.dataset import read_rows
from paraphina.tracking.datasets import load_dataset
from paraphina.tracking.store import reachable_uri
from paraphina.world_model.summary import format_summary


def build_parser() -> ToolParser:
    parser = ToolParser(
        prog="python -m paraphina.research.summary",
        description="Summarise a research dataset: global, per profile, and the top runs by utility.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", metavar="FILE.jsonl", help="a JSONL dataset file (ours or the original's)")
    source.add_argument("--dataset", metavar="NAME", help="a dataset recorded in MLflow (tag dataset=NAME)")
    parser.add_argument("--top", type=positive_int, default=10, metavar="N", help="top runs to list (default: 10)")
    add_tracking_argument(parser)
    return parser


@cli_errors
def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    cfg = compose_config()
    if args.input is not None:
        df = read_rows(args.input)
    else:
        uri = reachable_uri(args.tracking_uri, cfg.paths.store, cfg.tracking.reachability_timeout_s, existing=True)
        df = load_dataset(uri, args.dataset)
    print(format_summary(df, args.top, cfg.world_model.utility_dd_weight))


if __name__ == "__main__":
    main()
