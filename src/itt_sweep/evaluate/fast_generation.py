"""Stage 3's decoder: batched decoding with a static KV cache, replayed as one CUDA graph per token.

Plain Hugging Face `generate` spends most of a decoding step in Python: a 1B model launches about a thousand
small kernels per token, so the GPU waits on the interpreter. Here the model's own eager forward is captured
once in a CUDA graph and replayed for every token, which removes that overhead without changing a single
kernel: the outputs are the ones HF `generate` gives with a static cache, token for token (the benchmark and
the tests check this). No `torch.compile` is involved, because fused kernels round differently and a greedy
argmax flips on such differences.

The inputs of every step are built exactly as `generate` builds them: position ids from the attention mask,
a boolean 4D mask over the static cache, logits of the last position only, finished rows fed the pad token.
On CPU (or with `cuda_graph=False`) the same step runs eagerly.

Sampling (pass@k) draws each row's token from its own generator, seeded by the caller per (problem, sample),
so a sample never depends on which other rows share its batch. Stops are checked every `check_every` steps
with one host transfer of the new columns for the whole batch. `generate_queue` (what stage 3 runs) batches
continuously: every prompt is prefilled alone (no padding to the longest, which on a CPU doubled the prefill
cost) and its keys and values go into the columns left of the shared write column; at each check a slot
whose row ended takes the next waiting prompt, so a batch does not run at the speed of its longest
completion, and each row may have its own token limit (stage 3 queues all languages at once and hears of
each row as it ends, `on_done`). Once no prompt waits and at most half the rows are still running, the finished ones are
dropped from the batch and the cache (`compact`). In fp32 on CPU neither changed a token in the tests; on a
GPU another batch shape may run other kernels, so a near-tie can flip (the stage-3 benchmark counts them),
and each halving costs one recapture of the graph.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

# Given the new tokens of every row so far (one list per row), says which rows are done (e.g. wrote a stop
# sequence). Called every `check_every` steps, so a row may run a few tokens past its stop; cut the text there.
log = logging.getLogger(__name__)

StopCheck = Callable[[list[int], list[list[int]]], Sequence[bool]]


@dataclass(frozen=True)
class Sampling:
    """Temperature and nucleus (top-p) sampling; `seeds` has one seed per row of the batch."""

    temperature: float
    top_p: float
    seeds: Sequence[int]


def cache_argument(model) -> str:
    """The forward's keyword for the KV cache: transformers renamed `past_key_values` to `cache` in 5.2x."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def new_static_cache(model, max_cache_len: int):
    from transformers import StaticCache

    return StaticCache(config=model.config, max_cache_len=max_cache_len)


