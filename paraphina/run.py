"""`python -m paraphina.run`: run the engine for one or many seeds (Hydra config), print and record."""
from __future__ import annotations

import os

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from paraphina.config.commands import hydra_command
from paraphina.core.names import PARENT_ENV
from paraphina.runner.job import execute


def job(cfg: DictConfig) -> None:
    """One job; in a multirun, a child of the multirun's parent run (runner.multirun)."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        execute(cfg, os.environ.get(PARENT_ENV), job=hydra_cfg.job.num)
    else:
        execute(cfg)


main = hydra_command("config", job)

if __name__ == "__main__":
    main()
