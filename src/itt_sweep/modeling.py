"""Base models and tokenizers: one loading path for hub ids, local directories, GGUF files and scratch models.

A `ModelRef` (name or dir, `gguf_file`, `revision`) travels from the sweep file through every stage job to every
consumer, and `load()` is the only place weights are read: training workers, stage 3 and the preflight (which
reads only the config and tokenizer, so a wrong name, file or revision fails before Ray starts). A finished
stage exports a plain Hugging Face directory, so later stages get a `ModelRef` of that directory.

A `scratch:<preset>` model is materialised once per sweep (a small Llama from a config plus a byte-level BPE
tokenizer trained on the sweep's own corpora) into a directory named by the content hash of its recipe, and
from then on it is an ordinary local model loaded exactly like a hub model.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerFast

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
# Config fields that hold the longest sequence a model was built for, by model family.
MAX_POSITION_FIELDS = ("max_position_embeddings", "n_positions", "n_ctx", "seq_length", "max_sequence_length")


class ModelError(ValueError):
    """A model that cannot be used; the message is one line a user can act on."""


class ModelRef(BaseModel):
    """Where a model's weights and tokenizer come from: a hub id or a local dir, optionally one GGUF file in
    it and a hub revision (branch, tag or commit)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    gguf_file: str | None = None
    revision: str | None = None

    def hub_kwargs(self) -> dict[str, Any]:
        return {"gguf_file": self.gguf_file, "revision": self.revision}

    def __str__(self) -> str:
        extra = "".join(f" {k}={v}" for k, v in self.hub_kwargs().items() if v)
        return self.name + extra


def is_scratch(name: str) -> bool:
    return name.startswith("scratch:")


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on the given texts: any byte sequence stays encodable, so no <unk> in code."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

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
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

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


def _refuse_scratch(ref: ModelRef) -> None:
    if is_scratch(ref.name):
        raise ValueError(f"{ref.name} must be materialised with build_scratch() before loading")


def ensure_pad(tokenizer: Any, ref: ModelRef | str = "model") -> Any:
    """The tokenizer with a pad id that exists: its own, else EOS; refused without EOS (no row could stop)."""
    if tokenizer.eos_token_id is None:
        raise ModelError(f"{ref}: its tokenizer has no EOS token, so generation could never end a completion "
                         "and training could not teach one; use a model whose tokenizer defines eos_token")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(ref: ModelRef) -> Any:
    from transformers import AutoTokenizer

    _refuse_scratch(ref)
    return ensure_pad(AutoTokenizer.from_pretrained(ref.name, **ref.hub_kwargs()), ref)


def load_config(ref: ModelRef) -> Any:
    from transformers import AutoConfig

    _refuse_scratch(ref)
    return AutoConfig.from_pretrained(ref.name, **ref.hub_kwargs())


def load(ref: ModelRef, dtype: torch.dtype | None = None, device: str | torch.device | None = None
         ) -> tuple[Any, Any]:
    """(model, tokenizer): the one place weights are loaded, for every stage and every kind of reference.

    fp32 unless told otherwise: a GGUF file is dequantised, and training keeps fp32 master weights."""
    import torch
    from transformers import AutoModelForCausalLM

    _refuse_scratch(ref)
    dtype = dtype or torch.float32
    model = AutoModelForCausalLM.from_pretrained(ref.name, dtype=dtype, **ref.hub_kwargs(), **_gguf_dense(ref))
    if ref.gguf_file:
        _forget_gguf(model)
    if device is not None:
        model = model.to(device)
    log.info("loaded %s (%d params, %s)", ref, model.num_parameters(), dtype)
    return model, load_tokenizer(ref)


def _gguf_dense(ref: ModelRef) -> dict[str, Any]:
    """Ask for a GGUF file unpacked into dense weights: we train them, and GGUF blocks are not trainable.

    transformers >= 5.2x can keep GGUF weights in their blocks (`GgufConfig(dequantize=False)`, its default
    where a matmul kernel exists, e.g. on GPUs); older versions always unpack them."""
    if not ref.gguf_file:
        return {}
    try:
        from transformers import GgufConfig
    except ImportError:
        return {}
    return {"quantization_config": GgufConfig(gguf_file=ref.gguf_file, dequantize=True)}


def _forget_gguf(model: Any) -> None:
    """A dense model unpacked from GGUF is an ordinary model: drop the GGUF quantizer that transformers leaves
    attached, which would refuse `save_pretrained` (stage exports) and mark the saved config as GGUF."""
    import torch

    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return
    if str(getattr(quantizer.quantization_config, "quant_method", "")) not in ("gguf", "QuantizationMethod.GGUF"):
        return
    if not all(torch.is_floating_point(p) for p in model.parameters()):
        raise ModelError("the GGUF weights stayed quantised; itt-sweep trains dense weights only")
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def max_positions(config: Any) -> int | None:
    """The longest sequence the model was built for, or None when its config does not say."""
    for field in MAX_POSITION_FIELDS:
        value = getattr(config, field, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_loadable(ref: ModelRef, needs_chat_template: bool = False) -> str | None:
    """Why `ref` cannot be used, in one line, or None: reads its config and tokenizer, not the weights."""
    try:
        config = load_config(ref)
        tokenizer = load_tokenizer(ref)
    except ModelError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001  (hub, OS and parse errors alike: one line for the user)
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        return f"cannot load {ref}: {first}"
    if getattr(config, "is_encoder_decoder", False):
        return f"{ref}: an encoder-decoder model; itt-sweep trains decoder-only (causal) language models"
    if needs_chat_template and not getattr(tokenizer, "chat_template", None):
        return f"{ref}: prompt_format: chat needs a tokenizer with a chat template, and this one has none"
    return None
