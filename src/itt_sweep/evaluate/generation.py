"""Batched completion of code prompts, cut at per-language stop sequences: the one generation path of stage 3.

Stage 3 asks the model for a function body for every MBXP test problem in every language; that is the slow
part of an evaluation, so prompts are batched (left padding, sorted by length to waste little on padding) and
a sequence that has written a stop sequence (the start of the next top-level definition, say) stops counting
towards the batch, which ends when every sequence is done. Batching must not change the answer: greedy results
equal those of generating each prompt alone, which the tests pin down.

Batches are cut by a token budget (rows x (longest prompt + max_new_tokens)), not a row count, so a batch of
long prompts is no bigger in memory than one of short prompts. A prompt that cannot fit in the model's
context with `max_new_tokens` after it is not generated at all: it comes back with `skipped =
"prompt_too_long"`, to be scored as a failure, never truncated silently and never a crash.

Decoding is fixed here, not inherited from a checkpoint's `generation_config` (a hub model may ship a
repetition penalty or top-k), so two models are always compared under the same decoding rule.

Prompts come in sets (`PromptSet`: one language's prompts, stops and token limit); `generate_sets` decodes
every set of a call in one queue and reports each set as soon as its last row ends, so a caller can execute
one language while the next decodes. The decoder is `fast` (`fast_generation.generate_queue`: static KV
cache, a CUDA graph per token on GPUs, continuous batching over all prompts of a call) unless `decoder: hf`
asks for Hugging Face `generate` (set by set), which is also the automatic fallback, with one log line, for
a model the fast path cannot run. Sampling seeds each (prompt, sample) from its tokens, so results do not
depend on batch composition or order.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from itt_sweep.encoding import encode_pair, encode_prompt
from itt_sweep.evaluate.fast_generation import Sampling, generate_queue, left_pad
from itt_sweep.evaluate.ref_nll import MAX_LENGTH as REF_NLL_MAX_LENGTH
from itt_sweep.modeling import max_positions

log = logging.getLogger(__name__)

PROMPT_TOO_LONG = "prompt_too_long"


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
    token_budget: int = 32768
    decoder: str = "fast"  # or "hf": Hugging Face generate (dynamic cache)
    check_every: int = 8  # steps between stop checks of the fast decoder


@dataclass
class Generation:
    """The completions of one prompt. `truncated[i]`: sample i hit `max_new_tokens` before a stop sequence or
    EOS (its program is probably cut off). `skipped`: why nothing was generated (`prompt_too_long`)."""

    texts: list[str]
    truncated: list[bool] = field(default_factory=list)
    skipped: str | None = None
    tokens: list[list[int]] = field(default_factory=list)  # the new token ids as decoded (pads included)
    # (summed NLL, tokens) of the prompt's reference solution, scored on the prompt's prefill (`PromptSet`)
    reference_nll: tuple[float, int] | None = None


def plan_batches(lengths: Sequence[int], rows_per_prompt: int, max_new_tokens: int, token_budget: int,
                 max_rows: int) -> list[list[int]]:
    """Prompt indices grouped into batches, longest first, each within the token budget and the row cap.

    A batch costs rows x (its longest prompt + max_new_tokens) tokens of KV cache and attention; a prompt too
    big for the budget on its own still gets a batch of one (the context check has already passed it).
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for index in order:
        if batches:
            batch = batches[-1]
            width = lengths[batch[0]] + max_new_tokens  # the first prompt of a batch is its longest
            rows = (len(batch) + 1) * rows_per_prompt
            if rows <= max(max_rows, rows_per_prompt) and rows * width <= token_budget:
                batch.append(index)
                continue
        batches.append([index])
    return batches


