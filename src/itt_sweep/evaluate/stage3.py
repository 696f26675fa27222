"""Stage 3: zero-shot evaluation of a trained model on the MBXP test problems of every eval language.

Generation, execution and scoring stay separate steps (human-eval style): completions are produced by the
model, judged by the sandboxed executor, and only then turned into metrics. Every completion and verdict is
kept for the trial's artifacts. A prompt that does not fit in the model's context is not generated; it is
scored as a failure with the reason `prompt_too_long` and counted in the metrics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from itt_sweep.config import EvaluationSpec
from itt_sweep.data import chat
from itt_sweep.data.mbxp import Problem, load_problems
from itt_sweep.data.prompts import format_problem
from itt_sweep.evaluate.generation import Generation, GenerationConfig, generate_completions, truncate_at_stop
from itt_sweep.evaluate.passk import pass_at_k
from itt_sweep.evaluate.ref_nll import reference_nll
from itt_sweep.evaluate.references import verified_references
from itt_sweep.execution.executor import execute
from itt_sweep.execution.programs import assemble
from itt_sweep.execution.recipes import RECIPES
from itt_sweep.execution.types import Limits, Verdict
from itt_sweep.modeling import ModelRef, load


def prompts_for(problems: Sequence[Problem], language: str, prompt_format: str, tokenizer) -> list[str]:
    if prompt_format == "chat":
        return [chat.chat_prompt(tokenizer, chat.instruction(format_problem(p), language)) for p in problems]
    return [format_problem(p) for p in problems]


def generate_for(model, tokenizer, problems: Sequence[Problem], language: str,
                 spec: EvaluationSpec) -> tuple[list[Generation], list[str]]:
    """The generations and, for each problem, the completion of its MBXP prompt that they amount to."""
    recipe = RECIPES[language]
    chat_format = spec.prompt_format == "chat"
    gen = GenerationConfig(max_new_tokens=spec.new_tokens(language), batch_size=spec.batch_size,
                           keep_stop=recipe.keep_stop, token_budget=spec.token_budget)
    # a reply ends with EOS, and a stop sequence such as "\ndef" would cut it at its own first line
    stops = [] if chat_format else recipe.stop_sequences
    generations = generate_completions(model, tokenizer, prompts_for(problems, language, spec.prompt_format,
                                                                     tokenizer), stops, gen)
    if not chat_format:
        return generations, [g.texts[0] for g in generations]
    # the reply's code, cut where the function ends as a completion would be (example calls after it go)
    return generations, [truncate_at_stop(chat.completion_from_reply(p.prompt, g.texts[0], p.entry_point),
                                          recipe.stop_sequences, recipe.keep_stop)
                         for p, g in zip(problems, generations, strict=True)]


def evaluate_language(model, tokenizer, language: str, spec: EvaluationSpec, eval_problems: int | None,
                      data_dir: Path, reference_dir: Path) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Metrics of one eval language and one record per problem (prompt, completion, verdict)."""
    problems = load_problems(language, split="test", data_dir=data_dir, limit=eval_problems)
    generations, completions = generate_for(model, tokenizer, problems, language, spec)
    limits = Limits(timeout_s=spec.timeout_s)
    runnable = [i for i, g in enumerate(generations) if g.skipped is None]
    programs = [assemble(problems[i].prompt, completions[i], problems[i].test, language, problems[i].entry_point,
                         problems[i].task_id).model_copy(update={"limits": limits}) for i in runnable]
    verdicts: list[Verdict | None] = [None] * len(problems)
    for i, verdict in zip(runnable, execute(programs, workers=spec.workers,
                                            allow_unsandboxed=spec.allow_unsandboxed), strict=True):
        verdicts[i] = verdict
    refs = verified_references(language, problems, data_dir, reference_dir, limits, spec.allow_unsandboxed)
    pairs = [(p.prompt, r) for p in problems for r in refs.get(p.task_id, [])]
    passed = [v is not None and v.status == "passed" for v in verdicts]
    n = len(problems)
    metrics = {
        "pass_at_1": sum(pass_at_k(1, int(ok), 1) for ok in passed) / n,
        "compile_rate": sum(v is not None and v.compiled for v in verdicts) / n,
        "ref_nll": reference_nll(model, tokenizer, pairs) if pairs else math.nan,
        "truncated_rate": sum(g.truncated[0] for g in generations if g.skipped is None) / n,
        "n_prompt_too_long": float(n - len(runnable)),
        "n_problems": float(n),
        "n_references": float(len(pairs)),
    }
    records = [record(p, g, c, v) for p, g, c, v in zip(problems, generations, completions, verdicts, strict=True)]
    return metrics, records


def record(problem: Problem, generation: Generation, completion: str, verdict: Verdict | None) -> dict[str, Any]:
    """One line of a trial's completions file; a prompt that was never generated has its reason as status."""
    row = {"task_id": problem.task_id, "completion": completion, "truncated": bool(generation.truncated[0])}
    if completion != generation.texts[0]:
        row["reply"] = generation.texts[0]  # chat format: what the model said, before code extraction
    if verdict is None:
        return {**row, "status": generation.skipped, "compile_s": 0.0, "run_s": 0.0, "stderr": ""}
    return {**row, "status": verdict.status, "compile_s": verdict.compile_s, "run_s": verdict.run_s,
            "stderr": verdict.stderr[-2000:]}


def evaluate_model(model: ModelRef | Path | str, languages: Sequence[str], spec: EvaluationSpec,
                   eval_problems: int | None, data_dir: Path, reference_dir: Path
                   ) -> tuple[dict[str, dict[str, float]], dict[str, list[dict[str, Any]]]]:
    """Load the model once (through the one loader) and evaluate it on every language.

    On a GPU the model runs in bf16; on CPU in fp32 with `spec.cpus` threads, the CPUs stage 3 holds."""
    ref = model if isinstance(model, ModelRef) else ModelRef(name=str(model))
    if torch.cuda.is_available():
        loaded, tokenizer = load(ref, dtype=torch.bfloat16, device="cuda")
    else:
        torch.set_num_threads(spec.cpus)
        loaded, tokenizer = load(ref)
    loaded.eval()
    metrics, records = {}, {}
    for language in languages:
        metrics[language], records[language] = evaluate_language(loaded, tokenizer, language, spec, eval_problems,
                                                                 data_dir, reference_dir)
    return metrics, records
