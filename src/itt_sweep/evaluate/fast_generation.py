"""Greedy batched decoding with a static KV cache, replayed as one CUDA graph per token.

Plain Hugging Face `generate` spends most of a decoding step in Python: a 1B model launches about a thousand
small kernels per token, so the GPU waits on the interpreter. Here the model's own eager forward is captured
once in a CUDA graph and replayed for every token, which removes that overhead without changing a single
kernel: the outputs are the ones HF `generate` gives with a static cache, token for token (the benchmark and
the tests check this). No `torch.compile` is involved, because fused kernels round differently and a greedy
argmax flips on such differences.

The inputs of every step are built exactly as `generate` builds them: position ids from the attention mask,
a boolean 4D mask over the static cache, logits of the last position only, finished rows fed the pad token.
On CPU (or with `cuda_graph=False`) the same step runs eagerly. Rows are never removed from the batch, so a
row's numbers never depend on which other rows are still running.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence

import torch

# Given the new tokens of every row so far (one list per row), says which rows are done (e.g. wrote a stop
# sequence). Called every `check_every` steps, so a row may run a few tokens past its stop; cut the text there.
log = logging.getLogger(__name__)

StopCheck = Callable[[list[list[int]]], Sequence[bool]]


def cache_argument(model) -> str:
    """The forward's keyword for the KV cache: transformers renamed `past_key_values` to `cache` in 5.2x."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def new_static_cache(model, max_cache_len: int):
    from transformers import StaticCache

    return StaticCache(config=model.config, max_cache_len=max_cache_len)


class _Decoder:
    """The state of one batch on the device, and the one-token step that advances it in place."""

    def __init__(self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
                 eos_token_ids: Sequence[int], pad_token_id: int):
        batch, width = input_ids.shape
        device = input_ids.device
        self.model, self.width, self.pad = model, width, pad_token_id
        self.cache = new_static_cache(model, width + max_new_tokens - 1)  # the last token is never fed back
        self.cache_kw = cache_argument(model)
        self.eos = torch.tensor(list(eos_token_ids), dtype=torch.long, device=device)
        self.out = torch.full((batch, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
        self.unfinished = torch.ones(batch, dtype=torch.bool, device=device)
        self.step = torch.zeros(1, dtype=torch.long, device=device)  # index of the token being written
        self.mask = torch.zeros((batch, 1, 1, width + max_new_tokens - 1), dtype=torch.bool, device=device)
        self.mask[:, 0, 0, :width] = attention_mask.bool()
        positions = attention_mask.long().cumsum(-1) - 1
        self.positions = positions.masked_fill(attention_mask == 0, 0)
        self.prompt_ids, self.prompt_mask = input_ids, attention_mask
        self.tokens = torch.empty((batch, 1), dtype=torch.long, device=device)

    def _choose(self, logits: torch.Tensor) -> None:
        """Greedy pick as `generate` does it (argmax over float32 logits; finished rows get the pad token)."""
        chosen = torch.argmax(logits[:, -1, :].float(), dim=-1)
        chosen = torch.where(self.unfinished, chosen, torch.full_like(chosen, self.pad))
        self.out.index_copy_(1, self.step, chosen[:, None])
        self.unfinished &= ~(chosen[:, None] == self.eos[None, :]).any(-1)  # isin may sync; this never does
        self.tokens.copy_(chosen[:, None])
        self.step += 1

    def prefill(self) -> None:
        logits = self.model(input_ids=self.prompt_ids, attention_mask=self.prompt_mask,
                            position_ids=self.positions, use_cache=True, logits_to_keep=1,
                            **{self.cache_kw: self.cache}).logits
        self.positions = self.positions[:, -1:].clone()  # from here on: the position of the token fed
        self._choose(logits)

    def decode_step(self) -> None:
        """Feed the last chosen token; it sits at cache slot `width + step - 1`, which becomes visible."""
        self.mask.index_fill_(3, self.step + self.width - 1, True)
        self.positions += 1
        logits = self.model(input_ids=self.tokens, attention_mask=self.mask, position_ids=self.positions,
                            use_cache=True, logits_to_keep=1, **{self.cache_kw: self.cache}).logits
        self._choose(logits)


def _capture(step: Callable[[], None], eager_steps: int, strict: bool) -> torch.cuda.CUDAGraph | None:
    """Run the first steps eagerly on a side stream (lazy initialisation, cuBLAS handles), then record one.

    Recording launches nothing, so the eager steps are real decoding steps and the graph continues after them.
    A forward that cannot be recorded (a host sync inside, say) still decodes eagerly unless `strict`.
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(eager_steps):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            step()
    except RuntimeError:
        if strict:
            raise
        log.warning("CUDA graph capture failed; decoding eagerly", exc_info=True)
        return None
    return graph


def _trim(out: torch.Tensor, eos: torch.Tensor) -> torch.Tensor:
    """Drop the trailing columns `generate` would not have produced (it stops once every row has finished)."""
    hit = torch.isin(out, eos)
    finished_at = torch.where(hit.any(1), hit.int().argmax(1), out.shape[1] - 1)  # argmax: the first EOS
    return out[:, : int(finished_at.max()) + 1]


@torch.inference_mode()
def greedy_generate(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int, *,
                    eos_token_id: int | Sequence[int], pad_token_id: int, cuda_graph: bool | None = None,
                    stop_check: StopCheck | None = None, check_every: int = 16) -> torch.Tensor:
    """Prompt + new tokens, shaped like the output of HF `generate(do_sample=False)` with a static cache.

    `input_ids` are left-padded. `cuda_graph=None` uses a graph on CUDA devices. Rows that emit an EOS token,
    or that `stop_check` marks done, get the pad token afterwards; the loop ends once every row is done (seen
    every `check_every` steps). Without `stop_check` the result equals `generate`'s exactly.
    """
    if max_new_tokens < 1:
        return input_ids.clone()
    eos_ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    state = _Decoder(model, input_ids, attention_mask, max_new_tokens, eos_ids, pad_token_id)
    state.prefill()
    use_graph = input_ids.device.type == "cuda" if cuda_graph is None else cuda_graph
    done, graph = 1, None
    while done < max_new_tokens:
        if use_graph and graph is None and max_new_tokens - done > 2:
            graph = _capture(state.decode_step, eager_steps=2, strict=cuda_graph is True)
            use_graph, done = graph is not None, done + 2
            continue
        if graph is not None:
            graph.replay()
        else:
            state.decode_step()
        done += 1
        if done % check_every == 0 and _all_done(state, done, stop_check):
            break
    return torch.cat([input_ids, _trim(state.out[:, :done], state.eos)], dim=1)


def _all_done(state: _Decoder, done: int, stop_check: StopCheck | None) -> bool:
    if stop_check is not None:
        stopped = torch.tensor(list(stop_check(state.out[:, :done].tolist())), device=state.unfinished.device)
        state.unfinished &= ~stopped
    return not bool(state.unfinished.any())
