"""Profiles as engine batches and as files: several profiles x seeds in ONE batch (they differ only by a few
knobs, each a per-run array, so no batch and warm-up per profile), and presets as conf/profile/*.yaml files."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf

from paraphina.config.loading import compose_config
from paraphina.engine.simulate import BatchResult
from paraphina.core.errors import ParaphinaError
from paraphina.core.names import PROFILE_KNOBS
from paraphina.experiments import grid
from paraphina.experiments.cli import first_difference, flat_config
from paraphina.runner.batch import run_many


def config_knobs(cfg: DictConfig) -> dict[str, float]:
    """The profile knobs of a config, by research name."""
    return {knob: float(OmegaConf.select(cfg, key)) for knob, key in PROFILE_KNOBS.items()}


@dataclass
class ProfilesBatch:
    """One engine batch of profiles x seeds; every profile runs the same seeds (common random numbers)."""

    profiles: list[str]
    configs: dict[str, DictConfig]   # each profile's own composed config
    cfg: DictConfig                  # the batch's config: the first profile's, its differing knobs given per run
    seeds: np.ndarray                # run seeds
    per_run: dict[str, np.ndarray]   # config key -> value per run, for every knob the profiles disagree on
    profile_index: np.ndarray        # run -> position in `profiles`

    def run_profiles(self) -> list[str]:
        """The profile of each run (e.g. for `run_batch(..., profiles=...)` telemetry file names)."""
        return [self.profiles[p] for p in self.profile_index]

    def rows(self, profile: str) -> np.ndarray:
        """The runs of one profile, as indices into the batch."""
        return np.flatnonzero(self.profile_index == self.profiles.index(profile))

    def run(self, desc: str) -> BatchResult:
        """Simulate the batch over the configured worker processes, with a progress bar."""
        return run_many(self.cfg, self.seeds, self.per_run, desc=desc)


def profiles_batch(profiles: Sequence[str], overrides: Sequence[str] = (), config_name: str = "config",
                   seeds: int | None = None, base_seed: int | None = None) -> ProfilesBatch:
    """Compose each profile (`+profile=NAME` then `overrides`, on conf/<config_name>.yaml) into one batch of
    `seeds` runs per profile from `base_seed` (default: the config's `seeds`, `seed`). Profiles may differ only
    in numeric engine/market knobs."""
    names = [str(p) for p in profiles]
    if not names:
        raise ParaphinaError("no profiles given; name at least one of conf/profile/*.yaml")
    if len(set(names)) != len(names):
        raise ParaphinaError(f"profiles {names} repeat a name; give each profile once")
    configs = {name: compose_config([f"+profile={name}", *overrides], config_name) for name in names}
    diff = first_difference({name: flat_config(cfg, exclude=(*grid.PER_RUN_SECTIONS, "profile_name", "risk_tier"))
                             for name, cfg in configs.items()})
    if diff is not None:
        key, a, b = diff
        raise ParaphinaError(f"profiles {a} and {b} differ in '{key}', which one engine batch cannot vary; "
                             f"set it the same for every profile")
    flats = [flat_config(cfg, sections=grid.PER_RUN_SECTIONS) for cfg in configs.values()]
    keys = [key for key in flats[0] if len({flat.get(key) for flat in flats}) > 1]  # in config order
    first = configs[names[0]]
    points = [{key: _number(configs[name], key, name) for key in keys} for name in names]
    axes = [grid.Axis(key, key, tuple(point[key] for point in points)) for key in keys]
    n_seeds = first.seeds if seeds is None else seeds
    per_run, run_seeds, profile_index = grid.point_batch(points, axes, n_seeds,
                                                         first.seed if base_seed is None else base_seed)
    return ProfilesBatch(names, configs, first, run_seeds, per_run, profile_index)


def _number(cfg: DictConfig, key: str, profile: str) -> float:
    """A knob that varies per run must be a plain number."""
    value = OmegaConf.select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParaphinaError(f"profile {profile} sets '{key}' to {value!r}; only numeric engine/market knobs "
                             f"can differ between the profiles of one batch")
    return float(value)


def profile_yaml(profile_name: str, knobs: Mapping[str, float], comment: str | None = None) -> str:
    """A profile file as in conf/profile/*.yaml (`# @package _global_`, profile_name, engine.*) of every
    profile knob in `knobs` (by research name)."""
    missing = [k for k in PROFILE_KNOBS if k not in knobs]
    if missing:
        raise ParaphinaError(f"profile {profile_name} lacks knob(s) {', '.join(missing)}")
    tree = OmegaConf.create({"profile_name": profile_name})
    for knob, key in PROFILE_KNOBS.items():
        OmegaConf.update(tree, key, float(knobs[knob]), force_add=True)
    header = "# @package _global_\n" + "".join(f"# {line}\n" for line in (comment or "").splitlines())
    return header + OmegaConf.to_yaml(tree)
