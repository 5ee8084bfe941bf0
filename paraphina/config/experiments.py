"""Typed settings of Exp02-Exp13, so Hydra rejects a wrong type or an unknown key before anything runs; each
experiment's schema is option `expNN` of the `schema` group and its primary config is `expNN` (see `register`)."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field, make_dataclass
from enum import StrEnum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from paraphina.config.schema import ParaphinaConfig


class Sampler(StrEnum):
    grid = "grid"
    tpe = "tpe"
    nsga2 = "nsga2"


class Target(StrEnum):
    fixed = "fixed"          # runs_per_profile seeds
    decisive = "decisive"    # add seeds until every verdict is decided


@dataclass
class Settings:
    id: str = MISSING
    name: str = MISSING          # the MLflow experiment
    run_name: str = MISSING      # an invocation's parent run


@dataclass
class GridSettings(Settings):
    # name: {key, values}; untyped here so `+experiment.grid.NAME={key: ..., values: [...]}` can add an axis
    # (OmegaConf refuses a plain dict into a dict of dataclasses); grid.axes_from_config checks each axis.
    grid: dict[str, Any] = field(default_factory=dict)


@dataclass
class Exp02Settings(GridSettings):
    heatmaps: dict[str, str] = field(default_factory=dict)


@dataclass
class Knob:
    key: str = MISSING
    values: list[float] = field(default_factory=list)
    low: Optional[float] = None      # default: the smallest of `values`
    high: Optional[float] = None     # default: the largest of `values`
    log: bool = False


@dataclass
class StudySettings:
    name: str = MISSING
    storage: Optional[str] = None
    heartbeat_interval: int = MISSING
    grace_period: int = MISSING
    wait_interval: float = MISSING


@dataclass
class SearchSettings(Settings):
    sampler: Optional[Sampler] = None
    n_trials: Optional[int] = None
    batch_size: int = MISSING
    seed: int = MISSING
    multi_objective: bool = MISSING
    budgets: bool = MISSING
    show_top: int = MISSING
    space: dict[str, Knob] = field(default_factory=dict)
    study: StudySettings = field(default_factory=StudySettings)


@dataclass
class Exp03Settings(SearchSettings):
    tier: str = MISSING


@dataclass
class Exp09Settings(SearchSettings):
    profiles: list[str] = MISSING


@dataclass
class Exp05Settings(Settings):
    sources: list[str] = MISSING
    tier: str = MISSING
    top_n: int = MISSING


@dataclass
class SuiteStep:
    entry: str = MISSING             # module:function
    config: str = MISSING            # the primary config it composes
    overrides: list[str] = field(default_factory=list)


@dataclass
class Exp06Settings(Settings):
    suite: dict[str, SuiteStep] = field(default_factory=dict)


@dataclass
class Exp07Settings(Settings):
    source: str = MISSING
    top_n: int = MISSING
    kill_headroom: float = MISSING
    envelope: bool = MISSING
    install: bool = MISSING
    install_dir: Optional[str] = None


@dataclass
class Decisive:
    """conf/decisive: the sequential plan of target=decisive."""

    max_runs_per_profile: int = MISSING
    looks: int = MISSING
    spending: str = MISSING
    power: float = MISSING
    planned_fraction: float = MISSING


@dataclass
class Exp08Settings(Settings):
    profiles: list[str] = MISSING
    seed_offset: int = MISSING
    decisive: Decisive = field(default_factory=Decisive)


@dataclass
class Exp12Settings(Settings):
    threshold: float = MISSING
    floor: float = MISSING
    loss_tighten_threshold: float = MISSING


@dataclass
class Exp13Decisive(Decisive):
    telemetry: bool = MISSING


@dataclass
class Exp13Settings(Settings):
    decisive: Exp13Decisive = field(default_factory=Exp13Decisive)
    summary_top: int = MISSING


@dataclass
class RowFilter:
    """Which research rows an alignment reads."""

    profile: Optional[str] = None
    label_contains: Optional[str] = None
    source_run: Optional[str] = None       # only the rows recorded under this MLflow run


def schema(settings: type, *top_level: tuple) -> type:
    """An experiment's schema: the base schema with `experiment` of type `settings` and its own top-level keys."""
    return make_dataclass(f"{settings.__name__.removesuffix('Settings')}Config",
                          [("experiment", settings, field(default_factory=settings)), *top_level],
                          bases=(ParaphinaConfig,))


SCHEMAS: dict[str, type] = {
    "exp02": schema(Exp02Settings), "exp03": schema(Exp03Settings), "exp04": schema(GridSettings),
    "exp05": schema(Exp05Settings),
    "exp06": schema(Exp06Settings, ("steps", Optional[list[str]], None), ("skip", list[str], field(default_factory=list)),
                    ("dry_run", bool, False)),
    "exp07": schema(Exp07Settings), "exp08": schema(Exp08Settings, ("target", Target, MISSING)), "exp09": schema(Exp09Settings),
    "exp10": schema(Settings),
    "exp11": schema(Settings, ("filter", RowFilter, field(default_factory=RowFilter)), ("by_label", bool, False),
                    ("label_contains", Optional[str], None), ("source_run", Optional[str], None)),  # aliases of filter.*
    "exp12": schema(Exp12Settings),
    "exp13": schema(Exp13Settings, ("profiles", list[str], MISSING), ("runs_per_profile", int, MISSING),
                    ("label_prefix", str, MISSING), ("target", Target, MISSING)),
}


SCHEMA_GROUP = "schema"
"""The config group of the structured schemas, which live in Hydra's ConfigStore rather than in conf/."""


@functools.lru_cache(maxsize=None)
def register(name: str) -> None:
    """Put the engine's schema, and experiment `name`'s schema and primary config, in Hydra's ConfigStore, once
    and only when `name` is composed (building a schema costs ~30 ms); other names are left alone."""
    store = ConfigStore.instance()
    store.store(group=SCHEMA_GROUP, name="paraphina", node=ParaphinaConfig, package="_global_")
    if name not in SCHEMAS:
        return
    store.store(group=SCHEMA_GROUP, name=name, node=SCHEMAS[name], package="_global_")
    help_text = {"app_name": f"paraphina.experiments.{name}",
                 "header": f"paraphina.experiments.{name}: the settings of conf/experiment/{name}.yaml on conf/config.yaml.",
                 "footer": "Override any key above with key=value; sweep with -m key=a,b; show the composed config "
                           "with --cfg job."}
    store.store(name=name, node={"defaults": ["config", {"experiment": name}, "_self_",
                                              {f"override {SCHEMA_GROUP}": name}],
                                 "hydra": {"job": {"name": name}, "help": help_text}})
