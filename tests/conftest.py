"""Shared fixtures: the base config composed once per session with few ticks, MLflow stores and servers, a
PostgreSQL server; and what keeps a session fast: the longest file first, a clean ConfigStore, a frozen heap.

Kept small and generic so any test file can use it; tests that need other overrides compose their own.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import pytest

from omegaconf import DictConfig

from paraphina.config.loading import compose_config, override_key, to_plain

if TYPE_CHECKING:
    from mlflow import MlflowClient


PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def isolated_project_outputs(tmp_path_factory):
    """The tests run in a temp folder: `paths.root` (sweeps/, the default store) is never the checkout; the
    commands they start in subprocesses import this checkout's package, whichever one the environment installs."""
    root = tmp_path_factory.mktemp("project")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(PROJECT), os.environ.get("PYTHONPATH")])))
        yield root


def pytest_collection_finish(session: pytest.Session) -> None:
    freeze_live_objects()


@pytest.hookimpl(trylast=True)   # after the file's own fixtures are torn down
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    if nextitem is None or nextitem.path != item.path:
        freeze_live_objects()


def freeze_live_objects() -> None:
    """Leave the objects alive now (modules, session fixtures, caches) out of the garbage collector's later full
    passes, which walked every one of them again each time: a tenth of a worker's time went to them. Collected
    first, so no garbage is frozen; reference counting still frees a frozen object nothing refers to."""
    import gc

    gc.collect()
    gc.freeze()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files marked `longest` first, the others in their usual order: xdist hands out files in this order, so
    one worker starts the longest file at once while the other works through the rest."""
    items.sort(key=lambda item: item.get_closest_marker("longest") is None)


@pytest.fixture(autouse=True)
def no_experiment_schemas_stored() -> None:
    """Each test starts with Hydra's ConfigStore as a command's process does, holding no experiment's schema:
    paraphina.config.experiments.register stores one the first time a process composes that experiment, and
    Hydra deep-copies every stored schema at every compose (50 ms more per compose once all are stored)."""
    from hydra.core.config_store import ConfigStore

    from paraphina.config.experiments import SCHEMAS, register

    repo = ConfigStore.instance().repo
    for name in SCHEMAS:
        repo.get("schema", {}).pop(f"{name}.yaml", None)
        repo.pop(f"{name}.yaml", None)
    register.cache_clear()   # so the next compose of an experiment stores its schema again


@pytest.fixture(scope="session")
def cfg():
    """The base config (balanced centre, default market) with ticks=50."""
    return compose_config(["ticks=50"], environ={})


def compose_for_test(overrides: Sequence[str], config_name: str, own: Sequence[str]) -> DictConfig:
    """`compose_config(overrides + own)`, where `own` are a test's own settings (its temp store, its journal) that
    `overrides` may set too (theirs win): the groups' composition is kept for the process, so tests whose stores
    differ share it."""
    given = {override_key(o) for o in overrides}
    return compose_config([*overrides, *(o for o in own if override_key(o) not in given)], config_name, environ={})


@pytest.fixture(scope="session")
def plain_cfg(cfg) -> dict:
    """`cfg` as plain Python containers (treat as read-only: it is shared by the session)."""
    return to_plain(cfg)


# --- MLflow stores for tracking tests (a fresh SQLite store per test; a real server on a free port) ---

SERVER_START_TIMEOUT_S = 90.0


@pytest.fixture
def tracking_uri(tmp_path) -> str:
    """A fresh SQLite tracking store in the test's own folder (created on first use)."""
    return f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """A SQLite store as a writing command leaves a new one (MLflow's schema, no experiment of ours), made once
    per session: MLflow migrates a new database in 1-6 s (75 schema commits, each waiting for the disk), a copy
    of it takes a millisecond. Tests about creating a store let the code create it; the others start from a copy."""
    from paraphina.tracking.store import prepare_store

    path = tmp_path_factory.mktemp("empty-store") / "mlflow.db"
    prepare_store(f"sqlite:///{path}", [])
    return path


def copy_store(empty_store: Path, db_path: Path) -> str:
    """A new store at `db_path` (its folder created if missing), a copy of `empty_store`; returns its URI."""
    import shutil

    db_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(empty_store, db_path)
    return f"sqlite:///{db_path}"


