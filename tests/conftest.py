"""Shared fixtures: the base config composed once per session with few ticks.

Kept small and generic so any test file can use it; tests that need other overrides compose their own.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from paraphina.config.loading import compose_config, to_plain


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


@pytest.fixture(scope="session")
def cfg():
    """The base config (balanced centre, default market) with ticks=50."""
    return compose_config(["ticks=50"], environ={})


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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """A real MLflow server on 127.0.0.1 (free port, SQLite backend and artifacts under tmp_path), started the
    way `make ui` starts it (`python -m paraphina.tracking.ui`); yields its http URI and stops it afterwards."""
    import os
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    folder = tmp_path / "server"
    folder.mkdir()
    command = [sys.executable, "-m", "paraphina.tracking.ui", "--port", str(port),
               "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}"]  # fmt: skip
    log_path = folder / "server.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=folder)
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
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
