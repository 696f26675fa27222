"""Matrix × search: one Optuna study per cell, behind a single Ray Tune Searcher.

Grid axes cannot go through `OptunaSearch` (it refuses grid parameters), and one study for the whole matrix
would let TPE compare learning rates across different intermediate tasks. So the grid is walked here and
each cell gets its own TPE study, seeded from the cell, for `num_samples` trials. The searcher pickles its
studies on `save`, so `Tuner.restore` continues the search exactly where it stopped.
"""

from __future__ import annotations

import pickle
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from ray.tune.search import Searcher

from itt_sweep.config import Cell, Distribution, SweepConfig, stable_hash

METRIC = "target_val_loss"

optuna.logging.set_verbosity(optuna.logging.WARNING)


def optuna_distribution(dist: Distribution) -> BaseDistribution:
    if dist.type == "choice":
        return CategoricalDistribution(dist.values)
    if dist.type == "randint":  # Tune's convention: high is exclusive
        return IntDistribution(int(dist.low), int(dist.high) - 1)
    return FloatDistribution(dist.low, dist.high, log=dist.type == "loguniform")


def trial_key(cell: Cell, sample: int) -> str:
    """Stable across restarts: the cell plus the sample's index inside the cell."""
    return f"{cell.key}__n{sample}"


class CellSearcher(Searcher):
    """Walks the cells in order; inside a cell, asks that cell's study for each sample."""

    def __init__(self, sweep: SweepConfig):
        super().__init__(metric=METRIC, mode="min")
        self.space = {name: optuna_distribution(d) for name, d in sweep.search.space.items()}
        self.num_samples = sweep.search.num_samples
        self.target_steps = sweep.stages.target.steps
        self.cells = [list(c) for c in sweep.cells()]
        self.studies: dict[str, optuna.Study] = {}
        self.issued: list[tuple[int, int]] = []  # (cell index, sample) in the order handed out
        self.live: dict[str, tuple[str, int]] = {}  # Tune trial id -> (cell key, optuna trial number)

    def _study(self, cell: Cell) -> optuna.Study:
        if cell.key not in self.studies:
            seed = int(stable_hash(cell.key, 8), 16)
            self.studies[cell.key] = optuna.create_study(direction="minimize",
                                                         sampler=optuna.samplers.TPESampler(seed=seed))
        return self.studies[cell.key]

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        total = len(self.cells) * self.num_samples
        if len(self.issued) >= total:
            return Searcher.FINISHED
        cell_index, sample = divmod(len(self.issued), self.num_samples)
        cell = Cell(*self.cells[cell_index])
        hp: dict[str, Any] = {}
        if self.space:
            trial = self._study(cell).ask(self.space)
            hp = dict(trial.params)
            self.live[trial_id] = (cell.key, trial.number)
        self.issued.append((cell_index, sample))
        return {"cell": list(cell), "sample": sample, "trial_key": trial_key(cell, sample), "hp": hp}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.live:
            return
        cell_key, number = self.live.pop(trial_id)
        study = self.studies[cell_key]
        value = (result or {}).get(METRIC)
        if error or value is None:
            study.tell(number, state=optuna.trial.TrialState.FAIL)
        elif (result or {}).get("target_step", self.target_steps) < self.target_steps:
            study.tell(number, state=optuna.trial.TrialState.PRUNED)  # stopped early by ASHA
        else:
            study.tell(number, float(value))

    def get_state(self) -> dict:
        return {"studies": self.studies, "issued": self.issued, "live": self.live, "cells": self.cells,
                "num_samples": self.num_samples}

    def set_state(self, state: dict) -> None:
        if state["cells"] != self.cells or state["num_samples"] != self.num_samples:
            raise ValueError("the sweep's matrix changed since it started; start a new sweep instead of resuming")
        self.studies, self.issued, self.live = state["studies"], state["issued"], state["live"]

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))
