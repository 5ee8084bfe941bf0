"""Many workers on one study, for real: worker processes on a journal file and on PostgreSQL, one of them killed.

Three `python -m paraphina.experiments.exp03` processes share one TPE study: two start together, the third
once trials are running, and after all three have joined, one holding running trials is killed (SIGKILL).
The other two finish the study: the budget met exactly, no parameter set twice, each of the dead worker's
trials failed by the heartbeat and asked again with its knobs, one MLflow child per completed trial under
one parent, and neither survivor crashes. On one machine the workers record to a SQLite store beside the
journal; across machines, to an `mlflow server` on PostgreSQL that stores the artifacts they upload.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

import optuna
import pandas as pd
import psycopg
import pytest
from mlflow import MlflowClient
from omegaconf import DictConfig
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from paraphina.config.loading import compose_config
from paraphina.core.errors import ParaphinaError
from paraphina.core.names import PARENT_TAG, STUDY_TAG, TRIAL_TAG
from paraphina.experiments import exp03
from paraphina.experiments import study as search
from paraphina.experiments.records import ExperimentRecorder
from paraphina.tracking.studies import Heartbeat, open_shared_storage

ROOT = Path(__file__).resolve().parents[1]
TRIALS = 6
STUDY = "workers-balanced"
# Rounds (2 trials x 2 seeds x 900k ticks) last longer than a worker takes to start, so the third worker joins
# while the first two run their first rounds and the kill finds running trials; the budget is little more than
# those first rounds, so the survivors' work after the kill is about one round: the dead worker's trials, asked
# again 2 s after its last beat (beats every second), beside the last trials of the budget.
WORKER = ["experiment.sampler=tpe", f"experiment.n_trials={TRIALS}", "experiment.batch_size=2", "ticks=900000",
          "seeds=2", "execution.threads=1", "experiment.study.name=workers", "experiment.study.heartbeat_interval=1",
          "experiment.study.grace_period=2", "experiment.study.wait_interval=0.2"]
DEADLINE_S = 90.0
POLL_S = 0.05

pytestmark = pytest.mark.longest   # about 80 s, mostly its worker processes: started first (tests/conftest.py)


def start_worker(tmp_path: Path, storage: str, tracking: str, name: str,
                 overrides: Sequence[str] = WORKER) -> subprocess.Popen:
    """`python -m paraphina.experiments.exp03` of this checkout in tmp_path, its output in <name>.log."""
    log = open(tmp_path / f"{name}.log", "wb")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    command = [sys.executable, "-m", "paraphina.experiments.exp03", *overrides,
               f"tracking.uri={tracking}", f"experiment.study.storage={storage}"]
    with log:
        return subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_for(condition: Callable[[], object], what: str) -> object:
    deadline = time.monotonic() + DEADLINE_S
    while not (found := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(POLL_S)
    return found


def run_three_workers(tmp_path: Path, storage: str, tracking: str,
                      reader: optuna.storages.BaseStorage) -> tuple[int, list[int]]:
    """Start two workers, a third once trials run, kill one holding running trials after all have joined.

    Returns the killed worker's pid and the exit codes of the others."""
    def trials(*states: TrialState) -> list[optuna.trial.FrozenTrial]:
        try:
            return optuna.load_study(study_name=STUDY, storage=reader).get_trials(deepcopy=False, states=states)
        except KeyError:  # not created yet
            return []

    workers = [start_worker(tmp_path, storage, tracking, name) for name in ("a", "b")]
    wait_for(lambda: trials(TrialState.RUNNING), "a running trial")
    workers.append(start_worker(tmp_path, storage, tracking, "c"))
    joined = lambda: optuna.load_study(study_name=STUDY, storage=reader).user_attrs[search.WORKERS_ATTR] == 3
    wait_for(joined, "the third worker to join")
    by_worker = {f"{socket.gethostname()}:{w.pid}": w for w in workers}
    victim = wait_for(lambda: next((by_worker[t.user_attrs[search.WORKER_ATTR]] for t in trials(TrialState.RUNNING)
                                    if search.WORKER_ATTR in t.user_attrs), None), "a worker with running trials")
    victim.send_signal(signal.SIGKILL)
    codes = []
    for worker in workers:
        try:
            code = worker.wait(timeout=DEADLINE_S)
        finally:
            worker.kill()
        if worker is not victim:
            codes.append(code)
    return victim.pid, codes


