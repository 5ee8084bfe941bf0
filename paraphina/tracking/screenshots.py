"""`python -m paraphina.tracking.screenshots`: the README's two pictures of the MLflow UI (headless Chromium, not
part of the tests), on the store in use served as `make ui` serves it, on its own port, stopped afterwards."""
from __future__ import annotations

import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from omegaconf import DictConfig

from paraphina.config.commands import hydra_command
from paraphina.core.errors import ParaphinaError
from paraphina.core.names import ENGINE_RUN_KIND, EXPERIMENT_KIND, KIND_TAG
from paraphina.tracking.store import check_reachable, reachable_uri, tracking_client
from paraphina.tracking.ui import check_port_free, page, ui_command, url


def latest_run(uri: str, experiment: str, kind: str, metric: str | None = None) -> tuple[str, str]:
    """(experiment id, run id) of the latest finished run of `kind` in `experiment` (that logged `metric`)."""
    client = tracking_client(uri)
    found = client.get_experiment_by_name(experiment)
    runs = [] if found is None else client.search_runs(
        [found.experiment_id], f"tags.`{KIND_TAG}` = '{kind}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=100)
    run = next((r for r in runs if metric is None or metric in r.data.metrics), None)
    if run is None:
        raise ParaphinaError(f"no finished {kind} run {f'with {metric} ' if metric else ''}in experiment "
                             f"'{experiment}' of {uri}; "
                             "record one first (see python -m paraphina.tracking.screenshots --help)")
    return found.experiment_id, run.info.run_id


@contextmanager
def serving(uri: str, shots: DictConfig) -> Iterator[str]:
    """The MLflow UI on `uri` while the block runs; yields its address."""
    check_port_free(shots.host, shots.port)
    base = url(shots.host, shots.port)
    server = subprocess.Popen(ui_command(uri, shots.host, shots.port), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + shots.start_timeout_s
        while True:
            try:
                check_reachable(base, 1.0)
                break
            except ParaphinaError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise ParaphinaError(f"the MLflow UI did not start on {base} within "
                                         f"{shots.start_timeout_s} s; try experiment.port=N") from None
                time.sleep(1.0)
        yield base
    finally:
        server.terminate()
        server.wait()


def screenshot(shots: DictConfig, address: str, png: Path) -> None:
    """One picture of the page at `address`, after the page has had `settle_ms` to load."""
    width, height = shots.window
    command = [shots.browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--window-size={width},{height}", f"--virtual-time-budget={shots.settle_ms}",
               f"--screenshot={png}", address]
    try:
        subprocess.run(command, check=True, capture_output=True, timeout=shots.shot_timeout_s)
    except FileNotFoundError:
        raise ParaphinaError(f"no {shots.browser} on PATH; apt-get install -y chromium, or set "
                             "experiment.browser=PATH") from None
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise ParaphinaError(f"{shots.browser} could not take {png.name} ({exc})") from None


def take(cfg: DictConfig) -> None:
    """Take the README's pictures of the UI on the store of `cfg`."""
    shots = cfg.experiment
    uri = reachable_uri(cfg.tracking.uri, cfg.paths.store, cfg.tracking.reachability_timeout_s, existing=True)
    search = latest_run(uri, cfg.experiment_names[shots.parent_of], EXPERIMENT_KIND)
    engine = latest_run(uri, cfg.tracking.experiment, ENGINE_RUN_KIND, "pnl_total")
    out = Path(shots.out)
    out.mkdir(parents=True, exist_ok=True)
    pictures = {"ui-search-parent.png": (search, "overview"), "ui-run-series.png": (engine, "model-metrics")}
    with serving(uri, shots) as base:
        for name, ((experiment_id, run_id), tab) in pictures.items():
            screenshot(shots, page(base, f"experiments/{experiment_id}/runs/{run_id}/{tab}"), out / name)
            print(f"wrote {out / name}")


main = hydra_command("screenshots", take)

if __name__ == "__main__":
    main()
