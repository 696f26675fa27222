"""`ref_nll`: how likely the model finds known-good solutions, given the prompt.

Tiny models pass almost no MBXP problem, so pass@1 is zero everywhere and shows no transfer; the negative
log-likelihood of reference solutions moves long before pass@1 does. Only completion tokens are scored (the
prompt is context, labelled -100), and the mean is over tokens, not over pairs, so a long solution weighs more
than a one-liner, as in a language-modelling loss.

Prompt and completion are tokenised together and split at the prompt's end, with the BOS rule of training
and generation (`itt_sweep.encoding`), so the completion is scored in the tokens the model would write.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from itt_sweep.encoding import encode_pair
from itt_sweep.modeling import max_positions

IGNORE_INDEX = -100
MAX_LENGTH = 1024  # tokens of prompt + completion scored at most (the prompt is cut from the left beyond it)


def _pair_ids(tokenizer, prompt: str, completion: str, max_length: int) -> tuple[list[int], int]:
    """Token ids of prompt + completion and the number of completion tokens, cut to `max_length`.

    Too long: prompt tokens go first, from the left, so the text nearest the completion stays; a completion
    that alone fills the window keeps its start and one prompt token to condition its first token on.
    """
    ids, n_prompt = encode_pair(tokenizer, prompt, completion)
    prompt_ids, completion_ids = ids[:n_prompt], ids[n_prompt:]
    if len(prompt_ids) + len(completion_ids) > max_length:
        keep_prompt = max(1, max_length - len(completion_ids)) if prompt_ids else 0
        prompt_ids = prompt_ids[len(prompt_ids) - keep_prompt :]
        completion_ids = completion_ids[: max_length - len(prompt_ids)]
    ids = prompt_ids + completion_ids
    # the first token has nothing before it, so it cannot be scored
    return ids, min(len(completion_ids), len(ids) - 1)


def _batch_nll(model, batch: list[tuple[list[int], int]], pad_id: int) -> list[tuple[float, int]]:
    """(sum NLL, token count) per sequence of one left-padded batch.

    Left padding puts every completion at the right edge, so only the last positions need logits, which
    saves a (batch x length x vocabulary) tensor where the model supports `logits_to_keep`.
    """
    device = next(model.parameters()).device
    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    for row, (ids, n_scored) in enumerate(batch):
        input_ids[row, width - len(ids) :] = torch.tensor(ids)
        attention_mask[row, width - len(ids) :] = 1
        if n_scored:
            labels[row, width - n_scored :] = torch.tensor(ids[len(ids) - n_scored :])
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    keep = max(n for _, n in batch) + 1
    supported = "logits_to_keep" in inspect.signature(model.forward).parameters
    extra = {"logits_to_keep": keep} if supported else {}
    logits = model(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        position_ids=position_ids.to(device),
        **extra,
    ).logits[:, -keep:]
    targets = labels[:, -keep:][:, 1:].to(device)
    token_nll = F.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none"
    )
    sums = token_nll.sum(-1).tolist()
    return [(sums[row], n_scored) for row, (_, n_scored) in enumerate(batch)]


def per_pair_nll(
    model, tokenizer, pairs: Sequence[tuple[str, str]], batch_size: int = 8, max_length: int = MAX_LENGTH
) -> list[tuple[float, int]]:
    """(sum of completion-token NLL in nats, number of completion tokens) per (prompt, completion) pair."""
    if batch_size < 1 or max_length < 2:
        raise ValueError(f"batch_size must be >= 1 and max_length >= 2, got {batch_size} and {max_length}")
    max_length = min(max_length, max_positions(model.config) or max_length)  # never past the model's context
    encoded = [_pair_ids(tokenizer, prompt, completion, max_length) for prompt, completion in pairs]
    pad_id = next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0)
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))
    results: list[tuple[float, int]] = [(0.0, 0)] * len(encoded)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                scored = _batch_nll(model, [encoded[i] for i in batch], pad_id)
                for index, result in zip(batch, scored, strict=True):
                    results[index] = result
    finally:
        model.train(was_training)
    return results


def reference_nll(
    model, tokenizer, pairs: Sequence[tuple[str, str]], batch_size: int = 8, max_length: int = MAX_LENGTH
) -> float:
    """Token-weighted mean NLL (nats per token) of the completions given their prompts; NaN for no tokens."""
    scored = per_pair_nll(model, tokenizer, pairs, batch_size=batch_size, max_length=max_length)
    total_tokens = sum(n for _, n in scored)
    if total_tokens == 0:
        return math.nan
    return sum(nll for nll, _ in scored) / total_tokens
