"""Hydra's app runner for every entry point (so `-m`, `--cfg job` and `--help` work everywhere), with one-line
errors and the original PARAPHINA_* variables given to Hydra as overrides under the command line's."""
from __future__ import annotations

import os
import sys
from typing import Callable, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from paraphina.config import experiments
from paraphina.config.loading import (CONF_DIR, NUMERIC_ENV_KEYS, PROFILE_ENV, TEXT_ENV_KEYS, env_overrides,
                                      explain_hydra_error, override_key, reject_appended_keys, resolve, validate)
from paraphina.core.cli import MACHINE_ERRORS, cli_errors, fail_after, machine_problem, reader_stopped
from paraphina.core.errors import ParaphinaError

FULL_ERROR_ENV = "HYDRA_FULL_ERROR"   # Hydra raises its errors instead of printing them over several lines
VARIABLE_OF = {key: var for var, key in {**NUMERIC_ENV_KEYS, **TEXT_ENV_KEYS, PROFILE_ENV: "profile"}.items()}
"""The config key each original environment variable sets -> that variable."""


def naming_variables(message: str, set_by: dict[str, str]) -> str:
    """An error about a value that a PARAPHINA_* variable set, saying so: the user typed the variable, not the key."""
    named = [var for key, var in set_by.items() if message.startswith((f"{key}=", f"unknown {key} "))]
    return f"{message} (set by {', '.join(named)})" if named else message


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


def group_options(*groups: str) -> str:
    """`--help`'s list of the config groups a user picks from, with their options in conf/ (Hydra's own list
    also names the groups the commands compose themselves: experiment, decisive, the schemas)."""
    return "\n".join(f"{group}: {', '.join(sorted(p.stem for p in (CONF_DIR / group).glob('*.yaml')))}"
                     for group in groups)


def hydra_command(config_name: str, task: Callable[[DictConfig], object],
                  ignored_env: Sequence[str] = ()) -> Callable[..., None]:
    """The `main` of an entry point: Hydra's app runner on the primary config `config_name`, each job's config
    (see `checked`) handed to `task`. The PARAPHINA_* variables not in `ignored_env` become overrides of the
    command line for the keys it does not set, so `--cfg job`, the jobs and Hydra's record of their overrides
    all show what runs."""
    import hydra
    from hydra.errors import HydraException

    set_by: dict[str, str] = {}   # this command line's keys that a variable set -> the variable
    jobs: list[None] = []         # one entry per job started by this command line

    def job(cfg: DictConfig) -> None:
        jobs.append(None)
        try:  # a job's exception would be logged over several lines by Hydra's job runner
            task(checked(cfg))
        except ParaphinaError as exc:
            fail_after(naming_variables(str(exc), set_by), exc)
        except BrokenPipeError:   # Hydra's job runner would print the job's overrides as its error first
            reader_stopped()
        except MACHINE_ERRORS as exc:
            fail_after(machine_problem(exc), exc)
        except OmegaConfBaseException as exc:
            fail_after(naming_variables(explain_hydra_error(exc), set_by), exc)

    app = hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")(job)

    @cli_errors
    def main(argv: Sequence[str] | None = None) -> None:
        """Run the command line `argv` (default: this process's) through Hydra; tests call it in-process."""
        experiments.register(config_name)
        OmegaConf.register_new_resolver("paraphina_groups", group_options, replace=True)
        saved = sys.argv, os.environ.get(FULL_ERROR_ENV)
        given = sys.argv[1:] if argv is None else list(argv)
        environ = {k: v for k, v in os.environ.items() if k not in ignored_env}
        from_environment = env_overrides(environ, given)
        set_by.clear()
        jobs.clear()
        set_by.update({override_key(o): VARIABLE_OF[override_key(o)] for o in from_environment})
        sys.argv = [sys.argv[0], *given, *from_environment]
        os.environ[FULL_ERROR_ENV] = "1"
        try:
            app()
        except (HydraException, OmegaConfBaseException) as exc:
            raise ParaphinaError(naming_variables(explain_hydra_error(exc), set_by)) from exc
        except ValueError as exc:   # before any job, Hydra's refusal of its flags (-m with --cfg); after, a bug
            if jobs:
                raise
            raise ParaphinaError(f"{exc}; see --help") from exc
        finally:
            sys.argv = saved[0]
            if saved[1] is None:
                os.environ.pop(FULL_ERROR_ENV, None)
            else:
                os.environ[FULL_ERROR_ENV] = saved[1]

    return main