def check_study(tmp_path: Path, reader: optuna.storages.BaseStorage, tracking: str, victim: int,
                codes: list[int]) -> list:
    """The study and its MLflow records after the run; returns the child runs."""
    logs = {path.name: path.read_text() for path in tmp_path.glob("*.log")}
    assert codes == [0, 0], logs
    assert not [name for name, text in logs.items() if "Traceback" in text], logs
    trials = optuna.load_study(study_name=STUDY, storage=reader).trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == TRIALS
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    knobs = [tuple(sorted(t.params.items())) for t in complete]
    assert len(set(knobs)) == TRIALS   # TPE draws continuous knobs: any repeat is two workers asking the same
    failed = [t for t in trials if t.state == TrialState.FAIL]
    owners = {t.user_attrs[search.WORKER_ATTR].rsplit(":", 1)[1] for t in failed}
    assert failed and owners == {str(victim)}   # only the killed worker's trials failed, none of the live ones
    retried = {t.user_attrs[search.RETRY_ATTR]: t for t in complete if search.RETRY_ATTR in t.user_attrs}
    assert sorted(retried) == sorted(t.number for t in failed)   # each asked again once, with its knobs
    assert all(retried[t.number].params == t.params for t in failed)
    assert {t.user_attrs[search.WORKER_ATTR] for t in complete} - {f"{socket.gethostname()}:{victim}"}

    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("exp03_size_eta_vol")
    parents = client.search_runs([experiment.experiment_id], "tags.`paraphina.kind` = 'experiment'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = client.search_runs([experiment.experiment_id], f"tags.`{PARENT_TAG}` = '{parents[0].info.run_id}'",
                                  max_results=1000)
    assert sorted(int(r.data.tags[TRIAL_TAG]) for r in children) == sorted(t.number for t in complete)
    assert {r.data.tags[STUDY_TAG] for r in children} == {STUDY}
    assert {r.info.run_id for r in children} == {t.user_attrs[search.RESULT_ATTR]["run_id"] for t in complete}
    return children


def test_workers_share_a_journal_study(tmp_path: Path, made_store: str) -> None:
    # the store made already: processes creating one together are test_research_tools' concurrent recorders
    journal, tracking = tmp_path / "optuna.journal", made_store
    reader = optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
    victim, codes = run_three_workers(tmp_path, str(journal), tracking, reader)
    check_study(tmp_path, reader, tracking, victim, codes)


def test_workers_split_a_grid(tmp_path: Path, made_store: str) -> None:
    """Grid workers share one sampler seed (it fixes the grid's order) and still take distinct points."""
    journal = tmp_path / "optuna.journal"
    # rounds of ~0.4 s, so both workers are up before the 9 points are done
    grid = ["experiment.space.eta.values=[0.05,0.1,0.2]", "experiment.space.vol_ref.values=[1e-4,2e-4,4e-4]",
            "experiment.batch_size=2", "ticks=300000", "seeds=2", "execution.threads=1", "experiment.study.name=grid"]
    workers = [start_worker(tmp_path, str(journal), made_store, name, grid) for name in ("a", "b")]
    assert [w.wait(timeout=DEADLINE_S) for w in workers] == [0, 0], [p.read_text() for p in tmp_path.glob("*.log")]
    trials = optuna.load_study(study_name="grid-balanced",
                               storage=optuna.storages.JournalStorage(JournalFileBackend(str(journal)))).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 9
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 9
    assert len({t.user_attrs[search.WORKER_ATTR] for t in trials}) == 2   # both took part


