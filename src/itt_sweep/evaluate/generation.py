"""Batched completion of code prompts, cut at per-language stop sequences.

Stage 3 asks the model for a function body for every MBXP test problem in every language; that is the slow
part of an evaluation, so prompts are batched (left padding, sorted by length to waste little on padding) and
a sequence that has written a stop sequence (the start of the next top-level definition, say) stops counting
towards the batch, which ends when every sequence is done. Batching must not change the answer: greedy results
equal those of generating each prompt alone, which the tests pin down.

Decoding is fixed here, not inherited from a checkpoint's `generation_config` (a hub model may ship a
repetition penalty or top-k), so two models are always compared under the same decoding rule.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import StoppingCriteria, StoppingCriteriaList


@dataclass
class GenerationConfig:
    """How completions are drawn: greedy for pass@1, sampling with `num_samples` > 1 for pass@k.

    `batch_size` counts sequences in one `generate` call, so a batch holds `batch_size // num_samples`
    prompts (at least one) when sampling.
    """

    max_new_tokens: int = 256
    batch_size: int = 8
    do_sample: bool = False
    temperature: float = 0.8
    top_p: float = 0.95
    num_samples: int = 1
    keep_stop: bool = False


def completion_text(
    tokenizer, prompt_ids: Sequence[int], generated_ids: Sequence[int], head: str | None = None
) -> str:
    """The text the model added after the prompt (`head` is the decoded prompt, if already known).

    Decoding the new tokens alone loses a leading space with SentencePiece tokenizers, so the prompt and the
    new tokens are decoded together and the decoded prompt is cut off the front.
    """
    generated_ids = list(generated_ids)
    if head is None:
        head = tokenizer.decode(list(prompt_ids), skip_special_tokens=True)
    full = tokenizer.decode(list(prompt_ids) + generated_ids, skip_special_tokens=True)
    if full.startswith(head):
        return full[len(head) :]
    return tokenizer.decode(generated_ids, skip_special_tokens=True)


def truncate_at_stop(text: str, stop_sequences: Sequence[str], keep_stop: bool = False) -> str:
    """Cut `text` at the earliest stop sequence; `keep_stop` keeps it (brace languages: the "\n}" that
    closes the function belongs to the completion)."""
    cut = None
    for stop in stop_sequences:
        index = text.find(stop) if stop else -1
        if index != -1 and (cut is None or index < cut[0]):
            cut = (index, len(stop))
    if cut is None:
        return text
    return text[: cut[0] + (cut[1] if keep_stop else 0)]


class _StopSequenceCriteria(StoppingCriteria):
    """Marks a sequence done once its completion contains a stop sequence.

    Works on decoded text rather than token ids, because a byte-level BPE tokenizer can spell a stop sequence
    such as "\\ndef" with many different token splits. A finished sequence stays finished.
    """

    def __init__(self, tokenizer, prompt_ids: list[list[int]], prompt_width: int, stops: Sequence[str]):
        self.tokenizer = tokenizer
        self.prompt_ids = prompt_ids
        self.prompt_width = prompt_width
        self.heads = [tokenizer.decode(ids, skip_special_tokens=True) for ids in prompt_ids]
        self.stops = [stop for stop in stops if stop]
        self.done = [False] * len(prompt_ids)

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        for row, prompt in enumerate(self.prompt_ids):
            if not self.done[row] and self.stops:
                generated = input_ids[row, self.prompt_width :].tolist()
                text = completion_text(self.tokenizer, prompt, generated, self.heads[row])
                self.done[row] = any(stop in text for stop in self.stops)
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)


@contextmanager
def _left_padding(tokenizer) -> Iterator[None]:
    """Decoder-only models continue from the last position, so batched prompts must be padded on the left."""
    saved_side, saved_pad = tokenizer.padding_side, tokenizer.pad_token
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        yield
    finally:
        tokenizer.padding_side = saved_side
        if saved_pad is None:
            tokenizer.pad_token = None


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed sampling without disturbing the caller's RNG streams (a training loop may run around us)."""
    cuda_devices = []
    if device.type == "cuda":
        cuda_devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        yield


def _decoding_kwargs(tokenizer, config: GenerationConfig, num_return_sequences: int) -> dict:
    """Every decoding knob set explicitly, so no checkpoint default can change the rule."""
    kwargs = dict(
        max_new_tokens=config.max_new_tokens,
        do_sample=config.do_sample,
        num_beams=1,
        num_return_sequences=num_return_sequences,
        repetition_penalty=1.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    if config.do_sample:
        kwargs.update(temperature=config.temperature, top_p=config.top_p, top_k=0)
    return kwargs


def _generate_batch(
    model, tokenizer, prompts: Sequence[str], stop_sequences: Sequence[str], config: GenerationConfig, n: int
) -> list[list[str]]:
    """`n` completions for each prompt of one batch, in the batch's order."""
    device = next(model.parameters()).device
    encoded = tokenizer(list(prompts), return_tensors="pt", padding=True)
    input_ids = encoded["input_ids"].to(device)
    attention_mask = encoded["attention_mask"].to(device)
    width = input_ids.shape[1]
    prompt_ids = [ids[mask.bool()].tolist() for ids, mask in zip(input_ids, attention_mask, strict=True)]
    expanded = [ids for ids in prompt_ids for _ in range(n)]  # generate repeats each row n times in place
    criteria = _StopSequenceCriteria(tokenizer, expanded, width, stop_sequences)
    output = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        stopping_criteria=StoppingCriteriaList([criteria]),
        **_decoding_kwargs(tokenizer, config, n),
    )
    texts = [
        truncate_at_stop(completion_text(tokenizer, prompt, row[width:].tolist()), stop_sequences, config.keep_stop)
        for prompt, row in zip(expanded, output, strict=True)
    ]
    return [texts[i * n : (i + 1) * n] for i in range(len(prompts))]


def generate_completions(
    model,
    tokenizer,
    prompts: Sequence[str],
    stop_sequences: Sequence[str],
    config: GenerationConfig,
    seed: int = 0,
) -> list[list[str]]:
    """For each prompt, `config.num_samples` completions cut at the first stop sequence, in prompt order.

    Sampling is reproducible for the same prompts, config and seed; the caller's RNG state is left untouched.
    Greedy decoding is deterministic, so it runs once per prompt and repeats the answer `num_samples` times.
    The model is put in eval mode for the call and left in the mode it came in (stage 2 may evaluate mid-run).
    """
    if config.num_samples < 1 or config.batch_size < 1:
        raise ValueError(
            f"num_samples and batch_size must be at least 1, got {config.num_samples} and {config.batch_size}"
        )
    if not prompts:
        return []
    n = config.num_samples if config.do_sample else 1
    lengths = [len(tokenizer(prompt)["input_ids"]) for prompt in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])  # longest first: an OOM shows up at once
    rows_per_batch = max(1, config.batch_size // n)
    results: list[list[str]] = [[] for _ in prompts]
    was_training = model.training
    model.eval()
    try:
        with _seeded(seed, next(model.parameters()).device), torch.inference_mode(), _left_padding(tokenizer):
            for start in range(0, len(order), rows_per_batch):
                batch = order[start : start + rows_per_batch]
                completions = _generate_batch(
                    model, tokenizer, [prompts[i] for i in batch], stop_sequences, config, n
                )
                for index, texts in zip(batch, completions, strict=True):
                    results[index] = texts
    finally:
        model.train(was_training)
    if n != config.num_samples:
        results = [texts * config.num_samples for texts in results]
    return results
