"""`python -m paraphina.run`: run the engine for one or many seeds (Hydra config), print and record.

    python -m paraphina.run +profile=aggressive ticks=2000 seed=7
    python -m paraphina.run runs=64 market=volatile
    python -m paraphina.run -m +profile=conservative,balanced,aggressive seed=1,2
"""
from __future__ import annotations

import os
import sys

from omegaconf import DictConfig

from paraphina.config.loading import (CONF_DIR, check_overrides, compose_config, env_overrides, override_key,
                                      uses_hydra_resolver)
from paraphina.core.cli import cli_errors, fail
from paraphina.core.errors import ParaphinaError
from paraphina.core.names import PARENT_ENV
from paraphina.runner.job import execute

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


def _job(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode == RunMode.MULTIRUN:
            execute(cfg, os.environ.get(PARENT_ENV), job=hydra_cfg.job.num)
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
    if not {"--help", "-h", "--hydra-help"} & set(flags):
        check_overrides(overrides)
    import hydra  # Hydra's app runner: 0.1 s that a plain run does not need

    sys.argv = [sys.argv[0], *flags, *env_overrides(os.environ, overrides), *overrides]
    hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(_job)()


if __name__ == "__main__":
    main()
