"""`itt-sweep status`: done / running / pending / errored trials per cell, read from the Tune experiment
(in the sweep dir, or under `storage.checkpoints`, e.g. on S3).

It reads the experiment's saved state, so it works while a sweep runs, after it finished, and after the driver
was killed (its running trials then show as running until `itt-sweep resume` picks them up).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from itt_sweep.config import SweepConfig, load_sweep
from itt_sweep.sweep.progress import error_text, failure_report
from itt_sweep.sweep.search import trial_key
from itt_sweep.sweep.storage import has_experiment, tune_location
from itt_sweep.sweep.trial_logs import trial_log_dir

TUNE_STATUS = {"TERMINATED": "done", "RUNNING": "running", "PENDING": "pending", "PAUSED": "pending",
               "ERROR": "errored"}


def tune_trials(sweep_dir: Path, sweep: SweepConfig) -> list:
    """The trials Tune has created (its experiment is in the sweep dir, or at the storage.checkpoints location
    that sweep.resolved.yaml records)."""
    location = tune_location(sweep_dir, sweep)
    if not has_experiment(location):
        return []
    from ray.tune import ExperimentAnalysis

    return ExperimentAnalysis(location).trials


def trial_states(trials: list) -> dict[str, str]:
    """trial key -> done | running | pending | errored."""
    return {t.config["trial_key"]: TUNE_STATUS.get(t.status, t.status.lower()) for t in trials}


def failure_reports(sweep_dir: Path, trials: list) -> list[str]:
    """For every errored trial what the console said when it failed: key, stage, the error's last lines, log."""
    return [failure_report(key, str((t.last_result or {}).get("stage", "-")), error_text(t),
                           trial_log_dir(sweep_dir, key) / "trial.log")
            for t in trials if t.status == "ERROR" and (key := t.config["trial_key"])]


def cell_table(sweep_dir: Path, trials: list | None = None) -> list[dict[str, object]]:
    sweep = load_sweep(sweep_dir / "sweep.resolved.yaml")
    states = trial_states(tune_trials(sweep_dir, sweep) if trials is None else trials)
    rows = []
    for cell in sweep.cells():
        counts = Counter(states.get(trial_key(cell, n), "pending") for n in range(sweep.search.num_samples))
        rows.append({"cell": cell.key, **{k: counts.get(k, 0) for k in ("done", "running", "pending", "errored")}})
    return rows


def print_status(sweep_dir: Path) -> int:
    from rich.console import Console
    from rich.table import Table

    trials = tune_trials(sweep_dir, load_sweep(sweep_dir / "sweep.resolved.yaml"))
    rows = cell_table(sweep_dir, trials)
    table = Table(title=f"sweep {sweep_dir.name}")
    for column in ("cell", "done", "running", "pending", "errored"):
        table.add_column(column, justify="left" if column == "cell" else "right")
    for row in rows:
        table.add_row(*(str(row[c]) for c in ("cell", "done", "running", "pending", "errored")))
    totals = {k: sum(int(r[k]) for r in rows) for k in ("done", "running", "pending", "errored")}
    table.add_row("total", *(str(totals[k]) for k in ("done", "running", "pending", "errored")))
    console = Console()
    console.print(table)
    for report in failure_reports(sweep_dir, trials):
        console.print(report, markup=False, highlight=False)
    return 0
