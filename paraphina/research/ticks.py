"""`python -m paraphina.research.ticks`: condense one telemetry JSONL file into a research row and record it.

The original `tools/research_ticks.py`, same flags. The row becomes an MLflow run of a dataset (tag dataset=NAME,
experiment `research`) with the telemetry file as an artifact; with --out it is also appended to a JSONL dataset.
The file is checked whole first: a bad line is reported as `file:line` and nothing is recorded.

    python -m paraphina.research.ticks --telemetry runs/manual_telemetry/test_run.jsonl \
        --profile balanced --label manual_balanced_001 --out research_dataset_v001.jsonl
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from paraphina.config.loading import check_profile
from paraphina.errors import ParaphinaError, cli_errors
from paraphina.research.dataset import KNOB_KEYS, append_rows, make_row, read_rows
from paraphina.research.telemetry import load_telemetry, run_metrics
from paraphina.research.telemetry_summary import ToolParser, finite_float, format_metrics

if TYPE_CHECKING:
    from paraphina.tracking.runs import RunWriter

DEFAULT_DATASET = "research_dataset"
RESEARCH_EXPERIMENT = "research"
TOOL_TAG = "paraphina.tool"


def add_tracking_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="MLflow tracking store (default: $MLFLOW_TRACKING_URI, else the project's mlruns/mlflow.db)",
    )


def reachability_timeout_s() -> float:
    """The reachability timeout of conf/tracking/default.yaml, the one the engine CLI uses."""
    from omegaconf import OmegaConf

    from paraphina.config.loading import CONF_DIR

    return float(OmegaConf.load(CONF_DIR / "tracking" / "default.yaml").reachability_timeout_s)


def reachable_uri(tracking_uri: str | None) -> str:
    """The store to write to (flag, else $MLFLOW_TRACKING_URI, else the project's), checked: fails in one line."""
    from paraphina.tracking.store import check_reachable, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    check_reachable(uri, reachability_timeout_s())
    return uri


def research_writer(uri: str) -> RunWriter:
    """A writer into the `research` experiment of a checked store, created (with the store) if missing."""
    from paraphina.tracking.runs import RunWriter
    from paraphina.tracking.store import prepare_store

    experiment_id = prepare_store(uri, [RESEARCH_EXPERIMENT])[RESEARCH_EXPERIMENT]
    return RunWriter(uri, experiment_id)


def existing_store_uri(tracking_uri: str | None) -> str:
    """The resolved, reachable store for reading; a SQLite file that does not exist yet is an error."""
    from paraphina.tracking.store import check_reachable, resolve_tracking_uri, sqlite_path

    uri = resolve_tracking_uri(tracking_uri)
    path = sqlite_path(uri)
    if path is not None and not path.exists():
        raise ParaphinaError(
            f"no tracking store at {path}; record runs first or point --tracking-uri / MLFLOW_TRACKING_URI to one"
        )
    check_reachable(uri, reachability_timeout_s())
    return uri


def check_appendable(path: str | os.PathLike[str]) -> None:
    """Fail before recording anything when `--out` could not be appended to."""
    target = Path(path).absolute()
    folder = next((p for p in [target.parent, *target.parents] if p.exists()), None)
    blocked = target if target.exists() and not os.access(target, os.W_OK) else None
    if target.is_dir():
        raise ParaphinaError(f"{path}: is a folder; --out takes a JSONL file")
    if blocked is None and folder is not None and not os.access(folder, os.W_OK):
        blocked = folder
    if blocked is not None:
        raise ParaphinaError(f"{path}: {blocked} is not writable; choose another --out")
    if target.is_file() and target.stat().st_size > 0:
        read_rows(target)  # an existing file must already be a research dataset: file:line error otherwise


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
    parser.add_argument(
        "--dataset", default=DEFAULT_DATASET, metavar="NAME", help=f"MLflow dataset (default: {DEFAULT_DATASET})"
    )
    parser.add_argument("--out", metavar="FILE.jsonl", help="also append the row to this JSONL dataset file")
    add_tracking_argument(parser)
    knobs = parser.add_argument_group("profile knobs recorded with the row (optional)")
    for knob in KNOB_KEYS:
        knobs.add_argument(f"--{knob.replace('_', '-')}", dest=knob, type=finite_float, metavar="X")
    return parser


@cli_errors
def main(argv: Sequence[str] | None = None) -> None:
    from paraphina.tracking.datasets import check_dataset_name, row_to_record

    args = build_parser().parse_args(argv)
    check_dataset_name(args.dataset)
    check_profile(args.profile)
    uri = reachable_uri(args.tracking_uri)  # before any work
    metrics = run_metrics(load_telemetry(args.telemetry))  # the whole file, before anything is recorded
    if args.out:
        check_appendable(args.out)
    writer = research_writer(uri)
    telemetry = Path(args.telemetry).absolute()
    row = make_row(
        metrics,
        profile=args.profile,
        label=args.label,
        notes=args.notes,
        telemetry_path=str(telemetry),
        knobs={knob: getattr(args, knob) for knob in KNOB_KEYS},
    )
    record = row_to_record(row, args.dataset, args.label)
    record.tags[TOOL_TAG] = "research.ticks"
    record.artifacts.append((telemetry, "telemetry"))
    run_id = writer.log(record)
    print(format_metrics(metrics, f"{args.label} ({args.profile}): {args.telemetry}"))
    print(f"recorded           run {run_id} in dataset '{args.dataset}' ({writer.tracking_uri})")
    if args.out:
        append_rows(args.out, [row])
        print(f"appended           row to {args.out}")


if __name__ == "__main__":
    main()