def completion_text(
    tokenizer, prompt_ids: Sequence[int], generated_ids: Sequence[int], head: str | None = None
) -> str:
    """The text the model added after the prompt (`head` is the decoded prompt, if already known).

    Decoding the new tokens alone loses a leading space with SentencePiece tokenizers, so the prompt and the
    new tokens are decoded together and the decoded prompt is cut off the front.
    """
    generated_ids = list(generated_ids)
    if head is None:
        head = decode(tokenizer, list(prompt_ids))
    full = decode(tokenizer, list(prompt_ids) + generated_ids)
    if full.startswith(head):
        return full[len(head) :]
    return decode(tokenizer, generated_ids)


def decode(tokenizer, ids: Sequence[int]) -> str:
    """Code as the model wrote it: transformers 4.x would otherwise "clean up" spaces before punctuation."""
    return tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)


def find_stop(text: str, stop_sequences: Sequence[str]) -> tuple[int, int] | None:
    """(index, length) of the earliest stop sequence in `text`, or None."""
    cut = None
    for stop in stop_sequences:
        index = text.find(stop) if stop else -1
        if index != -1 and (cut is None or index < cut[0]):
            cut = (index, len(stop))
    return cut


def truncate_at_stop(text: str, stop_sequences: Sequence[str], keep_stop: bool = False) -> str:
    """Cut `text` at the earliest stop sequence; `keep_stop` keeps it (brace languages: the "\n}" that
    closes the function belongs to the completion)."""
    cut = find_stop(text, stop_sequences)
    if cut is None:
        return text
    return text[: cut[0] + (cut[1] if keep_stop else 0)]


def eos_ids(model, tokenizer) -> list[int]:
    """Every id that ends a completion: the tokenizer's EOS and those of the model's generation config (an
    instruct model may end its turn with another token, e.g. Llama 3's <|eot_id|>)."""
    ids = [tokenizer.eos_token_id]
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += configured if isinstance(configured, list) else [configured]
    return list(dict.fromkeys(i for i in ids if isinstance(i, int)))


class StopWatch:
    """Which rows have written a stop sequence, decoding only the new tokens since the last look.

    Works on decoded text rather than token ids, because a byte-level BPE tokenizer can spell a stop sequence
    such as "\\ndef" with many different token splits. Every token spells at least one character, so a stop
    that appeared since the last check lies within the new tokens and the `len(stop)` tokens before them:
    only that window is decoded, never prompt + everything (which was quadratic in length). A finished row
    stays finished.
    """

    def __init__(self, tokenizer, n_rows: int, stops: Sequence[str]):
        self.tokenizer = tokenizer
        self.stops = [stop for stop in stops if stop]
        self.back = max((len(stop) for stop in self.stops), default=0)
        self.seen = [0] * n_rows
        self.done = [False] * n_rows

    def __call__(self, rows: Sequence[int], new_tokens: Sequence[list[int]]) -> list[bool]:
        for row, tokens in zip(rows, new_tokens, strict=True):
            if not self.done[row] and self.stops and len(tokens) > self.seen[row]:
                window = decode(self.tokenizer, tokens[max(0, self.seen[row] - self.back):])
                self.done[row] = any(stop in window for stop in self.stops)
                self.seen[row] = len(tokens)
        return [self.done[row] for row in rows]


class _StopSequenceCriteria(StoppingCriteria):
    """`StopWatch` for HF `generate`: one host transfer of the new tokens per step for the whole batch."""

    def __init__(self, watch: StopWatch, prompt_width: int):
        self.watch, self.prompt_width = watch, prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        new = input_ids[:, self.prompt_width:].tolist()
        done = self.watch(range(len(new)), new)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


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


def _decoding_kwargs(model, tokenizer, config: GenerationConfig, num_return_sequences: int) -> dict:
    """Every decoding knob set explicitly, so no checkpoint default can change the rule."""
    kwargs = dict(
        max_new_tokens=config.max_new_tokens,
        do_sample=config.do_sample,
        num_beams=1,
        num_return_sequences=num_return_sequences,
        repetition_penalty=1.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=eos_ids(model, tokenizer),
    )
    if config.do_sample:
        kwargs.update(temperature=config.temperature, top_p=config.top_p, top_k=0)
    return kwargs


