"""One job of `python -m paraphina.run`: check the config, open the tracking store, run the batch, print, record."""
from __future__ import annotations

from omegaconf import DictConfig

from paraphina.config.loading import validate
from paraphina.core.stops import raise_if_stopped
from paraphina.runner import report
from paraphina.runner.batch import check_memory, config_hash, run_batch, series_every, telemetry_every
from paraphina.runner.telemetry import removed_unless_done


def execute(cfg: DictConfig, parent_run_id: str | None = None, job: int | None = None) -> str | None:
    """One job (number `job` of a multirun, under `parent_run_id`); returns the run id, None without tracking."""
    validate(cfg)
    check_memory(cfg, cfg.runs, series_every(cfg), telemetry_every(cfg))
    opening = None
    if cfg.tracking.enabled:
        from paraphina.runner.recording import open_session  # brings pandas (0.2 s), not needed without tracking

        opening = open_session(cfg)
    chash = config_hash(cfg)
    try:
        result, telemetry = run_batch(cfg, job=job, started=lambda: print(report.header(cfg, chash), flush=True))
    except BaseException:
        if opening is not None:  # a stop waits for the store's preparation: a schema half made breaks the store
            opening.exception()
        raise
    with removed_unless_done(telemetry):  # a stop while the store still opens removes them too
        session = opening.result() if opening is not None else None
        print(report.run_summary(result) if cfg.runs == 1 else report.batch_summary(result, cfg.world_model.confidence))
        print(report.engine_time(result, cfg.ticks))
        if telemetry:
            shown = telemetry[0] if len(telemetry) == 1 else f"{len(telemetry)} files, e.g. {telemetry[0]}"
            print(f"  telemetry      {shown}")
        if session is None:
            return None
        raise_if_stopped()
        run_id = session.record_batch(cfg, result, chash, telemetry, parent_run_id)
    print(f"  mlflow         run {run_id} in experiment '{cfg.tracking.experiment}' ({session.uri})")
    return run_id
