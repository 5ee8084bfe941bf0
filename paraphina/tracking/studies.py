"""Optuna storages that many worker processes share (a journal file on one machine, PostgreSQL across machines),
each with a lock for its workers and Optuna's heartbeat (Optuna 5 beats RDBStorage only; the journal's is here)."""
from __future__ import annotations

import functools
import re
import threading
import time
import warnings
import zlib
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import optuna
from optuna.storages import BaseStorage, JournalStorage
from optuna.storages._heartbeat import BaseHeartbeat  # what fail_stale_trials asks of a storage; not re-exported
from optuna.storages.journal import BaseJournalBackend, JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from paraphina.core.errors import ParaphinaError
from paraphina.tracking.store import describe, file_lock, url_scheme

if TYPE_CHECKING:
    import sqlalchemy

StaleCallback = Callable[[optuna.Study, FrozenTrial], None]
HEARTBEAT_ATTR = "paraphina.heartbeat"   # a journal trial's last beat (Unix time)
LOCK_KEY = zlib.crc32(b"paraphina.optuna")   # the advisory lock's key: one lock per PostgreSQL database
LOCK_SUFFIX = ".workers-lock"   # beside a journal or SQLite file: the workers' lock
APPEND_LOCK_SUFFIX = ".append-lock"   # beside a journal: the lock of each append (Optuna's own is <file>.lock)
URL_SCHEMES = ("postgresql", "sqlite")


@dataclass(frozen=True)
class Heartbeat:
    """How often a worker beats its running trials, and how long without a beat makes a trial stale (seconds)."""

    interval: int
    grace_period: int


@dataclass
class SharedStorage:
    """An Optuna storage, how to name it in messages (no password), and the lock its workers change it under (a
    PostgreSQL advisory lock, else a file lock beside the file): so the schema and each study are created once
    and a study's trial budget is counted and spent by one worker at a time."""

    storage: BaseStorage
    label: str
    lock: Callable[[], AbstractContextManager[None]]
    failures: tuple[type[BaseException], ...]   # what it raises when lost (a database down, a disk full)

    @contextmanager
    def loss_stops_the_command(self) -> Iterator[None]:
        """A storage lost mid-search ends the command in one line: the completed trials are in the storage, and
        the same command resumes them once it is back."""
        try:
            yield
        except self.failures as exc:
            while exc.__cause__ is not None:   # Optuna's message is generic; the driver's says what happened
                exc = exc.__cause__
            raise ParaphinaError(f"lost the Optuna storage {self.label}: {describe(exc)}; the completed trials are "
                                 f"kept there: run the same command again once it is back") from None


@contextmanager
def quiet_heartbeat() -> Iterator[None]:
    """Optuna marks its heartbeat experimental and, with ask/tell, warns it is "supposed to be used with
    Study.optimize": both warnings are about Optuna's own loop, which the driver replaces with `TrialBeats`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        yield


class JournalHeartbeatStorage(JournalStorage, BaseHeartbeat):
    """A journal file with Optuna's heartbeat: a beat is a trial system attribute, and a trial never beaten
    counts from its start; `optuna.storages.fail_stale_trials` fails a trial whose beats stopped (a dead worker).
    One machine shares a journal file, so its clock judges every beat."""

    def __init__(self, backend: BaseJournalBackend, heartbeat: Heartbeat, on_stale: StaleCallback) -> None:
        super().__init__(backend)
        self._heartbeat, self._on_stale = heartbeat, on_stale

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        grace = self._heartbeat.grace_period
        return [t._trial_id for t in running
                if now - t.system_attrs.get(HEARTBEAT_ATTR, t.datetime_start.timestamp()) > grace]

    def get_heartbeat_interval(self) -> int:
        return self._heartbeat.interval

    def get_heartbeat_stale_trial_callback(self) -> StaleCallback:
        return self._on_stale


def _lock_path(path: Path, suffix: str = LOCK_SUFFIX) -> Path:
    path = path.absolute()
    return path.with_name(path.name + suffix)


class JournalLost(OSError):
    """An OSError of a journal's own files (the journal, its locks): a search tells it from its other files'."""


@contextmanager
def _journal_errors() -> Iterator[None]:
    try:
        yield
    except JournalLost:
        raise
    except OSError as exc:
        raise (JournalLost(*exc.args) if exc.errno is None else
               JournalLost(exc.errno, exc.strerror, exc.filename, None, exc.filename2)) from exc


class _JournalFile(JournalFileBackend):
    """A journal file whose reads and appends raise JournalLost when they fail."""

    def read_logs(self, log_number_from: int) -> Iterator[dict]:
        with _journal_errors():
            yield from super().read_logs(log_number_from)

    def append_logs(self, logs: list[dict]) -> None:
        with _journal_errors():
            super().append_logs(logs)


@contextmanager
def _workers_lock(path: Path) -> Iterator[None]:
    """The journal workers' file lock; failing to take it is JournalLost, what fails under it is not."""
    with ExitStack() as held:
        with _journal_errors():
            held.enter_context(file_lock(path))
        yield


