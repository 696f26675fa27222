"""Base models and tokenizers: one loading path for hub ids, local directories and tiny scratch models.

A `scratch:<preset>` model is materialised once per sweep (a small Llama from a config plus a byte-level BPE
tokenizer trained on the sweep's own corpora) into a directory named by the content hash of its recipe, and
from then on it is an ordinary local model: every later step loads it with `from_pretrained`, exactly like
a hub model, so tests exercise the same code path users run.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

log = logging.getLogger(__name__)

EOS = "<|endoftext|>"
PAD = "<|pad|>"

# Shapes of the scratch presets; `tiny` keeps the CPU smoke sweep within minutes.
SCRATCH_PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=1024, max_position_embeddings=1024),
    "small": dict(hidden_size=256, intermediate_size=704, num_hidden_layers=6, num_attention_heads=8,
                  num_key_value_heads=4, vocab_size=4096, max_position_embeddings=2048),
}
SCRATCH_VERSION = "scratch-1"


def is_scratch(name: str) -> bool:
    return name.startswith("scratch:")


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on the given texts: any byte sequence stays encodable, so no <unk> in code."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS, PAD],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD, bos_token=None,
                                   model_max_length=1 << 20)


def build_scratch(preset: str, texts: list[str], out_dir: Path, seed: int = 0) -> Path:
    """Write a scratch model + tokenizer to `out_dir` atomically (temp dir, then rename)."""
    if out_dir.is_dir() and (out_dir / "config.json").exists():
        return out_dir
    shape = dict(SCRATCH_PRESETS[preset])
    tokenizer = train_tokenizer(texts, shape.pop("vocab_size"))
    config = LlamaConfig(vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None, tie_word_embeddings=True,
                         **shape)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    tmp = out_dir.with_name(f"{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        os.rename(tmp, out_dir)
    except OSError:  # another process finished first: theirs is as good as ours
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("built scratch:%s (%d params) at %s", preset, model.num_parameters(), out_dir)
    return out_dir


def load_tokenizer(name_or_path: str, gguf_file: str | None = None, revision: str | None = None) -> Any:
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, gguf_file=gguf_file, revision=revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(name_or_path: str, gguf_file: str | None = None, revision: str | None = None,
               dtype: torch.dtype = torch.float32) -> Any:
    """The one place models are loaded; a hub id, a local directory or a GGUF file all come through here."""
    if is_scratch(name_or_path):
        raise ValueError(f"{name_or_path} must be materialised with build_scratch() before loading")
    return AutoModelForCausalLM.from_pretrained(name_or_path, gguf_file=gguf_file, revision=revision, dtype=dtype)


def load_model_and_tokenizer(name_or_path: str, gguf_file: str | None = None, revision: str | None = None,
                             dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    return (load_model(name_or_path, gguf_file, revision, dtype),
            load_tokenizer(name_or_path, gguf_file, revision))
