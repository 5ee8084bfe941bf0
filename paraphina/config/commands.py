"""Hydra's app runner for every entry point (so `-m`, `--cfg job` and `--help` work everywhere), with one-line
errors and the original PARAPHINA_* variables given to Hydra as overrides under the command line's."""
from __future__ import annotations

import os
import sys
from typing import Callable, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from paraphina.config import experiments
from paraphina.config.loading import (CONF_DIR, env_overrides, explain_hydra_error, reject_appended_keys, resolve,
                                      validate)
from paraphina.core.cli import cli_errors, fail_after, reader_stopped
from paraphina.core.errors import ParaphinaError

FULL_ERROR_ENV = "HYDRA_FULL_ERROR"   # Hydra raises its errors instead of printing them over several lines


def checked(cfg: DictConfig) -> DictConfig:
    """A job's config, resolved and checked as `compose_config` checks one. A job of a multirun keeps its tables
    and plots in its own folder (`sweeps/multirun/<time>/<job>/`), so that jobs do not overwrite each other's."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    reject_appended_keys(task_overrides())
    resolve(cfg)
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        cfg.paths.sweeps = HydraConfig.get().runtime.output_dir
    validate(cfg)
    return cfg


def task_overrides() -> list[str]:
    """The command line's overrides of the running job, as Hydra records them (`hydra.overrides.task`)."""
    from hydra.core.hydra_config import HydraConfig

    return OmegaConf.to_container(HydraConfig.get().overrides.task)  # as typed: `label=${x}` stays as it is


def hydra_command(config_name: str, task: Callable[[DictConfig], object],
                  ignored_env: Sequence[str] = ()) -> Callable[..., None]:
    """The `main` of an entry point: Hydra's app runner on the primary config `config_name`, each job's config
    (see `checked`) handed to `task`. The PARAPHINA_* variables not in `ignored_env` become overrides of the
    command line for the keys it does not set, so `--cfg job`, the jobs and Hydra's record of their overrides
    all show what runs."""
    import hydra
    from hydra.errors import HydraException

    def job(cfg: DictConfig) -> None:
        try:  # a job's exception would be logged over several lines by Hydra's job runner
            task(checked(cfg))
        except ParaphinaError as exc:
            fail_after(str(exc), exc)
        except BrokenPipeError:   # Hydra's job runner would print the job's overrides as its error first
            reader_stopped()
        except OmegaConfBaseException as exc:
            fail_after(explain_hydra_error(exc), exc)

    app = hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")(job)

    @cli_errors
    def main(argv: Sequence[str] | None = None) -> None:
        """Run the command line `argv` (default: this process's) through Hydra; tests call it in-process."""
        experiments.register(config_name)
        saved = sys.argv, os.environ.get(FULL_ERROR_ENV)
        given = sys.argv[1:] if argv is None else list(argv)
        environ = {k: v for k, v in os.environ.items() if k not in ignored_env}
        sys.argv = [sys.argv[0], *given, *env_overrides(environ, given)]
        os.environ[FULL_ERROR_ENV] = "1"
        try:
            app()
        except (HydraException, OmegaConfBaseException) as exc:
            raise ParaphinaError(explain_hydra_error(exc)) from exc
        finally:
            sys.argv = saved[0]
            if saved[1] is None:
                os.environ.pop(FULL_ERROR_ENV, None)
            else:
                os.environ[FULL_ERROR_ENV] = saved[1]

    return main
