"""The (prompt, completion) pairs of a stage: an intermediate task's corpus, or MBPP/MBXP train problems.

Workers load their data themselves from the data directory (deterministically), so nothing large travels
through Ray's object store and every rank sees the same list.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from itt_sweep.data.mbxp import load_problems
from itt_sweep.data.prompts import format_example, training_pair
from itt_sweep.data.tasks import load_task_examples

Pairs = list[tuple[str, str]]


def intermediate_pairs(task: str, split: str, data_dir: Path, limit: int | None, seed: int) -> Pairs:
    return [format_example(e) for e in load_task_examples(task, split, data_dir=data_dir, limit=limit, seed=seed)]


def target_pairs(language: str, split: str, data_dir: Path, limit: int | None) -> Pairs:
    """MBXP problems of the source language with their canonical solution (train or validation split only)."""
    if split not in ("train", "validation"):
        raise ValueError(f"stage 2 never trains on the {split!r} split")
    pairs = [training_pair(p) for p in load_problems(language, split=split, data_dir=data_dir)]
    pairs = [p for p in pairs if p is not None]
    return pairs[:limit] if limit else pairs


def stage_pairs(job: dict[str, Any]) -> tuple[Pairs, Pairs]:
    data = job["data"]
    data_dir = Path(data["data_dir"])
    if data["kind"] == "intermediate":
        train = intermediate_pairs(data["task"], "train", data_dir, data["train_limit"], job["seed"])
        val = intermediate_pairs(data["task"], "validation", data_dir, data["val_limit"], job["seed"])
    else:
        train = target_pairs(data["source_language"], "train", data_dir, data["train_limit"])
        val = target_pairs(data["source_language"], "validation", data_dir, data["val_limit"])
    if not train or not val:
        raise ValueError(f"stage {job['stage_name']} has no data ({len(train)} train, {len(val)} validation)")
    return train, val
