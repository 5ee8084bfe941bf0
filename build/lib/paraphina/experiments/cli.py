"""Console helpers shared by the experiment entry points, and the check that a config matches its overrides."""
from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd
from omegaconf import DictConfig

from paraphina.config.loading import compose_config, to_plain
from paraphina.core.errors import ParaphinaError
from paraphina.tracking.runs import flatten_params


def print_table(table: pd.DataFrame, columns: Sequence[str] | None = None, title: str | None = None) -> None:
    """Print a table with readable number formatting."""
    if title:
        print(title)
    shown = table if columns is None else table[[c for c in columns if c in table.columns]]
    with pd.option_context("display.float_format", "{:,.3f}".format, "display.width", 160,
                           "display.max_columns", 30, "display.max_rows", 500):
        print(shown.to_string(index=False))


def flat_config(cfg: DictConfig, sections: Sequence[str] | None = None, exclude: Sequence[str] = ()) -> dict[str, str]:
    """Dotted keys of the config (or of some top-level sections) with their values as text, for comparisons."""
    plain = to_plain(cfg)
    return flatten_params({k: v for k, v in plain.items() if (sections is None or k in sections) and k not in exclude})


def first_difference(flats: Mapping[str, Mapping[str, str]]) -> tuple[str, str, str] | None:
    """The first key on which flattened configs (by name) disagree, and the names of two that disagree on it."""
    names = list(flats)
    keys = dict.fromkeys(key for flat in flats.values() for key in flat)
    for key in keys:
        values = {name: flats[name].get(key) for name in names}
        other = next((n for n in names if values[n] != values[names[0]]), None)
        if other is not None:
            return key, names[0], other
    return None


def check_composed(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """Stop unless `cfg` is conf/<experiment.id>.yaml composed with `overrides`.

    Steps that compose more configs from the same overrides (Exp06's steps, Exp08's profiles) would
    otherwise run settings other than those recorded with `cfg`.
    """
    expected = compose_config(overrides, cfg.experiment.id)
    diff = first_difference({"given": flat_config(cfg), "composed": flat_config(expected)})
    if diff is not None:
        raise ParaphinaError(f"the config given differs in '{diff[0]}' from experiment {cfg.experiment.id} with "
                             f"overrides {list(overrides)}; pass the overrides the config was composed from")