@pytest.fixture
def made_store(tmp_path, empty_store) -> str:
    """The store of `tracking_uri` (tmp_path/mlruns/mlflow.db), made already: for tests of what is recorded."""
    return copy_store(empty_store, tmp_path / "mlruns" / "mlflow.db")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(command: list[str], folder: Path, port: int) -> Iterator[str]:
    """Run an MLflow server command in `folder` (its output in server.log) until it answers /health on 127.0.0.1;
    yields its http URI and stops it afterwards."""
    import os
    import signal
    import subprocess
    import time
    import urllib.request

    uri = f"http://127.0.0.1:{port}"
    log_path = folder / "server.log"
    # without MLflow's job runner (a process and seven huey consumers, about 10 s of CPU to start, a folder left
    # in /dev/shm each time): it runs GenAI jobs, which no test asks for
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=folder,
                                  env=env)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            assert server.poll() is None, log_path.read_text()[-2000:]
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=1.0).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "mlflow server did not answer /health in time"
                time.sleep(0.2)
        yield uri
    finally:
        # nothing of the server's is read after the test, and its store is thrown away: SIGKILL at once (MLflow's
        # graceful stop on SIGTERM took 1-6 s, at the end of a worker's session for the PostgreSQL one)
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory, empty_store):
    """A real MLflow server on 127.0.0.1 (free port, SQLite backend and artifacts in a temp folder), started the
    way `make ui` starts it (`python -m paraphina.tracking.ui`) on a store made already, once per test file (a
    start costs seconds of CPU); yields its http URI and stops it afterwards."""
    import sys

    port = free_port()
    folder = tmp_path_factory.mktemp("server")
    copy_store(empty_store, folder / "mlflow.db")
    command = [sys.executable, "-m", "paraphina.tracking.ui", "--port", str(port),
               "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}"]  # fmt: skip
    with serving(command, folder, port) as uri:
        yield uri


def as_a_command(monkeypatch: pytest.MonkeyPatch, cwd: Path, **extra: str) -> None:
    """This process set up as a test starts a command (in `cwd`, no PARAPHINA_* or MLFLOW_* variable but
    `extra`), to call the command's main here."""
    monkeypatch.chdir(cwd)
    for name in [n for n in os.environ if n.startswith(("PARAPHINA_", "MLFLOW_"))]:
        monkeypatch.delenv(name)
    for name, value in extra.items():
        monkeypatch.setenv(name, value)


def experiment_runs(client: MlflowClient, name: str = "paraphina") -> list:
    """Every run of the MLflow experiment `name`, which must exist."""
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None, f"no experiment {name}"
    return client.search_runs([experiment.experiment_id], max_results=1000)


# --- PostgreSQL for the many-workers tests (a throwaway cluster on 127.0.0.1; .ci/run installs the server) ---

POSTGRES_BIN_GLOB = "/usr/lib/postgresql/*/bin"   # Debian's postgresql package keeps its server binaries here
POSTGRES_USER = "postgres"                         # the server refuses to run as root; as root it runs as this user


def postgres_bin() -> Path | None:
    """The folder holding initdb and pg_ctl: on PATH, else Debian's place for them; None when not installed."""
    import glob
    import shutil

    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    folders = sorted(glob.glob(POSTGRES_BIN_GLOB))
    return Path(folders[-1]) if folders else None


@pytest.fixture(scope="session")
def postgres_url():
    """A PostgreSQL server of its own (initdb + pg_ctl in a temp folder, trust auth on 127.0.0.1, a free port);
    yields the URL of its `postgres` database and stops it afterwards."""
    import os
    import shutil
    import subprocess
    import tempfile

    folder = postgres_bin()
    if folder is None:
        pytest.skip("PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql/*/bin); "
                    "apt-get install postgresql, as .ci/run does")
    run_as: list[str] = []
    data = tempfile.mkdtemp(prefix="paraphina-pg-")   # not under pytest's root-only folders: the user must reach it
    if os.geteuid() == 0:
        shutil.chown(data, POSTGRES_USER)
        run_as = ["runuser", "-u", POSTGRES_USER, "--"]
    port = free_port()
    log = os.path.join(data, "server.log")
    options = f"-h 127.0.0.1 -p {port} -k {data} -F"   # fsync off: a test database need not survive a crash
    try:
        subprocess.run([*run_as, str(folder / "initdb"), "-D", f"{data}/db", "-U", "postgres", "--auth=trust",
                        "--no-sync", "-E", "UTF8"], check=True, capture_output=True)
        subprocess.run([*run_as, str(folder / "pg_ctl"), "-D", f"{data}/db", "-l", log, "-o", options, "-w",
                        "start"], check=True, capture_output=True)
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*run_as, str(folder / "pg_ctl"), "-D", f"{data}/db", "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def postgres_database(postgres_url: str) -> str:
    """A new, empty database on the session's server, for one test."""
    import uuid

    import psycopg

    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return postgres_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(scope="session")
def mlflow_server_on_postgres(postgres_url: str, tmp_path_factory):
    """`mlflow server` on 127.0.0.1 as a team would run it: runs in a PostgreSQL database of its own, artifacts
    served by the server itself (--artifacts-destination: clients upload through `mlflow-artifacts:` URIs, no
    shared folder needed); yields its http URI."""
    import sys

    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute("CREATE DATABASE mlflow")
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    backend = postgres_url.rsplit("/", 1)[0] + "/mlflow"
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
               "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1"]  # fmt: skip
    with serving(command, folder, port) as uri:
        yield uri
