"""Engine and market parameters as one record per run: the flat per-run arrays the compiled kernel reads.

Every numeric knob of `engine` and `market` becomes a field named by its path (`hedge_band_base`,
`regime_sigma_calm`, `venues_gamma` with one value per venue), so any knob can differ per run inside a batch
and the kernel reads `prm.hedge_band_base` as plainly as the config says it. Text knobs (venue names, the
scenario) stay in Python.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from paraphina.core.errors import ParaphinaError

# Top-level config sections whose fields are named without the section (market.regime.x -> regime_x).
SECTIONS = ("engine", "market")


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Numeric leaves of a config tree by field name, e.g. {'hedge_band_base': 5.625, 'venues_k': [...]}."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "_"))
        elif not (isinstance(value, str) or value is None
                  or (isinstance(value, (list, tuple)) and bool(value) and isinstance(value[0], str))):
            out[name] = value
    return out


@dataclass
class Params:
    """The batch's parameters: `table[i]` is run i's record; `venue_names` are the text knobs the engine needs."""

    table: np.ndarray
    venue_names: tuple[str, ...]

    @property
    def runs(self) -> int:
        return len(self.table)

    @property
    def n_venues(self) -> int:
        return len(self.venue_names)


def build_params(engine: Mapping[str, Any], market: Mapping[str, Any], runs: int,
                 per_run: Mapping[str, Any] | None = None) -> Params:
    """Parameters for a batch of `runs`; `per_run` maps dotted keys (`engine.hedge.band_base`) to one value per
    run (or, for a venue knob, a (runs, venues) array)."""
    names = tuple(engine["venues"]["names"])
    leaves = {**_flatten(engine), **_flatten(market)}
    if len(leaves) != len(_flatten(engine)) + len(_flatten(market)):
        raise ParaphinaError("engine and market knobs share a field name; rename one of them")
    for name, value in leaves.items():
        if isinstance(value, (list, tuple)) and len(value) != len(names):
            raise ParaphinaError(f"'{name}' has {len(value)} values for {len(names)} venues; give one per venue")
    table = np.zeros(runs, np.dtype([(name, np.float64, np.shape(value)) for name, value in leaves.items()], align=True))
    for name, value in leaves.items():
        table[name] = np.asarray(value, dtype=float)
    for dotted, values in (per_run or {}).items():
        section, _, rest = dotted.partition(".")  # 'engine.hedge.band_base' -> field 'hedge_band_base'
        if section not in SECTIONS or not rest:
            raise ParaphinaError(f"per-run parameter '{dotted}' is not an engine or market knob")
        name = rest.replace(".", "_")
        if name not in leaves:
            raise ParaphinaError(f"per-run parameter '{dotted}' is not a numeric engine or market knob")
        arr = np.asarray(values, dtype=float)
        if arr.shape not in ((runs,), table[name].shape):
            raise ParaphinaError(f"per-run parameter '{dotted}' needs {runs} values (one per run), got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ParaphinaError(f"per-run parameter '{dotted}' has non-finite values")
        table[name] = arr if arr.ndim == table[name].ndim else arr[:, None]
    return Params(table=table, venue_names=names)
