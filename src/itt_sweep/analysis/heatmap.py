"""Draw transfer matrices as heatmaps and write them, with their numbers, to disk.

The picture is the sweep's product, so it must not mislead: the colour scale is centred at 0 and symmetric
(no effect is white, whatever the data's range), blue always means better than the `none` baseline (the
colours flip for metrics where lower is better), and a cell that was not measured is grey "n/a", never a 0.
Each heatmap is written next to a CSV of the same numbers, plus the absolute values they were derived from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from itt_sweep.analysis import transfer
from itt_sweep.analysis.transfer import AVERAGE_COLUMN, absolute_matrix, language_order, transfer_matrix

MISSING_COLOUR = "#c8c8c8"


def render_heatmap(matrix: pd.DataFrame, title: str, path: Path, lower_is_better: bool = False) -> Path:
    """Save `matrix` (tasks × languages, NaN = not measured) as an annotated PNG at `path`."""
    path = Path(path)
    figure = draw_heatmap(matrix, title, lower_is_better)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path


def draw_heatmap(matrix: pd.DataFrame, title: str, lower_is_better: bool = False) -> Figure:
    """The heatmap as a matplotlib Figure, for notebooks and for inspecting what would be saved."""
    if matrix.empty:
        raise ValueError(f"cannot draw a heatmap of an empty matrix ({title})")
    values = matrix.to_numpy(dtype="float64")
    limit = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 0.0
    limit = limit if limit > 0 else 1.0
    # A bare Figure renders through Agg without pyplot: no window, no global backend switch, nothing to close.
    figure = Figure(figsize=(max(6.5, 2.6 + 0.85 * matrix.shape[1]), 2.2 + 0.5 * matrix.shape[0]))
    axes = figure.subplots()
    axes.set_facecolor(MISSING_COLOUR)
    sns.heatmap(
        matrix.astype("float64"),
        ax=axes,
        cmap="RdBu_r" if lower_is_better else "RdBu",  # blue = improvement either way
        center=0,
        vmin=-limit,
        vmax=limit,
        annot=np.vectorize(_cell_label)(values),
        fmt="",
        linewidths=0.5,
        linecolor="white",
        cbar_kws={"label": "Δ vs none"},
    )
    _mark_missing(axes, values)
    if AVERAGE_COLUMN in matrix.columns:
        axes.axvline(list(matrix.columns).index(AVERAGE_COLUMN), color="black", linewidth=1.5)
    axes.set_title(title, fontsize=10)
    axes.set_xlabel("eval language")
    axes.set_ylabel("intermediate task")
    axes.tick_params(axis="y", rotation=0)
    axes.tick_params(length=0)  # tick marks next to a number read as minus signs
    figure.tight_layout()
    return figure


def _cell_label(value: float) -> str:
    """Three decimals, without the "-0.000" that float noise would otherwise print for no change."""
    label = f"{value:.3f}"
    return "0.000" if label == "-0.000" else label


def _mark_missing(axes: Axes, values: np.ndarray) -> None:
    """Seaborn leaves NaN cells blank (the grey background shows); say in words that they are missing."""
    for row, column in zip(*np.nonzero(np.isnan(values)), strict=True):
        axes.text(column + 0.5, row + 0.5, "n/a", ha="center", va="center", color="#444444", fontsize=9)


def write_outputs(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """For every (source language, metric) in `frame`: transfer heatmap + CSV and the absolute-value CSV.

    A source whose only task is `none` has no transfer to draw; it still gets its absolute CSV.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for source in language_order(frame["source_language"]):
        for metric in _metric_order(frame.loc[frame["source_language"] == source, "metric"]):
            absolute = absolute_matrix(frame, source, metric)
            written.append(_write_csv(absolute, out_dir / f"absolute_{source}_{metric}.csv"))
            matrix = transfer_matrix(frame, source, metric)
            if matrix.empty:
                continue
            title = _title(frame, source, metric)
            stem = f"heatmap_{source}_{metric}"
            lower = transfer.lower_is_better(metric)
            written.append(render_heatmap(matrix, title, out_dir / f"{stem}.png", lower_is_better=lower))
            written.append(_write_csv(matrix, out_dir / f"{stem}.csv"))
    return written


def read_matrix_csv(path: Path) -> pd.DataFrame:
    """Read back a matrix written by `write_outputs` (empty cells become NaN again)."""
    return pd.read_csv(path, index_col="intermediate_task")


def _write_csv(matrix: pd.DataFrame, path: Path) -> Path:
    matrix.to_csv(path, index_label="intermediate_task")
    return path


def _metric_order(metrics: pd.Series) -> list[str]:
    present = list(dict.fromkeys(metrics))
    known = [metric for metric in transfer.METRICS if metric in present]
    return known + [metric for metric in present if metric not in transfer.METRICS]


def _title(frame: pd.DataFrame, source: str, metric: str) -> str:
    seeds = frame.loc[frame["source_language"] == source, "seed"].nunique()
    direction = "lower is better" if transfer.lower_is_better(metric) else "higher is better"
    seed_word = "seed" if seeds == 1 else "seeds"
    return (
        f"{metric} after training on {source}: Δ vs no intermediate task\n"
        f"({direction}; blue = improvement; mean over {seeds} {seed_word})"
    )