def sample_seed(seed: int, prompt: Sequence[int], sample: int) -> int:
    """The sampling seed of one (prompt, sample): from the prompt's tokens, not its place in a batch."""
    blob = f"{seed}:{sample}:{','.join(map(str, prompt))}".encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little") >> 1


def _hf_batch(model, tokenizer, prompt_ids: Sequence[list[int]], stop_sequences: Sequence[str],
              config: GenerationConfig, n: int, seed: int) -> torch.Tensor:
    """HF `generate` with the dynamic cache (`decoder: hf`); sampling seeded once per batch."""
    device = next(model.parameters()).device
    input_ids, attention_mask = left_pad(prompt_ids, tokenizer.pad_token_id)
    watch = StopWatch(tokenizer, len(prompt_ids) * n, stop_sequences)
    with _seeded(seed, device):
        return model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                              stopping_criteria=StoppingCriteriaList([_StopSequenceCriteria(watch,
                                                                                            input_ids.shape[1])]),
                              **_decoding_kwargs(model, tokenizer, config, n))


@dataclass(frozen=True)
class PromptSet:
    """One group of prompts and how their completions end (one language in stage 3): the unit a caller
    saves and executes. `max_new_tokens` / `keep_stop` left None take the config's."""

    prompts: Sequence[str]
    stop_sequences: Sequence[str] = ()
    max_new_tokens: int | None = None
    keep_stop: bool | None = None
    # a known-good completion per prompt (or None): the fast decoder scores it on the prompt's prefill, so
    # `ref_nll` costs the reference's tokens only (`Generation.reference_nll`)
    references: Sequence[str | None] | None = None


@dataclass
class _Job:
    """A prompt set, encoded: which prompts fit the context (longest first) and their generations."""

    stops: list[str]
    max_new: int
    keep_stop: bool
    encoded: list[list[int]]
    fits: list[int]
    results: list[Generation]
    continuations: dict[int, list[int]]  # prompt index -> reference ids to score after it


def _jobs(model, tokenizer, sets: Sequence[PromptSet], config: GenerationConfig) -> list[_Job]:
    limit = max_positions(model.config)
    jobs = []
    for prompt_set in sets:
        max_new = prompt_set.max_new_tokens or config.max_new_tokens
        encoded = [encode_prompt(tokenizer, prompt) for prompt in prompt_set.prompts]
        fits = [i for i, ids in enumerate(encoded) if limit is None or len(ids) + max_new <= limit]
        fits.sort(key=lambda i: -len(encoded[i]))  # longest first: the fast decoder's first rows set the width
        skipped = [Generation([""] * config.num_samples, [False] * config.num_samples, PROMPT_TOO_LONG)
                   for _ in encoded]
        keep = config.keep_stop if prompt_set.keep_stop is None else prompt_set.keep_stop
        jobs.append(_Job(list(prompt_set.stop_sequences), max_new, keep, encoded, fits, skipped,
                         _continuations(tokenizer, prompt_set, encoded, fits, limit)))
    return jobs


def _continuations(tokenizer, prompt_set: PromptSet, encoded: list[list[int]], fits: list[int],
                   limit: int | None) -> dict[int, list[int]]:
    """The reference ids to score after each prompt, tokenised as `ref_nll` tokenises the pair; a pair that
    `ref_nll` would cut (too long) or split elsewhere is left to `ref_nll` itself."""
    if not prompt_set.references:
        return {}
    window = min(REF_NLL_MAX_LENGTH, limit or REF_NLL_MAX_LENGTH)
    out = {}
    for i in fits:
        reference = prompt_set.references[i]
        if not reference:
            continue
        ids, n_prompt = encode_pair(tokenizer, prompt_set.prompts[i], reference)
        if ids[:n_prompt] == encoded[i] and n_prompt < len(ids) <= window:
            out[i] = ids[n_prompt:]
    return out


