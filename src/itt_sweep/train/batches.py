"""Tokenised training examples and the deterministic batch order that makes resume exact.

The batch for optimizer step `s` depends only on (seed, s), never on how many steps this process has run, so a
stage restarted from a checkpoint at step k sees exactly the batches k, k+1, ... it would have seen.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from itt_sweep.encoding import encode_pair as joint_ids
from itt_sweep.encoding import prompt_prefix

IGNORE = -100


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]


def encode_pair(tokenizer, prompt: str, completion: str, seq_len: int) -> Encoded:
    """Prompt tokens are masked out of the loss; the model learns only the completion (+ EOS).

    Prompt and completion are tokenised together and split at the prompt's end (`itt_sweep.encoding`), with
    the BOS rule that generation and `ref_nll` use. Too long: the completion keeps its start, and the prompt
    loses tokens from its beginning (after BOS), so the text next to the completion stays.
    """
    ids, n_prompt = joint_ids(tokenizer, prompt, completion)
    n_bos = len(prompt_prefix(tokenizer, prompt))
    bos, prompt_ids, completion_ids = ids[:n_bos], ids[n_bos:n_prompt], ids[n_prompt:] + [tokenizer.eos_token_id]
    completion_ids = completion_ids[:max(1, seq_len - n_bos)]
    room = max(0, seq_len - n_bos - len(completion_ids))
    prompt_ids = prompt_ids[len(prompt_ids) - room:] if room else []
    head = bos + prompt_ids
    return Encoded(head + completion_ids, [IGNORE] * len(head) + completion_ids)


def encode_pairs(tokenizer, pairs: Sequence[tuple[str, str]], seq_len: int) -> list[Encoded]:
    return [encode_pair(tokenizer, p, c, seq_len) for p, c in pairs]


def pack(examples: Sequence[Encoded], seq_len: int) -> list[Encoded]:
    """Concatenate examples (each already ending in EOS) into full rows of `seq_len` tokens: no padding waste
    on short intermediate-task pairs. Examples in a row attend to their predecessors, as in GPT-style
    packing; the loss still covers completion tokens only, and an example that does not fit starts a new row.
    """
    rows: list[Encoded] = []
    ids: list[int] = []
    labels: list[int] = []
    for e in examples:
        if ids and len(ids) + len(e.input_ids) > seq_len:
            rows.append(Encoded(ids, labels))
            ids, labels = [], []
        ids, labels = ids + e.input_ids, labels + e.labels
    if ids:
        rows.append(Encoded(ids, labels))
    return rows


def collate(examples: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example of the batch; padding is masked from attention and loss."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def step_indices(n_examples: int, global_batch: int, step: int, seed: int) -> list[int]:
    """Example indices of one optimizer step: epochs are seeded permutations, walked in order."""
    start = step * global_batch
    out: list[int] = []
    while len(out) < global_batch:
        epoch, offset = divmod(start + len(out), n_examples)
        perm = list(range(n_examples))
        random.Random(f"{seed}:{epoch}").shuffle(perm)
        out.extend(perm[offset:offset + global_batch - len(out)])
    return out


def rank_micro_batches(indices: list[int], rank: int, world: int, micro: int) -> list[list[int]]:
    """This rank's share of a step, cut into micro-batches for gradient accumulation."""
    mine = indices[rank::world]
    return [mine[i:i + micro] for i in range(0, len(mine), micro)]
