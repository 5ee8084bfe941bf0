"""Commands stopped for real (SIGINT, SIGTERM, SIGKILL at seeded points of their recording), in subprocesses on a
temp SQLite store: afterwards every dataset reads, no run stays RUNNING, and a rerun gives the uninterrupted rows."""
from __future__ import annotations

import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import copy_store
from paraphina import run as run_command
from paraphina.core.errors import ParaphinaError
from paraphina.core.names import DATASET_TAG, PARENT_TAG, PID_TAG
from paraphina.core.stops import Stopped, raise_if_stopped, stop_signals, uninterrupted
from paraphina.experiments import exp13
from paraphina.research import summary, transfer
from paraphina.tracking import clean
from paraphina.tracking.datasets import load_dataset, research_writer, row_to_record
from paraphina.tracking.runs import RunRecord
from paraphina.tracking.store import prepare_store, process_gone, process_identity, tracking_client

STOP_TIMEOUT_S = 120
RECORD_EXP13 = ["ticks=60", "runs_per_profile=3", "dataset=stops", "telemetry.every=20"]
RECORD_BATCH = ["runs=30", "ticks=50", "seed=11", "dataset=batch"]
VARYING = ["timestamp_utc", "telemetry_path"]  # when and where a row was written, not what it measured


def store_uri(folder: Path) -> str:
    return f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"


def rows_written(db: Path) -> int:
    """Research rows in the store so far, read straight from SQLite while the command writes."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as connection:
            return connection.execute("select count(*) from tags where key = ?", (DATASET_TAG,)).fetchone()[0]
    except sqlite3.OperationalError:  # no store, or its schema not made yet
        return 0


def stop_after_rows(args: list[str], folder: Path, signum: int, rows: int) -> subprocess.CompletedProcess:
    """Run `python -m ARGS` in `folder` and send `signum` once `rows` research rows
    are in its store (`store_uri(folder)`); returns the finished process with its output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PARAPHINA_", "MLFLOW_"))}
    env["MLFLOW_TRACKING_URI"] = store_uri(folder)
    process = subprocess.Popen([sys.executable, "-m", *args], cwd=folder, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    db = folder / "mlruns" / "mlflow.db"
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while rows_written(db) < rows and process.poll() is None:
        assert time.monotonic() < deadline, "the command recorded too few rows in time"
        time.sleep(0.02)
    assert process.poll() is None, f"the command ended before {rows} rows: {process.communicate()}"
    process.send_signal(signum)
    out, err = process.communicate(timeout=STOP_TIMEOUT_S)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def statuses(uri: str) -> dict[str, int]:
    client = tracking_client(uri)
    counts: dict[str, int] = {}
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id], max_results=5000):
            counts[run.info.status] = counts.get(run.info.status, 0) + 1
    return counts


def same_rows(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    """The rows measured the same, whatever order, time and telemetry folder they were written with."""
    def canonical(rows: pd.DataFrame) -> pd.DataFrame:
        kept = rows.drop(columns=VARYING)
        return kept.sort_values(list(kept.columns)).reset_index(drop=True)

    assert len(got) == len(expected)
    pd.testing.assert_frame_equal(canonical(got), canonical(expected))


def stopped_line(err: str, name: str) -> str:
    """The one line a stopped command prints: no traceback."""
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("note:", "\r"))]
    assert "Traceback" not in err and len(lines) >= 1, err
    assert lines[-1].startswith(f"error: stopped by {name}"), err
    return lines[-1]


