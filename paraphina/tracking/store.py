"""Where MLflow runs live: resolve the tracking URI, check it before a run starts, create the store once.
MLflow loads only where a store is opened, after `quiet_mlflow`: resolving or checking a URI costs nothing."""
from __future__ import annotations

import atexit
import fcntl
import functools
import logging
import os
import socket
import sqlite3
import urllib.error
import urllib.request
import warnings
from contextlib import closing, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from paraphina.core.errors import ParaphinaError
from paraphina.core.names import HOST_TAG, PID_STARTED_TAG, PID_TAG
from paraphina.core.stops import uninterrupted

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

SQLITE_PREFIX = "sqlite:///"
STORE_LOCK_NAME = ".store.lock"
ARTIFACTS_DIR_NAME = "artifacts"
PAGE_SIZE = 1000   # runs or experiments a search returns at once (MLflow's default)
TRACKING_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")
"""The URI schemes of MLflow's tracking stores (a database, a server); a path or a file: URI names MLflow's file
store, which MLflow 3 keeps in maintenance and refuses to open: refused here first, with the fix."""
_CHECKPOINT_AT_EXIT: set[Path] = set()  # stores whose write-ahead log this process folds back at exit


def default_tracking_uri(store: str | Path) -> str:
    """The SQLite store `mlflow.db` in the folder `store` (the config's `paths.store`), as an absolute URI."""
    return f"{SQLITE_PREFIX}{Path(store).absolute() / 'mlflow.db'}"


def url_scheme(url: str) -> str:
    """The scheme of a database or server URL without its driver: `postgresql+psycopg://...` -> `postgresql`;
    "" for a path."""
    return url.split("://", 1)[0].split("+", 1)[0] if "://" in url else ""


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (relative paths taken from the current folder), else None."""
    if not uri.startswith(SQLITE_PREFIX):
        return None
    return Path(uri[len(SQLITE_PREFIX):]).expanduser().absolute()


def resolve_tracking_uri(configured: str | None, store: str | Path) -> str:
    """The URI to use: `tracking.uri` from the config, else $MLFLOW_TRACKING_URI, else the SQLite store in `store`;
    one of a scheme MLflow cannot keep runs in stops here, for readers and writers alike."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(store)
    scheme = url_scheme(uri)
    if scheme not in TRACKING_SCHEMES:
        raise ParaphinaError(f"tracking URI {uri} has the scheme '{scheme}', which MLflow keeps no runs in; use "
                             f"sqlite:///PATH/mlflow.db or http://HOST:PORT (tracking.uri, --tracking-uri or "
                             f"MLFLOW_TRACKING_URI)")
    path = sqlite_path(uri)
    return uri if path is None else f"{SQLITE_PREFIX}{path}"


def check_reachable(uri: str, timeout_s: float) -> None:
    """Fail early, in one line, when the store is unusable: a server not answering, a folder we cannot write."""
    if uri.startswith(("http://", "https://")):
        _check_server(uri, timeout_s)
        return
    path = sqlite_path(uri)
    if path is not None:
        _check_folder(path)


def reachable_uri(tracking_uri: str | None, store: str | Path, timeout_s: float, existing: bool = False) -> str:
    """The store to write to (flag, else $MLFLOW_TRACKING_URI, else the one in `store`), checked: fails in one line.
    For reading (`existing`), a SQLite file that does not exist yet is an error."""
    uri = resolve_tracking_uri(tracking_uri, store)
    path = sqlite_path(uri)
    if existing and path is not None and not path.exists():
        raise ParaphinaError(
            f"no tracking store at {path}; record runs first or point --tracking-uri / MLFLOW_TRACKING_URI to one"
        )
    check_reachable(uri, timeout_s)
    return uri


