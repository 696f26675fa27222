"""Early stopping on the stage-2 validation loss: ASHA across the sweep, or one ASHA per cell.

Validation losses of different intermediate tasks are not comparable rungs of one ladder (a task that
starts stage 2 from a better model has a lower loss for reasons that are the point of the study), so the
per-cell scope gives each cell its own brackets; the sweep scope is there for large searches of one cell.
"""

from __future__ import annotations

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from itt_sweep.config import SweepConfig
from itt_sweep.sweep.search import METRIC

TIME_ATTR = "target_step"


def make_asha(sweep: SweepConfig) -> ASHAScheduler:
    return ASHAScheduler(time_attr=TIME_ATTR, metric=METRIC, mode="min", max_t=sweep.stages.target.steps,
                         grace_period=sweep.search.grace_period, reduction_factor=sweep.search.reduction_factor)


class PerCellASHA(FIFOScheduler):
    """Routes every trial to the ASHA of its cell; FIFO decides which pending trial runs next."""

    def __init__(self, sweep: SweepConfig):
        super().__init__()
        self._sweep = sweep
        self._by_cell: dict[str, ASHAScheduler] = {}

    def _asha(self, trial) -> ASHAScheduler:
        cell = "__".join(map(str, trial.config["cell"]))
        if cell not in self._by_cell:
            self._by_cell[cell] = make_asha(self._sweep)
        return self._by_cell[cell]

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True

    def on_trial_add(self, tune_controller, trial) -> None:
        self._asha(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        return self._asha(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        self._asha(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._asha(trial).on_trial_remove(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial) -> None:
        self._asha(trial).on_trial_error(tune_controller, trial)

    def debug_string(self) -> str:
        return f"PerCellASHA over {len(self._by_cell)} cell(s)"


def make_scheduler(sweep: SweepConfig) -> TrialScheduler | None:
    if sweep.search.scheduler == "none":
        return None
    return PerCellASHA(sweep) if sweep.search.scheduler_scope == "cell" else make_asha(sweep)
