"""`itt-sweep status`: done / running / pending / errored trials per cell, read from the Tune experiment
(in the sweep dir, or under `storage.checkpoints`, e.g. on S3).

It reads the experiment's saved state, so it works while a sweep runs, after it finished, and after the driver
was killed (its running trials then show as running until `itt-sweep resume` picks them up).
"""

from __future__ import annotations

import json
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
                           trial_log_dir(sweep_dir.resolve(), key) / "trial.log")
            for t in trials if t.status == "ERROR" and (key := t.config["trial_key"])]


def cell_table(sweep_dir: Path, trials: list | None = None) -> list[dict[str, object]]:
    sweep = load_sweep(sweep_dir / "sweep.resolved.yaml")
    states = trial_states(tune_trials(sweep_dir, sweep) if trials is None else trials)
    rows = []
    for cell in sweep.cells():
        counts = Counter(states.get(trial_key(cell, n), "pending") for n in range(sweep.search.num_samples))
        rows.append({"cell": cell.key, **{k: counts.get(k, 0) for k in ("done", "running", "pending", "errored")}})
    return rows


# (label, where in a trial's `phases`): the rows of `itt-sweep status`'s time table, in a trial's order
TIME_ROWS = (
    ("stage 1-2: worker groups, handover, cache", ("*", "workers_and_handover_s")),
    ("stage 1-2: model load + DeepSpeed init", ("*", "engine_init_s")),
    ("stage 1-2: data", ("*", "data_s")),
    ("stage 1-2: training steps", ("*", "steps_s")),
    ("stage 1-2: validation", ("*", "validation_s")),
    ("stage 1-2: checkpoint writes", ("*", "checkpoint_s")),
    ("stage 1-2: export", ("*", "export_s")),
    ("stage 1-2: stage-cache hits", ("cached", "wall_s")),
    ("stage 3: model load", ("eval", "load_s")),
    ("stage 3: generation", ("eval", "generate_s")),
    ("stage 3: ref_nll scoring", ("eval", "ref_nll_s")),
    ("stage 3: rest (waiting on execution, saving)", ("eval", "rest_s")),
    ("MLflow delivery", ("", "tracking_s")),
)
USEFUL = ("stage 1-2: training steps", "stage 3: generation", "stage 3: ref_nll scoring")


def time_table(sweep_dir: Path) -> tuple[dict[str, float], float, dict[str, float]]:
    """Seconds per row of TIME_ROWS summed over the finished trials, their total trial time, and the
    overlapped stage-3 work (execution and reference checks run beside generation, so not in the shares)."""
    totals = dict.fromkeys((label for label, _ in TIME_ROWS), 0.0)
    overlapped = {"stage 3: execution (beside generation)": 0.0, "stage 3: reference checks (beside)": 0.0}
    trial_s = 0.0
    for path in sorted((sweep_dir / "trials").glob("*/metrics.json")):
        phases = json.loads(path.read_text()).get("phases") or {}
        if not phases:
            continue
        trial_s += phases.get("trial_s", 0.0)
        stages = [v for k, v in phases.items() if k in ("intermediate", "target")]
        evaluation = dict(phases.get("eval") or {})
        evaluation["rest_s"] = max(0.0, evaluation.get("wall_s", 0.0) - sum(
            evaluation.get(k, 0.0) for k in ("load_s", "generate_s", "ref_nll_s")))
        for label, (where, name) in TIME_ROWS:
            if where == "*":
                totals[label] += sum(st.get(name, 0.0) for st in stages if not st.get("cached"))
            elif where == "cached":
                totals[label] += sum(st.get(name, 0.0) for st in stages if st.get("cached"))
            elif where == "eval":
                totals[label] += evaluation.get(name, 0.0)
            else:
                totals[label] += phases.get(name, 0.0)
        overlapped["stage 3: execution (beside generation)"] += evaluation.get("execute_s", 0.0)
        overlapped["stage 3: reference checks (beside)"] += evaluation.get("references_s", 0.0)
    return totals, trial_s, overlapped


def print_time_table(console, sweep_dir: Path) -> None:
    from rich.table import Table

    totals, trial_s, overlapped = time_table(sweep_dir)
    if trial_s <= 0:
        return
    table = Table(title=f"where the time of the finished trials went ({trial_s:.0f} s of trial time)")
    for column in ("phase", "seconds", "share"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    for label, seconds in totals.items():
        table.add_row(label, f"{seconds:.0f}", f"{seconds / trial_s:.1%}")
    accounted = sum(totals.values())
    table.add_row("trial: everything else", f"{max(0.0, trial_s - accounted):.0f}",
                  f"{max(0.0, trial_s - accounted) / trial_s:.1%}")
    for label, seconds in overlapped.items():
        table.add_row(label, f"{seconds:.0f}", "-")
    useful = sum(totals[label] for label in USEFUL)
    table.add_row("useful work (training steps, generation, ref_nll)", f"{useful:.0f}", f"{useful / trial_s:.1%}")
    console.print(table)


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
    print_time_table(console, sweep_dir)
    return 0
