"""Sweep grids from conf/: named axes, each a config key and its values, expanded in order."""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from omegaconf import OmegaConf

from paraphina.config.loading import check_knob
from paraphina.core.errors import ParaphinaError


@dataclass(frozen=True)
class Axis:
    name: str
    key: str
    values: tuple[float, ...]


def axes_from_config(grid: Mapping, cfg) -> list[Axis]:
    """Axes of `experiment.grid` (`name: {key: engine..., values: [...]}`), each key checked against the config."""
    axes = []
    for name, spec in grid.items():
        if not isinstance(spec, Mapping) or set(spec) != {"key", "values"}:
            raise ParaphinaError(f"grid axis '{name}' must be {{key: <config key>, values: [numbers]}}")
        key, values = spec["key"], spec["values"]
        if not isinstance(key, str) or OmegaConf.select(cfg, key) is None:
            raise ParaphinaError(f"grid axis '{name}' sets '{key}', which is not a config key")
        if not isinstance(values, Sequence) or isinstance(values, str) or not values:
            raise ParaphinaError(f"grid axis '{name}' has no values; give experiment.grid.{name}.values=[...]")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ParaphinaError(f"grid axis '{name}' values must be numbers, got {list(values)}")
        values = tuple(float(v) for v in values)
        check_knob(key, values, f"experiment.grid.{name}.values")
        axes.append(Axis(name, key, values))
    return axes


def expand(axes: Sequence[Axis]) -> list[dict[str, float]]:
    """Grid points in row-major order: {axis name: value}."""
    return [dict(zip([a.name for a in axes], combo)) for combo in itertools.product(*[a.values for a in axes])]


def point_batch(points: Sequence[Mapping[str, float]], axes: Sequence[Axis], seeds: int, base_seed: int
                ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """One engine batch for points x seeds: per-run knob arrays, run seeds, and each run's point index.

    Every point uses the same seeds (common random numbers), so points differ only by their knobs.
    """
    point_index = np.repeat(np.arange(len(points)), seeds)
    run_seeds = np.tile(base_seed + np.arange(seeds, dtype=np.int64), len(points))
    per_run = {a.key: np.array([points[p][a.name] for p in point_index]) for a in axes}
    return per_run, run_seeds, point_index
