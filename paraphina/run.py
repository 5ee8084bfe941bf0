"""`python -m paraphina.run`: run the engine for one or many seeds (Hydra config), print and record.

    python -m paraphina.run +profile=aggressive ticks=2000 seed=7
    python -m paraphina.run runs=64 market=volatile
    python -m paraphina.run -m +profile=conservative,balanced,aggressive seed=1,2
"""
from __future__ import annotations

import atexit
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from paraphina.config.loading import (CONF_DIR, check_overrides, compose_config, env_overrides, override_key,
                                      uses_hydra_resolver, validate)
from paraphina.core.cli import cli_errors, fail
from paraphina.core.errors import ParaphinaError
from paraphina.core.names import KIND_TAG, MULTIRUN_KIND
from paraphina.runner import report
from paraphina.runner.batch import config_hash, run_batch

if TYPE_CHECKING:  # imported when tracking is on: it brings pandas, which a run without tracking does not need
    from paraphina.runner.recording import TrackingSession

# Hydra flags that take a value, so that value is not mistaken for an override.
_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-name", "-cn", "--config-path", "-cp",
                     "--config-dir", "-cd", "--info", "-i", "--experimental-rerun"}


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """(Hydra flags with their values, overrides) of a command line."""
    flags, overrides = [], []
    it = iter(argv)
    for arg in it:
        if arg.startswith("-"):
            flags.append(arg)
            if arg in _FLAGS_WITH_VALUE:
                value = next(it, None)
                if value is not None:
                    flags.append(value)
        else:
            overrides.append(arg)
    return flags, overrides


def execute(cfg: DictConfig, parent_run_id: str | None = None, job: int | None = None) -> str | None:
    """One job (number `job` of a multirun): open the tracking store, run the batch, print, record; returns the run id."""
    validate(cfg)
    session = None
    if cfg.tracking.enabled:
        from paraphina.runner.recording import TrackingSession

        session = TrackingSession.open(cfg)
    chash = config_hash(cfg)
    print(report.header(cfg, chash), flush=True)
    started = time.perf_counter()
    result, telemetry = run_batch(cfg, job=job)
    elapsed = time.perf_counter() - started
    print(report.run_summary(result) if cfg.runs == 1 else report.batch_summary(result, cfg.world_model.confidence))
    print(f"  engine         {elapsed:.2f} s for {cfg.runs} x {cfg.ticks} run-ticks")
    if telemetry:
        shown = telemetry[0] if len(telemetry) == 1 else f"{len(telemetry)} files, e.g. {telemetry[0]}"
        print(f"  telemetry      {shown}")
    if session is None:
        return None
    run_id = session.record_batch(cfg, result, chash, telemetry, parent_run_id)
    print(f"  mlflow         run {run_id} in experiment '{cfg.tracking.experiment}' ({session.uri})")
    return run_id


class MultirunParent:
    """Groups the jobs of one Hydra multirun under one parent MLflow run, ended when the process exits."""

    run_id: str | None = None
    session: TrackingSession | None = None

    @classmethod
    def get(cls, cfg: DictConfig) -> str | None:
        if cls.run_id is None and cfg.tracking.enabled:
            from hydra.core.hydra_config import HydraConfig

            from paraphina.runner.recording import TrackingSession
            from paraphina.tracking.runs import RunRecord

            cls.session = TrackingSession.open(cfg)
            sweep = Path(HydraConfig.get().sweep.dir).name
            record = RunRecord(name=f"multirun-{sweep}", tags={KIND_TAG: MULTIRUN_KIND},
                               texts={"overrides.txt": "\n".join(HydraConfig.get().overrides.task)})
            cls.run_id = cls.session.writer.start_parent(record)
            atexit.register(cls.finish)
        return cls.run_id

    @classmethod
    def finish(cls) -> None:
        if cls.run_id is not None:
            cls.session.writer.finish(cls.run_id)
            cls.run_id = None


def _job(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode == RunMode.MULTIRUN:
            execute(cfg, MultirunParent.get(cfg), job=hydra_cfg.job.num)
        else:
            execute(cfg)
    except ParaphinaError as exc:
        fail(str(exc))


def is_plain_run(flags: list[str], overrides: list[str]) -> bool:
    """No Hydra flags (--help, --cfg, -m, ...), `hydra.*` settings or `${hydra:...}` values: Hydra's app
    runner adds nothing."""
    return not flags and not uses_hydra_resolver(overrides) and not any(
        override_key(o).split(".")[0].split("/")[0] == "hydra" for o in overrides)


@cli_errors
def main() -> None:
    flags, overrides = split_argv(sys.argv[1:])
    if is_plain_run(flags, overrides):  # composed once, here, instead of once to check and again in Hydra
        execute(compose_config(overrides))
        return
    import hydra

    if not {"--help", "-h", "--hydra-help"} & set(flags):
        check_overrides(overrides)
    sys.argv = [sys.argv[0], *flags, *env_overrides(os.environ, overrides), *overrides]
    hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(_job)()


if __name__ == "__main__":
    main()