@pytest.fixture(scope="module")
def uninterrupted_rows(tmp_path_factory, empty_store: Path) -> dict[str, pd.DataFrame]:
    """The rows of each command run once without a stop, in a store of its own."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    uri = copy_store(empty_store, folder / "mlruns" / "mlflow.db")
    exp13.main([*RECORD_EXP13, f"tracking.uri={uri}", f"paths.root={folder}"])
    expected = {"exp13": load_dataset(uri, "stops")}
    run_command.main([*RECORD_BATCH, f"tracking.uri={uri}"])
    expected["batch"] = load_dataset(uri, "batch")
    return expected


def test_sigint_during_exp13_marks_its_runs_killed_and_removes_its_telemetry(tmp_path: Path, made_store: str,
                                                                            uninterrupted_rows, capsys):
    rows = random.Random(13).randint(1, 8)
    done = stop_after_rows(["paraphina.experiments.exp13", *RECORD_EXP13], tmp_path, signal.SIGINT, rows)
    line = stopped_line(done.stderr, "SIGINT")
    assert done.returncode == 128 + signal.SIGINT and "marked KILLED" in line and "finished runs are recorded" in line
    uri = made_store
    assert "RUNNING" not in statuses(uri)
    telemetry = tmp_path / "sweeps" / "exp13" / "telemetry"
    assert not telemetry.exists() or not any(telemetry.rglob("*.jsonl*"))

    with pytest.raises(SystemExit):
        summary.main(["--dataset", "stops", "--tracking-uri", uri])  # the stopped rows never count
    assert "no finished rows" in capsys.readouterr().err
    exp13.main([*RECORD_EXP13, f"tracking.uri={uri}"])
    capsys.readouterr()
    same_rows(load_dataset(uri, "stops"), uninterrupted_rows["exp13"])
    assert "skipped" in capsys.readouterr().err   # the stopped command's rows are skipped with one line ...
    clean.main(["--tracking-uri", uri])
    same_rows(load_dataset(uri, "stops"), uninterrupted_rows["exp13"])
    assert "skipped" not in capsys.readouterr().err   # ... until the clean removes them


def test_sigterm_during_a_batch_record_and_a_rerun_replaces_rather_than_doubles(tmp_path: Path, made_store: str,
                                                                              uninterrupted_rows):
    rows = random.Random(14).randint(1, 25)
    telemetry = ["telemetry.mode=jsonl", "telemetry.path=sweeps/t/run.jsonl"]
    done = stop_after_rows(["paraphina.run", *RECORD_BATCH, *telemetry], tmp_path,
                           signal.SIGTERM, rows)
    assert done.returncode == 128 + signal.SIGTERM and "marked KILLED" in stopped_line(done.stderr, "SIGTERM")
    assert not list((tmp_path / "sweeps").rglob("*.jsonl*"))
    uri = made_store
    assert "RUNNING" not in statuses(uri)
    for _ in range(2):
        run_command.main([*RECORD_BATCH, f"tracking.uri={uri}"])
        same_rows(load_dataset(uri, "batch"), uninterrupted_rows["batch"])


def test_sigkill_during_an_import_adds_no_rows_and_the_next_command_ends_its_runs(tmp_path: Path, made_store: str,
                                                                                 capsys):
    source = tmp_path / "original.jsonl"
    lines = [{"timestamp_utc": f"2025-03-01T10:{i // 60:02d}:{i % 60:02d}Z", "label": f"r{i:03d}",
              "profile": "balanced", "num_ticks": 2000, "final_pnl": float(i), "max_drawdown": 1.0 + i,
              "kill_switch": False} for i in range(60)]
    lines.append(lines[0])  # a row the file holds twice is two rows
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    rows = random.Random(15).randint(1, 50)
    done = stop_after_rows(["paraphina.research.transfer", "import", "--input", str(source), "--dataset", "v"],
                           tmp_path, signal.SIGKILL, rows)
    assert done.returncode == -signal.SIGKILL
    uri = made_store
    assert statuses(uri).get("RUNNING", 0) >= 1

    transfer.main(["import", "--input", str(source), "--dataset", "other", "--tracking-uri", uri])
    assert "RUNNING" not in statuses(uri)   # the next command that opens the store ends the killed one's runs
    capsys.readouterr()
    transfer.main(["import", "--input", str(source), "--dataset", "v", "--tracking-uri", uri])
    assert len(load_dataset(uri, "v")) == len(lines)
    transfer.main(["import", "--input", str(source), "--dataset", "v", "--tracking-uri", uri])
    assert f"imported 0 rows from {source} into dataset 'v'; {len(lines)} already there" in capsys.readouterr().out
    exported = tmp_path / "export.jsonl"
    transfer.main(["export", "--dataset", "v", "--out", str(exported), "--tracking-uri", uri])
    assert len(exported.read_text().splitlines()) == len(lines)


def test_a_run_of_a_gone_process_is_marked_killed_and_its_rows_removed(made_store: str, capsys):
    uri = made_store
    writer = research_writer(uri)
    parent = writer.start_parent(RunRecord(name="import-gone"))
    row = {"timestamp_utc": "2025-01-01T00:00:00Z", "label": "a", "profile": "balanced", "num_ticks": 10,
           "final_pnl": 1.0, "max_drawdown": 1.0, "kill_switch": False}
    writer.log(row_to_record(row, "gone", "a"), parent)
    writer.log(row_to_record({**row, "label": "b"}, "kept", "b"))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    client = tracking_client(uri)
    client.set_tag(parent, PID_TAG, str(dead.pid))
    assert client.get_run(parent).info.status == "RUNNING"

    prepare_store(uri, ["research"])   # what every writing command does first
    assert client.get_run(parent).info.status == "KILLED"
    with pytest.raises(SystemExit):
        summary.main(["--dataset", "gone", "--tracking-uri", uri])
    assert "skipped the rows of 1 run(s)" in capsys.readouterr().err
    clean.main(["--tracking-uri", uri])
    assert "deleted 1 research row(s) that never finished and 1 parent run(s)" in capsys.readouterr().out
    assert [r.data.tags[PARENT_TAG] for r in client.search_runs([client.get_run(parent).info.experiment_id])
            if PARENT_TAG in r.data.tags] == []
    assert len(load_dataset(uri, "kept")) == 1


def test_rows_read_under_a_parent_count_while_it_runs_and_never_once_it_was_stopped(made_store: str, capsys) -> None:
    uri = made_store
    writer = research_writer(uri)
    row = {"timestamp_utc": "2025-01-01T00:00:00Z", "label": "a", "profile": "balanced", "num_ticks": 10,
           "final_pnl": 1.0, "max_drawdown": 1.0, "kill_switch": False}
    running = writer.start_parent(RunRecord(name="exp13-running"))   # this process: alive
    writer.log(row_to_record(row, "live", "a"), running)
    assert len(load_dataset(uri, "live", under=running)) == 1   # the command writing them reads its own rows
    stopped = writer.start_parent(RunRecord(name="exp13-stopped"))
    writer.log(row_to_record({**row, "label": "b"}, "dead", "b"), stopped)
    writer.finish(stopped, status="KILLED")
    with pytest.raises(ParaphinaError, match="has no finished rows"):
        load_dataset(uri, "dead", under=stopped)   # e.g. exp11 filter.source_run=<a killed exp13>


def test_clean_removes_the_files_of_stopped_commands_only(tmp_path: Path, made_store: str) -> None:
    uri = made_store
    writer = research_writer(uri)
    killed = writer.start_parent(RunRecord(name="exp13-killed"))
    writer.finish(killed, status="KILLED")
    finished = writer.start_parent(RunRecord(name="exp13-done"))
    writer.finish(finished)
    sweeps = tmp_path / "sweeps"
    job = sweeps / "multirun" / "2026-12-02_03-00-00" / "1"   # an exp13 job of a multirun keeps its own folder
    for folder in (sweeps, job):
        for run_id in (killed, finished):
            (folder / "exp13" / "telemetry" / run_id).mkdir(parents=True)
            (folder / "exp13" / "telemetry" / run_id / "balanced_s0.jsonl.gz").write_bytes(b"x")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    gone = sweeps / "manual" / f"run.jsonl.{dead.pid}@{host}.part"
    older = sweeps / "manual" / f"old.jsonl.{dead.pid}.part"          # an older part, named by its pid alone
    live = sweeps / "manual" / f"other.jsonl.{os.getpid()}@{host}.part"   # a batch of a process still writing it
    elsewhere = sweeps / "manual" / f"far.jsonl.{dead.pid}@another-host.part"   # that pid lives on there
    half_table = sweeps / "exp04" / f".exp04_risk_regime.csv.{dead.pid}@{host}.{'a' * 32}.tmp"   # core.files
    writing = sweeps / "exp04" / f".exp04_risk_regime.csv.{os.getpid()}@{host}.{'b' * 32}.tmp"
    gone.parent.mkdir(parents=True)
    half_table.parent.mkdir(parents=True, exist_ok=True)
    for path in (gone, older, live, elsewhere, half_table, writing):
        path.write_text("{}\n")
    done = clean.clean(uri, sweeps)
    assert done["files"] == 5
    assert not gone.exists() and not older.exists() and live.exists() and elsewhere.exists()
    assert not half_table.exists() and writing.exists()
    for folder in (sweeps, job):
        assert sorted(p.name for p in (folder / "exp13" / "telemetry").iterdir()) == [finished]


def test_a_live_process_is_told_from_a_reused_pid() -> None:
    identity = process_identity(os.getpid())
    boot_id, ticks = identity.split(":")
    assert boot_id == Path("/proc/sys/kernel/random/boot_id").read_text().strip() and ticks.isdigit()
    assert not process_gone(os.getpid(), identity) and not process_gone(os.getpid(), None)
    assert process_gone(os.getpid(), f"{boot_id}:{int(ticks) - 1}")   # that pid, started earlier: another process
    assert process_gone(os.getpid(), f"another-boot:{ticks}")         # ... or on an earlier boot
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert process_gone(child.pid, None) and process_identity(child.pid) is None


def test_a_stop_signal_waits_for_the_write_in_progress() -> None:
    done = []
    with stop_signals(), pytest.raises(Stopped) as stopped:
        with uninterrupted():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the handler has run meanwhile and deferred the stop
            done.append("written")
    assert done == ["written"] and stopped.value.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL   # the command's handlers are gone after it


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")   # the lost Stopped, as reported
def test_a_stop_lost_in_a_finalizer_is_raised_again_between_steps() -> None:
    """Python prints and drops an exception raised in `__del__` (or a garbage-collector callback): the stop is
    raised again at the command's next step, so Ctrl-C never lets a command run on to exit 0."""
    class Finalized:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)   # the handler runs here, inside the finalizer

    went_on = []
    with stop_signals():
        with pytest.raises(Stopped) as stopped:
            Finalized()   # dropped at once: its __del__ raises Stopped, which Python ignores
            went_on.append(True)   # as after a stop lost in MLflow's callbacks
            raise_if_stopped()
    assert went_on and stopped.value.signum == signal.SIGINT
    with stop_signals():   # the next command of the process starts afresh
        raise_if_stopped()


def test_a_stopped_search_exits_as_a_shell_reports_the_signal_and_says_what_it_kept(
        tmp_path: Path, made_store: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """SIGTERM mid-round: exit status 143 and `stopped by SIGTERM`, then the trials kept and how to resume."""
    from paraphina.experiments import exp03
    from paraphina.experiments.records import ExperimentRecorder

    record, recorded = ExperimentRecorder.log_point, []

    def stop_at_the_second(self: ExperimentRecorder, *args: object, **kwargs: object) -> str:
        recorded.append(record(self, *args, **kwargs))
        if len(recorded) == 2:   # recorded, not yet told
            os.kill(os.getpid(), signal.SIGTERM)
        return recorded[-1]

    monkeypatch.setattr(ExperimentRecorder, "log_point", stop_at_the_second)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        exp03.main(["experiment.batch_size=4", "ticks=60", "seeds=2", f"tracking.uri={made_store}",
                    f"experiment.study.storage={tmp_path / 'optuna.journal'}"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_.value.code == 128 + signal.SIGTERM
    assert err.startswith("error: stopped by SIGTERM; 1 completed trials are saved in the studies "
                          "exp03-grid-60x2-balanced; run the same command again to resume"), err
