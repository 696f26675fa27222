"""A live table of trials (cell, stage, step, validation loss, status) with an ETA, printed by the driver.

It is a Tune callback fed by results the trials already send, so it costs the driver loop a dict update per
result and a table render every `every_s` seconds.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback
from rich.console import Console
from rich.table import Table

from itt_sweep.sweep.trial_logs import trial_log_dir


def eta_seconds(durations: list[float], remaining: int, concurrency: int, elapsed_running: float = 0.0) -> float:
    """Mean finished-trial time × trials left, divided among concurrent slots; NaN before any trial ends."""
    if not durations:
        return math.nan
    return max(0.0, (sum(durations) / len(durations)) * remaining / max(1, concurrency) - elapsed_running)


def _fmt_eta(seconds: float) -> str:
    if math.isnan(seconds):
        return "ETA: after the first trial"
    return f"ETA: {int(seconds // 60)} min {int(seconds % 60)} s"


def failure_report(key: str, stage: str, error_text: str, log: Path, lines: int = 8) -> str:
    """What the console and `itt-sweep status` say about a failed trial: which, where, why, and its log."""
    tail = [line for line in error_text.strip().splitlines() if line.strip()][-lines:]
    body = "\n".join(f"    {line}" for line in tail) or "    (no error text recorded)"
    return f"trial {key} FAILED in stage {stage}:\n{body}\n  full log: {log}"


def error_text(trial) -> str:
    """The error Tune recorded for a trial (its error file), or ""."""
    path = getattr(trial, "error_file", None)
    if path:
        with contextlib.suppress(OSError):
            return Path(path).read_text(errors="replace")
    return ""


class ProgressTable(Callback):
    def __init__(self, total: int, concurrency: int, every_s: float = 15.0, console: Console | None = None,
                 sweep_dir: str | Path | None = None):
        self.total, self.concurrency, self.every_s = total, concurrency, every_s
        self.sweep_dir = sweep_dir
        self._console = console
        self.rows: dict[str, dict[str, Any]] = {}
        self.started: dict[str, float] = {}
        self.durations: list[float] = []
        self.last_render = 0.0

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks with the experiment; a console can't be
        return {**self.__dict__, "_console": None}

    @property
    def console(self) -> Console:
        if self._console is None:
            self._console = Console(stderr=True)
        return self._console

    def _row(self, trial) -> dict[str, Any]:
        key = trial.config.get("trial_key", trial.trial_id)
        return self.rows.setdefault(key, {"stage": "-", "step": "-", "val_loss": math.nan, "status": "PENDING"})

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.started[trial.trial_id] = time.monotonic()
        self._row(trial)["status"] = "RUNNING"

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        row = self._row(trial)
        stage = result.get("stage", row["stage"])
        row["stage"] = stage
        row["step"] = result.get(f"{stage}_step", row["step"])
        row["val_loss"] = result.get(f"{stage}_val_loss", row["val_loss"])

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._row(trial).update(status="DONE", stage="eval")
        if trial.trial_id in self.started:
            self.durations.append(time.monotonic() - self.started.pop(trial.trial_id))
        self.render(force=True)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        row = self._row(trial)
        row["status"] = "ERROR"
        self.started.pop(trial.trial_id, None)
        key = trial.config.get("trial_key", trial.trial_id)
        log = trial_log_dir(self.sweep_dir or ".", key) / "trial.log"
        self.console.print(failure_report(key, str(row["stage"]), error_text(trial), log), markup=False,
                           highlight=False)

    def on_step_end(self, iteration, trials, **info) -> None:
        self.render()

    def render(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_render < self.every_s:
            return
        self.last_render = now
        done = sum(r["status"] in ("DONE", "ERROR") for r in self.rows.values())
        running = [now - t for t in self.started.values()]
        eta = eta_seconds(self.durations, self.total - done, self.concurrency,
                          sum(running) / max(1, len(running)) if running else 0.0)
        table = Table(title=f"itt-sweep: {done}/{self.total} trials done   {_fmt_eta(eta)}")
        for column in ("trial (cell__sample)", "stage", "step", "val loss", "status"):
            table.add_column(column)
        for key, row in sorted(self.rows.items()):
            loss = row["val_loss"]
            table.add_row(key, str(row["stage"]), str(row["step"]),
                          "-" if not isinstance(loss, float) or math.isnan(loss) else f"{loss:.4f}", row["status"])
        self.console.print(table)
