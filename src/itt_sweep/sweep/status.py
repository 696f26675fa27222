"""`itt-sweep status`: done / running / pending / errored trials per cell, read from the Tune experiment
(in the sweep dir, or under `storage.checkpoints`, e.g. on S3).

It reads the experiment's saved state, so it works while a sweep runs, after it finished, and after the driver
was killed (its running trials then show as running until `itt-sweep resume` picks them up).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from itt_sweep.config import SweepConfig, load_sweep
from itt_sweep.sweep.search import trial_key
from itt_sweep.sweep.storage import has_experiment, tune_location

TUNE_STATUS = {"TERMINATED": "done", "RUNNING": "running", "PENDING": "pending", "PAUSED": "pending",
               "ERROR": "errored"}


def trial_states(sweep_dir: Path, sweep: SweepConfig) -> dict[str, str]:
    """trial key -> done | running | pending | errored, for the trials Tune has created (its experiment is in the
    sweep dir, or at the storage.checkpoints location that sweep.resolved.yaml records)."""
    location = tune_location(sweep_dir, sweep)
    if not has_experiment(location):
        return {}
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(location)
    return {t.config["trial_key"]: TUNE_STATUS.get(t.status, t.status.lower()) for t in analysis.trials}


def cell_table(sweep_dir: Path) -> list[dict[str, object]]:
    sweep = load_sweep(sweep_dir / "sweep.resolved.yaml")
    states = trial_states(sweep_dir, sweep)
    rows = []
    for cell in sweep.cells():
        counts = Counter(states.get(trial_key(cell, n), "pending") for n in range(sweep.search.num_samples))
        rows.append({"cell": cell.key, **{k: counts.get(k, 0) for k in ("done", "running", "pending", "errored")}})
    return rows


def print_status(sweep_dir: Path) -> int:
    from rich.console import Console
    from rich.table import Table

    rows = cell_table(sweep_dir)
    table = Table(title=f"sweep {sweep_dir.name}")
    for column in ("cell", "done", "running", "pending", "errored"):
        table.add_column(column, justify="left" if column == "cell" else "right")
    for row in rows:
        table.add_row(*(str(row[c]) for c in ("cell", "done", "running", "pending", "errored")))
    totals = {k: sum(int(r[k]) for r in rows) for k in ("done", "running", "pending", "errored")}
    table.add_row("total", *(str(totals[k]) for k in ("done", "running", "pending", "errored")))
    Console().print(table)
    return 0
