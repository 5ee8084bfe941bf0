"""`python -m paraphina.tracking.ui` (`make ui`): the MLflow UI on the project's tracking store (a store that is
already a server is not served twice)."""
from __future__ import annotations

import errno
import os
import socket
import sys
from collections.abc import Sequence

from paraphina.config.loading import compose_config
from paraphina.core.cli import ToolParser, cli_errors, port_number, positive_int
from paraphina.core.errors import ParaphinaError
from paraphina.tracking.store import ARTIFACTS_DIR_NAME, prepare_store, reachable_uri, sqlite_path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
DEFAULT_WORKERS = 1  # one user on one machine; MLflow's default 4 workers took 29 s to start on 2 cores, 1 took 12 s


def ui_command(uri: str, host: str, port: int, workers: int = DEFAULT_WORKERS) -> list[str]:
    """The `mlflow ui` command serving a SQLite store, its artifacts beside the database."""
    path = sqlite_path(uri)
    if path is None:
        raise ParaphinaError(f"the UI serves a SQLite store; {uri} is not one")
    return [
        sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
        "--default-artifact-root", str(path.parent / ARTIFACTS_DIR_NAME), "--host", host, "--port", str(port),
        "--workers", str(workers),
    ]  # fmt: skip


def check_port_free(host: str, port: int) -> None:
    """Fail in one line when something already listens on host:port."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: TIME_WAIT is no conflict
        try:
            sock.bind((host, port))
        except OSError as exc:
            reason = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be used ({exc.strerror})"
            raise ParaphinaError(f"{host}:{port} {reason}; pass --port N (and --host H) to serve elsewhere") from None


MODEL_TRAINING_VIEW = "workflowType=machine_learning"
"""MLflow 3.17's UI opens every experiment in its GenAI view (a browser setting, not the experiment's) unless
the page's address asks for the model-training view, or "Model training" was clicked once in that browser."""


def url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def page(base: str, route: str) -> str:
    """The UI's page `route` (`experiments/1/runs`) in the model-training view."""
    return f"{base}/#/{route}?{MODEL_TRAINING_VIEW}"


@cli_errors
def main(argv: Sequence[str] | None = None) -> None:
    parser = ToolParser(
        prog="python -m paraphina.tracking.ui",
        description="Start the MLflow UI on the project's tracking store (Ctrl-C stops it).",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"interface to listen on (default: {DEFAULT_HOST})")
    parser.add_argument("--port", type=port_number, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})")
    parser.add_argument("--workers", type=positive_int, default=DEFAULT_WORKERS,
                        help=f"server worker processes (default: {DEFAULT_WORKERS})")  # fmt: skip
    parser.add_argument("--tracking-uri", metavar="URI", help="store to serve (default: $MLFLOW_TRACKING_URI, "
                        "else the project's mlruns/mlflow.db)")  # fmt: skip
    args = parser.parse_args(argv)
    cfg = compose_config()
    uri = reachable_uri(args.tracking_uri, cfg.paths.store, cfg.tracking.reachability_timeout_s)
    if uri.startswith(("http://", "https://")):
        print(f"the tracking store is already a server: open {uri}", flush=True)
        return
    check_port_free(args.host, args.port)
    prepare_store(uri, [])  # create the database once, under the store lock, before the server opens it
    command = ui_command(uri, args.host, args.port, args.workers)
    print(f"MLflow UI on {page(url(args.host, args.port), 'experiments')}  (store {uri}; Ctrl-C stops it)",
          flush=True)
    try:
        os.execv(command[0], command)  # the server replaces this process: Ctrl-C and signals reach it directly
    except OSError as exc:
        raise ParaphinaError(f"cannot start mlflow ui ({exc.strerror}); reinstall: pip install -e .") from exc


if __name__ == "__main__":
    main()
