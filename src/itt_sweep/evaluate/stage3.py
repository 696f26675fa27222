"""Stage 3: zero-shot evaluation of a trained model on the MBXP test problems of every eval language.

Generation, execution and scoring stay separate steps (human-eval style): completions are produced by the
model, judged by the sandboxed executor, and only then turned into metrics. Every completion and verdict is
kept for the trial's artifacts. A prompt that does not fit in the model's context is not generated; it is
scored as a failure with the reason `prompt_too_long` and counted in the metrics.

The model never waits on the sandbox: reference checks start in the background with stage 3, and while
language L's programs execute (a background thread driving the local pool or Ray `sandbox` tasks), language
L+1 generates; `ref_nll` runs after the last generation, while the last executions finish. With an `out_dir`
(the trial's `stage3/`), each language's generations are saved as soon as they exist and its metrics and
records when it is scored, atomically, so a restarted trial regenerates nothing that was saved and rescores
nothing that was finished.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from itt_sweep.config import EvaluationSpec, stable_hash
from itt_sweep.data import chat
from itt_sweep.data.mbxp import Problem, load_problems
from itt_sweep.data.prompts import format_problem
from itt_sweep.evaluate.generation import Generation, GenerationConfig, PromptSet, generate_sets, truncate_at_stop
from itt_sweep.evaluate.passk import mean_pass_at_k
from itt_sweep.evaluate.ref_nll import per_pair_nll
from itt_sweep.evaluate.references import cached_references, verified_references
from itt_sweep.execution.executor import execute
from itt_sweep.execution.programs import assemble
from itt_sweep.execution.recipes import RECIPES
from itt_sweep.execution.types import Limits, Program, Verdict
from itt_sweep.modeling import ModelRef, load


def prompts_for(problems: Sequence[Problem], language: str, prompt_format: str, tokenizer) -> list[str]:
    if prompt_format == "chat":
        return [chat.chat_prompt(tokenizer, chat.instruction(format_problem(p), language)) for p in problems]
    return [format_problem(p) for p in problems]


def generation_config(spec: EvaluationSpec) -> GenerationConfig:
    """Greedy at temperature 0, else `num_samples` samples per problem."""
    return GenerationConfig(max_new_tokens=spec.new_tokens("default"), batch_size=spec.batch_size,
                            token_budget=spec.token_budget, decoder=spec.decoder, do_sample=spec.temperature > 0,
                            temperature=spec.temperature or 1.0, top_p=spec.top_p, num_samples=spec.num_samples)


def prompt_set(problems: Sequence[Problem], language: str, spec: EvaluationSpec, tokenizer,
               refs: dict[str, list[str]] | None = None) -> PromptSet:
    """One language's prompts; with its verified references at hand (and completion prompts, which are the
    prompts `ref_nll` scores after), each reference is scored on its prompt's prefill."""
    recipe = RECIPES[language]
    chat_format = spec.prompt_format == "chat"
    # a reply ends with EOS, and a stop sequence such as "\ndef" would cut it at its own first line
    stops = [] if chat_format else recipe.stop_sequences
    references = None
    if refs is not None and not chat_format:
        references = [found[0] if len(found := refs.get(p.task_id, [])) == 1 else None for p in problems]
    return PromptSet(prompts_for(problems, language, spec.prompt_format, tokenizer), stops,
                     spec.new_tokens(language), recipe.keep_stop, references)


def completions_of(problems: Sequence[Problem], language: str, spec: EvaluationSpec,
                   generations: Sequence[Generation]) -> list[list[str]]:
    """For each problem and sample, the completion of its MBXP prompt that the generation amounts to."""
    if spec.prompt_format != "chat":
        return [list(g.texts) for g in generations]
    # the reply's code, cut where the function ends as a completion would be (example calls after it go)
    recipe = RECIPES[language]
    return [[truncate_at_stop(chat.completion_from_reply(p.prompt, text, p.entry_point, language),
                              recipe.stop_sequences, recipe.keep_stop) for text in g.texts]
            for p, g in zip(problems, generations, strict=True)]


