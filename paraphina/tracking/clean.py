"""`python -m paraphina.tracking.clean [--tracking-uri URI]`: end and remove what stopped commands left in the store.

Runs left RUNNING on this host by a process that is gone (kill -9, a crash) are marked KILLED; then the research
rows that do not count (their run or the parent they were written under did not finish) are deleted with those
parents (MLflow's soft delete: `mlflow gc` purges them for good). Datasets then read without a note.
"""
from __future__ import annotations

from collections.abc import Sequence

from paraphina.config.loading import compose_config
from paraphina.core.cli import ToolParser, add_tracking_argument, cli_errors
from paraphina.core.errors import ParaphinaError
from paraphina.tracking.datasets import remove_unfinished_rows
from paraphina.tracking.store import describe, existing_store_uri, mark_stopped_in_store, tracking_client


def build_parser() -> ToolParser:
    parser = ToolParser(prog="python -m paraphina.tracking.clean",
                        description="Mark the runs of stopped commands KILLED and delete the research rows "
                                    "that never finished.")
    add_tracking_argument(parser)
    return parser


def clean(uri: str) -> dict[str, int]:
    """Mark stopped runs KILLED, then delete the rows that do not count; the counts of each."""
    try:
        killed = mark_stopped_in_store(tracking_client(uri))
    except Exception as exc:
        raise ParaphinaError(f"cannot end the runs of stopped commands in {uri}: {describe(exc)}") from exc
    rows, parents = remove_unfinished_rows(uri)
    return {"killed": killed, "rows": rows, "parents": parents}


@cli_errors
def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    cfg = compose_config()
    uri = existing_store_uri(args.tracking_uri, cfg.paths.store, cfg.tracking.reachability_timeout_s)
    done = clean(uri)
    print(f"marked {done['killed']} run(s) of stopped commands KILLED; deleted {done['rows']} research row(s) "
          f"that never finished and {done['parents']} parent run(s) of them ({uri})")


if __name__ == "__main__":
    main()