class _AppendLock:
    """The journal's append lock as an flock: Optuna's default, a symlink, outlives a killed worker and
    blocks every other for its 30 s grace period; an flock dies with its process."""

    def __init__(self, path: Path) -> None:
        self.path, self._held = path, ExitStack()

    def acquire(self) -> bool:
        self._held.enter_context(file_lock(self.path))
        return True

    def release(self) -> None:
        self._held.close()


def _advisory_lock(engine: sqlalchemy.engine.Engine) -> Callable[[], AbstractContextManager[None]]:
    """PostgreSQL's session advisory lock on a connection of its own: the server frees it when a worker's
    connection drops, so a killed worker blocks nobody."""
    from sqlalchemy import text

    @contextmanager
    def lock() -> Iterator[None]:
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": LOCK_KEY})
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})

    return lock


def open_shared_storage(setting: str | Path, heartbeat: Heartbeat, on_stale: StaleCallback) -> SharedStorage:
    """The storage of `setting`: a postgresql:// or sqlite:/// URL (RDB, its schema created under the lock, so
    workers that start together never race on it), else a journal file path."""
    text = str(setting)
    if "://" not in text:
        return _journal(Path(text).expanduser().absolute(), heartbeat, on_stale)
    label = re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", text)
    scheme = url_scheme(text)
    if scheme not in URL_SCHEMES:
        raise ParaphinaError(f"experiment.study.storage={label}: workers share a postgresql:// or sqlite:/// "
                             f"database or a journal file path; use one of those")
    import sqlalchemy

    try:
        if scheme == "postgresql":
            lock = _advisory_lock(sqlalchemy.create_engine(text, poolclass=sqlalchemy.pool.NullPool))
        else:
            lock = functools.partial(file_lock, _lock_path(Path(sqlalchemy.engine.make_url(text).database or "")))
        with lock(), quiet_heartbeat():
            storage = optuna.storages.RDBStorage(text, heartbeat_interval=heartbeat.interval,
                                                 grace_period=heartbeat.grace_period,
                                                 heartbeat_stale_trial_callback=on_stale)
    except Exception as exc:  # drivers and databases raise many types
        raise ParaphinaError(f"cannot open the Optuna storage {label}: {describe(exc)}; "
                             f"check experiment.study.storage") from exc
    failures = (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError)
    return SharedStorage(storage, label, lock, failures)


def _journal(path: Path, heartbeat: Heartbeat, on_stale: StaleCallback) -> SharedStorage:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        backend = _JournalFile(str(path), lock_obj=_AppendLock(_lock_path(path, APPEND_LOCK_SUFFIX)))
        storage = JournalHeartbeatStorage(backend, heartbeat, on_stale)
    except OSError as exc:
        raise ParaphinaError(f"cannot open the Optuna journal {path} ({exc.strerror}); "
                             f"set experiment.study.storage to a writable file") from exc
    return SharedStorage(storage, str(path), functools.partial(_workers_lock, _lock_path(path)), (JournalLost,))


class TrialBeats:
    """A thread that beats the trials this worker runs, every heartbeat interval, until they are dropped.

    A beat on a trial another worker has meanwhile failed (this worker was judged dead) is refused by the
    storage; the trial is dropped here and its tell is refused the same way. A beat the lost storage refuses is
    skipped: the worker's next use of the storage says it is lost.
    """

    def __init__(self, shared: SharedStorage) -> None:
        self.storage, self.failures = shared.storage, shared.failures
        self.interval = shared.storage.get_heartbeat_interval()
        self._ids: set[int] = set()
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="paraphina-heartbeat", daemon=True)

    def add(self, trial_id: int) -> None:
        """Beat `trial_id` now and from now on (at once: a trial's first beat must not wait for the thread)."""
        with self._guard:
            self._ids.add(trial_id)
        self._beat(trial_id)

    def drop(self, trial_ids: Iterable[int]) -> None:
        with self._guard:
            self._ids.difference_update(trial_ids)

    def _beat(self, trial_id: int) -> None:
        try:
            self.storage.record_heartbeat(trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            self.drop([trial_id])
        except self.failures:
            pass

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._guard:
                ids = sorted(self._ids)
            for trial_id in ids:
                self._beat(trial_id)

    def __enter__(self) -> TrialBeats:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
