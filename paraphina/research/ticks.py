"""`python -m paraphina.research.ticks` (the original `tools/research_ticks.py`, same flags): one telemetry JSONL
file to a research row, recorded as an MLflow run of a dataset with the file attached; --out also appends it."""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from paraphina.config.loading import check_dataset_name, check_profile, compose_config
from paraphina.core.cli import ToolParser, add_tracking_argument, cli_errors, finite_float
from paraphina.core.names import ROW_KNOBS, TOOL_TAG
from paraphina.formats.dataset import append_rows, check_appendable, make_row
from paraphina.formats.telemetry import load_telemetry, run_metrics
from paraphina.research.telemetry_summary import format_metrics
from paraphina.tracking.datasets import research_writer, row_to_record
from paraphina.tracking.store import reachable_uri

DEFAULT_DATASET = "research_dataset"


def build_parser() -> ToolParser:
    parser = ToolParser(
        prog="python -m paraphina.research.ticks",
        description="Condense one telemetry JSONL file into a research row, record it as an MLflow run of a "
        "dataset (telemetry attached) and print its summary.",
    )
    parser.add_argument("--telemetry", required=True, metavar="FILE", help="telemetry JSONL, one object per tick")
    parser.add_argument("--profile", required=True, metavar="NAME", help="risk profile the run used")
    parser.add_argument("--label", required=True, metavar="L", help="research label of the run")
    parser.add_argument("--notes", metavar="N", help="free-text notes")
    parser.add_argument("--dataset", default=DEFAULT_DATASET, metavar="NAME",
                        help=f"MLflow dataset (default: {DEFAULT_DATASET})")
    parser.add_argument("--out", metavar="FILE.jsonl", help="also append the row to this JSONL dataset file")
    add_tracking_argument(parser)
    knobs = parser.add_argument_group("profile knobs recorded with the row (optional)")
    for knob in ROW_KNOBS:
        knobs.add_argument(f"--{knob.replace('_', '-')}", dest=knob, type=finite_float, metavar="X")
    return parser


def ticks_key(telemetry: Path, label: str) -> str:
    """A research.ticks row's key: the telemetry file's content and the label (not the recording time)."""
    digest = hashlib.sha256(telemetry.read_bytes()).hexdigest()[:20]
    return f"ticks:{digest}:{label}"


@cli_errors
def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    check_dataset_name(args.dataset)
    check_profile(args.profile)
    cfg = compose_config()
    uri = reachable_uri(args.tracking_uri, cfg.paths.store, cfg.tracking.reachability_timeout_s)  # before any work
    metrics = run_metrics(load_telemetry(args.telemetry))  # the whole file, before anything is recorded
    if args.out:
        check_appendable(args.out)
    writer = research_writer(uri)
    telemetry = Path(args.telemetry).absolute()
    row = make_row(metrics, profile=args.profile, label=args.label, notes=args.notes, telemetry_path=str(telemetry),
                   knobs={knob: getattr(args, knob) for knob in ROW_KNOBS})
    record = row_to_record(row, args.dataset, args.label, key=ticks_key(telemetry, args.label))
    record.tags[TOOL_TAG] = "research.ticks"
    record.artifacts.append((telemetry, "telemetry"))
    run_id = writer.log(record)
    print(format_metrics(metrics, f"{args.label} ({args.profile}): {args.telemetry}", cfg.world_model.utility_dd_weight))
    print(f"recorded           run {run_id} in dataset '{args.dataset}' ({writer.tracking_uri})")
    if args.out:
        append_rows(args.out, [row])
        print(f"appended           row to {args.out}")


if __name__ == "__main__":
    main()
