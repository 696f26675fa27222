"""Draw transfer tables as heatmaps.

The picture is the sweep's product, so it must not mislead: the colour scale is centred at 0 and symmetric
(no effect is white, whatever the data's range), blue always means better than the `none` baseline (the
colours flip for metrics where lower is better), a cell that was not measured is grey "n/a", never a 0, and
each cell carries its bootstrap interval (or "n=…: no CI") under the mean, with `*` where it excludes 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from seaborn.utils import relative_luminance

from itt_sweep.analysis.intervals import TransferTable
from itt_sweep.analysis.tables import MARK, MISSING, cell_labels
from itt_sweep.analysis.transfer import AVERAGE_COLUMN, baseline_name

MISSING_COLOUR = "#c8c8c8"


def render_heatmap(
    table: TransferTable | pd.DataFrame, title: str, path: Path, lower_is_better: bool = False
) -> Path:
    """Save the table (tasks × languages, NaN = not measured) as an annotated PNG at `path`."""
    path = Path(path)
    figure = draw_heatmap(table, title, lower_is_better)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path


def draw_heatmap(table: TransferTable | pd.DataFrame, title: str, lower_is_better: bool = False) -> Figure:
    """The heatmap as a matplotlib Figure; a bare DataFrame of means is drawn without intervals."""
    if isinstance(table, pd.DataFrame):
        table = TransferTable.without_intervals(table)
    matrix = table.mean
    if matrix.empty:
        raise ValueError(f"cannot draw a heatmap of an empty matrix ({title})")
    values = matrix.to_numpy(dtype="float64")
    limit = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 0.0
    limit = limit if limit > 0 else 1.0
    figure, axes, colour_bar = _figure(matrix)
    axes.set_facecolor(MISSING_COLOUR)
    sns.heatmap(
        matrix.astype("float64"),
        ax=axes,
        cmap="RdBu_r" if lower_is_better else "RdBu",  # blue = improvement either way
        center=0,
        vmin=-limit,
        vmax=limit,
        linewidths=0.5,
        linecolor="white",
        cbar_ax=colour_bar,
        cbar_kws={"label": "Δ vs none"},
    )
    _annotate(axes, table)
    _mark_missing(axes, values)
    if AVERAGE_COLUMN in matrix.columns:
        axes.axvline(list(matrix.columns).index(AVERAGE_COLUMN), color="black", linewidth=1.5)
    axes.set_title(title, fontsize=10)
    axes.set_xlabel("eval language")
    axes.set_ylabel("intermediate task")
    axes.tick_params(axis="y", rotation=0)
    axes.tick_params(length=0)  # tick marks next to a number read as minus signs
    return figure


def _figure(matrix: pd.DataFrame) -> tuple[Figure, Axes, Axes]:
    """A figure sized to the table in inches: the cells' axes and the colour bar's, with room for the labels.

    Fixed margins rather than `tight_layout`, which draws the whole figure once more to measure it (half the
    rendering time of a 13-language table). A bare Figure renders through Agg without pyplot: no window, no
    global backend switch, nothing to close.
    """
    left = 0.7 + 0.075 * max(len(str(task)) for task in matrix.index)  # task names + axis label
    top, bottom = 0.85, 0.7  # three title lines; language names + axis label
    cells_width = max(1.05 * matrix.shape[1], 5.6)  # never narrower than the title
    cells_height = max(0.6 * matrix.shape[0], 1.5)  # room for the colour bar's ticks
    width, height = left + cells_width + 0.25 + 0.2 + 1.0, top + cells_height + bottom
    figure = Figure(figsize=(width, height))
    # With an Agg canvas attached, measuring a tick label (seaborn checks them for overlap) reuses one
    # renderer; a bare Figure would render itself in full once per label (22 times for 13 languages).
    FigureCanvasAgg(figure)
    cells = figure.add_axes((left / width, bottom / height, cells_width / width, cells_height / height))
    bar_left = (left + cells_width + 0.25) / width
    colour_bar = figure.add_axes((bar_left, bottom / height, 0.2 / width, cells_height / height))
    return figure, cells, colour_bar


def heatmap_title(table: TransferTable, lower_is_better: bool) -> str:
    counts = table.n_seeds.to_numpy()
    counts = counts[counts > 0]
    fewest, most = (int(counts.min()), int(counts.max())) if counts.size else (0, 0)
    seeds = f"{most} seed" + ("s" if most != 1 else "") if fewest == most else f"{fewest}-{most} seeds"
    direction = "lower is better" if lower_is_better else "higher is better"
    percent = round(table.confidence * 100)
    return (
        f"{table.metric} after training on {table.source_language}: Δ vs {baseline_name(table.baseline)}\n"
        f"mean over {seeds} ({direction}; blue = improvement)\n"
        f"[{percent}% bootstrap CI over seeds]; {MARK} = CI excludes 0; no CI below {table.min_seeds} seeds"
    )


def _annotate(axes: Axes, table: TransferTable) -> None:
    """Mean (+ mark) in the cell's upper half, its interval smaller below; text colour follows the fill."""
    mesh = axes.collections[0]
    labels = cell_labels(table)
    values = table.mean.to_numpy(dtype="float64")
    fills = mesh.cmap(mesh.norm(values))
    for row, column in np.ndindex(values.shape):
        mean, interval = labels.mean.iat[row, column], labels.interval.iat[row, column]
        if mean == MISSING:
            continue  # `_mark_missing` writes these
        colour = (
            "#111111" if relative_luminance(fills[row, column]) > 0.408 else "white"
        )  # seaborn's threshold
        y = row + (0.4 if interval else 0.5)
        axes.text(column + 0.5, y, mean, ha="center", va="center", color=colour, fontsize=8.5)
        if interval:
            axes.text(column + 0.5, row + 0.7, interval, ha="center", va="center", color=colour, fontsize=6.5)


def _mark_missing(axes: Axes, values: np.ndarray) -> None:
    """Seaborn leaves NaN cells blank (the grey background shows); say in words that they are missing."""
    for row, column in zip(*np.nonzero(np.isnan(values)), strict=True):
        axes.text(column + 0.5, row + 0.5, MISSING, ha="center", va="center", color="#444444", fontsize=9)
