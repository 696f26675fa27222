"""Gather trial records from wherever a sweep left them, and flatten them for analysis.

A sweep's results live in two places: MLflow (the child runs of the sweep's parent run) and the trial
directories (`<sweep_dir>/trials/<trial_key>/metrics.json`). Both hold the same *trial record*:

    {"trial_key": str, "intermediate_task": str, "source_language": str, "seed": int,
     "val_loss": float | None, "eval": {eval_language: {"pass_at_1": float, "compile_rate": float,
                                                        "ref_nll": float}}}

Reading either gives the same list of records, so the heatmap can be rebuilt from storage when MLflow is down:
`load_records` asks MLflow first (the parent run found by its `itt.sweep`/`itt.role` tags) and falls back to
the trial directories when the store is unreachable, missing, or holds no trial of that sweep.
`to_frame` then picks one trial per (intermediate task, source language, seed) and writes the long table that
`transfer.py` aggregates. The pick is by stage-2 validation loss, never by a test metric: choosing the trial
with the best test score would leak the test set into the reported numbers.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

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
_EVAL_PREFIX = "eval/"


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


def load_records(
    sweep_dir: Path | None,
    tracking_uri: str | None = None,
    parent_run_id: str | None = None,
    use_dirs: bool = True,
) -> tuple[list[dict], str]:
    """The sweep's trial records and where they came from: MLflow when it answers, else the run directories.

    Without `tracking_uri`/`parent_run_id`, both are taken from the sweep dir's `sweep.resolved.yaml`. With
    `use_dirs=False` an MLflow failure is raised instead of falling back (`itt-sweep heatmap --from mlflow`).
    """
    needed = sweep_dir is not None and (tracking_uri is None or parent_run_id is None)
    identity = sweep_identity(Path(sweep_dir)) if needed else {}
    uri = tracking_uri or identity.get("tracking_uri")
    try:
        if uri is None:
            raise LookupError("no tracking URI given and none in sweep.resolved.yaml")
        _check_store(uri)
        parent = parent_run_id or find_parent_run(
            uri, identity.get("name"), lambda: sweep_hash(Path(sweep_dir))
        )
        records = records_from_mlflow(uri, parent)
        if not records:
            raise LookupError(f"parent run {parent} has no trial runs with itt.* tags")
        return _with_undelivered(
            records, sweep_dir if use_dirs else None, f"MLflow {uri} (parent run {parent})"
        )
    except Exception as err:  # noqa: BLE001  (any tracking failure: the run dirs hold the same numbers)
        if not use_dirs or sweep_dir is None:
            raise
        reason = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
        warnings.warn(f"MLflow not used ({reason}); reading {sweep_dir}/trials", stacklevel=2)
    return records_from_dirs(Path(sweep_dir)), f"run directories {Path(sweep_dir) / 'trials'}"


def _with_undelivered(records: list[dict], sweep_dir: Path | None, origin: str) -> tuple[list[dict], str]:
    """Add trials whose results reached their directory but not MLflow (logs still queued in an outbox)."""
    if sweep_dir is None:
        return records, origin
    logged = {record["trial_key"] for record in records}
    extra = [record for record in records_from_dirs(Path(sweep_dir)) if record["trial_key"] not in logged]
    if extra:
        warnings.warn(
            f"{len(extra)} trial(s) are in {sweep_dir}/trials but not in MLflow; using both", stacklevel=3
        )
        origin += f" + {len(extra)} trial(s) from run directories"
    return records + extra, origin


def sweep_identity(sweep_dir: Path) -> dict[str, str]:
    """Name and tracking URI of the sweep that wrote `sweep_dir` (empty if it cannot be read).

    Read as plain YAML: validating the whole sweep file imports the model stack (seconds), and the name and
    URI need no validation to be looked up.
    """
    from itt_sweep.tracking.mlflow_runs import absolute_uri

    path = Path(sweep_dir) / "sweep.resolved.yaml"
    try:
        raw = yaml.safe_load(path.read_text())
        name, uri = str(raw["name"]), (raw.get("tracking") or {}).get("uri", "sqlite:///mlflow.db")
    except (OSError, yaml.YAMLError, TypeError, KeyError, AttributeError) as err:
        warnings.warn(f"cannot read {path} ({err!r})", stacklevel=2)
        return {}
    return {"name": name, "tracking_uri": absolute_uri(str(uri))}


def sweep_hash(sweep_dir: Path) -> str | None:
    """The config hash the driver tagged the parent run with (`itt.sweep_hash`), None if it cannot be made."""
    from itt_sweep.config import load_sweep

    try:
        return load_sweep(Path(sweep_dir) / "sweep.resolved.yaml").config_hash()
    except Exception:  # noqa: BLE001  (only a tie-breaker between parent runs: no hash, newest run wins)
        return None


def find_parent_run(
    tracking_uri: str, sweep_name: str | None, config_hash: str | Callable[[], str | None] | None = None
) -> str:
    """The sweep's parent run: tags `itt.role` = sweep and `itt.sweep` = name, the same config hash preferred.

    Among several candidates (the sweep file changed between runs), the newest with a matching hash wins,
    else the newest. `config_hash` may be a function: it is then called only when there is a choice to make.
    """
    from mlflow.tracking import MlflowClient

    if not sweep_name:
        raise LookupError("no sweep name to look up the parent run by (pass --parent-run-id)")
    client = MlflowClient(tracking_uri=tracking_uri)
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    query = f"tags.`itt.role` = 'sweep' and tags.`itt.sweep` = '{sweep_name}'"  # names are [A-Za-z0-9_.-]
    runs = client.search_runs(
        experiments, filter_string=query, order_by=["attributes.start_time DESC"], max_results=100
    )
    if not runs:
        raise LookupError(f"no MLflow run tagged itt.role=sweep, itt.sweep={sweep_name!r} in {tracking_uri}")
    if len(runs) > 1 and callable(config_hash):
        config_hash = config_hash()
    same_config = [run for run in runs if config_hash and run.data.tags.get("itt.sweep_hash") == config_hash]
    return (same_config or runs)[0].info.run_id


def _check_store(uri: str) -> None:
    """Fail fast rather than wait out MLflow's retries; never create an empty sqlite store by reading."""
    from itt_sweep.tracking.mlflow_runs import check_reachable

    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        raise FileNotFoundError(f"no MLflow store at {uri}")
    check_reachable(uri, timeout_s=5.0)


