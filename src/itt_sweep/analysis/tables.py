"""Transfer tables as text: CSV for programs, Markdown for notes and MLflow, LaTeX for the paper.

Every format says the same three things per cell, the same way: the mean delta, its bootstrap interval (or
that there is none, and why: too few seeds), and `*` where the interval excludes 0. A cell that was not
measured reads "n/a" everywhere; no format turns it into 0 or an empty string that a reader could take as 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from itt_sweep.analysis.intervals import TransferTable
from itt_sweep.analysis.transfer import baseline_name

MARK = "*"
MISSING = "n/a"


def number(value: float) -> str:
    """Three decimals, without the "-0.000" that float noise would otherwise print for no change."""
    label = f"{value:.3f}"
    return "0.000" if label == "-0.000" else label


@dataclass(frozen=True)
class CellLabels:
    """What every format prints per cell, worked out once: `mean` ("0.123*" or "n/a") and `interval`
    ("[0.050, 0.200]", "n=2: no CI" when too few seeds, "" for a missing cell or a bare matrix)."""

    mean: pd.DataFrame
    interval: pd.DataFrame


def cell_labels(table: TransferTable) -> CellLabels:
    mean, low, high = (frame.to_numpy(dtype="float64") for frame in (table.mean, table.low, table.high))
    seeds = table.n_seeds.to_numpy()
    marks = table.significant.to_numpy()
    means = np.empty(mean.shape, dtype=object)
    intervals = np.empty(mean.shape, dtype=object)
    for index in np.ndindex(mean.shape):
        if math.isnan(mean[index]):
            means[index], intervals[index] = MISSING, ""
            continue
        means[index] = number(mean[index]) + (MARK if marks[index] else "")
        if not math.isnan(low[index]):
            intervals[index] = f"[{number(low[index])}, {number(high[index])}]"
        else:
            intervals[index] = f"n={seeds[index]}: no CI" if seeds[index] else ""
    shape = {"index": table.mean.index, "columns": table.mean.columns}
    return CellLabels(pd.DataFrame(means, **shape), pd.DataFrame(intervals, **shape))


def caption(table: TransferTable) -> str:
    percent = round(table.confidence * 100)
    return (
        f"Δ {table.metric} vs {baseline_name(table.baseline)}, source language {table.source_language}: mean "
        f"over seeds [{percent}% bootstrap CI over seeds]; {MARK} = CI excludes 0; no CI below "
        f"{table.min_seeds} seeds; {MISSING} = not measured."
    )


def write_csv(table: TransferTable, path: Path) -> Path:
    """The tidy table: one row per cell with mean, ci_low, ci_high, n_seeds, significant (NaN = none)."""
    table.to_long().to_csv(path, index=False)
    return path


def write_markdown(table: TransferTable, path: Path) -> Path:
    header = ["intermediate task", *map(str, table.mean.columns)]
    lines = [
        f"**{caption(table)}**",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join([":---", *["---:"] * len(table.mean.columns)]) + "|",
    ]
    labels = cell_labels(table)
    for task in table.mean.index:
        cells = [_joined(labels, task, column) for column in table.mean.columns]
        lines.append("| " + " | ".join([f"`{task}`", *cells]) + " |")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_latex(table: TransferTable, path: Path) -> Path:
    """A booktabs `table` (needs \\usepackage{booktabs}); the CI goes under the mean in \\scriptsize."""
    columns = list(table.mean.columns)
    lines = [
        "\\begin{table}[t]",
        "\\centering",
        "\\small",
        "\\begin{tabular}{l" + "r" * len(columns) + "}",
        "\\toprule",
        " & ".join(["intermediate task", *map(_latex_escape, map(str, columns))]) + " \\\\",
        "\\midrule",
    ]
    labels = cell_labels(table)
    for task in table.mean.index:
        cells = [_latex_cell(labels, task, column) for column in columns]
        lines.append(" & ".join([_latex_escape(task), *cells]) + " \\\\")
    lines += [
        "\\bottomrule",
        "\\end{tabular}",
        f"\\caption{{{_latex_escape(caption(table))}}}",
        f"\\label{{tab:transfer-{table.source_language}-{table.metric}}}".replace("_", "-"),
        "\\end{table}",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _joined(labels: CellLabels, task: str, column: str) -> str:
    interval = labels.interval.loc[task, column]
    return labels.mean.loc[task, column] + (f" {interval}" if interval else "")


def _latex_cell(labels: CellLabels, task: str, column: str) -> str:
    mean, interval = labels.mean.loc[task, column], labels.interval.loc[task, column]
    if mean == MISSING:
        return "n/a"
    text = mean.replace(MARK, "$^{*}$")
    return f"\\shortstack{{{text}\\\\{{\\scriptsize {interval}}}}}" if interval else text


_LATEX_SPECIAL = {
    "\\": "\\textbackslash{}",
    "_": "\\_",
    "%": "\\%",
    "&": "\\&",
    "#": "\\#",
    "$": "\\$",
    "{": "\\{",
    "}": "\\}",
    "~": "\\textasciitilde{}",
    "^": "\\textasciicircum{}",
    "Δ": "$\\Delta$",
}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(char, char) for char in text)
