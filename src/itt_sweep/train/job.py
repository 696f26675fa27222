"""The stage job: everything one training stage needs, as one typed model from the trial to every worker.

The trial builds it (`sweep/trial.py`), the stage cache keys it (`train/stage.py`), Ray Train ships it to the
workers as a plain dict (`train_loop_config`), and the loop (`train/loop.py`) validates it back, so a field
added here is visible and checked at every hop.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from itt_sweep.config import StageSpec, TrainingSpec
from itt_sweep.modeling import ModelRef


class StageData(BaseModel):
    """What a stage trains on: an intermediate task, the source language's MBXP train problems, or (for the
    throughput benchmark) random full-length rows."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["intermediate", "target", "synthetic"]
    task: str | None = None
    task_version: str | None = None
    source_language: str | None = None
    train_limit: int | None = None
    val_limit: int | None = None
    files: str | None = None  # fingerprint of the data files (part of the stage key)
    data_dir: str | None = None
    vocab_size: int | None = None  # synthetic only
    train_examples: int = 0
    val_examples: int = 0


class StageJob(BaseModel):
    """One stage of one trial. `init_model` is the base model (stage 1, or stage 2 without stage 1) or the
    previous stage's exported directory; `fresh_model` (benchmarks) builds a random model from a config."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    stage_name: str
    init_model: ModelRef | None = None
    seed: int = 0
    bf16: bool = False
    stage: StageSpec
    training: TrainingSpec
    data: StageData
    max_failures: int = 2
    fresh_model: dict[str, Any] | None = None
    export: bool = True
    log_dir: str | None = None  # each worker's output goes to <log_dir>/<stage>-rank<k>.log (`trial_logs`)

    def batch_split(self) -> tuple[int, int]:
        """(micro batch per worker, accumulation steps); the schema has already checked that they divide."""
        return self.stage.batch_split(self.training.num_workers)
