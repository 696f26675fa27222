"""How sure is a transfer cell? A percentile bootstrap over seeds, the unit that varies between repeats.

A cell's number is the mean over seeds of (trial − `none` baseline of the same seed). Its interval comes from
resampling those seeds with replacement and recomputing the same statistic; the "avg" column resamples the
seeds of a row jointly (one seed's languages travel together) and averages the languages per replicate, so
its interval is that of the number shown, not an average of intervals.

What the interval is and is not:
- With fewer than `min_seeds` seeds behind a cell (default 3) there is no interval: `low`/`high` are NaN,
  and every output says "no CI". One seed has no spread to resample; two give the range of the two deltas,
  which covers the true mean about half the time, so calling it 95% would be a fake interval.
- With few seeds the percentile bootstrap is still optimistic (with 3 seeds it is about the range of the
  three deltas, ~75% actual coverage). The mark (`significant`: the interval excludes 0) is a screening aid;
  report the seed count with it (`n_seeds`), and use 5+ seeds for claims.
- Resampling is seeded from (source, metric, task), so a cell's interval does not change when another
  task is added to the sweep, and reruns print identical tables.
"""

from __future__ import annotations

import warnings
import zlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from itt_sweep.analysis.transfer import AVERAGE_COLUMN, BASELINE_TASK, paired_deltas, transfer_matrix

N_BOOTSTRAP = 2000
CONFIDENCE = 0.95
MIN_SEEDS_FOR_CI = 3


@dataclass(frozen=True)
class TransferTable:
    """One (source language, metric) transfer matrix with its intervals; all frames share index/columns."""

    source_language: str
    metric: str
    mean: pd.DataFrame
    low: pd.DataFrame
    high: pd.DataFrame
    n_seeds: pd.DataFrame
    confidence: float = CONFIDENCE
    min_seeds: int = MIN_SEEDS_FOR_CI
    baseline: str = BASELINE_TASK  # the row the deltas are against

    @cached_property
    def significant(self) -> pd.DataFrame:
        """True where the interval excludes 0; False where it includes 0 or does not exist."""
        return (self.low > 0) | (self.high < 0)

    @classmethod
    def without_intervals(
        cls, matrix: pd.DataFrame, source_language: str = "", metric: str = ""
    ) -> TransferTable:
        """A bare matrix of means (no seeds known) as a table whose intervals are all undefined."""
        undefined = pd.DataFrame(np.nan, index=matrix.index, columns=matrix.columns)
        seeds = pd.DataFrame(0, index=matrix.index, columns=matrix.columns)
        return cls(source_language, metric, matrix, undefined, undefined.copy(), seeds)

    def to_long(self) -> pd.DataFrame:
        """One row per cell, tasks then languages in table order: the tidy form behind the CSV table."""
        columns = {
            "mean": self.mean,
            "ci_low": self.low,
            "ci_high": self.high,
            "n_seeds": self.n_seeds,
            "significant": self.significant,
        }
        long = pd.DataFrame({name: frame.stack(future_stack=True) for name, frame in columns.items()})
        long.index.names = ["intermediate_task", "eval_language"]
        return long.reset_index().astype({"n_seeds": "int64", "significant": "bool"})


def transfer_table(
    frame: pd.DataFrame,
    source_language: str,
    metric: str,
    n_bootstrap: int = N_BOOTSTRAP,
    confidence: float = CONFIDENCE,
    min_seeds: int = MIN_SEEDS_FOR_CI,
    baseline: str = BASELINE_TASK,
) -> TransferTable:
    """The transfer matrix of `transfer.transfer_matrix` plus a bootstrap interval for every cell."""
    if min_seeds < 2:
        raise ValueError(
            f"min_seeds must be at least 2 (one seed has no spread to resample), got {min_seeds}"
        )
    mean, counts = transfer_matrix(frame, source_language, metric, return_counts=True, baseline=baseline)
    deltas = paired_deltas(frame, source_language, metric, baseline)
    languages = [column for column in mean.columns if column != AVERAGE_COLUMN]
    low = pd.DataFrame(np.nan, index=mean.index, columns=mean.columns)
    high = low.copy()
    by_task = deltas.set_index(["intermediate_task", "seed", "eval_language"])["delta"].unstack(
        "eval_language"
    )
    by_task = by_task.reindex(columns=languages)
    present = set(by_task.index.get_level_values(0))
    for task in mean.index:
        per_seed = by_task.loc[task] if task in present else by_task.iloc[:0]
        key = f"{source_language}/{metric}/{task}"
        bounds = _bootstrap_bounds(per_seed.to_numpy(dtype="float64"), n_bootstrap, confidence, key)
        enough = counts.loc[task].to_numpy() >= min_seeds
        low.loc[task] = np.where(enough, bounds[0], np.nan)
        high.loc[task] = np.where(enough, bounds[1], np.nan)
    return TransferTable(source_language, metric, mean, low, high, counts, confidence, min_seeds, baseline)


def _bootstrap_bounds(per_seed: np.ndarray, n_bootstrap: int, confidence: float, key: str) -> np.ndarray:
    """Percentile bounds (2 × languages+1) of the per-language means and their average over resampled seeds.

    `per_seed` is seeds × languages with NaN where a seed lacks that language. A replicate in which a
    language drew only such seeds has no value for it and is left out of that cell's percentiles.
    """
    n_seeds, n_languages = per_seed.shape
    if n_seeds == 0:
        return np.full((2, n_languages + 1), np.nan)
    rng = np.random.default_rng([zlib.crc32(key.encode()), n_seeds])
    samples = per_seed[rng.integers(0, n_seeds, size=(n_bootstrap, n_seeds))]  # replicate × seed × language
    alpha = (1.0 - confidence) / 2.0
    if not np.isnan(per_seed).any():  # the usual case, and 5x faster than the NaN-aware functions
        means = samples.mean(axis=1)
        return np.quantile(np.column_stack([means, means.mean(axis=1)]), [alpha, 1.0 - alpha], axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: the replicate lacks that cell
        means = np.nanmean(samples, axis=1)
        statistics = np.column_stack([means, means.mean(axis=1)])
        return np.nanquantile(statistics, [alpha, 1.0 - alpha], axis=0)