class _Decoder:
    """The state of one batch on the device, and the one-token step that advances it in place."""

    def __init__(self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
                 eos_token_ids: Sequence[int], pad_token_id: int, sampling: Sampling | None = None,
                 rows: Sequence[int] | None = None):
        batch, width = input_ids.shape
        device = input_ids.device
        self.model, self.width, self.pad = model, width, pad_token_id
        self.sampling = sampling
        self.generators = None if sampling is None else [
            torch.Generator(device=device).manual_seed(int(seed)) for seed in sampling.seeds]
        self.rows = list(rows) if rows is not None else list(range(batch))  # the occupant of each slot
        self.start = [0] * batch  # the step from which a slot's `out` columns belong to its occupant
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
        """Greedy pick as `generate` does it (argmax over float32 logits), or a sample; finished rows get the
        pad token."""
        scores = logits[:, -1, :].float()
        chosen = torch.argmax(scores, dim=-1) if self.sampling is None else self._sample(scores)
        chosen = torch.where(self.unfinished, chosen, torch.full_like(chosen, self.pad))
        self.out.index_copy_(1, self.step, chosen[:, None])
        self.unfinished &= ~(chosen[:, None] == self.eos[None, :]).any(-1)  # isin may sync; this never does
        self.tokens.copy_(chosen[:, None])
        self.step += 1

    def _sample(self, scores: torch.Tensor) -> torch.Tensor:
        """Temperature, then top-p as HF's warper does it (keep the smallest set whose mass reaches top_p, at
        least one token), then one draw per row from that row's own generator."""
        scores = scores / self.sampling.temperature
        if self.sampling.top_p < 1.0:
            ordered, order = torch.sort(scores, descending=False)
            cumulative = ordered.softmax(-1).cumsum(-1)
            drop = cumulative <= 1 - self.sampling.top_p
            drop[:, -1] = False
            scores = scores.masked_fill(drop.scatter(1, order, drop), float("-inf"))
        probs = scores.softmax(-1)
        return torch.cat([torch.multinomial(probs[i], 1, generator=self.generators[i]) for i in range(len(probs))])

    def keep(self, live: torch.Tensor) -> None:
        """Drop the rows not in `live` (indices into the current batch) from every tensor and the cache."""
        self.cache.reorder_cache(live)
        for name in ("out", "unfinished", "mask", "positions", "tokens", "prompt_ids", "prompt_mask"):
            setattr(self, name, getattr(self, name).index_select(0, live))
        kept = live.tolist()
        self.rows = [self.rows[i] for i in kept]
        self.start = [self.start[i] for i in kept]
        if self.generators is not None:
            self.generators = [self.generators[i] for i in kept]

    @classmethod
    def empty(cls, model, rows: Sequence[int], width: int, max_new_tokens: int, eos_token_ids: Sequence[int],
              pad_token_id: int, sampling: Sampling | None, device: torch.device) -> _Decoder:
        """A batch with no prompt yet, every slot to be filled by `admit`: each prompt is prefilled alone, so
        none pays for padding to the longest (prefill is most of a CPU stage 3's compute after decoding)."""
        blank = torch.zeros((len(rows), width), dtype=torch.long, device=device)
        state = cls(model, blank, blank, max_new_tokens, eos_token_ids, pad_token_id, sampling, rows=rows)
        state.positions = state.positions[:, -1:].clone()
        return state

    def prefill(self) -> None:
        logits = self.model(input_ids=self.prompt_ids, attention_mask=self.prompt_mask,
                            position_ids=self.positions, use_cache=True, logits_to_keep=1,
                            **{self.cache_kw: self.cache}).logits
        self.positions = self.positions[:, -1:].clone()  # from here on: the position of the token fed
        self._choose(logits)

    @torch.inference_mode()
    def admit(self, slot: int, row: int, prompt: Sequence[int], seed: int | None,
              continuation: Sequence[int] | None = None) -> tuple[int, tuple[float, int] | None]:
        """Put a waiting prompt into a free slot, mid-run: its prompt's keys and values go into the columns just
        left of the one the next step writes, so it continues in step with every other row. Returns its first
        new token (chosen from its own prefill) and, given a `continuation`, that text's summed NLL and token
        count after the prompt, scored on the prompt's prefill (the cost of the continuation alone)."""
        device = self.tokens.device
        column = self.width + int(self.step) - 1  # the cache column the next step writes
        ids = torch.tensor([list(prompt)], dtype=torch.long, device=device)
        from transformers import DynamicCache

        scratch = DynamicCache()
        positions = torch.arange(len(prompt), device=device)[None, :]
        logits = self.model(input_ids=ids, position_ids=positions, use_cache=True, logits_to_keep=1,
                            **{self.cache_kw: scratch}).logits
        for static, fresh in zip(self.cache.layers, scratch.layers, strict=True):
            if not static.is_initialized:  # a batch filled by admissions alone: no prefill allocated it
                batch = len(self.rows)
                static.lazy_initialization(fresh.keys[:1].expand(batch, -1, -1, -1),
                                           fresh.values[:1].expand(batch, -1, -1, -1))
                static.cumulative_length.fill_(column)  # where the next step writes
            static.keys[slot, :, column - len(prompt):column] = fresh.keys[0]
            static.values[slot, :, column - len(prompt):column] = fresh.values[0]
        self.mask[slot] = False
        self.mask[slot, 0, 0, column - len(prompt):column] = True
        self.positions[slot] = len(prompt) - 1
        if self.generators is not None:
            self.generators[slot] = torch.Generator(device=device).manual_seed(int(seed))
        scores = logits[:, -1, :].float()
        scored = None if not continuation else self._score(scores, scratch, len(prompt), continuation)
        first = torch.argmax(scores, dim=-1) if self.sampling is None else self._sample_row(scores, slot)
        self.tokens[slot] = first
        self.unfinished[slot] = not bool((first[:, None] == self.eos[None, :]).any())
        self.rows[slot], self.start[slot] = row, int(self.step)
        return int(first), scored

    def _score(self, first: torch.Tensor, cache, offset: int, continuation: Sequence[int]) -> tuple[float, int]:
        """Summed NLL of `continuation` after a prompt whose keys and values are in `cache` and whose last
        logits are `first`: what `ref_nll` computes over prompt + continuation, without the prompt again."""
        device = first.device
        ids = torch.tensor([list(continuation)], dtype=torch.long, device=device)
        logits = [first]
        if len(continuation) > 1:
            positions = torch.arange(offset, offset + len(continuation) - 1, device=device)[None, :]
            rest = self.model(input_ids=ids[:, :-1], position_ids=positions, use_cache=True,
                              **{self.cache_kw: cache}).logits[0].float()
            logits.append(rest)
        nll = torch.nn.functional.cross_entropy(torch.cat(logits), ids[0], reduction="sum")
        return float(nll), len(continuation)

    def _sample_row(self, scores: torch.Tensor, slot: int) -> torch.Tensor:
        generators, self.generators = self.generators, [self.generators[slot]]
        try:
            return self._sample(scores)
        finally:
            self.generators = generators

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


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, width: int | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of token rows padded on the left to `width` (default: the longest row):
    decoder-only models continue from the last position."""
    width = width or max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        input_ids[r, width - len(row):] = torch.tensor(list(row), dtype=torch.long)
        attention_mask[r, width - len(row):] = 1
    return input_ids, attention_mask


class _Stepper:
    """Advances a decoder one token at a time: eagerly, or (on CUDA) by replaying a graph recorded after two
    eager steps. A batch whose shapes change (compaction) needs a new recording: `forget_graph`."""

    def __init__(self, state: _Decoder, cuda_graph: bool | None, sampling: Sampling | None):
        on_cuda = state.tokens.device.type == "cuda"
        self.state, self.strict = state, cuda_graph is True
        self.use_graph = (on_cuda if cuda_graph is None else cuda_graph) and sampling is None
        self.graph: torch.cuda.CUDAGraph | None = None

    def advance(self, done: int, limit: int) -> tuple[int, bool]:
        """(steps done now, whether this call recorded the graph: its two eager steps skip the check)."""
        if self.use_graph and self.graph is None and limit - done > 2:
            self.graph = _capture(self.state.decode_step, eager_steps=2, strict=self.strict)
            self.use_graph = self.graph is not None
            return done + 2, True
        if self.graph is not None:
            self.graph.replay()
        else:
            self.state.decode_step()
        return done + 1, False

    def forget_graph(self) -> None:
        self.graph = None


class _Host:
    """The new tokens of every original row on the host, fetched once per check for the whole batch."""

    def __init__(self, batch: int):
        self.tokens: list[list[int]] = [[] for _ in range(batch)]
        self.fetched = 0

    def fetch(self, state: _Decoder, done: int) -> None:
        columns = state.out[:, self.fetched:done].tolist()
        for row, start, new in zip(state.rows, state.start, columns, strict=True):
            self.tokens[row].extend(new[max(0, start - self.fetched):])
        self.fetched = done


@torch.inference_mode()
def generate_static(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int, *,
                    eos_token_id: int | Sequence[int], pad_token_id: int, cuda_graph: bool | None = None,
                    stop_check: StopCheck | None = None, check_every: int = 16, sampling: Sampling | None = None,
                    compact: bool = True) -> torch.Tensor:
    """Prompt + new tokens, shaped like the output of HF `generate` with a static cache.

    `input_ids` are left-padded. `cuda_graph=None` uses a graph on CUDA devices (never while sampling: each row
    draws from its own generator on the host side of the step). Rows that emit an EOS token, or that
    `stop_check(rows, new_tokens)` marks done, get the pad token afterwards; the loop ends once every row is
    done (seen every `check_every` steps). Greedy, without `stop_check`, the result equals `generate`'s exactly.
    """
    if max_new_tokens < 1:
        return input_ids.clone()
    eos_ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    state = _Decoder(model, input_ids, attention_mask, max_new_tokens, eos_ids, pad_token_id, sampling)
    state.prefill()
    stepper, host, done = _Stepper(state, cuda_graph, sampling), _Host(len(input_ids)), 1
    while done < max_new_tokens:
        done, recorded = stepper.advance(done, max_new_tokens)
        if recorded or done % check_every:
            continue
        if _all_done(state, host, done, stop_check):
            break
        if compact and _compact(state, host, done):
            stepper.forget_graph()
    host.fetch(state, done)
    return torch.cat([input_ids, _assemble(host, state, pad_token_id, input_ids.device)], dim=1)


def greedy_generate(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
                    compact: bool = False, **kwargs) -> torch.Tensor:
    """Greedy `generate_static` without compaction unless asked: the whole batch runs every step, as in HF
    `generate`, so on a GPU too (where a smaller batch may take other kernels) the tokens are `generate`'s
    exactly. The generation benchmark's identity check calls this."""
    return generate_static(model, input_ids, attention_mask, max_new_tokens, compact=compact, **kwargs)


