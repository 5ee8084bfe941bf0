"""Sweep grids from conf/: named axes, each a config key and its values, expanded in order."""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from omegaconf import OmegaConf

from paraphina.config.loading import check_knob
from paraphina.core.errors import ParaphinaError


PER_RUN_SECTIONS = ("engine", "market")
"""The config sections whose knobs can differ between the runs of one engine batch."""


def check_numeric_knob(cfg, key: object, where: str) -> None:
    """Stop unless `key` names a numeric engine or market knob of `cfg` (what a sweep or a search may vary)."""
    if not isinstance(key, str) or not key.startswith(tuple(f"{s}." for s in PER_RUN_SECTIONS)):
        raise ParaphinaError(f"{where}.key={key!r} must name an engine or market knob, e.g. engine.mm.size_eta")
    current = OmegaConf.select(cfg, key)
    if isinstance(current, bool) or not isinstance(current, (int, float)):
        raise ParaphinaError(f"{where}.key={key} is not a numeric knob (python -m paraphina.run --cfg job lists them)")


@dataclass(frozen=True)
class Axis:
    name: str
    key: str
    values: tuple[float, ...]


def axes_from_config(grid: Mapping, cfg) -> list[Axis]:
    """Axes of `experiment.grid` (`name: {key: engine..., values: [...]}`), each key checked against the config."""
    axes: list[Axis] = []
    for name, spec in grid.items():
        where = f"experiment.grid.{name}"
        if not isinstance(spec, Mapping) or set(spec) != {"key", "values"}:
            raise ParaphinaError(f"grid axis '{name}' must be {{key: <config key>, values: [numbers]}}")
        key, values = spec["key"], spec["values"]
        if isinstance(key, str) and OmegaConf.select(cfg, key) is None:
            raise ParaphinaError(f"grid axis '{name}' sets '{key}', which is not a config key")
        check_numeric_knob(cfg, key, where)
        if any(a.key == key for a in axes):
            raise ParaphinaError(f"grid axes '{next(a.name for a in axes if a.key == key)}' and '{name}' both set "
                                 f"{key}; keep one")
        if not isinstance(values, Sequence) or isinstance(values, str):
            raise ParaphinaError(f"{where}.values={values!r} must be a list, e.g. {where}.values=[1,2]")
        if not values:
            raise ParaphinaError(f"grid axis '{name}' has no values; give {where}.values=[...]")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in values):
            raise ParaphinaError(f"grid axis '{name}' values must be finite numbers, got {list(values)}")
        values = tuple(float(v) for v in values)
        check_knob(key, values, f"{where}.values")
        axes.append(Axis(name, key, values))
    return axes


def expand(axes: Sequence[Axis]) -> list[dict[str, float]]:
    """Grid points in row-major order: {axis name: value}."""
    return [dict(zip([a.name for a in axes], combo)) for combo in itertools.product(*[a.values for a in axes])]


def point_batch(points: Sequence[Mapping[str, float]], axes: Sequence[Axis], seeds: int, base_seed: int
                ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """One engine batch for points x seeds: per-run knob arrays, run seeds, and each run's point index. Every
    point uses the same seeds (common random numbers), so points differ only by their knobs."""
    point_index = np.repeat(np.arange(len(points)), seeds)
    run_seeds = np.tile(base_seed + np.arange(seeds, dtype=np.int64), len(points))
    per_run = {a.key: np.array([points[p][a.name] for p in point_index]) for a in axes}
    return per_run, run_seeds, point_index
