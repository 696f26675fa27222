"""Scratch models go through the same from_pretrained path as hub models once built."""

from __future__ import annotations

import pytest

from itt_sweep.modeling import build_scratch, load_model, load_model_and_tokenizer, train_tokenizer

CODE = ["def add(a, b):\n    return a + b\n", "int main() { return 0; }\n", "function f(x) { return x * 2; }\n"] * 50


def test_byte_level_tokenizer_round_trips_any_code():
    tok = train_tokenizer(CODE, vocab_size=300)
    text = "def ünïcode(x):\n\treturn {'k': x}  # ≠\n"
    assert tok.decode(tok(text)["input_ids"]) == text
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token_id != tok.eos_token_id


def test_scratch_model_is_built_once_and_loads_like_a_hub_model(tmp_path):
    out = build_scratch("tiny", CODE, tmp_path / "m")
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert build_scratch("tiny", CODE, tmp_path / "m") == out
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp  # cached, not rebuilt
    model, tok = load_model_and_tokenizer(str(out))
    ids = tok("def add(a, b):", return_tensors="pt")["input_ids"]
    assert model(ids).logits.shape[-1] == len(tok)
    assert not list(tmp_path.glob("*.tmp-*"))


def test_unbuilt_scratch_name_is_refused():
    with pytest.raises(ValueError, match="build_scratch"):
        load_model("scratch:tiny")