def _generation(tokenizer, prompt_ids: list[int], news: list[list[int]], job: _Job, eos: set[int]) -> Generation:
    """The `n` completions of one prompt from their new token ids, cut at the set's stop sequences."""
    texts, truncated = [], []
    for new in news:
        raw = completion_text(tokenizer, prompt_ids, new)
        texts.append(truncate_at_stop(raw, job.stops, job.keep_stop))
        stopped = find_stop(raw, job.stops) is not None or any(t in eos for t in new)
        # a row that neither stopped nor ended wrote max_new_tokens tokens: generation cut it off
        truncated.append(not stopped and len(new) >= job.max_new)
    return Generation(texts, truncated, None, news)


Progress = Callable[[int, int], None]  # (prompt set, rows just finished)


def _fast_jobs(model, tokenizer, jobs: Sequence[_Job], config: GenerationConfig, n: int, seed: int,
               on_job: Callable[[int], None], progress: Progress | None) -> None:
    """Every set's rows through one continuous-batching queue, set after set: a set is reported as soon as
    its last row ends, while the next set's rows decode (stage 3 executes a language meanwhile)."""
    rows = [(j, i) for j, job in enumerate(jobs) for i in job.fits for _ in range(n)]
    ids = [jobs[j].encoded[i] for j, i in rows]
    limits = [jobs[j].max_new for j, _ in rows]
    width = max(len(x) for x in ids)
    slots = max(1, min(config.batch_size, config.token_budget // (width + max(limits))))
    sampling = None
    if config.do_sample:
        seeds = [sample_seed(seed, ids[r], r % n) for r in range(len(rows))]
        sampling = Sampling(temperature=config.temperature, top_p=config.top_p, seeds=seeds)
    watches = [StopWatch(tokenizer, len(rows), job.stops) for job in jobs]

    def stop_check(live: Sequence[int], new: Sequence[list[int]]) -> list[bool]:
        return [watches[rows[r][0]]([r], [tokens])[0] for r, tokens in zip(live, new, strict=True)]

    news: list[list[int]] = [[] for _ in rows]
    pending = [len(job.fits) * n for job in jobs]
    first_row = [rows.index((j, job.fits[0])) if job.fits else 0 for j, job in enumerate(jobs)]
    eos = set(eos_ids(model, tokenizer))
    continuations = {first_row[j] + k * n: job.continuations[i] for j, job in enumerate(jobs)
                     for k, i in enumerate(job.fits) if i in job.continuations}  # scored once, with sample 0
    scored: dict[int, tuple[float, int]] = {}

    def on_done(row: int, tokens: list[int]) -> None:
        news[row] = tokens
        j = rows[row][0]
        pending[j] -= 1
        if progress is not None:
            progress(j, 1)
        if pending[j] == 0:
            job = jobs[j]
            for k, i in enumerate(job.fits):
                at = first_row[j] + k * n
                job.results[i] = replace(_generation(tokenizer, job.encoded[i], news[at:at + n], job, eos),
                                         reference_nll=scored.get(at))
            on_job(j)

    for j, job in enumerate(jobs):
        if not job.fits:
            on_job(j)
    if rows:
        generate_queue(model, ids, slots, limits, eos_token_id=sorted(eos), pad_token_id=tokenizer.pad_token_id,
                       stop_check=stop_check if any(w.stops for w in watches) else None,
                       check_every=config.check_every, sampling=sampling, on_done=on_done,
                       continuations=continuations,
                       on_scored=lambda row, nll, count: scored.update({row: (nll, count)}))


def _hf_job(model, tokenizer, job: _Job, config: GenerationConfig, n: int, seed: int,
            progress: Callable[[int], None] | None) -> None:
    """HF `generate` over one set, in batches within the token budget."""
    eos = set(eos_ids(model, tokenizer))
    config = replace(config, max_new_tokens=job.max_new)
    lengths = [len(job.encoded[i]) for i in job.fits]
    for batch in plan_batches(lengths, n, job.max_new, config.token_budget, config.batch_size):
        prompts = [job.encoded[job.fits[b]] for b in batch]
        width = max(len(ids) for ids in prompts)
        output = _hf_batch(model, tokenizer, prompts, job.stops, config, n, seed)
        for k, b in enumerate(batch):
            news = [row[width:].tolist() for row in output[k * n:(k + 1) * n]]
            job.results[job.fits[b]] = _generation(tokenizer, prompts[k], news, job, eos)
        if progress is not None:
            progress(len(batch) * n)


class _CallerError(Exception):
    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


def _run_jobs(model, tokenizer, jobs: list[_Job], config: GenerationConfig, n: int, seed: int,
              on_set: Callable[[int], None], progress: Progress | None) -> None:
    """The fast decoder over every set at once, or HF `generate` set by set, also for a model the fast
    decoder cannot run (said once; the config remembers it, and the sets not yet reported start over)."""
    reported: list[int] = []

    def report(j: int) -> None:
        reported.append(j)
        try:
            on_set(j)
        except BaseException as exc:  # the caller's failure: never a reason to change decoders
            raise _CallerError(exc) from exc

    if config.decoder == "fast":
        try:
            return _fast_jobs(model, tokenizer, jobs, config, n, seed, report, progress)
        except _CallerError as failed:
            raise failed.error from None
        except torch.OutOfMemoryError:
            raise
        except (RuntimeError, TypeError, ValueError, NotImplementedError, AttributeError) as exc:
            log.warning("fast decoder cannot run %s (%s: %s); using HF generate", type(model).__name__,
                        type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            config.decoder = "hf"
    for j, job in enumerate(jobs):
        if j not in reported:
            _hf_job(model, tokenizer, job, config, n, seed,
                    None if progress is None else (lambda count, j=j: progress(j, count)))
            report(j)


def generate_sets(model, tokenizer, sets: Sequence[PromptSet], config: GenerationConfig, seed: int = 0,
                  on_set: Callable[[int, list[Generation]], None] | None = None,
                  progress: Progress | None = None) -> list[list[Generation]]:
    """For each set and each of its prompts, `config.num_samples` completions cut at the set's first stop
    sequence, in prompt order; `on_set(index, generations)` hears of each set as soon as it is complete.

    Sampling is reproducible for the same prompts, config and seed (each (prompt, sample) is seeded from its
    tokens, not its place); the caller's RNG state is left untouched. Greedy decoding is deterministic, so it
    runs once per prompt and repeats the answer `num_samples` times. The model is put in eval mode for the call
    and left in the mode it came in (stage 2 may evaluate mid-run).
    """
    if config.num_samples < 1 or config.batch_size < 1:
        raise ValueError(
            f"num_samples and batch_size must be at least 1, got {config.num_samples} and {config.batch_size}"
        )
    n = config.num_samples if config.do_sample else 1
    jobs = _jobs(model, tokenizer, sets, config)

    def finished(j: int) -> None:
        if n != config.num_samples:
            jobs[j].results = [Generation(g.texts * config.num_samples, g.truncated * config.num_samples,
                                          g.skipped, g.tokens * config.num_samples) if g.skipped is None else g
                               for g in jobs[j].results]
        if on_set is not None:
            on_set(j, jobs[j].results)

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), _left_padding(tokenizer):
            _run_jobs(model, tokenizer, jobs, config, n, seed, finished, progress)
    finally:
        model.train(was_training)
    return [job.results for job in jobs]


def generate_completions(model, tokenizer, prompts: Sequence[str], stop_sequences: Sequence[str],
                         config: GenerationConfig, seed: int = 0) -> list[Generation]:
    """One set of prompts through `generate_sets`."""
    return generate_sets(model, tokenizer, [PromptSet(prompts, stop_sequences)], config, seed)[0]