def _all_done(state: _Decoder, host: _Host, done: int, stop_check: StopCheck | None) -> bool:
    if stop_check is not None:
        host.fetch(state, done)
        stopped = stop_check(state.rows, [host.tokens[row] for row in state.rows])
        state.unfinished &= ~torch.tensor(list(stopped), dtype=torch.bool, device=state.unfinished.device)
    return not bool(state.unfinished.any())


def _compact(state: _Decoder, host: _Host, done: int) -> bool:
    """Drop the finished rows once at most half the batch is still running; True if it did."""
    live = state.unfinished.nonzero().flatten()
    if len(live) == 0 or len(live) * 2 > len(state.rows):
        return False
    host.fetch(state, done)  # the dropped rows' tokens are complete on the host
    state.keep(live)
    return True


def _assemble(host: _Host, state: _Decoder, pad: int, device: torch.device) -> torch.Tensor:
    """The new tokens of every original row, cut after its first EOS (then padded) and trimmed as `generate`
    trims: the output ends at the step where the last row finished."""
    eos = set(state.eos.tolist())
    rows = []
    for tokens in host.tokens:
        end = next((i + 1 for i, t in enumerate(tokens) if t in eos), len(tokens))
        rows.append(tokens[:end])
    width = max(len(r) for r in rows) if rows else 0
    out = torch.full((len(rows), width), pad, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r, dtype=torch.long)
    return out.to(device)