def test_workers_share_a_postgresql_study_and_an_mlflow_server(tmp_path: Path, postgres_database: str,
                                                                mlflow_server_on_postgres: str) -> None:
    reader = optuna.storages.RDBStorage(postgres_database)   # the schema was created by the workers, under the lock
    victim, codes = run_three_workers(tmp_path, postgres_database, mlflow_server_on_postgres, reader)
    children = check_study(tmp_path, reader, mlflow_server_on_postgres, victim, codes)
    # every child's per-seed table went through the server, and reads back through it
    assert {r.info.artifact_uri.split(":", 1)[0] for r in children} == {"mlflow-artifacts"}
    client = MlflowClient(mlflow_server_on_postgres)
    for run in children[:3]:
        table = pd.read_csv(client.download_artifacts(run.info.run_id, "per_seed.csv", str(tmp_path)))
        assert list(table["seed"]) == [0, 1] and table["eta"].iloc[0] == float(run.data.params["engine.mm.size_eta"])


def small_search(tmp_path: Path, storage: str, tracking: str, name: str, *overrides: str) -> DictConfig:
    """An in-process Exp03 TPE search of tiny trials, two a round, on `storage`, recording to `tracking`."""
    return compose_config(["experiment.sampler=tpe", "experiment.batch_size=2", "ticks=60", "seeds=2",
                           f"experiment.study.name={name}", "experiment.study.wait_interval=0.1",
                           f"experiment.study.storage={storage}", f"tracking.uri={tracking}", f"paths.root={tmp_path}",
                           *overrides], "exp03", environ={})


