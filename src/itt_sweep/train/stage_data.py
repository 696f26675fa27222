"""The (prompt, completion) pairs of a stage: an intermediate task's corpus, or MBPP/MBXP train problems.

Workers load their data themselves from the data directory (deterministically), so nothing large travels
through Ray's object store and every rank sees the same list.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from itt_sweep.data import chat
from itt_sweep.data.mbxp import load_problems
from itt_sweep.data.prompts import format_example, training_pair
from itt_sweep.data.tasks import CONTROL, load_task_examples

if TYPE_CHECKING:
    from itt_sweep.train.job import StageJob

Pairs = list[tuple[str, str]]


def intermediate_pairs(task: str, split: str, data_dir: Path, limit: int | None, seed: int) -> Pairs:
    return [format_example(e) for e in load_task_examples(task, split, data_dir=data_dir, limit=limit, seed=seed)]


def target_pairs(language: str, split: str, data_dir: Path, limit: int | None, chat_tokenizer: Any = None) -> Pairs:
    """MBXP problems of the source language with their canonical solution (train or validation split only);
    with `chat_tokenizer`, as chat turns (the instruction, and the completed code as the reply)."""
    if split not in ("train", "validation"):
        raise ValueError(f"stage 2 never trains on the {split!r} split")
    problems = [p for p in load_problems(language, split=split, data_dir=data_dir) if training_pair(p)]
    problems = problems[:limit] if limit else problems
    if chat_tokenizer is None:
        return [training_pair(p) for p in problems]
    return [(chat.chat_prompt(chat_tokenizer, chat.instruction(p.prompt, language)),
             chat.training_reply(p.prompt, p.canonical_solution, language)) for p in problems]


def as_chat(tokenizer: Any, pairs: Pairs) -> Pairs:
    """Intermediate pairs in chat format: the prompt as the user turn, the completion as the reply."""
    return [(chat.chat_prompt(tokenizer, prompt), completion) for prompt, completion in pairs]


def stage_pairs(job: StageJob, tokenizer: Any = None) -> tuple[Pairs, Pairs]:
    data = job.data
    data_dir = Path(data.data_dir)
    chat_tokenizer = tokenizer if job.stage.prompt_format == "chat" else None
    if data.kind == "intermediate" and data.task == CONTROL:  # the stage-2 pairs, for stage 1's steps
        train = target_pairs(data.source_language, "train", data_dir, data.train_limit, chat_tokenizer)
        val = target_pairs(data.source_language, "validation", data_dir, data.val_limit, chat_tokenizer)
    elif data.kind == "intermediate":
        train = intermediate_pairs(data.task, "train", data_dir, data.train_limit, job.seed)
        val = intermediate_pairs(data.task, "validation", data_dir, data.val_limit, job.seed)
        if chat_tokenizer is not None:
            train, val = as_chat(chat_tokenizer, train), as_chat(chat_tokenizer, val)
    else:
        train = target_pairs(data.source_language, "train", data_dir, data.train_limit, chat_tokenizer)
        val = target_pairs(data.source_language, "validation", data_dir, data.val_limit, chat_tokenizer)
    if not train or not val:
        raise ValueError(f"stage {job.stage_name} has no data ({len(train)} train, {len(val)} validation)")
    return train, val
