"""The parent MLflow run of a Hydra multirun, as a Hydra callback (conf/config.yaml `hydra.callbacks`); jobs read
its id from PARENT_ENV, which also reaches jobs that a launcher starts in other processes."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from paraphina.core.cli import fail
from paraphina.core.errors import ParaphinaError
from paraphina.core.names import KIND_TAG, MULTIRUN_KIND, PARENT_ENV
from paraphina.tracking.runs import RunRecord


class MultirunParent(Callback):
    """Groups the jobs of one Hydra multirun under one parent MLflow run."""

    def __init__(self) -> None:
        self.session = None
        self.run_id: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from paraphina.runner.recording import TrackingSession  # pandas (0.3 s): Hydra builds callbacks for every run

        if not config.tracking.enabled:
            return
        try:
            self.session = TrackingSession.open(config)
            record = RunRecord(name=f"multirun-{Path(config.hydra.sweep.dir).name}", tags={KIND_TAG: MULTIRUN_KIND},
                               texts={"overrides.txt": "\n".join(config.hydra.overrides.task)})
            self.run_id = self.session.writer.start_parent(record)
        except ParaphinaError as exc:
            fail(str(exc))
        os.environ[PARENT_ENV] = self.run_id

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.session is not None and self.run_id is not None:
            self.session.writer.finish(self.run_id)
            os.environ.pop(PARENT_ENV, None)
