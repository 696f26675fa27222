"""Phang et al.'s transfer table: what an intermediate task adds over no intermediate task.

A cell (intermediate task T, eval language L) for a source language S is the mean over seeds s of
metric(T, S, s, L) - metric(none, S, s, L). Deltas are paired by seed, because the seed fixes the data order
and initialisation that the baseline and the trial share; a seed counts only where both sides were measured.
A cell with no such seed is NaN, never 0: "not measured" must not read as "no effect".

The sign is always trial minus baseline. For `ref_nll` (see `LOWER_IS_BETTER`) a negative delta is an
improvement; the heatmap says so in its title and flips its colours so that improvement has one colour.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import pandas as pd

from itt_sweep.data.mbxp import LANGUAGES as MBXP_LANGUAGES
from itt_sweep.data.tasks import CONTROL

METRICS = ("pass_at_1", "compile_rate", "ref_nll")  # always there; pass_at_<k> too with sampling
LOWER_IS_BETTER = frozenset({"ref_nll"})
BASELINE_TASK = "none"
CONTROL_TASK = CONTROL  # the compute-matched control, the other baseline `--baseline` can take
MIXTURE_TASK = "all"
AVERAGE_COLUMN = "avg"


def transfer_metrics(present: Iterable[str]) -> list[str]:
    """The metrics of `present` a transfer table is made for, in reading order: pass@1, every other pass@k by
    k, compile rate, ref_nll (counts such as n_problems are no transfer)."""
    present = set(present)
    ks = sorted(int(m.removeprefix("pass_at_")) for m in present if re.fullmatch(r"pass_at_\d+", m))
    ordered = [f"pass_at_{k}" for k in ks] + [m for m in METRICS if not m.startswith("pass_at_")]
    return [metric for metric in ordered if metric in present]


def lower_is_better(metric: str) -> bool:
    return metric in LOWER_IS_BETTER


def baseline_name(baseline: str) -> str:
    """How tables and titles name what the deltas are against."""
    return "no intermediate task" if baseline == BASELINE_TASK else baseline


def paired_deltas(frame: pd.DataFrame, source_language: str, metric: str,
                  baseline_task: str = BASELINE_TASK) -> pd.DataFrame:
    """Per-seed deltas against the baseline trial (`none`, or the compute-matched control) with the same
    source and seed.

    The matrix is their mean; confidence intervals (bootstrap over seeds) start from the same rows.
    Columns: intermediate_task, seed, eval_language, delta.
    """
    subset = _select(frame, source_language, metric)
    is_baseline = subset["intermediate_task"] == baseline_task
    baseline = subset.loc[is_baseline, ["seed", "eval_language", "value"]]
    baseline = baseline.rename(columns={"value": "baseline"})
    paired = subset.loc[~is_baseline].merge(baseline, on=["seed", "eval_language"], how="inner")
    paired["delta"] = paired["value"] - paired["baseline"]
    return paired[["intermediate_task", "seed", "eval_language", "delta"]].reset_index(drop=True)


def transfer_matrix(
    frame: pd.DataFrame, source_language: str, metric: str, return_counts: bool = False,
    baseline: str = BASELINE_TASK,
) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Mean delta over seeds: rows = intermediate tasks (`all` last), columns = eval languages + "avg".

    With `return_counts`, also the number of seeds behind each cell (the "avg" count is the row's
    smallest), so a reader can tell a 1-seed cell from a 5-seed one.
    """
    subset = _select(frame, source_language, metric)
    tasks = task_order(subset["intermediate_task"], include_baseline=False, baseline=baseline)
    languages = language_order(subset["eval_language"])
    deltas = paired_deltas(frame, source_language, metric, baseline)
    grouped = deltas.groupby(["intermediate_task", "eval_language"])["delta"]
    matrix = _with_average(_grid(grouped.mean(), tasks, languages))
    if not return_counts:
        return matrix
    counts = _grid(grouped.count(), tasks, languages).fillna(0).astype(int)
    counts[AVERAGE_COLUMN] = counts.min(axis=1) if languages else 0
    return matrix, counts


def absolute_matrix(frame: pd.DataFrame, source_language: str, metric: str,
                    baseline: str = BASELINE_TASK) -> pd.DataFrame:
    """Raw metric, mean over seeds, the baseline row first: the numbers the deltas were taken from."""
    subset = _select(frame, source_language, metric)
    tasks = task_order(subset["intermediate_task"], include_baseline=True, baseline=baseline)
    languages = language_order(subset["eval_language"])
    means = subset.groupby(["intermediate_task", "eval_language"])["value"].mean()
    return _with_average(_grid(means, tasks, languages))


def task_order(tasks: pd.Series, include_baseline: bool, baseline: str = BASELINE_TASK) -> list[str]:
    """Sorted task names, the baseline first (if kept), then `none` and the control when they are not the
    baseline, and the `all` mixture last, so tables line up across runs."""
    present = set(tasks)
    firsts = [task for task in (BASELINE_TASK, CONTROL_TASK) if task != baseline and task in present]
    middle = firsts + sorted(present - {baseline, MIXTURE_TASK, *firsts})
    head = [baseline] if include_baseline and baseline in present else []
    tail = [MIXTURE_TASK] if MIXTURE_TASK in present else []
    return head + middle + tail


def language_order(languages: pd.Series) -> list[str]:
    """MBXP order for known languages, then any others in order of first appearance."""
    present = list(dict.fromkeys(languages))
    known = [language for language in MBXP_LANGUAGES if language in present]
    return known + [language for language in present if language not in MBXP_LANGUAGES]


def _select(frame: pd.DataFrame, source_language: str, metric: str) -> pd.DataFrame:
    subset = frame[(frame["source_language"] == source_language) & (frame["metric"] == metric)]
    if subset.empty:
        available = sorted(set(zip(frame["source_language"], frame["metric"], strict=True)))
        listed = ", ".join(f"{source}/{name}" for source, name in available) or "nothing"
        raise ValueError(
            f"no results for source language {source_language!r} and metric {metric!r}; "
            f"the results hold (source/metric): {listed}"
        )
    return subset


def _grid(cells: pd.Series, tasks: list[str], languages: list[str]) -> pd.DataFrame:
    """Lay a (task, language)-indexed series out as a task × language table; absent cells are NaN."""
    table = pd.DataFrame(index=pd.Index(tasks, name="intermediate_task"), columns=languages, dtype="float64")
    for (task, language), value in cells.items():
        if task in table.index and language in table.columns:
            table.loc[task, language] = value
    return table


def _with_average(matrix: pd.DataFrame) -> pd.DataFrame:
    """Add the across-language mean; a row with any missing language gets NaN rather than a partial mean."""
    matrix = matrix.copy()
    matrix[AVERAGE_COLUMN] = matrix.mean(axis=1, skipna=False)
    return matrix
