"""Console helpers shared by the experiment entry points."""
from __future__ import annotations

from typing import Sequence

import pandas as pd


def print_table(table: pd.DataFrame, columns: Sequence[str] | None = None, title: str | None = None) -> None:
    """Print a table with readable number formatting."""
    if title:
        print(title)
    shown = table if columns is None else table[[c for c in columns if c in table.columns]]
    with pd.option_context("display.float_format", "{:,.3f}".format, "display.width", 160,
                           "display.max_columns", 30, "display.max_rows", 500):
        print(shown.to_string(index=False))
