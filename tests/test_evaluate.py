"""Tests for the model side of stage 3: pass@k, batched generation with stop sequences, and ref_nll.

The model is a tiny random Llama with a byte-level BPE tokenizer trained on the spot, built the way
`scratch:` models are, so these run in seconds on a CPU.
"""

from __future__ import annotations

import math

import pytest
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from itt_sweep.encoding import encode_pair
from itt_sweep.evaluate import (
    GenerationConfig,
    generate_completions,
    mean_pass_at_k,
    pass_at_k,
    per_pair_nll,
    reference_nll,
    truncate_at_stop,
)

CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "def mul(x, y):\n    return x * y\n",
    "for i in range(10):\n    print(i)\n",
    "class Foo:\n    def bar(self):\n        pass\n",
    "function f(x) { return x + 1; }\n",
    "public static int g(int a) { return a; }\n",
]

PROMPTS = [
    "def add(a, b):\n",
    "x",
    "class Foo:\n    def bar(self):\n        pass\nfor i in",
    "function f(x) {",
    "public static int g(int a) { return a; }\ndef mul(x, y):\n    return",
]


def _bpe_tokenizer() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(CORPUS * 20, trainer)
    return tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=_bpe_tokenizer(), eos_token="<|endoftext|>", pad_token="<|pad|>"
    )


def _tiny_llama(vocab_size: int) -> transformers.LlamaForCausalLM:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    return transformers.LlamaForCausalLM(config)


@pytest.fixture(scope="module")
def model(tokenizer):
    return _tiny_llama(len(tokenizer))