def records_from_mlflow(tracking_uri: str, parent_run_id: str) -> list[dict]:
    """Rebuild trial records from the child runs of a sweep's MLflow parent run.

    The child runs live in the parent's experiment. Run entities are read page by page and converted
    directly: MLflow's pandas form of the same search took longer than the search itself for 1,000 runs.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_run(parent_run_id).info.experiment_id
    query = f"tags.mlflow.parentRunId = '{parent_run_id}'"
    records, page_token = [], None
    while True:
        page = client.search_runs([experiment], filter_string=query, max_results=1000, page_token=page_token)
        records += [record for run in page if (record := _record_from_run(run)) is not None]
        page_token = page.token
        if not page_token:
            return records


def _record_from_run(run) -> dict | None:
    """Turn one MLflow run back into a trial record (None, with a warning, if it is not a trial run)."""
    tags, metrics = run.data.tags, run.data.metrics
    fields = {name: tags.get(f"itt.{name}") for name in (*_TAGGED_FIELDS, "seed")}
    if any(value is None for value in fields.values()):
        warnings.warn(f"skipping MLflow run {run.info.run_id}: it lacks the itt.* trial tags", stacklevel=3)
        return None
    evals: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        if key.startswith(_EVAL_PREFIX) and not _missing(value):
            language, _, metric = key[len(_EVAL_PREFIX) :].partition("/")
            evals.setdefault(language, {})[metric] = float(value)
    val_loss = metrics.get("val_loss")
    return {
        **fields,
        "seed": int(fields["seed"]),
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
