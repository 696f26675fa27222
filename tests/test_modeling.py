"""Scratch models go through the same from_pretrained path as hub models once built."""

from __future__ import annotations

import pytest

from itt_sweep.modeling import ModelError, ModelRef, build_scratch, check_loadable, ensure_pad, load, train_tokenizer

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
    model, tok = load(ModelRef(name=str(out)))
    ids = tok("def add(a, b):", return_tensors="pt")["input_ids"]
    assert model(ids).logits.shape[-1] == len(tok)
    assert not list(tmp_path.glob("*.tmp-*"))


def test_unbuilt_scratch_name_is_refused():
    with pytest.raises(ValueError, match="build_scratch"):
        load(ModelRef(name="scratch:tiny"))


def _bare_tokenizer(eos: str | None, pad: str | None):
    from transformers import PreTrainedTokenizerFast

    base = train_tokenizer(CODE, vocab_size=300)
    return PreTrainedTokenizerFast(tokenizer_object=base.backend_tokenizer, eos_token=eos, pad_token=pad)


def test_tokenizer_without_pad_pads_with_an_existing_id():
    tok = ensure_pad(_bare_tokenizer(eos="<|endoftext|>", pad=None))
    assert tok.pad_token_id == tok.eos_token_id
    assert tok.convert_ids_to_tokens(tok.pad_token_id) == "<|endoftext|>"


def test_tokenizer_without_eos_is_refused_in_one_line():
    with pytest.raises(ModelError, match="no EOS token") as info:
        ensure_pad(_bare_tokenizer(eos=None, pad=None), "my/model")
    assert "\n" not in str(info.value) and "my/model" in str(info.value)


def test_model_without_eos_fails_the_preflight_check(tmp_path):
    out = build_scratch("tiny", CODE, tmp_path / "m")
    assert check_loadable(ModelRef(name=str(out))) is None
    tok = _bare_tokenizer(eos=None, pad=None)
    tok.save_pretrained(out)
    reason = check_loadable(ModelRef(name=str(out)))
    assert reason is not None and "no EOS token" in reason


@pytest.mark.parametrize("ref", [ModelRef(name="/nonexistent/model"),
                                 ModelRef(name="/nonexistent/model", gguf_file="x.gguf"),
                                 ModelRef(name="org/name", revision="v0")])
def test_missing_model_is_one_line(ref, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # never the network
    reason = check_loadable(ref)
    assert reason is not None and reason.startswith("cannot load") and "\n" not in reason


def test_chat_template_is_required_for_chat_prompts(tmp_path):
    out = build_scratch("tiny", CODE, tmp_path / "m")
    reason = check_loadable(ModelRef(name=str(out)), needs_chat_template=True)
    assert reason is not None and "chat template" in reason
