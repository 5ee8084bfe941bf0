"""PNG charts of runs for MLflow artifacts and reports: one run's PnL and inventory, and PnL across seeds.

Matplotlib is imported only when a chart is drawn, and figures are drawn on the Agg canvas without
pyplot, so no display or global figure state is involved and worker processes can plot safely.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _figure(n_panels: int, width_in: float, height_in: float) -> tuple[Figure, list]:
    """A figure on the Agg canvas with `n_panels` stacked axes sharing the x axis."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_in, height_in))
    FigureCanvasAgg(figure)
    axes = figure.subplots(n_panels, 1, sharex=True, squeeze=False)[:, 0]
    return figure, list(axes)


def _save(figure: Figure, path: str | Path, dpi: int) -> Path:
    """Write the figure as PNG, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi, format="png")
    return path


def plot_run(steps: np.ndarray, pnl: np.ndarray, q: np.ndarray, path: str | Path, title: str, dpi: int = 80) -> Path:
    """PnL (USD) above inventory (TAO) over ticks, for one run."""
    figure, (pnl_axes, q_axes) = _figure(2, 7.0, 4.5)
    pnl_axes.plot(steps, pnl, color="tab:blue", linewidth=1.0)
    pnl_axes.axhline(0.0, color="grey", linewidth=0.5)
    pnl_axes.set_ylabel("PnL (USD)")
    pnl_axes.set_title(title)
    q_axes.plot(steps, q, color="tab:orange", linewidth=1.0)
    q_axes.axhline(0.0, color="grey", linewidth=0.5)
    q_axes.set_ylabel("inventory (TAO)")
    q_axes.set_xlabel("tick")
    figure.subplots_adjust(left=0.12, right=0.97, top=0.93, bottom=0.11, hspace=0.08)
    return _save(figure, path, dpi)


def plot_fan(
    steps: np.ndarray, pnl_paths: np.ndarray, path: str | Path, title: str, n_samples: int = 5, dpi: int = 80
) -> Path:
    """Fan chart of PnL across runs (`pnl_paths` is n_steps x n_runs): median, 5-95 % and 25-75 % bands, samples."""
    paths = np.asarray(pnl_paths, dtype=float).reshape(len(steps), -1)
    p5, p25, p50, p75, p95 = np.percentile(paths, [5, 25, 50, 75, 95], axis=1)
    figure, (axes,) = _figure(1, 7.0, 3.5)
    axes.fill_between(steps, p5, p95, color="tab:blue", alpha=0.15, linewidth=0, label="5-95 %")
    axes.fill_between(steps, p25, p75, color="tab:blue", alpha=0.3, linewidth=0, label="25-75 %")
    sample = paths[:, : min(n_samples, paths.shape[1])]
    axes.plot(steps, sample, color="grey", linewidth=0.4, alpha=0.7)
    axes.plot(steps, p50, color="tab:blue", linewidth=1.5, label="median")
    axes.axhline(0.0, color="black", linewidth=0.5)
    axes.set_xlabel("tick")
    axes.set_ylabel("PnL (USD)")
    axes.set_title(f"{title} ({paths.shape[1]} runs)")
    axes.legend(loc="upper left", fontsize="small", frameon=False)
    figure.subplots_adjust(left=0.12, right=0.97, top=0.9, bottom=0.14)
    return _save(figure, path, dpi)