def test_a_trial_whose_worker_died_before_its_first_beat_is_asked_again(tmp_path: Path, postgres_database: str,
                                                                        made_store: str) -> None:
    """On PostgreSQL the heartbeat never fails a running trial that has no beat; the next worker does."""
    def cfg(n_trials: int):
        return small_search(tmp_path, postgres_database, made_store, "early", f"experiment.n_trials={n_trials}")

    exp03.run(cfg(2))
    dead = optuna.load_study(study_name="early-balanced", storage=optuna.storages.RDBStorage(postgres_database)).ask()

    def hung(*_: object) -> None:
        raise TimeoutError("the worker waits on a trial no one runs")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    try:
        outcome = exp03.run(cfg(4))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    trials = optuna.load_study(study_name="early-balanced", storage=optuna.storages.RDBStorage(postgres_database)).trials
    assert trials[dead.number].state == TrialState.FAIL and len(outcome.table) == 4
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 4 and not [
        t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def test_a_lost_database_stops_the_search_in_one_line_and_the_rerun_resumes(
        tmp_path: Path, postgres_url: str, postgres_database: str, made_store: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The study's database goes away after the third trial is recorded: the worker's beats skip, its next use of
    the storage ends the command in one line; once the database is back the same command completes the study."""
    database = postgres_database.rsplit("/", 1)[1]

    def connections(allowed: bool) -> None:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS {str(allowed).lower()}")
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [database])

    record, recorded, thread_errors = ExperimentRecorder.log_point, [], []

    def lose_the_database_at_the_third(self: ExperimentRecorder, *args: object, **kwargs: object) -> str:
        recorded.append(record(self, *args, **kwargs))
        if len(recorded) == 3:
            connections(False)
            time.sleep(1.5)   # past a heartbeat interval: the beat thread meets the lost database first
        return recorded[-1]

    overrides = ("experiment.n_trials=6", "experiment.study.heartbeat_interval=1", "experiment.study.grace_period=2")
    monkeypatch.setattr(ExperimentRecorder, "log_point", lose_the_database_at_the_third)
    monkeypatch.setattr(threading, "excepthook", thread_errors.append)
    with pytest.raises(ParaphinaError, match=f"lost the Optuna storage {postgres_database}: .*(terminating connection|"
                                             "not currently accepting connections).*run the same command again"):
        exp03.run(small_search(tmp_path, postgres_database, made_store, "lost", *overrides))
    assert thread_errors == [] and len(recorded) == 3
    monkeypatch.setattr(ExperimentRecorder, "log_point", record)
    connections(True)
    outcome = exp03.run(small_search(tmp_path, postgres_database, made_store, "lost", *overrides))
    trials = optuna.load_study(study_name="lost-balanced", storage=optuna.storages.RDBStorage(postgres_database)).trials
    complete = [tuple(sorted(t.params.items())) for t in trials if t.state == TrialState.COMPLETE]
    assert len(outcome.table) == 6 and len(set(complete)) == len(complete) == 6


def test_a_lost_journal_stops_the_search_in_one_line_and_another_files_error_is_its_own(
        tmp_path: Path, made_store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The journal turns into a folder after the third trial is recorded: the search ends saying the storage is
    lost, and resumes once the file is back. A failing write of another file is not called a lost storage."""
    journal = tmp_path / "studies.journal"
    record, recorded = ExperimentRecorder.log_point, []
    settings = ("experiment.n_trials=6", "experiment.study.heartbeat_interval=1", "experiment.study.grace_period=2")

    def lose_the_journal_at_the_third(self: ExperimentRecorder, *args: object, **kwargs: object) -> str:
        recorded.append(record(self, *args, **kwargs))
        if len(recorded) == 3:
            journal.rename(tmp_path / "aside.journal")
            journal.mkdir()
        return recorded[-1]

    monkeypatch.setattr(ExperimentRecorder, "log_point", lose_the_journal_at_the_third)
    with pytest.raises(ParaphinaError, match=f"lost the Optuna storage {journal}: .*run the same command again"):
        exp03.run(small_search(tmp_path, str(journal), made_store, "journal", *settings))
    journal.rmdir()
    (tmp_path / "aside.journal").rename(journal)

    def disk_full(self: ExperimentRecorder, *args: object, **kwargs: object) -> str:
        raise OSError(28, "No space left on device", str(tmp_path / "per_seed.csv"))

    monkeypatch.setattr(ExperimentRecorder, "log_point", disk_full)
    with pytest.raises(OSError, match="No space left on device") as error:
        exp03.run(small_search(tmp_path, str(journal), made_store, "journal", *settings))
    assert not isinstance(error.value, ParaphinaError)
    monkeypatch.setattr(ExperimentRecorder, "log_point", record)
    outcome = exp03.run(small_search(tmp_path, str(journal), made_store, "journal", *settings))
    assert len(outcome.table) == 6


def test_the_journal_workers_lock_is_the_storage_but_the_work_under_it_is_not(tmp_path: Path) -> None:
    shared = open_shared_storage(tmp_path / "studies.journal", Heartbeat(1, 2), lambda *_: None)
    with pytest.raises(OSError, match="No space left") as error, shared.loss_stops_the_command(), shared.lock():
        raise OSError(28, "No space left on device", str(tmp_path / "table.csv"))
    assert not isinstance(error.value, ParaphinaError)
    lock = tmp_path / "studies.journal.workers-lock"
    lock.unlink()
    lock.mkdir()   # the lock cannot be taken: its file is a folder
    with pytest.raises(ParaphinaError, match="lost the Optuna storage .*studies.journal: .*Is a directory"):
        with shared.loss_stops_the_command(), shared.lock():
            pass


@pytest.mark.parametrize("overrides, message", [
    (["experiment.study.heartbeat_interval=5", "experiment.study.grace_period=5"],
     "heartbeat_interval=5 and grace_period=5 need 0 < heartbeat_interval < grace_period"),
    (["experiment.study.storage=mysql://user:secret@db/optuna"],
     "storage=mysql://user:\\*\\*\\*@db/optuna: workers share a postgresql:// or sqlite:/// database"),
    (["experiment.study.wait_interval=0"], "wait_interval=0.0 must be a positive number of seconds"),
])
def test_bad_study_settings_stop_in_one_line(tmp_path: Path, overrides: list[str], message: str) -> None:
    cfg = compose_config([f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"paths.root={tmp_path}", *overrides],
                         "exp03", environ={})
    with pytest.raises(ParaphinaError, match=message) as error:
        exp03.run(cfg)
    assert "\n" not in str(error.value) and not (tmp_path / "mlflow.db").exists()


def test_a_server_with_the_local_journal_is_pointed_out(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    server = ["tracking.uri=http://127.0.0.1:5000", f"paths.root={tmp_path}"]
    search.print_storage_note(compose_config(server, "exp09", environ={}))
    assert "studies to this machine's journal" in capsys.readouterr().out
    search.print_storage_note(compose_config([*server, "experiment.study.storage=postgresql://db/optuna"], "exp09",
                                             environ={}))
    assert capsys.readouterr().out == ""
