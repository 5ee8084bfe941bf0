"""Console helpers shared by the experiment entry points, and flattened configs to compare."""
from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd
from omegaconf import DictConfig

from paraphina.config.loading import to_plain
from paraphina.tracking.runs import flatten_params
from paraphina.world_model.tiers import horizon_note


def print_horizon_note(cfg: DictConfig) -> None:
    """First line of a report that judges budgets on sessions shorter than the tiers' horizon."""
    if note := horizon_note(cfg.ticks, cfg.world_model.session_ticks):
        print(note)


def readable_number(value: float) -> str:
    """Three decimals, or three significant digits for small values (a vol_ref of 7.5e-05 is not 0.000)."""
    return f"{value:.3g}" if 0 < abs(value) < 0.01 else f"{value:,.3f}"


def print_table(table: pd.DataFrame, columns: Sequence[str] | None = None, title: str | None = None) -> None:
    """Print a table with readable number formatting."""
    if title:
        print(title)
    shown = table if columns is None else table[[c for c in columns if c in table.columns]]
    with pd.option_context("display.float_format", readable_number, "display.width", 160,
                           "display.max_columns", 30, "display.max_rows", 500):
        print(shown.to_string(index=False))


def flat_config(cfg: DictConfig, sections: Sequence[str] | None = None, exclude: Sequence[str] = ()) -> dict[str, str]:
    """Dotted keys of the config (or of some top-level sections) with their values as text, for comparisons."""
    plain = to_plain(cfg)
    return flatten_params({k: v for k, v in plain.items() if (sections is None or k in sections) and k not in exclude})


def first_difference(flats: Mapping[str, Mapping[str, str]]) -> tuple[str, str, str] | None:
    """The first key on which flattened configs (by name) disagree, and the names of two that disagree on it."""
    first, *others = flats
    for key in dict.fromkeys(key for flat in flats.values() for key in flat):
        other = next((n for n in others if flats[n].get(key) != flats[first].get(key)), None)
        if other is not None:
            return key, first, other
    return None