def _check_server(uri: str, timeout_s: float) -> None:
    """Request `<uri>/health`; any failure becomes a ParaphinaError saying how to fix it."""
    fix = "start it (mlflow server ...) or unset MLFLOW_TRACKING_URI to use the local store"
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        raise ParaphinaError(f"tracking server {uri} answered /health with HTTP {exc.code}; {fix}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        text = getattr(reason, "strerror", None) or describe(reason)
        raise ParaphinaError(f"tracking server {uri} is unreachable ({text}); {fix}") from exc


def _check_folder(db_path: Path) -> None:
    """The database's folder must exist (created here) and be writable, as must the database itself."""
    folder = db_path.parent
    fix = "set tracking.uri=sqlite:////writable/path/mlflow.db or MLFLOW_TRACKING_URI"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ParaphinaError(f"tracking store folder {folder} cannot be created ({exc.strerror}); {fix}") from exc
    blocked = next((path for path in (folder, db_path) if path.exists() and not os.access(path, os.W_OK)), None)
    if blocked is not None:
        raise ParaphinaError(f"tracking store {blocked} is not writable; {fix}")


def quiet_mlflow() -> None:
    """Keep MLflow's chatter out of our output: INFO lines at database creation, its libraries' deprecations,
    and the "View run ... at" line (plus the extra run lookup behind it) at the end of every run on a server.

    Called before MLflow is first imported (every store is opened here): MLflow 3 reads
    MLFLOW_DISABLE_TELEMETRY when imported and otherwise sends usage telemetry from background threads.
    MLFLOW_DISABLE_TELEMETRY=false in the environment wins.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per table of rows read
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"mlflow\.")


def tracking_client(uri: str) -> MlflowClient:
    """An MlflowClient on `uri` with MLflow's logging quietened; MLflow caches the store behind it."""
    quiet_mlflow()
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on `path`; the system frees it when its process dies, so a killed writer blocks nobody."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def describe(exc: BaseException, limit: int = 300) -> str:
    """An exception as one short line (MLflow's messages can span many lines)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def all_runs(client: MlflowClient, experiment_ids: list[str] | None, filter_string: str = "",
             order_by: list[str] | None = None) -> list[Run]:
    """Every run a search matches in `experiment_ids` (None: every active experiment), page after page (one search
    returns a page, so a single call can truncate)."""
    from mlflow.utils import get_results_from_paginated_fn

    def every(search: Callable) -> list:
        return get_results_from_paginated_fn(lambda size, token: search(max_results=size, page_token=token), PAGE_SIZE)

    if experiment_ids is None:
        experiment_ids = [experiment.experiment_id for experiment in every(client.search_experiments)]
    return every(functools.partial(client.search_runs, experiment_ids, filter_string, order_by=order_by))


def process_identity(pid: int) -> str | None:
    """Who process `pid` is: this boot's id and the process's start time in clock ticks since boot, which no
    wall-clock step (NTP, a resumed VM) moves. None without /proc or the process; a zombie (killed, not yet
    reaped) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:   # a kernel or sandbox without it: the start ticks alone tell pids of this boot apart
        boot_id = "unknown-boot"
    return None if stat[0] == "Z" else f"{boot_id}:{stat[19]}"


def process_gone(pid: int, identity: str | None) -> bool:
    """True when no live process `pid` with `identity` (process_identity; None: any live `pid` will do) runs
    on this host. A pid reused after the writer ended, or after a reboot, has another identity."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        pass
    now = process_identity(pid)
    if now is None:
        return Path("/proc/stat").exists()   # a zombie, or gone meanwhile; without /proc the pid answering is all
    return identity is not None and now != identity


def process_tags() -> dict[str, str]:
    """The tags naming this process (host, pid, identity) that a run it writes carries."""
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
    identity = process_identity(os.getpid())
    if identity is not None:
        tags[PID_STARTED_TAG] = identity
    return tags


def mark_stopped_runs(client: MlflowClient, runs: Iterable[Run]) -> set[str]:
    """Mark KILLED the RUNNING runs among `runs` written on this host by a process that is gone (killed with -9,
    or the machine stopped): nobody else will end them. Returns their ids."""
    host, stopped = socket.gethostname(), set()
    for run in runs:
        tags = run.data.tags
        if run.info.status != "RUNNING" or tags.get(HOST_TAG) != host or not tags.get(PID_TAG, "").isdigit():
            continue
        identity = tags.get(PID_STARTED_TAG, "")   # an older store's ms value: trust the pid alone
        if process_gone(int(tags[PID_TAG]), identity if ":" in identity else None):
            client.set_terminated(run.info.run_id, "KILLED")
            stopped.add(run.info.run_id)
    return stopped


def mark_stopped_in_store(client: MlflowClient) -> int:
    """Mark every RUNNING run of a gone process on this host KILLED, found with one search; returns how many."""
    host = socket.gethostname()
    if "'" in host:
        return 0
    running = all_runs(client, None,
                       f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'")
    return len(mark_stopped_runs(client, running))


def prepare_store(uri: str, experiment_names: list[str]) -> dict[str, str]:
    """Create the store and the experiments if missing (once, under a file lock for SQLite); name -> experiment_id.
    Runs left RUNNING by a command killed on this host are marked KILLED on the way (one search)."""
    quiet_mlflow()
    from mlflow.exceptions import MlflowException

    db_path = sqlite_path(uri)
    artifacts_root = None if db_path is None else db_path.parent / ARTIFACTS_DIR_NAME  # a server decides itself
    try:
        if db_path is not None:
            db_path.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(db_path.parent / STORE_LOCK_NAME) if db_path is not None else nullcontext():
            client = tracking_client(uri)
            with uninterrupted():
                ids = {name: _experiment_id(client, uri, name, artifacts_root) for name in experiment_names}
                mark_stopped_in_store(client)
            if db_path is not None:
                use_write_ahead_log(db_path)
            return ids
    except (MlflowException, OSError) as exc:
        raise ParaphinaError(f"cannot prepare the tracking store {uri}: {describe(exc)}") from exc


def use_write_ahead_log(db_path: Path) -> None:
    """Switch the SQLite store to write-ahead logging (the database file keeps the setting).

    A commit then appends to one log file instead of journalling and rewriting pages, and a run's record
    takes several commits: this cuts the tracking cost per run by about a quarter, more when the disk is
    busy, with the same durability. Readers (the UI) also no longer wait for writers. A store that another
    process is writing cannot switch now; it keeps its journal mode and switches another time. At exit the
    log is folded into the database, so the database file alone holds every run.
    """
    try:
        with closing(sqlite3.connect(db_path)) as connection:
            connection.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError:  # locked by a writer: the rollback journal still works
        return
    if db_path not in _CHECKPOINT_AT_EXIT:
        _CHECKPOINT_AT_EXIT.add(db_path)
        atexit.register(checkpoint_write_ahead_log, db_path)


def checkpoint_write_ahead_log(db_path: Path) -> None:
    """Copy the log's committed pages into the database and empty the log (best effort: a busy store keeps
    them in the log, where every reader still finds them)."""
    try:
        with closing(sqlite3.connect(db_path)) as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.Error:
        pass


def _experiment_id(client: MlflowClient, uri: str, name: str, artifacts_root: Path | None) -> str:
    """The id of the active experiment `name`; when missing it is created, its artifacts in `artifacts_root/name`."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = None if artifacts_root is None else str(artifacts_root / name)
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException:  # created meanwhile by another client of the same server
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        raise ParaphinaError(
            f"experiment '{name}' is deleted in {uri}; restore it "
            f"(mlflow experiments restore -x {experiment.experiment_id}) or use another experiment name"
        )
    return experiment.experiment_id