@dataclass
class Stage3Stats:
    """Where stage 3's wall time went: the model's work (generation, ref_nll) against the whole."""

    wall_s: float = 0.0
    load_s: float = 0.0
    generate_s: float = 0.0
    ref_nll_s: float = 0.0
    execute_s: float = 0.0  # the executor's busy time (beside generation, in its own thread)
    references_s: float = 0.0  # verifying reference solutions (cached after the first trial)
    references_after: int = 0  # references scored after generation, not on their prompt's prefill
    new_tokens: int = 0
    reused_languages: list[str] = field(default_factory=list)

    @property
    def model_busy_fraction(self) -> float:
        """Of the wall time after the model was loaded."""
        work = self.wall_s - self.load_s
        return (self.generate_s + self.ref_nll_s) / work if work > 0 else math.nan


@dataclass
class Generated:
    """One language after generation: what the executor and the scorer need."""

    language: str
    problems: list[Problem]
    generations: list[Generation]
    completions: list[list[str]]  # per problem, per sample


def _write_json(path: Path, obj: Any) -> None:
    """Atomically: a reader (or a restart) sees the old file or the whole new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def _read_json(path: Path | None) -> Any:
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:  # cannot happen with atomic writes, but a hand-edited file must not crash a trial
        return None


def generate_language(model, tokenizer, language: str, problems: list[Problem], spec: EvaluationSpec,
                      out_dir: Path | None, stats: Stage3Stats) -> Generated:
    """The generations of one language: from `out_dir` if a previous run saved them, else from the model."""
    done: list[Generated] = []
    generate_languages(model, tokenizer, {language: problems}, spec, out_dir, stats, done.append)
    return done[0]


def generate_languages(model, tokenizer, problems: dict[str, list[Problem]], spec: EvaluationSpec,
                       out_dir: Path | None, stats: Stage3Stats, on_language: Callable[[Generated], None],
                       progress: RowsDone | None = None,
                       references: dict[str, dict[str, list[str]] | None] | None = None) -> None:
    """Every language's generations, handed to `on_language` as each is complete: the saved ones first, then
    the rest decoded together in one queue, language after language, so that the model never idles at the
    end of a language while its last rows finish (the next language's prompts take their slots)."""
    todo = []
    for language, items in problems.items():
        saved = _read_json(out_dir / f"{language}.generations.json" if out_dir else None)
        if saved is not None and [row["task_id"] for row in saved] == [p.task_id for p in items]:
            on_language(Generated(language, items, [Generation(r["texts"], r["truncated"], r["skipped"],
                                                               r.get("tokens", []), _pair(r.get("reference_nll")))
                                                    for r in saved],
                                  [r["completions"] for r in saved]))
            if progress is not None:
                progress(language, sum(len(r["texts"]) for r in saved))
        else:
            todo.append(language)
    if not todo:
        return
    clock = _Lap()

    def finished(index: int, generations: list[Generation]) -> None:
        stats.generate_s += clock.lap()
        language = todo[index]
        done = Generated(language, problems[language], generations,
                         completions_of(problems[language], language, spec, generations))
        _save_generations(out_dir, done, tokenizer, stats)
        on_language(done)
        clock.lap()  # what saving and on_language took is not generation

    sets = [prompt_set(problems[lang], lang, spec, tokenizer, (references or {}).get(lang)) for lang in todo]
    generate_sets(model, tokenizer, sets, generation_config(spec), seed=spec.seed, on_set=finished,
                  progress=None if progress is None else (lambda index, rows: progress(todo[index], rows)))
    stats.generate_s += clock.lap()


class _Lap:
    """Seconds since the previous lap."""

    def __init__(self) -> None:
        self.mark = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        elapsed, self.mark = now - self.mark, now
        return elapsed


def _save_generations(out_dir: Path | None, done: Generated, tokenizer, stats: Stage3Stats) -> None:
    stats.new_tokens += sum(len(tokenizer(t, add_special_tokens=False)["input_ids"])
                            for g in done.generations for t in g.texts)
    if out_dir is None:
        return
    _write_json(out_dir / f"{done.language}.generations.json",
                [{"task_id": p.task_id, "texts": g.texts, "truncated": g.truncated, "skipped": g.skipped,
                  "tokens": g.tokens, "completions": c, "reference_nll": g.reference_nll}
                 for p, g, c in zip(done.problems, done.generations, done.completions, strict=True)])
    with (out_dir / "generation_ledger.jsonl").open("a") as ledger:  # what was generated, when: resume tests
        ledger.write(json.dumps({"language": done.language, "pid": os.getpid(), "time": time.time()}) + "\n")


def execute_language(done: Generated, spec: EvaluationSpec, workers: int | None = None
                     ) -> list[list[Verdict | None]]:
    """Verdicts per problem and sample; None for a prompt that was never generated (`prompt_too_long`)."""
    runnable = [(i, j) for i, g in enumerate(done.generations) if g.skipped is None
                for j in range(len(done.completions[i]))]
    programs = programs_of(done.language, [done.problems[i] for i, _ in runnable],
                           [[done.completions[i][j]] for i, j in runnable], spec)
    verdicts: list[list[Verdict | None]] = [[None] * max(1, len(c)) for c in done.completions]
    for (i, j), verdict in zip(runnable, execute(programs, workers=workers or spec.workers,
                                                 allow_unsandboxed=spec.allow_unsandboxed), strict=True):
        verdicts[i][j] = verdict
    return verdicts


def programs_of(language: str, problems: Sequence[Problem], completions: Sequence[Sequence[str]],
                spec: EvaluationSpec) -> list[Program]:
    """The program of every completion of every problem, with the spec's limits and TypeScript mode."""
    limits = Limits(timeout_s=spec.timeout_s)
    mode = spec.typescript_type_errors if language == "typescript" else "fail"
    return [assemble(p.prompt, c, p.test, language, p.entry_point, p.task_id).model_copy(
            update={"limits": limits, "type_errors": mode}) for p, cs in zip(problems, completions, strict=True)
            for c in cs]


def pass_metrics(counts: Sequence[tuple[int, int]], ks: Sequence[int]) -> dict[str, float]:
    """`pass_at_<k>` (Chen et al.'s unbiased estimator, averaged over problems) for every k that no problem
    has fewer samples than; (n samples, c correct) per problem."""
    fewest = min((n for n, _ in counts), default=0)
    return {f"pass_at_{k}": mean_pass_at_k(counts, k) for k in ks if k <= fewest}


def score_language(model, tokenizer, done: Generated, verdicts: Sequence[Sequence[Verdict | None]],
                   refs: dict[str, list[str]], stats: Stage3Stats, ks: Sequence[int] = (1,)
                   ) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Metrics of one eval language and one record per problem and sample (completion, verdict). Without
    a model (scoring a samples file) there is no `ref_nll`."""
    problems, generations = done.problems, done.generations
    pairs = [(p.prompt, r) for p in problems for r in refs.get(p.task_id, [])]
    start = time.perf_counter()
    nll = _reference_nll(model, tokenizer, done, refs, stats) if pairs and model is not None else math.nan
    stats.ref_nll_s += time.perf_counter() - start
    samples = [v for per in verdicts for v in per]
    counts = [(len(per), sum(v is not None and v.status == "passed" for v in per)) for per in verdicts]
    n = len(problems)
    runnable = [t for g in generations if g.skipped is None for t in g.truncated]
    metrics = {
        **pass_metrics(counts, ks),
        "compile_rate": sum(v is not None and v.compiled for v in samples) / max(1, len(samples)),
        "ref_nll": nll,
        "truncated_rate": sum(runnable) / max(1, len(samples)),
        "n_prompt_too_long": float(sum(g.skipped is not None for g in generations)),
        "n_problems": float(n),
        "n_samples": float(max((len(per) for per in verdicts), default=0)),
        "n_references": float(len(pairs)),
    }
    records = [record(p, g, j, c, v) for p, g, cs, vs in zip(problems, generations, done.completions, verdicts,
                                                              strict=True)
               for j, (c, v) in enumerate(zip(cs or [""], vs, strict=True))]
    return metrics, records


def _reference_nll(model, tokenizer, done: Generated, refs: dict[str, list[str]], stats: Stage3Stats) -> float:
    """Token-weighted mean NLL of the references: those scored on their prompt's prefill during generation
    as they are, the rest (a reference that was not cached yet, chat prompts) by `per_pair_nll` now."""
    scored, pairs = [], []
    for problem, generation in zip(done.problems, done.generations, strict=True):
        found = refs.get(problem.task_id, [])
        if len(found) == 1 and generation.reference_nll is not None:
            scored.append(generation.reference_nll)
        else:
            pairs += [(problem.prompt, r) for r in found]
    scored += per_pair_nll(model, tokenizer, pairs) if pairs else []
    stats.references_after += len(pairs)
    tokens = sum(n for _, n in scored)
    return sum(total for total, _ in scored) / tokens if tokens else math.nan


def _pair(value: Sequence[float] | None) -> tuple[float, int] | None:
    return None if value is None else (float(value[0]), int(value[1]))


def evaluate_language(model, tokenizer, language: str, spec: EvaluationSpec, eval_problems: int | None,
                      data_dir: Path, reference_dir: Path) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """One language, start to end, without overlap or saving (tests and single-language callers)."""
    stats = Stage3Stats()
    problems = load_problems(language, split="test", data_dir=data_dir, limit=eval_problems)
    done = generate_language(model, tokenizer, language, problems, spec, None, stats)
    limits = Limits(timeout_s=spec.timeout_s)
    refs = verified_references(language, done.problems, data_dir, reference_dir, limits, spec.allow_unsandboxed)
    return score_language(model, tokenizer, done, execute_language(done, spec), refs, stats, spec.ks)


def record(problem: Problem, generation: Generation, sample: int, completion: str,
           verdict: Verdict | None) -> dict[str, Any]:
    """One line of a completions file (one sample of one problem); a prompt that was never generated has
    its reason as status."""
    row = {"task_id": problem.task_id, "sample": sample, "completion": completion,
           "truncated": bool(generation.truncated[sample]) if generation.truncated else False}
    if generation.texts and completion != generation.texts[sample]:
        row["reply"] = generation.texts[sample]  # chat format: what the model said, before code extraction
    if verdict is None:
        return {**row, "status": generation.skipped, "compile_s": 0.0, "run_s": 0.0, "stderr": ""}
    return {**row, "status": verdict.status, "compile_s": verdict.compile_s, "run_s": verdict.run_s,
            "stderr": verdict.stderr[-2000:]}


def load_for_eval(model: ModelRef | Path | str, spec: EvaluationSpec):
    """The model through the one loader: bf16 on a GPU; fp32 on CPU with `spec.cpus` threads (the CPUs
    stage 3 holds)."""
    ref = as_ref(model)
    if torch.cuda.is_available():
        loaded, tokenizer = load(ref, dtype=torch.bfloat16, device="cuda")
    else:
        torch.set_num_threads(spec.cpus)
        loaded, tokenizer = load(ref)
    return loaded.eval(), tokenizer


def as_ref(model: ModelRef | Path | str) -> ModelRef:
    return model if isinstance(model, ModelRef) else ModelRef(name=str(model))


def eval_problems(languages: Sequence[str], limit: int | None, data_dir: Path) -> dict[str, list[Problem]]:
    """MBXP's test problems of each language (the first `limit`): what a sweep trial evaluates on."""
    return {lang: load_problems(lang, split="test", data_dir=data_dir, limit=limit) for lang in languages}


def fingerprint(model: ModelRef | Path | str, problems: dict[str, list[Problem]], spec: EvaluationSpec) -> str:
    """What the saved files of a stage 3 depend on: a trial dir outlives a change of the sweep file."""
    tasks = {lang: stable_hash([[p.task_id, p.prompt, p.test] for p in items]) for lang, items in problems.items()}
    return stable_hash({"model": as_ref(model).model_dump(), "problems": tasks,
                        "spec": spec.model_dump(mode="json", exclude={"workers", "cpus"})})


def prepare_out_dir(out_dir: Path, key: str) -> bool:
    """`out_dir` holding only files of this fingerprint: those of another model or spec are removed. True
    if it already held files of this one (a resumed run)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = out_dir / "FINGERPRINT"
    if stamp.is_file() and stamp.read_text().strip() == key:
        return True
    for path in out_dir.iterdir():
        if path.is_file():
            path.unlink()
    stamp.write_text(key + "\n")
    return False


RowsDone = Callable[[str, int], None]  # (language, samples just generated): progress bars


def evaluate_model(model: ModelRef | Path | str, problems: dict[str, list[Problem]], spec: EvaluationSpec,
                   data_dir: Path, reference_dir: Path, out_dir: Path | None = None,
                   stats: Stage3Stats | None = None, progress: RowsDone | None = None
                   ) -> tuple[dict[str, dict[str, float]], dict[str, list[dict[str, Any]]]]:
    """Every language, overlapped: generation in this thread, execution and reference checks in the
    background; finished languages in `out_dir` are reused as they are."""
    stats = stats if stats is not None else Stage3Stats()
    start = time.perf_counter()
    if out_dir is not None:
        prepare_out_dir(out_dir, fingerprint(model, problems, spec))
    finished = {lang: saved for lang in problems
                if (saved := _read_json(out_dir / f"{lang}.json" if out_dir else None)) is not None}
    stats.reused_languages = list(finished)
    todo = {lang: items for lang, items in problems.items() if lang not in finished}
    if todo:
        loaded, tokenizer = load_for_eval(model, spec)
        stats.load_s = time.perf_counter() - start
        finished.update(_overlapped(loaded, tokenizer, todo, spec, data_dir, reference_dir, out_dir, stats,
                                    progress))
    stats.wall_s = time.perf_counter() - start
    return ({lang: finished[lang]["metrics"] for lang in problems},
            {lang: finished[lang]["records"] for lang in problems})


def _overlapped(model, tokenizer, problems: dict[str, list[Problem]], spec: EvaluationSpec, data_dir: Path,
                reference_dir: Path, out_dir: Path | None, stats: Stage3Stats, progress: RowsDone | None
                ) -> dict[str, dict[str, Any]]:
    limits = Limits(timeout_s=spec.timeout_s)
    results: dict[str, dict[str, Any]] = {}
    languages = list(problems)
    # one thread checks references (cached after the first trial), one drives the executor: neither waits
    # behind the other, and this thread keeps the model busy
    with ThreadPoolExecutor(1, thread_name_prefix="stage3-refs") as ref_pool, \
            ThreadPoolExecutor(1, thread_name_prefix="stage3-exec") as exec_pool:
        refs: dict[str, Future] = {
            lang: ref_pool.submit(_timed, stats, "references_s", verified_references, lang, problems[lang],
                                  data_dir, reference_dir, limits, spec.allow_unsandboxed) for lang in languages}
        runs: list[tuple[Generated, Future]] = []
        workers = overlap_workers(spec)

        def execute_soon(done: Generated) -> None:
            _raise_if_failed([f for _, f in runs] + list(refs.values()))  # a broken sandbox: now, not later
            runs.append((done, exec_pool.submit(_timed, stats, "execute_s", execute_language, done, spec, workers)))

        try:
            cached = {lang: cached_references(lang, problems[lang], reference_dir, limits) for lang in languages}
            generate_languages(model, tokenizer, problems, spec, out_dir, stats, execute_soon, progress, cached)
        except BaseException:
            ref_pool.shutdown(cancel_futures=True)
            exec_pool.shutdown(cancel_futures=True)
            raise
        for done, verdicts in runs:
            metrics, records = score_language(model, tokenizer, done, verdicts.result(),
                                              refs[done.language].result(), stats, spec.ks)
            results[done.language] = {"metrics": metrics, "records": records}
            if out_dir is not None:
                _write_json(out_dir / f"{done.language}.json", results[done.language])
    return results


def _timed(stats: Stage3Stats, field_name: str, function: Callable[..., Any], *args: Any) -> Any:
    """`function(*args)`, its wall time added to `stats.<field_name>` (one thread per field: no race)."""
    start = time.perf_counter()
    try:
        return function(*args)
    finally:
        setattr(stats, field_name, getattr(stats, field_name) + time.perf_counter() - start)


def overlap_workers(spec: EvaluationSpec) -> int | None:
    """Executor workers while generation runs beside them: on CPU, the cores generation leaves free, so
    programs do not compete with the model for cores and hit wall-clock limits they would not hit alone."""
    if spec.workers is not None or torch.cuda.is_available():
        return spec.workers
    return max(1, (os.cpu_count() or 1) - spec.cpus)


def _raise_if_failed(futures: Sequence[Future]) -> None:
    for future in futures:
        if future.done() and future.exception() is not None:
            raise future.exception()
