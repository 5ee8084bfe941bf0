"""Engine and market parameters as numpy-ready values, each knob a scalar or one value per run.

Arrays are venue-major: a venue list is (venues, 1) (0-d when every venue has the same value), a knob given
per run is (1, runs), a venue knob given per run is (venues, runs); so the same formulas broadcast over a
sweep grid x seeds in one batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Mapping

import numpy as np

from paraphina.core.errors import ParaphinaError


def _leaf(value: Any) -> Any:
    """A config value as the engine uses it: numbers as 0-d float arrays, lists as venue columns (venues, 1).

    An operation between an array and a 0-d array costs about two thirds of one with a Python float (numpy
    converts the float on every call), and a single run is made of such operations; the values are the same.
    """
    if isinstance(value, bool) or isinstance(value, str) or value is None:
        return value
    if isinstance(value, (int, float)):
        return np.array(float(value))
    if isinstance(value, (list, tuple)):
        if value and isinstance(value[0], str):
            return list(value)
        dtype = bool if value and isinstance(value[0], bool) else float
        return np.asarray(value, dtype=dtype).reshape(-1, 1)
    raise ParaphinaError(f"unsupported parameter value {value!r}")


def _namespace(tree: Mapping[str, Any]) -> SimpleNamespace:
    return SimpleNamespace(**{k: _namespace(v) if isinstance(v, Mapping) else _leaf(v) for k, v in tree.items()})


def _get(ns: SimpleNamespace, dotted: str) -> tuple[SimpleNamespace, str, Any]:
    *path, last = dotted.split(".")
    node = ns
    for part in path:
        node = getattr(node, part, None)
        if not isinstance(node, SimpleNamespace):
            raise ParaphinaError(f"per-run parameter '{dotted}' is not an engine or market knob")
    if not hasattr(node, last):
        raise ParaphinaError(f"per-run parameter '{dotted}' is not an engine or market knob")
    return node, last, getattr(node, last)


@dataclass
class Params:
    """`engine` and `market` knobs as namespaces; `per_run` names the knobs that vary across runs."""


    engine: SimpleNamespace
    market: SimpleNamespace
    per_run: tuple[str, ...]
    runs: int

    @property
    def n_venues(self) -> int:
        return len(self.engine.venues.names)

    def subset(self, keep: np.ndarray) -> "Params":
        """The parameters of the runs `keep` (indices into this batch), for the runs still alive."""
        root = SimpleNamespace(engine=_copy(self.engine), market=_copy(self.market))
        for dotted in self.per_run:
            node, last, value = _get(root, dotted)
            setattr(node, last, value[:, keep])
        return Params(root.engine, root.market, self.per_run, len(keep))


def _copy(ns: SimpleNamespace) -> SimpleNamespace:
    return SimpleNamespace(**{k: _copy(v) if isinstance(v, SimpleNamespace) else v for k, v in vars(ns).items()})


def build_params(engine: Mapping[str, Any], market: Mapping[str, Any], runs: int,
                 per_run: Mapping[str, Any] | None = None) -> Params:
    """Parameters for a batch of `runs`; `per_run` maps dotted keys (`engine.hedge.band_base`) to arrays."""
    root = SimpleNamespace(engine=_namespace(engine), market=_namespace(market))
    n_venues = len(root.engine.venues.names)
    for dotted, values in (per_run or {}).items():
        node, last, current = _get(root, dotted)
        if isinstance(current, (bool, str, list)) or current is None or (
                isinstance(current, np.ndarray) and current.dtype == bool):
            raise ParaphinaError(f"per-run parameter '{dotted}' is not numeric")
        arr = np.asarray(values, dtype=float)
        if arr.ndim == 1 and arr.shape[0] == runs:
            arr = arr.reshape(1, runs)
        elif arr.ndim == 2 and arr.shape == (runs, n_venues) and isinstance(current, np.ndarray) and current.ndim == 2:
            arr = np.ascontiguousarray(arr.T)
        else:
            raise ParaphinaError(f"per-run parameter '{dotted}' needs {runs} values (one per run), got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ParaphinaError(f"per-run parameter '{dotted}' has non-finite values")
        setattr(node, last, arr)
    _share_uniform_columns(root, set(per_run or ()))
    return Params(root.engine, root.market, tuple(per_run or ()), runs)


def _share_uniform_columns(ns: SimpleNamespace, per_run: set[str], prefix: str = "") -> None:
    """Turn each venue column whose venues all hold one value into that value (0-d), in place.

    The formulas broadcast it the same way, and numpy's loops for a scalar operand are faster than those for a
    (venues, 1) column; the default venues share their tick size, order sizes, taker fee and fill intensity.
    Knobs given per run keep their arrays.
    """
    for key, value in list(vars(ns).items()):
        dotted = prefix + key
        if isinstance(value, SimpleNamespace):
            _share_uniform_columns(value, per_run, dotted + ".")
        elif (dotted not in per_run and isinstance(value, np.ndarray) and value.ndim == 2 and value.shape[1] == 1
              and (value == value[0, 0]).all()):
            setattr(ns, key, np.array(value[0, 0]))