@torch.inference_mode()
def generate_queue(model, prompts: Sequence[Sequence[int]], slots: int, max_new_tokens: int | Sequence[int], *,
                   eos_token_id: int | Sequence[int], pad_token_id: int, stop_check: StopCheck | None = None,
                   check_every: int = 8, sampling: Sampling | None = None, cuda_graph: bool | None = None,
                   refills: int = 2, on_done: Callable[[int, list[int]], None] | None = None,
                   continuations: Mapping[int, Sequence[int]] | None = None,
                   on_scored: Callable[[int, float, int], None] | None = None) -> list[list[int]]:
    """The new tokens of every prompt, decoded `slots` at a time with continuous batching.

    A slot whose row ended (EOS, `stop_check`, or its `max_new_tokens`: one number, or one per prompt) takes
    the next waiting prompt at the next check, so a batch never runs at the speed of its longest completion.
    The cache holds the longest prompt plus `refills` generations of the largest `max_new_tokens`; when it is
    full the rows still running finish and a fresh cache takes the rest of the queue. `prompts` are best
    ordered longest first; `sampling.seeds` has one seed per prompt. `on_done(prompt, tokens)` hears of each
    prompt as soon as its row ends, so a caller can act on a group of prompts (one language) while the rest
    decode. `continuations` (prompt -> token ids) are scored on their prompt's prefill and reported through
    `on_scored(prompt, summed NLL, tokens)`: stage 3's `ref_nll` of a reference solution, at the cost of its
    own tokens. A row's tokens do not depend on which rows share the batch (up to float rounding).
    """
    eos_ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    limits = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    extra = _Continuations(continuations or {}, on_scored)
    host = _Host(len(prompts))
    finish = _Finish(host, eos_ids, limits, on_done)
    queue = list(range(len(prompts)))
    device = next(model.parameters()).device
    while queue:
        first, queue = queue[:slots], queue[slots:]
        # every prompt fits left of the write pointer, which starts one column right of the longest
        width = max(len(prompts[i]) for i in [*first, *queue]) + 1
        horizon = refills * (max(limits) + check_every)
        seeds = None if sampling is None else [sampling.seeds[i] for i in first]
        state = _Decoder.empty(model, first, width, horizon, eos_ids, pad_token_id,
                               None if sampling is None else Sampling(sampling.temperature, sampling.top_p, seeds),
                               device)
        host.fetched = 0  # a fresh cache: its `out` columns start again at 0
        for slot, row in enumerate(first):  # one prompt at a time: no padding to prefill
            _admit(state, host, slot, row, prompts[row], None if seeds is None else seeds[slot], extra)
        queue = _run_queue(state, host, prompts, queue, limits, horizon, stop_check, check_every, sampling,
                           cuda_graph, finish, extra)
        finish(state.rows)
    return [finish.cut(row) for row in range(len(prompts))]


