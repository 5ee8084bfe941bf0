"""`python -m paraphina.tracking.clean [--tracking-uri URI]`: end and remove what stopped commands left in the
store and under sweeps/ (the runs, the research rows that do not count, telemetry parts and half-written files)."""
from __future__ import annotations

import re
import shutil
import socket
from collections.abc import Sequence
from pathlib import Path

from mlflow import MlflowClient

from paraphina.config.loading import compose_config
from paraphina.core.cli import ToolParser, add_tracking_argument, cli_errors
from paraphina.core.errors import ParaphinaError
from paraphina.core.files import WRITTEN_BY
from paraphina.core.names import PART_SUFFIX
from paraphina.tracking.datasets import remove_unfinished_rows
from paraphina.tracking.store import describe, mark_stopped_in_store, process_gone, reachable_uri, tracking_client

RUN_ID = re.compile(r"[0-9a-f]{32}")
STOPPED = ("KILLED", "FAILED")


def clean(uri: str, sweeps: Path) -> dict[str, int]:
    """Mark stopped runs KILLED, delete the rows that do not count (`mlflow gc` purges them for good) and the files
    stopped commands left in `sweeps`; the counts of each."""
    client = tracking_client(uri)
    try:
        killed = mark_stopped_in_store(client)
    except Exception as exc:
        raise ParaphinaError(f"cannot end the runs of stopped commands in {uri}: {describe(exc)}") from exc
    rows, parents = remove_unfinished_rows(uri)
    return {"killed": killed, "rows": rows, "parents": parents, "files": remove_stopped_files(client, sweeps)}


def remove_stopped_files(client: MlflowClient, sweeps: Path) -> int:
    """Remove telemetry parts whose writing process on this host is gone and telemetry folders of killed or
    failed runs."""
    removed, host = 0, socket.gethostname()
    written = [*sweeps.rglob(f"*{PART_SUFFIX}"), *sweeps.rglob(".*.tmp")] if sweeps.is_dir() else []
    for part in written:
        writer = WRITTEN_BY.search(part.name)
        if writer and writer.group(2) in (None, host) and process_gone(int(writer.group(1)), None):
            part.unlink(missing_ok=True)
            removed += 1
    for folder in sweeps.glob("**/telemetry/*") if sweeps.is_dir() else []:   # a multirun job's too
        if folder.is_dir() and RUN_ID.fullmatch(folder.name) and run_status(client, folder.name) in STOPPED:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def run_status(client: MlflowClient, run_id: str) -> str | None:
    """A run's status, None when the store has no such run."""
    try:
        return client.get_run(run_id).info.status
    except Exception:  # not a run of this store: leave its folder alone
        return None


@cli_errors
def main(argv: Sequence[str] | None = None) -> None:
    parser = ToolParser(prog="python -m paraphina.tracking.clean",
                        description="Mark the runs of stopped commands KILLED and delete the research rows "
                                    "that never finished.")
    add_tracking_argument(parser)
    args = parser.parse_args(argv)
    cfg = compose_config()
    uri = reachable_uri(args.tracking_uri, cfg.paths.store, cfg.tracking.reachability_timeout_s, existing=True)
    done = clean(uri, Path(cfg.paths.sweeps))
    print(f"marked {done['killed']} run(s) of stopped commands KILLED; deleted {done['rows']} research row(s) "
          f"that never finished and {done['parents']} parent run(s) of them ({uri}); removed {done['files']} "
          f"file(s) or folder(s) they left in {Path(cfg.paths.sweeps).absolute()}")


if __name__ == "__main__":
    main()
