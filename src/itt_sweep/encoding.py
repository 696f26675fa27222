"""Token ids of (prompt, completion) pairs, with one special-token rule for training, generation and scoring.

Tokenising the completion on its own is wrong for SentencePiece tokenizers: they start every encoded text
with a word-boundary marker ("▁"), which shifts Python indentation by one space. So prompt and completion are
tokenised together and split at the prompt's character offset, and the prompt alone is what generation feeds
the model. The special-token rule: a BOS id goes in front exactly when the tokenizer puts one there by default
(Llama, Gemma), never an EOS at the end (the trainer appends EOS to completions itself).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any


def bos_prefix(tokenizer: Any) -> list[int]:
    """[BOS] when the tokenizer prepends it by default, else []: the same prefix everywhere a prompt starts."""
    return list(_bos_prefix(tokenizer))


@lru_cache(maxsize=32)
def _bos_prefix(tokenizer: Any) -> tuple[int, ...]:
    bos = tokenizer.bos_token_id
    if bos is None:
        return ()
    ids = tokenizer("x", add_special_tokens=True)["input_ids"]
    return (bos,) if ids and ids[0] == bos else ()


def prompt_prefix(tokenizer: Any, prompt: str) -> list[int]:
    """The BOS prefix of this prompt: none when the text already opens with BOS (a chat template's output)."""
    bos_text = tokenizer.bos_token
    return [] if bos_text and prompt.startswith(bos_text) else bos_prefix(tokenizer)


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """The ids a prompt is generated from (and scored after)."""
    return prompt_prefix(tokenizer, prompt) + tokenizer(prompt, add_special_tokens=False)["input_ids"]


def encode_pair(tokenizer: Any, prompt: str, completion: str) -> tuple[list[int], int]:
    """(ids of prompt + completion, number of prompt ids).

    The prompt ids are those generation starts from (the prompt alone). The completion ids come from the
    joint encoding, from the first token that starts at or after the prompt's end, so a SentencePiece
    tokenizer adds no word-boundary marker in front of the completion. Where a token spans the boundary (a
    prompt's "\n" merged with the completion's indentation), its completion part is encoded on its own, checked
    by decoding: the model learns what it must write after the prompt as generation tokenises the prompt.
    Only when no such encoding spells the text does the spanning token stay with the prompt.
    """
    prefix = prompt_prefix(tokenizer, prompt)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if not completion:
        return prefix + prompt_ids, len(prefix) + len(prompt_ids)
    head, tail = _split(tokenizer, prompt, completion, prompt_ids)
    return prefix + head + tail, len(prefix) + len(head)


def _split(tokenizer: Any, prompt: str, completion: str, prompt_ids: list[int]) -> tuple[list[int], list[int]]:
    text, boundary = prompt + completion, len(prompt)
    if not getattr(tokenizer, "is_fast", False):  # no offsets: the joint ids after the common prefix
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if ids[:len(prompt_ids)] == prompt_ids:
            return prompt_ids, ids[len(prompt_ids):]
        return prompt_ids, tokenizer(completion, add_special_tokens=False)["input_ids"]
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    first = next((i for i, (start, _end) in enumerate(offsets) if start >= boundary), len(ids))
    spanned_to = offsets[first - 1][1] if first else 0
    if spanned_to <= boundary:
        return prompt_ids, ids[first:]
    rest, spelled = ids[first:], _decode(tokenizer, ids)
    piece = tokenizer(text[boundary:spanned_to], add_special_tokens=False)["input_ids"]
    for drop in range(len(piece)):  # a tokenizer may put a word-start marker in front of the piece
        if _decode(tokenizer, prompt_ids + piece[drop:] + rest) == spelled:
            return prompt_ids, piece[drop:] + rest
    return ids[:first], rest


def _decode(tokenizer: Any, ids: list[int]) -> str:
    return tokenizer.decode(ids, clean_up_tokenization_spaces=False)
