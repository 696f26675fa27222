"""The sweep's console: one live view of every trial, a line per finished or failed trial, an ETA.

A Tune callback fed by the results trials already send (stage, step, validation loss, tokens/s), so it costs
the driver loop a dict update per result. On a terminal it is a rich `Live` view, redrawn in place; without
one (CI, `nohup`, a Ray Job's log) the same content is one plain line, printed when it changed and at most
every `every_s` seconds. Finished trials get one summary line, failed ones their key, stage, the error's
last lines and the path of their log (`trial_logs`), so a day-long sweep can be read at a glance.

The ETA adds, for every trial not done, the mean wall time of each stage it still has to run (measured on
stages that trained here; stage-cache hits are counted apart and cost nothing), divided among the slots.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune import Callback
from rich.console import Console
from rich.live import Live
from rich.table import Table

from itt_sweep.sweep.trial_logs import trial_log_dir

STAGES = ("intermediate", "target", "eval")


def failure_report(key: str, stage: str, error_text: str, log: Path, lines: int = 8) -> str:
    """What the console and `itt-sweep status` say about a failed trial: which, where, why, and its log."""
    # Python's caret lines (`^^^^`) under each frame say nothing a reader needs here; the log keeps them
    tail = [line for line in error_text.strip().splitlines() if line.strip().strip("^~")][-lines:]
    body = "\n".join(f"    {line}" for line in tail) or "    (no error text recorded)"
    return f"trial {key} FAILED in stage {stage}:\n{body}\n  full log: {log}"


def error_text(trial) -> str:
    """The error Tune recorded for a trial (its error file), or "". Outside a Ray session (`itt-sweep status`)
    Tune's `error_file` cannot be resolved (it asks Ray for the session dir and asserts), so the `error.txt`
    Tune writes into the trial's folder of the experiment is read instead."""
    candidates = []
    for where in (lambda: trial.error_file, lambda: Path(trial.path) / "error.txt"):
        with contextlib.suppress(Exception):
            candidates.append(where())
    for path in filter(None, candidates):
        with contextlib.suppress(OSError):
            return Path(path).read_text(errors="replace")
    return ""


def duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "-"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


@dataclass
class TrialState:
    key: str
    stages: tuple[str, ...]  # what this trial runs: `none` has no intermediate stage
    status: str = "PENDING"
    stage: str = "-"
    step: int | None = None
    steps: int | None = None
    val_loss: float = math.nan
    tokens_per_s: float = math.nan
    started: float | None = None
    stage_started: float | None = None
    language: str = ""  # stage 3's language being generated
    cached: set[str] = field(default_factory=set)


