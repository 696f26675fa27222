"""The static-cache decoder must give exactly what Hugging Face greedy `generate` gives, on any batch."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from itt_sweep.evaluate.fast_generation import cache_argument, greedy_generate, new_static_cache

PAD, EOS = 0, 2


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=512, max_position_embeddings=256)
    return LlamaForCausalLM(config).eval()


def left_padded(lengths: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.randint(3, 512, (len(lengths), width), generator=generator)
    mask = (torch.arange(width)[None, :] >= width - torch.tensor(lengths)[:, None]).long()
    return ids.masked_fill(mask == 0, PAD), mask


def hf_generate(model, ids, mask, max_new: int, eos: int = EOS, static: bool = False) -> torch.Tensor:
    extra = {}
    if static:
        extra = {cache_argument(model): new_static_cache(model, ids.shape[1] + max_new - 1), "disable_compile": True}
    with torch.inference_mode():
        return model.generate(ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False, num_beams=1,
                              pad_token_id=PAD, eos_token_id=eos, **extra)


@pytest.mark.parametrize("lengths", [[9, 4, 12, 1, 7], [6, 6, 6]])
def test_output_equals_hf_greedy_generate_with_static_and_dynamic_cache(model, lengths):
    ids, mask = left_padded(lengths, seed=len(lengths))
    ours = greedy_generate(model, ids, mask, 20, eos_token_id=EOS, pad_token_id=PAD, check_every=4)
    assert torch.equal(ours, hf_generate(model, ids, mask, 20, static=True))
    assert torch.equal(ours, hf_generate(model, ids, mask, 20))


def test_attention_sees_the_same_masks_and_positions_as_in_hf_generate(model):
    """Equal tokens could hide a different mask that rounds differently in bf16 on a GPU; compare the inputs."""
    seen: list[tuple[torch.Tensor | None, torch.Tensor]] = []

    def record(module, args, kwargs):
        mask = kwargs.get("attention_mask")
        seen.append((None if mask is None else mask.clone(), kwargs["position_ids"].clone()))

    ids, mask = left_padded([10, 3, 7], seed=1)
    handle = model.model.layers[0].register_forward_pre_hook(record, with_kwargs=True)
    try:
        hf_generate(model, ids, mask, 8, static=True)
        theirs = list(seen)
        seen.clear()
        greedy_generate(model, ids, mask, 8, eos_token_id=EOS, pad_token_id=PAD)
    finally:
        handle.remove()
    assert len(seen) == len(theirs) == 8
    for (our_mask, our_pos), (their_mask, their_pos) in zip(seen, theirs, strict=True):
        assert torch.equal(our_pos, their_pos)
        assert (our_mask is None) == (their_mask is None)
        if our_mask is not None:
            assert our_mask.dtype == their_mask.dtype and torch.equal(our_mask, their_mask)


def test_rows_that_emit_eos_are_padded_and_the_output_ends_where_generate_stops(model):
    ids, mask = left_padded([8, 5, 11, 2], seed=2)
    free_run = hf_generate(model, ids, mask, 16)
    width = ids.shape[1]
    eos = int(free_run[1, width + 3])  # row 1 "ends" at its 4th new token; others maybe later or never
    ours = greedy_generate(model, ids, mask, 16, eos_token_id=eos, pad_token_id=PAD, check_every=3)
    assert torch.equal(ours, hf_generate(model, ids, mask, 16, eos=eos))
    one_row = greedy_generate(model, ids[1:2], mask[1:2], 16, eos_token_id=eos, pad_token_id=PAD)
    assert one_row.shape[1] == width + 4  # every row done: no trailing columns, as in `generate`


def test_stop_check_ends_rows_early_without_changing_what_came_before(model):
    ids, mask = left_padded([6, 9, 4], seed=3)
    full = greedy_generate(model, ids, mask, 24, eos_token_id=EOS, pad_token_id=PAD)
    width = ids.shape[1]

    def after_five(rows: list[int], new_tokens: list[list[int]]) -> list[bool]:
        return [len(row) >= 5 for row in new_tokens]

    stopped = greedy_generate(model, ids, mask, 24, eos_token_id=EOS, pad_token_id=PAD, stop_check=after_five,
                              check_every=8)
    assert stopped.shape[1] == width + 8  # ended at the first check, not after 24 tokens
    assert torch.equal(stopped, full[:, : width + 8])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_replay_equals_eager_decoding_on_a_gpu(model):
    gpu_model = model.to("cuda", torch.bfloat16)
    try:
        ids, mask = (t.cuda() for t in left_padded([9, 4, 12, 1, 7], seed=4))
        graphed = greedy_generate(gpu_model, ids, mask, 32, eos_token_id=EOS, pad_token_id=PAD, cuda_graph=True)
        eager = greedy_generate(gpu_model, ids, mask, 32, eos_token_id=EOS, pad_token_id=PAD, cuda_graph=False)
        assert torch.equal(graphed, eager)
        assert torch.equal(graphed, hf_generate(gpu_model, ids, mask, 32, static=True))
    finally:
        model.to("cpu", torch.float32)


def test_finished_rows_leave_the_batch_and_change_no_token(model):
    """Rows 0-3 stop after 4 tokens (EOS on another): later steps run on 2 rows, with the same tokens."""
    ids, mask = left_padded([8, 5, 11, 2, 6, 9], seed=5)

    def four_stop_early(rows: list[int], new_tokens: list[list[int]]) -> list[bool]:
        return [row < 4 and len(tokens) >= 4 for row, tokens in zip(rows, new_tokens, strict=True)]

    sizes: list[int] = []
    handle = model.register_forward_pre_hook(lambda mod, args, kwargs: sizes.append(kwargs["input_ids"].shape[0]),
                                             with_kwargs=True)
    try:
        compacted = greedy_generate(model, ids, mask, 24, eos_token_id=EOS, pad_token_id=PAD, check_every=2,
                                    stop_check=four_stop_early, compact=True)
    finally:
        handle.remove()
    whole = greedy_generate(model, ids, mask, 24, eos_token_id=EOS, pad_token_id=PAD, check_every=2,
                            stop_check=four_stop_early, compact=False)
    assert torch.equal(compacted, whole)
    assert sizes[0] == 6 and sizes[-1] == 2  # the batch shrank to the rows still running
    assert torch.equal(compacted[4:], hf_generate(model, ids, mask, 24)[4:, :compacted.shape[1]])
    width = ids.shape[1]
    assert (compacted[:4, width + 4:] == PAD).all()


def test_sampling_depends_on_each_rows_seed_not_on_its_batch(model):
    from itt_sweep.evaluate.fast_generation import Sampling, generate_static

    ids, mask = left_padded([7, 4, 9], seed=6)
    sampling = Sampling(temperature=0.8, top_p=0.95, seeds=[11, 12, 13])
    batch = generate_static(model, ids, mask, 12, eos_token_id=EOS, pad_token_id=PAD, sampling=sampling)
    alone = generate_static(model, ids[1:2, -4:], mask[1:2, -4:], 12, eos_token_id=EOS, pad_token_id=PAD,
                            sampling=Sampling(temperature=0.8, top_p=0.95, seeds=[12]))
    assert torch.equal(batch[1, ids.shape[1]:ids.shape[1] + alone.shape[1] - 4], alone[0, 4:])
    again = generate_static(model, ids, mask, 12, eos_token_id=EOS, pad_token_id=PAD, sampling=sampling)
    assert torch.equal(batch, again)
    other = generate_static(model, ids, mask, 12, eos_token_id=EOS, pad_token_id=PAD,
                            sampling=Sampling(temperature=0.8, top_p=0.95, seeds=[21, 22, 23]))
    assert not torch.equal(batch, other)


def test_continuous_batching_refills_free_slots_and_changes_no_token(model):
    """Six prompts through 2 slots: rows that end early hand their slot to a waiting prompt mid-run, and
    every prompt's tokens equal HF greedy `generate` on that prompt alone."""
    from itt_sweep.evaluate.fast_generation import generate_queue

    prompts = [left_padded([n], seed=10 + n)[0][0].tolist() for n in (12, 9, 7, 5, 3, 2)]
    calls: list[int] = []
    handle = model.register_forward_pre_hook(lambda mod, args, kwargs: calls.append(kwargs["input_ids"].shape[0]),
                                             with_kwargs=True)
    try:
        def short_first(rows: list[int], new_tokens: list[list[int]]) -> list[bool]:
            return [len(tokens) >= (3 if row % 2 else 10) for row, tokens in zip(rows, new_tokens, strict=True)]

        new = generate_queue(model, prompts, 2, 10, eos_token_id=EOS, pad_token_id=PAD, stop_check=short_first,
                             check_every=2)
    finally:
        handle.remove()
    for row, (prompt, tokens) in enumerate(zip(prompts, new, strict=True)):
        alone = hf_generate(model, torch.tensor([prompt]), torch.ones(1, len(prompt), dtype=torch.long), 10)
        expected = alone[0, len(prompt):].tolist()
        assert tokens == expected[:len(tokens)] and len(tokens) >= (3 if row % 2 else 10)
    assert calls.count(1) >= 3  # single-prompt prefills: waiting prompts admitted into running batches
