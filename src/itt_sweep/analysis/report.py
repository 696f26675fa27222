"""Write a sweep's transfer results to a directory: the files `itt-sweep heatmap` prints and the driver logs.

For every (source language, metric) in the results:

    heatmap_<source>_<metric>.png   annotated heatmap: mean delta, bootstrap CI, `*` where the CI excludes 0
    heatmap_<source>_<metric>.csv   the matrix of mean deltas (tasks × languages + avg; empty = not measured)
    transfer_<source>_<metric>.csv  one row per cell: mean, ci_low, ci_high, n_seeds, significant
    transfer_<source>_<metric>.md   Markdown table;  transfer_<source>_<metric>.tex  LaTeX (booktabs) table
    absolute_<source>_<metric>.csv  the raw metric per task (`none` first), mean over seeds
    trials.csv                      tidy: one row per trial x eval language x metric (task, source, seed, value)

A source whose only task is `none` has no transfer to show; it still gets its absolute CSV.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from itt_sweep.analysis import tables, transfer
from itt_sweep.analysis.heatmap import heatmap_title, render_heatmap
from itt_sweep.analysis.intervals import MIN_SEEDS_FOR_CI, N_BOOTSTRAP, TransferTable, transfer_table
from itt_sweep.analysis.transfer import absolute_matrix, language_order


def write_outputs(
    frame: pd.DataFrame, out_dir: Path, n_bootstrap: int = N_BOOTSTRAP, min_seeds: int = MIN_SEEDS_FOR_CI,
    baseline: str = transfer.BASELINE_TASK,
) -> list[Path]:
    """Write every output file for `frame` (see the module docstring); returns the paths written. Deltas are
    against `baseline`: `none`, or the compute-matched control (`target_control`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tidy = out_dir / "trials.csv"  # every number the tables come from: trial x eval language x metric, seeds
    frame.sort_values(["source_language", "intermediate_task", "seed", "eval_language", "metric"]).to_csv(
        tidy, index=False)
    written = [tidy]
    for source, metric in result_pairs(frame):
        absolute = absolute_matrix(frame, source, metric, baseline)
        written.append(_write_matrix(absolute, out_dir / f"absolute_{source}_{metric}.csv"))
        table = transfer_table(frame, source, metric, n_bootstrap=n_bootstrap, min_seeds=min_seeds,
                               baseline=baseline)
        if table.mean.empty:
            continue
        written += write_table(table, out_dir)
    return written


def write_table(table: TransferTable, out_dir: Path) -> list[Path]:
    """The PNG, matrix CSV, tidy CSV, Markdown and LaTeX files of one transfer table."""
    stem = f"{table.source_language}_{table.metric}"
    lower = transfer.lower_is_better(table.metric)
    return [
        render_heatmap(
            table, heatmap_title(table, lower), out_dir / f"heatmap_{stem}.png", lower_is_better=lower
        ),
        _write_matrix(table.mean, out_dir / f"heatmap_{stem}.csv"),
        tables.write_csv(table, out_dir / f"transfer_{stem}.csv"),
        tables.write_markdown(table, out_dir / f"transfer_{stem}.md"),
        tables.write_latex(table, out_dir / f"transfer_{stem}.tex"),
    ]


def result_pairs(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """(source language, metric) pairs present in `frame` for the transfer metrics, in MBXP language order."""
    pairs = []
    for source in language_order(frame["source_language"]):
        present = list(dict.fromkeys(frame.loc[frame["source_language"] == source, "metric"]))
        pairs += [(source, metric) for metric in transfer.transfer_metrics(present)]
    return pairs


def read_matrix_csv(path: Path) -> pd.DataFrame:
    """Read back a matrix written by `write_outputs` (empty cells become NaN again)."""
    return pd.read_csv(path, index_col="intermediate_task")


def _write_matrix(matrix: pd.DataFrame, path: Path) -> Path:
    matrix.to_csv(path, index_label="intermediate_task")
    return path