@dataclass(frozen=True)
class _Continuations:
    """Texts to score after some prompts (prompt index -> ids), and who hears the scores."""

    ids: Mapping[int, Sequence[int]]
    on_scored: Callable[[int, float, int], None] | None


def _admit(state: _Decoder, host: _Host, slot: int, row: int, prompt: Sequence[int], seed: int | None,
           extra: _Continuations) -> None:
    first, scored = state.admit(slot, row, prompt, seed, extra.ids.get(row))
    host.tokens[row].append(first)
    if scored is not None and extra.on_scored is not None:
        extra.on_scored(row, *scored)


class _Finish:
    """Hands each ended row's tokens to `on_done`, once."""

    def __init__(self, host: _Host, eos: Sequence[int], limits: Sequence[int],
                 on_done: Callable[[int, list[int]], None] | None):
        self.host, self.eos, self.limits, self.on_done = host, eos, limits, on_done
        self.told: set[int] = set()

    def cut(self, row: int) -> list[int]:
        return _cut(self.host.tokens[row], self.eos, self.limits[row])

    def __call__(self, rows: Sequence[int]) -> None:
        for row in rows:
            if row not in self.told:
                self.told.add(row)
                if self.on_done is not None:
                    self.on_done(row, self.cut(row))


def _run_queue(state: _Decoder, host: _Host, prompts, queue: list[int], limits: Sequence[int], horizon: int,
               stop_check: StopCheck | None, check_every: int, sampling: Sampling | None,
               cuda_graph: bool | None, finish: _Finish, extra: _Continuations) -> list[int]:
    """Decode until every row of this cache is done, admitting waiting prompts while the cache has room;
    returns the prompts still waiting."""
    stepper, done = _Stepper(state, cuda_graph, sampling), 0
    while done < horizon:
        done, recorded = stepper.advance(done, horizon)
        if recorded or done % check_every:
            continue
        host.fetch(state, done)
        _end_long_rows(state, host, limits)
        if stop_check is not None:
            stopped = stop_check(state.rows, [host.tokens[row] for row in state.rows])
            state.unfinished &= ~torch.tensor(list(stopped), dtype=torch.bool, device=state.unfinished.device)
        free = (~state.unfinished).nonzero().flatten().tolist()
        finish([state.rows[slot] for slot in free])
        while free and queue and horizon - done >= limits[queue[0]] + check_every:
            row = queue.pop(0)
            slot = free.pop(0)
            seed = None if sampling is None else sampling.seeds[row]
            _admit(state, host, slot, row, prompts[row], seed, extra)
        if not bool(state.unfinished.any()):
            break
        if not queue and _compact(state, host, done):
            stepper.forget_graph()
    host.fetch(state, done)
    return queue


def _end_long_rows(state: _Decoder, host: _Host, limits: Sequence[int]) -> None:
    long = [len(host.tokens[row]) >= limits[row] for row in state.rows]
    if any(long):
        state.unfinished &= ~torch.tensor(long, dtype=torch.bool, device=state.unfinished.device)


def _cut(tokens: list[int], eos: Sequence[int], max_new: int) -> list[int]:
    """At most `max_new` tokens, ending at the first EOS (a row may run a few steps past its end before the
    check that sees it)."""
    tokens = tokens[:max_new]
    end = next((i + 1 for i, t in enumerate(tokens) if t in eos), len(tokens))
    return tokens[:end]
