"""`python -m paraphina.research.transfer`: move a research dataset between MLflow and the original JSONL format."""
from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from paraphina.config.loading import check_dataset_name, check_profile, compose_config
from paraphina.core.cli import ToolParser, add_tracking_argument, cli_errors
from paraphina.core.errors import ParaphinaError
from paraphina.core.files import replace_atomically
from paraphina.core.names import DATASET_IMPORT_KIND, IMPORT_TAG, KIND_TAG, TOOL_TAG
from paraphina.formats.dataset import ROW_FIELDS, ROW_KEYS, append_rows, check_appendable, read_rows
from paraphina.formats.telemetry import BOOL, INT, NUMBER
from paraphina.tracking.datasets import content_key, held_rows, load_dataset, research_writer, row_to_record
from paraphina.tracking.runs import Ending, RunRecord
from paraphina.tracking.store import reachable_uri


_CONVERTERS = {INT: int, BOOL: bool, NUMBER: float}


def frame_to_rows(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Research rows (a DataFrame with ROW_KEYS columns) as JSON-ready dicts in the original key order."""
    convert = {key: _CONVERTERS.get(ROW_FIELDS[key].kind, str) for key in ROW_KEYS}
    return [
        {key: None if not isinstance(value, str) and pd.isna(value) else convert[key](value)
         for key, value in record.items()}
        for record in df.loc[:, list(ROW_KEYS)].to_dict("records")
    ]


def export_dataset(tracking_uri: str, dataset: str, out: str | os.PathLike[str], append: bool = False) -> int:
    """Write dataset `dataset` to `out` as JSONL (a new file, or appended with `append`); returns the row count."""
    target = Path(out)
    if target.exists() and not append:
        raise ParaphinaError(f"{out}: already exists; choose a new file or pass --append to add to it")
    check_appendable(target)
    rows = frame_to_rows(load_dataset(tracking_uri, dataset))
    if append:
        append_rows(target, rows)
    else:
        text = "".join(json.dumps(row, allow_nan=False) + "\n" for row in rows)
        replace_atomically(target, lambda temporary: temporary.write_text(text))  # a reader never sees half an export
    return len(rows)


def import_rows(uri: str, dataset: str, source: str | os.PathLike[str], ending: Ending = Ending()) -> dict[str, Any]:
    """Validate all of `source`, then record its rows that `dataset` does not hold yet into the checked store `uri`.

    All or nothing: the rows go under an import parent run that is FINISHED last, and a row counts only once its
    parent is (a stopped import adds no rows). A row's key is its content, so importing a file again, or a
    dataset's own export, adds nothing. Returns the store's URI, the import parent run id, the rows added, the rows already there and the
    keys outside the research row that were not imported.
    """
    df = read_rows(source)  # raises `file:line: ...` before anything is recorded
    rows = frame_to_rows(df)
    for i, row in enumerate(rows, start=1):
        try:
            check_profile(row["profile"])
        except ParaphinaError as exc:
            raise ParaphinaError(f"{source}: row {i}: {exc}") from exc
    writer = research_writer(uri, ending)
    held, rows_held = held_rows(uri, dataset)
    # Rows the engine recorded are keyed by run, not content: count the contents the dataset holds too, so that
    # importing a dataset's own export adds nothing.
    present = Counter(map(content_key, frame_to_rows(rows_held))) if rows_held is not None else Counter()
    copies: Counter[str] = Counter()
    keyed = []
    for i, row in enumerate(rows, start=1):
        content = content_key(row)
        key = f"{content}:{copies[content]}"  # the n-th copy of a row in the file is a row of its own
        copies[content] += 1
        if key not in held and copies[content] > present[content]:
            keyed.append((i, row, key))
    stem = Path(source).stem
    parent = RunRecord(
        name=f"import-{stem}",
        tags={IMPORT_TAG: dataset, KIND_TAG: DATASET_IMPORT_KIND, TOOL_TAG: "research.transfer",
              "source": str(Path(source).absolute()), "rows": str(len(keyed))},
    )  # fmt: skip
    parent_id = writer.start_parent(parent)
    try:
        for i, row, key in keyed:
            record = row_to_record(row, dataset, row["label"] or f"{stem}-{i}", key)
            record.tags[TOOL_TAG] = "research.transfer"
            writer.log(record, parent_id)
    except BaseException as exc:
        writer.abort(parent_id, exc)
        raise
    writer.finish(parent_id)
    ignored = [str(column) for column in df.columns if column not in ROW_KEYS]
    return {"uri": writer.tracking_uri, "run_id": parent_id, "rows": len(keyed), "held": len(rows) - len(keyed),
            "ignored": ignored}


def build_parser() -> ToolParser:
    parser = ToolParser(
        prog="python -m paraphina.research.transfer",
        description="Export an MLflow research dataset to the original JSONL format, or import such a file.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{export,import}",
                                     parser_class=ToolParser)  # fmt: skip
    export = commands.add_parser("export", help="dataset -> JSONL file")
    export.add_argument("--dataset", required=True, metavar="NAME", help="dataset recorded in MLflow")
    export.add_argument("--out", required=True, metavar="FILE.jsonl", help="JSONL file to write (must not exist)")
    export.add_argument("--append", action="store_true", help="append to --out when it exists")
    add_tracking_argument(export)
    imp = commands.add_parser("import", help="JSONL file -> dataset")
    imp.add_argument("--input", required=True, metavar="FILE.jsonl", help="research JSONL file (ours or original)")
    imp.add_argument("--dataset", required=True, metavar="NAME", help="dataset to add the rows to")
    add_tracking_argument(imp)
    return parser


@cli_errors
def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    check_dataset_name(args.dataset)
    cfg = compose_config()
    store, timeout_s = cfg.paths.store, cfg.tracking.reachability_timeout_s
    if args.command == "export":
        uri = reachable_uri(args.tracking_uri, store, timeout_s, existing=True)
        n = export_dataset(uri, args.dataset, args.out, args.append)
        print(f"exported {n} rows of dataset '{args.dataset}' ({uri}) to {args.out}")
    else:
        done = import_rows(reachable_uri(args.tracking_uri, store, timeout_s), args.dataset, args.input,
                           Ending.of(cfg.tracking))
        held = f"; {done['held']} already there" if done["held"] else ""
        print(f"imported {done['rows']} rows from {args.input} into dataset '{args.dataset}'{held} "
              f"(import run {done['run_id']}, {done['uri']})")
        if done["ignored"]:
            print(f"not imported (not research-row keys): {', '.join(done['ignored'])}")


if __name__ == "__main__":
    main()
