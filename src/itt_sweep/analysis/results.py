"""Gather trial records from wherever a sweep left them, and flatten them for analysis.

A sweep's results live in two places: MLflow (the child runs of the sweep's parent run) and the trial
directories (`<sweep_dir>/trials/<trial_key>/metrics.json`). Both hold the same *trial record*:

    {"trial_key": str, "intermediate_task": str, "source_language": str, "seed": int,
     "val_loss": float | None, "eval": {eval_language: {"pass_at_1": float, "compile_rate": float,
                                                        "ref_nll": float}}}

Reading either gives the same list of records, so the heatmap can be rebuilt from storage when MLflow is down.
`to_frame` then picks one trial per (intermediate task, source language, seed) and writes the long table that
`transfer.py` aggregates. The pick is by stage-2 validation loss, never by a test metric: choosing the trial
with the best test score would leak the test set into the reported numbers.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

FRAME_COLUMNS = [
    "intermediate_task",
    "source_language",
    "seed",
    "trial_key",
    "val_loss",
    "eval_language",
    "metric",
    "value",
]
_RECORD_KEYS = ("trial_key", "intermediate_task", "source_language", "seed", "eval")
_TAGGED_FIELDS = ("trial_key", "intermediate_task", "source_language")
_EVAL_PREFIX = "metrics.eval/"


def records_from_dirs(sweep_dir: Path) -> list[dict]:
    """Read every trial's metrics.json, so results survive without a tracking server.

    A file that cannot be read or is not a trial record is skipped with a warning: one broken trial
    (killed mid-write, hand-edited) must not hide the rest of the sweep.
    """
    records = []
    for path in sorted(Path(sweep_dir).glob("trials/*/metrics.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            warnings.warn(f"skipping unreadable trial metrics {path}: {err}", stacklevel=2)
            continue
        missing = [key for key in _RECORD_KEYS if not isinstance(record, dict) or key not in record]
        if missing:
            warnings.warn(f"skipping {path}: not a trial record (missing {', '.join(missing)})", stacklevel=2)
            continue
        records.append(record)
    return records


def records_from_mlflow(tracking_uri: str, parent_run_id: str) -> list[dict]:
    """Rebuild trial records from the child runs of a sweep's MLflow parent run.

    One `search_runs` call over all experiments: the parent run id alone identifies the sweep. The global
    tracking URI is restored afterwards so that reading results never redirects a caller's own logging.
    """
    import mlflow

    previous_uri = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(tracking_uri)
    try:
        runs = mlflow.search_runs(
            search_all_experiments=True,
            filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
            output_format="pandas",
        )
    finally:
        mlflow.set_tracking_uri(previous_uri)
    return [record for _, row in runs.iterrows() if (record := _record_from_run_row(row)) is not None]


def _record_from_run_row(row: pd.Series) -> dict | None:
    """Turn one row of `search_runs` output back into a trial record (None if it is not a trial run)."""
    tags = {name: row.get(f"tags.itt.{name}") for name in _TAGGED_FIELDS}
    seed = row.get("tags.itt.seed")
    if any(_missing(value) for value in (*tags.values(), seed)):
        warnings.warn(f"skipping MLflow run {row.get('run_id')}: it lacks the itt.* trial tags", stacklevel=3)
        return None
    evals: dict[str, dict[str, float]] = {}
    for column, value in row.items():
        if not str(column).startswith(_EVAL_PREFIX) or _missing(value):
            continue
        language, _, metric = str(column)[len(_EVAL_PREFIX) :].partition("/")
        evals.setdefault(language, {})[metric] = float(value)
    val_loss = row.get("metrics.val_loss")
    return {
        **tags,
        "seed": int(seed),
        "val_loss": None if _missing(val_loss) else float(val_loss),
        "eval": evals,
    }


def to_frame(records: list[dict]) -> pd.DataFrame:
    """Flatten records to one row per (trial, eval language, metric), keeping the best trial per seed.

    Missing or NaN metric values produce no row: "not measured" stays distinguishable from any number.
    """
    rows = [
        (
            record["intermediate_task"],
            record["source_language"],
            int(record["seed"]),
            record["trial_key"],
            _float_or_none(record.get("val_loss")),
            language,
            metric,
            float(value),
        )
        for record in _best_by_val_loss(records)
        for language, metrics in record["eval"].items()
        for metric, value in metrics.items()
        if not _missing(value)
    ]
    frame = pd.DataFrame(rows, columns=FRAME_COLUMNS)
    return frame.astype({"seed": "int64", "val_loss": "float64", "value": "float64"})


def _best_by_val_loss(records: list[dict]) -> list[dict]:
    """One trial per (task, source, seed): the lowest stage-2 validation loss among evaluated trials.

    Trials without eval results (stopped early by the scheduler, failed) cannot fill a cell, so they do not
    compete. A missing val_loss ranks last; ties go to the smaller trial key so the pick is deterministic.
    """
    best: dict[tuple[str, str, int], dict] = {}
    for record in records:
        if not record.get("eval"):
            continue
        cell = (record["intermediate_task"], record["source_language"], int(record["seed"]))
        if cell not in best or _selection_key(record) < _selection_key(best[cell]):
            best[cell] = record
    return list(best.values())


def _selection_key(record: dict) -> tuple[bool, float, str]:
    val_loss = _float_or_none(record.get("val_loss"))
    return (val_loss is None, val_loss if val_loss is not None else 0.0, record["trial_key"])


def _float_or_none(value: Any) -> float | None:
    return None if _missing(value) else float(value)


def _missing(value: Any) -> bool:
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))