def _greedy_alone(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    """The reference: one prompt, no padding, plain `generate`."""
    encoded = tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode():
        output = model.generate(
            **encoded,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    return tokenizer.decode(output[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True)


def _ascii_piece(text: str, start: int, size: int) -> str:
    """A printable substring of `text` at or after `start` (random models emit stray bytes)."""
    for begin in range(start, len(text) - size):
        piece = text[begin : begin + size]
        if piece.isascii() and piece.isprintable():
            return piece
    raise AssertionError(f"no printable piece of length {size} in {text!r}")


# pass@k


def test_pass_at_k_known_values():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 1, 10) == 1.0
    assert pass_at_k(10, 0, 10) == 0.0


def test_pass_at_k_matches_the_binomial_formula():
    for n, c, k in [(20, 5, 3), (200, 13, 10), (7, 2, 4), (50, 49, 2)]:
        exact = 1 - math.comb(n - c, k) / math.comb(n, k)
        assert pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-12)


@pytest.mark.parametrize(("n", "c", "k"), [(5, 1, 6), (5, 6, 1), (5, -1, 1), (5, 1, 0), (0, 0, 1)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_mean_pass_at_k_averages_over_problems():
    assert mean_pass_at_k([(10, 3), (10, 0), (10, 10)], 1) == pytest.approx((0.3 + 0.0 + 1.0) / 3)
    assert math.isnan(mean_pass_at_k([], 1))


# generation


def test_truncate_at_stop_cuts_at_the_earliest_stop():
    assert truncate_at_stop("a\nb\ndef c\nclass d", ["\nclass", "\ndef"]) == "a\nb"
    assert truncate_at_stop("no stop here", ["\ndef"]) == "no stop here"
    assert truncate_at_stop("abc", []) == "abc"


def test_batched_greedy_equals_one_prompt_at_a_time(model, tokenizer):
    config = GenerationConfig(max_new_tokens=20, batch_size=2)
    batched = generate_completions(model, tokenizer, PROMPTS, [], config)
    alone = [_greedy_alone(model, tokenizer, prompt, 20) for prompt in PROMPTS]
    assert [g.texts[0] for g in batched] == alone


def test_completions_come_back_in_the_prompts_order(model, tokenizer):
    config = GenerationConfig(max_new_tokens=12, batch_size=3)
    forward = generate_completions(model, tokenizer, PROMPTS, [], config)
    backward = generate_completions(model, tokenizer, PROMPTS[::-1], [], config)
    assert backward == forward[::-1]
    assert len({g.texts[0] for g in forward}) > 1  # distinct prompts, distinct answers: order is observable


def test_completion_is_cut_before_the_stop_sequence(model, tokenizer):
    prompt = PROMPTS[2]
    full = _greedy_alone(model, tokenizer, prompt, 30)
    stop = _ascii_piece(full, 5, 2)
    expected = full[: full.index(stop)]
    config = GenerationConfig(max_new_tokens=30, batch_size=4)
    [generation] = generate_completions(model, tokenizer, [prompt], [stop], config)
    completion = generation.texts[0]
    assert completion == expected
    assert stop not in completion


def test_batched_greedy_with_stops_equals_one_at_a_time_truncated(model, tokenizer):
    alone = [_greedy_alone(model, tokenizer, prompt, 24) for prompt in PROMPTS]
    stops = [_ascii_piece(alone[2], 4, 2), _ascii_piece(alone[0], 6, 1)]
    config = GenerationConfig(max_new_tokens=24, batch_size=8)
    batched = generate_completions(model, tokenizer, PROMPTS, stops, config)
    assert [g.texts[0] for g in batched] == [truncate_at_stop(text, stops) for text in alone]


def test_batch_stops_early_once_every_sequence_hit_a_stop(model, tokenizer):
    alone = [_greedy_alone(model, tokenizer, prompt, 10) for prompt in PROMPTS[:3]]
    stops = [_ascii_piece(text, 1, 1) for text in alone]
    calls = []
    handle = model.register_forward_hook(lambda *args: calls.append(1))
    try:
        generate_completions(model, tokenizer, PROMPTS[:3], stops, GenerationConfig(max_new_tokens=200))
    finally:
        handle.remove()
    assert 0 < len(calls) < 20


def test_sampling_gives_num_samples_reproducible_completions(model, tokenizer):
    config = GenerationConfig(max_new_tokens=10, batch_size=4, do_sample=True, num_samples=3)
    first = generate_completions(model, tokenizer, PROMPTS[:3], [], config, seed=1)
    again = generate_completions(model, tokenizer, PROMPTS[:3], [], config, seed=1)
    other = generate_completions(model, tokenizer, PROMPTS[:3], [], config, seed=2)
    assert [len(g.texts) for g in first] == [3, 3, 3]
    assert first == again
    assert first != other
    assert len(set(first[0].texts)) > 1


def test_sampling_leaves_the_callers_random_stream_alone(model, tokenizer):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    config = GenerationConfig(max_new_tokens=5, do_sample=True, num_samples=2)
    generate_completions(model, tokenizer, PROMPTS[:2], [], config, seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_tokenizer_without_pad_token_is_padded_with_eos_and_restored(model):
    bare = transformers.PreTrainedTokenizerFast(tokenizer_object=_bpe_tokenizer(), eos_token="<|endoftext|>")
    assert bare.pad_token is None
    side = bare.padding_side
    batched = generate_completions(model, bare, PROMPTS, [], GenerationConfig(max_new_tokens=8))
    alone = [_greedy_alone(model, bare, prompt, 8) for prompt in PROMPTS]
    assert [g.texts[0] for g in batched] == alone
    assert bare.pad_token is None
    assert bare.padding_side == side


# ref_nll


def _hand_nll(model, tokenizer, prompt: str, completion: str, mask_prompt: bool = True) -> tuple[float, int]:
    ids, n_prompt = encode_pair(tokenizer, prompt, completion)  # joint tokenisation, as scoring does
    input_ids = torch.tensor([ids])
    labels = input_ids.clone()
    if mask_prompt:
        labels[0, :n_prompt] = -100
    n = int((labels[0, 1:] != -100).sum())
    with torch.inference_mode():
        loss = model(input_ids=input_ids, labels=labels).loss
    return float(loss) * n, n


PAIRS = [
    ("def add(a, b):\n", "    return a + b\n"),
    ("x", " = 1"),
    ("class Foo:\n    def bar(self):\n", "        pass\nfor i in range(10):\n    print(i)\n"),
]


def test_pair_nll_equals_the_models_own_loss_on_one_pair(model, tokenizer):
    scored = per_pair_nll(model, tokenizer, PAIRS, batch_size=3)
    for (prompt, completion), (nll, n) in zip(PAIRS, scored, strict=True):
        hand_nll, hand_n = _hand_nll(model, tokenizer, prompt, completion)
        assert n == hand_n
        assert nll == pytest.approx(hand_nll, rel=1e-4)


def test_prompt_tokens_are_not_scored(model, tokenizer):
    prompt, completion = PAIRS[2]
    [(nll, n)] = per_pair_nll(model, tokenizer, [(prompt, completion)])
    assert n == len(tokenizer(completion, add_special_tokens=False)["input_ids"])
    unmasked_nll, unmasked_n = _hand_nll(model, tokenizer, prompt, completion, mask_prompt=False)
    assert unmasked_n > n
    assert nll != pytest.approx(unmasked_nll, rel=1e-3)
    [(other_nll, other_n)] = per_pair_nll(model, tokenizer, [("public static int g", completion)])
    assert other_n == n  # a different prompt changes the context, never the count
    assert other_nll != pytest.approx(nll, rel=1e-4)


def test_reference_nll_is_a_token_weighted_mean(model, tokenizer):
    scored = per_pair_nll(model, tokenizer, PAIRS)
    token_mean = sum(nll for nll, _ in scored) / sum(n for _, n in scored)
    mean_of_means = sum(nll / n for nll, n in scored) / len(scored)
    assert reference_nll(model, tokenizer, PAIRS, batch_size=2) == pytest.approx(token_mean, rel=1e-5)
    assert token_mean != pytest.approx(mean_of_means, rel=1e-3)


def test_reference_nll_of_nothing_is_nan(model, tokenizer):
    assert math.isnan(reference_nll(model, tokenizer, []))
    assert math.isnan(reference_nll(model, tokenizer, [("def f():\n", "")]))


def test_long_prompt_is_cut_from_the_left_keeping_the_completion(model, tokenizer):
    prompt = "".join(CORPUS) * 3
    completion = "    return x * y\n"
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    max_length = 40
    [(nll, n)] = per_pair_nll(model, tokenizer, [(prompt, completion)], max_length=max_length)
    assert n == len(completion_ids)
    kept_prompt_ids = tokenizer(prompt)["input_ids"][-(max_length - len(completion_ids)) :]
    input_ids = torch.tensor([kept_prompt_ids + completion_ids])
    labels = input_ids.clone()
    labels[0, : len(kept_prompt_ids)] = -100
    with torch.inference_mode():
        loss = model(input_ids=input_ids, labels=labels).loss
    assert nll == pytest.approx(float(loss) * n, rel=1e-4)


def test_training_on_a_pair_lowers_its_reference_nll(tokenizer):
    model = _tiny_llama(len(tokenizer))
    pair = ("def add(a, b):\n", "    return a + b\n")
    before = reference_nll(model, tokenizer, [pair])
    prompt_ids = tokenizer(pair[0])["input_ids"]
    input_ids = torch.tensor([prompt_ids + tokenizer(pair[1], add_special_tokens=False)["input_ids"]])
    labels = input_ids.clone()
    labels[0, : len(prompt_ids)] = -100
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(30):
        optimizer.zero_grad()
        model(input_ids=input_ids, labels=labels).loss.backward()
        optimizer.step()
    after = reference_nll(model, tokenizer, [pair])
    assert model.training  # evaluation hands the model back in the mode it came in
    assert after < before / 2


# context and memory guard


def test_batches_respect_the_token_budget_longest_first():
    from itt_sweep.evaluate.generation import plan_batches

    lengths = [10, 500, 40, 40, 2000, 30, 10]
    batches = plan_batches(lengths, rows_per_prompt=1, max_new_tokens=100, token_budget=1000, max_rows=4)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    assert batches[0] == [4]  # alone: too big for the budget, still generated (the context check passed it)
    for batch in batches[1:]:
        assert len(batch) <= 4
        assert len(batch) * (max(lengths[i] for i in batch) + 100) <= 1000
    flat = [lengths[i] for batch in batches for i in batch]
    assert flat == sorted(flat, reverse=True)
    # sampling: n rows per prompt count against the budget and the row cap
    sampled = plan_batches([10] * 8, rows_per_prompt=4, max_new_tokens=10, token_budget=10_000, max_rows=8)
    assert [len(b) for b in sampled] == [2, 2, 2, 2]


def test_prompt_that_cannot_fit_the_context_is_skipped_not_truncated(model, tokenizer, monkeypatch):
    from itt_sweep.evaluate.generation import PROMPT_TOO_LONG

    long_prompt = "def add(a, b):\n    return a + b\n" * 20
    n_long = len(tokenizer(long_prompt)["input_ids"])
    monkeypatch.setattr(model.config, "max_position_embeddings", n_long + 10)  # fits alone, not with 20 new
    config = GenerationConfig(max_new_tokens=20, batch_size=4)
    out = generate_completions(model, tokenizer, [PROMPTS[0], long_prompt, PROMPTS[1]], [], config)
    assert out[1].skipped == PROMPT_TOO_LONG and out[1].texts == [""]
    assert [out[0].texts[0], out[2].texts[0]] == [_greedy_alone(model, tokenizer, p, 20) for p in PROMPTS[:2]]
    assert out[0].skipped is None and out[0].truncated == [True]  # 20 tokens, no stop, no EOS: cut off


def test_stage3_scores_prompt_too_long_as_a_counted_failure(model, tokenizer, data_dir, tmp_path, monkeypatch):
    from itt_sweep.config import EvaluationSpec
    from itt_sweep.data.mbxp import load_problems
    from itt_sweep.evaluate.stage3 import evaluate_language

    problems = load_problems("python", split="test", data_dir=data_dir, limit=6)
    lengths = sorted(len(tokenizer(p.prompt)["input_ids"]) for p in problems)
    monkeypatch.setattr(model.config, "max_position_embeddings", lengths[3] + 8)
    spec = EvaluationSpec(max_new_tokens=8, batch_size=4, allow_unsandboxed=False)
    metrics, records = evaluate_language(model, tokenizer, "python", spec, 6, data_dir, tmp_path / "refs")
    skipped = [r for r in records if r["status"] == "prompt_too_long"]
    assert 0 < len(skipped) < 6
    assert metrics["n_prompt_too_long"] == len(skipped)
    assert metrics["n_problems"] == 6
    assert metrics["pass_at_1"] <= (6 - len(skipped)) / 6
    assert all(r["status"] != "prompt_too_long" for r in records if r not in skipped)


def test_fast_and_hf_decoders_agree_greedy_with_stops(model, tokenizer):
    alone = [_greedy_alone(model, tokenizer, prompt, 24) for prompt in PROMPTS]
    stops = [_ascii_piece(alone[2], 4, 2), _ascii_piece(alone[0], 6, 1)]
    fast = generate_completions(model, tokenizer, PROMPTS, stops, GenerationConfig(max_new_tokens=24, batch_size=8))
    hf = generate_completions(model, tokenizer, PROMPTS, stops,
                              GenerationConfig(max_new_tokens=24, batch_size=8, decoder="hf"))
    assert [g.texts for g in fast] == [g.texts for g in hf]
    assert [g.truncated for g in fast] == [g.truncated for g in hf]


def test_a_model_the_fast_decoder_cannot_run_falls_back_to_hf_once(model, tokenizer, monkeypatch, caplog):
    import itt_sweep.evaluate.generation as generation

    def cannot(*args, **kwargs):
        raise NotImplementedError("this architecture has no static cache")

    monkeypatch.setattr(generation, "generate_queue", cannot)
    config = GenerationConfig(max_new_tokens=10, batch_size=2)
    with caplog.at_level("WARNING"):
        out = generate_completions(model, tokenizer, PROMPTS, [], config)
    assert [g.texts[0] for g in out] == [_greedy_alone(model, tokenizer, p, 10) for p in PROMPTS]
    assert config.decoder == "hf"
    assert sum("using HF generate" in r.message for r in caplog.records) == 1


def test_sampled_completions_do_not_depend_on_the_batch(model, tokenizer):
    config = GenerationConfig(max_new_tokens=10, batch_size=8, do_sample=True, num_samples=2)
    together = generate_completions(model, tokenizer, PROMPTS, [], config, seed=3)
    alone = [generate_completions(model, tokenizer, [p], [], config, seed=3)[0] for p in PROMPTS]
    assert [g.texts for g in together] == [g.texts for g in alone]


@pytest.mark.parametrize("decoder", ["fast", "hf"])
def test_prompt_sets_decode_together_and_are_reported_as_each_completes(model, tokenizer, decoder):
    """Two sets (two languages) with their own stops and token limits through one queue: each set's results
    equal generating it alone, and each is handed over once, when complete, in the order they finish."""
    from itt_sweep.evaluate.generation import PromptSet, generate_sets

    alone = [_greedy_alone(model, tokenizer, prompt, 24) for prompt in PROMPTS]
    stops = [_ascii_piece(alone[0], 6, 1)]
    sets = [PromptSet(PROMPTS[:3], stops, 24), PromptSet(PROMPTS[3:], [], 7)]
    config = GenerationConfig(max_new_tokens=99, batch_size=2, decoder=decoder)
    heard: list[tuple[int, list]] = []
    rows: list[tuple[int, int]] = []
    together = generate_sets(model, tokenizer, sets, config, on_set=lambda i, gens: heard.append((i, gens)),
                             progress=lambda i, count: rows.append((i, count)))
    expected = [generate_completions(model, tokenizer, s.prompts, s.stop_sequences,
                                     GenerationConfig(max_new_tokens=s.max_new_tokens, batch_size=2,
                                                      decoder=decoder)) for s in sets]
    assert [[g.texts for g in gens] for gens in together] == [[g.texts for g in gens] for gens in expected]
    assert sorted(i for i, _ in heard) == [0, 1] and [gens for _, gens in sorted(heard)] == together
    assert [sum(c for i, c in rows if i == s) for s in (0, 1)] == [3, len(PROMPTS) - 3]  # rows per set
    assert all(len([t for t in g.tokens[0] if t != tokenizer.pad_token_id]) <= 7 for g in together[1])  # not 99


def test_a_failing_set_callback_is_raised_not_taken_for_a_decoder_failure(model, tokenizer):
    from itt_sweep.evaluate.generation import PromptSet, generate_sets

    config = GenerationConfig(max_new_tokens=5, batch_size=2)

    def broken(index, generations):
        raise RuntimeError("the sandbox is gone")

    with pytest.raises(RuntimeError, match="sandbox is gone"):
        generate_sets(model, tokenizer, [PromptSet(PROMPTS[:2])], config, on_set=broken)
    assert config.decoder == "fast"  # no fallback to HF generate


def test_references_scored_on_the_prompts_prefill_equal_ref_nll_and_change_no_completion(model, tokenizer):
    """The fast decoder scores each reference after its prompt's prefill: the same (NLL, tokens) as
    `per_pair_nll` over prompt + reference, and the same completions as without references."""
    from itt_sweep.evaluate.generation import PromptSet, generate_sets

    references = [" return a + b\n", None, " range(10):\n    print(i)\n", "", " x * y\n"]
    config = GenerationConfig(max_new_tokens=12, batch_size=2)
    [plain] = generate_sets(model, tokenizer, [PromptSet(PROMPTS)], config)
    [scored] = generate_sets(model, tokenizer, [PromptSet(PROMPTS, references=references)], config)
    assert [g.texts for g in scored] == [g.texts for g in plain]
    for prompt, reference, generation in zip(PROMPTS, references, scored, strict=True):
        if not reference:
            assert generation.reference_nll is None
            continue
        [(expected, count)] = per_pair_nll(model, tokenizer, [(prompt, reference)])
        total, tokens = generation.reference_nll
        assert tokens == count and total == pytest.approx(expected, rel=1e-5)
