"""PNG charts for MLflow artifacts and reports: one run's PnL and inventory, PnL across seeds, grid heatmaps. Drawn
on the Agg canvas without pyplot (no display, no global figure state), so worker processes can plot safely."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from paraphina.core.files import replace_atomically

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure


def load_plotting() -> None:
    """Import matplotlib's figure and Agg canvas now (about 0.3-0.5 s), e.g. in a thread while the engine runs."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    from matplotlib.figure import Figure  # noqa: F401


def _figure(width_in: float, height_in: float, rows: int = 1, cols: int = 1, layout: str | None = None,
            **subplots) -> tuple[Figure, np.ndarray]:
    """A figure on the Agg canvas and its rows x cols axes, as a flat array."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_in, height_in), layout=layout)
    FigureCanvasAgg(figure)
    return figure, figure.subplots(rows, cols, squeeze=False, **subplots).ravel()


def _save(figure: Figure, path: str | Path, dpi: int) -> Path:
    """Write the figure as PNG, creating the folder; in one step, so a reader never sees half a plot."""
    return replace_atomically(Path(path), lambda temporary: figure.savefig(temporary, dpi=dpi, format="png"))


def plot_run(steps: np.ndarray, pnl: np.ndarray, q: np.ndarray, path: str | Path, title: str, dpi: int = 80) -> Path:
    """PnL (USD) above inventory (TAO) over ticks, for one run."""
    figure, (pnl_axes, q_axes) = _figure(7.0, 4.5, rows=2, sharex=True)
    panels = ((pnl_axes, pnl, "tab:blue", "PnL (USD)"), (q_axes, q, "tab:orange", "inventory (TAO)"))
    for axes, values, color, label in panels:
        axes.plot(steps, values, color=color, linewidth=1.0)
        axes.axhline(0.0, color="grey", linewidth=0.5)
        axes.set_ylabel(label)
    pnl_axes.set_title(title)
    q_axes.set_xlabel("tick")
    figure.subplots_adjust(left=0.12, right=0.97, top=0.93, bottom=0.11, hspace=0.08)
    return _save(figure, path, dpi)


def plot_fan(
    steps: np.ndarray, pnl_paths: np.ndarray, path: str | Path, title: str, n_samples: int = 5, dpi: int = 80
) -> Path:
    """Fan chart of PnL across runs (`pnl_paths` is n_steps x n_runs): median, 5-95 % and 25-75 % bands, samples."""
    paths = np.asarray(pnl_paths, dtype=float).reshape(len(steps), -1)
    p5, p25, p50, p75, p95 = np.percentile(paths, [5, 25, 50, 75, 95], axis=1)
    figure, (axes,) = _figure(7.0, 3.5)
    axes.fill_between(steps, p5, p95, color="tab:blue", alpha=0.15, linewidth=0, label="5-95 %")
    axes.fill_between(steps, p25, p75, color="tab:blue", alpha=0.3, linewidth=0, label="25-75 %")
    sample = paths[:, : min(n_samples, paths.shape[1])]
    axes.plot(steps, sample, color="grey", linewidth=0.4, alpha=0.7)
    axes.plot(steps, p50, color="tab:blue", linewidth=1.5, label="median")
    axes.axhline(0.0, color="black", linewidth=0.5)
    axes.set(xlabel="tick", ylabel="PnL (USD)", title=f"{title} ({paths.shape[1]} runs)")
    axes.legend(loc="upper left", fontsize="small", frameon=False)
    figure.subplots_adjust(left=0.12, right=0.97, top=0.9, bottom=0.14)
    return _save(figure, path, dpi)


def plot_heatmap(table: pd.DataFrame, x: str, y: str, value: str, path: str | Path, title: str,
                 cmap: str = "viridis", dpi: int = 80) -> Path:
    """Heatmap of `value` over two knob columns of `table` (one row per (x, y) cell), each cell annotated."""
    grid = table.pivot_table(index=y, columns=x, values=value, aggfunc="mean").sort_index().sort_index(axis=1)
    cells = grid.to_numpy(dtype=float)
    figure, (axes,) = _figure(1.1 * grid.shape[1] + 2.5, 0.7 * grid.shape[0] + 1.8)
    image = axes.imshow(cells, cmap=cmap, origin="lower", aspect="auto")
    figure.colorbar(image, ax=axes, label=value)
    axes.set_xticks(range(grid.shape[1]), [f"{v:g}" for v in grid.columns])
    axes.set_yticks(range(grid.shape[0]), [f"{v:g}" for v in grid.index])
    axes.set(xlabel=x, ylabel=y, title=title)
    middle = np.nanmean(cells) if np.isfinite(cells).any() else 0.0
    for (row, col), cell in np.ndenumerate(cells):
        axes.text(col, row, f"{cell:,.0f}" if abs(cell) >= 100 else f"{cell:,.2f}", ha="center", va="center",
                  fontsize="small", color="white" if cell < middle else "black")
    figure.tight_layout()
    return _save(figure, path, dpi)


def plot_trials_scatter(x: np.ndarray, y: np.ndarray, value: np.ndarray, path: str | Path, title: str,
                        labels: tuple[str, str, str], best: int, log: tuple[bool, bool] = (False, False),
                        dpi: int = 80) -> Path:
    """Trials of a continuous search in a 2-D knob plane, coloured by `value`; `best` (an index) starred.

    The view of a heatmap for samplers that do not lay their trials on a grid. `labels` are x, y and value.
    """
    figure, (axes,) = _figure(6.5, 4.8)
    points = axes.scatter(x, y, c=value, cmap="viridis", s=36, edgecolors="black", linewidths=0.3)
    figure.colorbar(points, ax=axes, label=labels[2])
    axes.scatter([x[best]], [y[best]], marker="*", s=260, color="red", edgecolors="black", label="best")
    axes.legend(loc="best", fontsize="small", frameon=False)
    from matplotlib.ticker import FormatStrFormatter

    axes.set(xscale="log" if log[0] else "linear", yscale="log" if log[1] else "linear", xlabel=labels[0],
             ylabel=labels[1], title=title)
    for axis in (axes.xaxis, axes.yaxis):  # plain numbers (0.02), not powers of ten, on log axes too
        axis.set_major_formatter(FormatStrFormatter("%g"))
        axis.set_minor_formatter(FormatStrFormatter("%g"))
    figure.tight_layout()
    return _save(figure, path, dpi)


def plot_pareto_fronts(panels: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
                       path: str | Path, title: str, dpi: int = 80) -> Path:
    """Mean drawdown (x) against mean PnL (y) of every trial, coloured by kill probability, one panel per study.

    Each panel is (pnl_mean, dd_mean, kill_prob, on_front); front trials are ringed and joined in drawdown order.
    """
    figure, all_axes = _figure(4.6 * len(panels) + 1.0, 4.4, cols=len(panels), layout="constrained")
    points = None
    for axes, (name, (pnl, dd, kill, front)) in zip(all_axes, panels.items()):
        points = axes.scatter(dd, pnl, c=kill, cmap="plasma", vmin=0.0, vmax=1.0, s=26, alpha=0.8)
        order = np.argsort(dd[front])
        axes.plot(dd[front][order], pnl[front][order], color="black", linewidth=0.8)
        axes.scatter(dd[front], pnl[front], s=80, facecolors="none", edgecolors="black", linewidths=1.0,
                     label=f"Pareto front ({int(front.sum())})")
        axes.set(title=name, xlabel="mean max drawdown (USD)")
        axes.legend(loc="lower right", fontsize="small", frameon=False)
    all_axes[0].set_ylabel("mean final PnL (USD)")
    if points is not None:
        figure.colorbar(points, ax=list(all_axes), label="kill probability")
    figure.suptitle(title)
    return _save(figure, path, dpi)