class SweepView(Callback):
    def __init__(self, total: int, concurrency: int, sweep_dir: str | Path | None = None, every_s: float = 30.0,
                 console: Console | None = None) -> None:
        self.total, self.concurrency, self.every_s = total, concurrency, every_s
        self.sweep_dir = sweep_dir
        self._console = console
        self._live: Live | None = None
        self.trials: dict[str, TrialState] = {}
        self.stage_times: dict[str, list[float]] = {stage: [] for stage in STAGES}
        self.cache_hits = 0
        self.last_line, self.last_print = "", 0.0
        self._adopted = False  # restored trials counted (`_adopt_restored`)

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks with the experiment; consoles can't be
        return {**self.__dict__, "_console": None, "_live": None, "_adopted": False}

    @property
    def console(self) -> Console:
        if self._console is None:
            self._console = Console(file=sys.stderr)
        return self._console

    # ------------------------------------------------------------ Tune events

    @staticmethod
    def _key(trial) -> str:
        return trial.config.get("trial_key", trial.trial_id)

    def _state(self, trial) -> TrialState:
        key = self._key(trial)
        if key not in self.trials:
            task = (trial.config.get("cell") or ["?"])[0]
            stages = STAGES[1:] if task == "none" else STAGES
            self.trials[key] = TrialState(key=key, stages=stages)
        return self.trials[key]

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        state = self._state(trial)
        state.status, state.started = "RUNNING", time.monotonic()
        self.update()

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        state = self._state(trial)
        stage = result.get("stage", state.stage)
        if stage != state.stage:
            self._close_stage(state)
            state.stage, state.stage_started, state.step, state.steps = stage, time.monotonic(), None, None
            state.val_loss = state.tokens_per_s = math.nan  # the previous stage's numbers are not this one's
            state.language = ""
        if result.get("cached"):
            state.cached.add(stage)
        state.step = result.get(f"{stage}_step", state.step)
        state.steps = result.get(f"{stage}_steps", state.steps)
        state.val_loss = result.get(f"{stage}_val_loss", state.val_loss)
        state.tokens_per_s = result.get(f"{stage}_tokens_per_s", state.tokens_per_s)
        state.language = result.get(f"{stage}_language", state.language)
        self.update()

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        state = self._state(trial)
        self._close_stage(state)
        state.status, state.stage = "DONE", "done"
        self.say(self._summary(state, trial.last_result or {}))
        self.update(force=True)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        state = self._state(trial)
        state.status = "ERROR"
        log = trial_log_dir(self.sweep_dir or ".", state.key) / "trial.log"
        self.say(failure_report(state.key, state.stage, error_text(trial), log))
        self.update(force=True)

    def on_step_end(self, iteration, trials, **info) -> None:
        if not self._adopted:
            self._adopt_restored(trials)
        self.update()

    def _adopt_restored(self, trials) -> None:
        """Count the trials a resumed experiment restored as finished or failed, once, at the first step:
        Tune sends them no events, so without this a resumed sweep reads "0/18 done" while 10 are done."""
        self._adopted = True
        for trial in trials:
            status = {"TERMINATED": "DONE", "ERROR": "ERROR"}.get(getattr(trial, "status", ""))
            if status and self._key(trial) not in self.trials:
                self._state(trial).status = status
                if status == "DONE":
                    self.trials[self._key(trial)].stage = "done"

    def on_experiment_end(self, trials, **info) -> None:
        self.update(force=True)
        if self._live is not None:
            self._live.stop()
            self._live = None

    # ------------------------------------------------------------ bookkeeping

    def _close_stage(self, state: TrialState) -> None:
        if state.stage in STAGES and state.stage_started is not None:
            if state.stage in state.cached:
                self.cache_hits += 1
            else:
                self.stage_times[state.stage].append(time.monotonic() - state.stage_started)
        state.stage_started = None

    def counts(self) -> dict[str, int]:
        statuses = [t.status for t in self.trials.values()]
        done, running, errored = (statuses.count(s) for s in ("DONE", "RUNNING", "ERROR"))
        return {"done": done, "running": running, "errored": errored,
                "pending": self.total - done - running - errored}

    def eta_s(self) -> float:
        """Mean measured time of every stage still to run, over all unfinished trials, per concurrent slot."""
        mean = {stage: statistics.fmean(times) for stage, times in self.stage_times.items() if times}
        if not mean:
            return math.nan
        now, left = time.monotonic(), 0.0
        unseen = self.total - len(self.trials)
        typical = max(self.trials.values(), key=lambda t: len(t.stages)).stages if self.trials else STAGES
        for state in [*self.trials.values(), *[TrialState("", typical)] * unseen]:
            if state.status in ("DONE", "ERROR"):
                continue
            todo = state.stages[state.stages.index(state.stage):] if state.stage in state.stages else state.stages
            for stage in todo:
                if stage not in mean:
                    continue
                spent = now - state.stage_started if stage == state.stage and state.stage_started else 0.0
                left += max(0.0, mean[stage] - spent)
        return left / max(1, self.concurrency)

    def _summary(self, state: TrialState, result: dict[str, Any]) -> str:
        elapsed = time.monotonic() - state.started if state.started else math.nan
        evals = {k.split("/")[1]: v for k, v in result.items() if k.startswith("eval/") and k.endswith("/pass_at_1")}
        nll = [v for k, v in result.items() if k.startswith("eval/") and k.endswith("/ref_nll") and math.isfinite(v)]
        parts = [f"trial {state.key} done in {duration(elapsed)}"]
        if evals:
            parts.append(f"pass@1 mean {statistics.fmean(evals.values()):.3f} over {len(evals)} languages")
        if nll:
            parts.append(f"ref_nll mean {statistics.fmean(nll):.3f}")
        if state.cached:
            parts.append("cached: " + ", ".join(sorted(state.cached)))
        return "; ".join(parts)

    # ------------------------------------------------------------ output

    def headline(self) -> str:
        c = self.counts()
        eta = self.eta_s()
        return (f"itt-sweep: {c['done']}/{self.total} done, {c['running']} running, {c['pending']} pending, "
                f"{c['errored']} errored; ETA {duration(eta) if math.isfinite(eta) else 'after the first stage'}"
                + (f"; {self.cache_hits} stage-cache hits" if self.cache_hits else ""))

    @staticmethod
    def _cells(state: TrialState, now: float) -> tuple[str, str, str, str, str]:
        """Stage, step/total, val loss, tokens/s and elapsed of a trial, as both the line and the table show
        them; in stage 3 the step counts samples generated and the stage names the language being generated."""
        stage = f"{state.stage} {state.language}" if state.language else state.stage
        step = f"{state.step}/{state.steps}" if state.step is not None and state.steps else "-"
        loss = f"{state.val_loss:.4f}" if math.isfinite(state.val_loss) else "-"
        speed = f"{state.tokens_per_s:.0f}" if math.isfinite(state.tokens_per_s) else "-"
        elapsed = duration(now - state.started) if state.started and state.status == "RUNNING" else "-"
        return stage, step, loss, speed, elapsed

    def running_lines(self) -> list[str]:
        now = time.monotonic()
        return [f"{state.key} {stage} step {step} val {loss} tok/s {speed} {elapsed}"
                for state in sorted(self.trials.values(), key=lambda t: t.key) if state.status == "RUNNING"
                for stage, step, loss, speed, elapsed in [self._cells(state, now)]]

    def table(self) -> Table:
        table = Table(title=self.headline(), title_justify="left")
        for column in ("trial", "stage", "step", "val loss", "tok/s", "elapsed", "status"):
            table.add_column(column)
        now = time.monotonic()
        for state in sorted(self.trials.values(), key=lambda t: t.key):
            table.add_row(state.key, *self._cells(state, now), state.status)
        return table

    def say(self, text: str) -> None:
        """A line that stays (a trial's end or failure), above the live view on a terminal."""
        target = self._live.console if self._live is not None else self.console
        target.print(text, markup=False, highlight=False, soft_wrap=True)

    def update(self, force: bool = False) -> None:
        if self.console.is_terminal:
            if self._live is None:
                self._live = Live(self.table(), console=self.console, refresh_per_second=1, transient=False)
                self._live.start()
            self._live.update(self.table())
            return
        line = " | ".join([self.headline(), *self.running_lines()])
        now = time.monotonic()
        if line != self.last_line and (force or now - self.last_print >= self.every_s):
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)
            self.last_line, self.last_print = line, now
