"""Stage 3: zero-shot evaluation of a trained model on the MBXP test problems of every eval language.

Generation, execution and scoring stay separate steps (human-eval style): completions are produced by the
model, judged by the sandboxed executor, and only then turned into metrics. Every completion and verdict is
kept for the trial's artifacts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from itt_sweep.data.mbxp import load_problems
from itt_sweep.data.prompts import format_problem
from itt_sweep.evaluate.generation import GenerationConfig, generate_completions
from itt_sweep.evaluate.passk import pass_at_k
from itt_sweep.evaluate.ref_nll import reference_nll
from itt_sweep.evaluate.references import verified_references
from itt_sweep.execution.executor import execute
from itt_sweep.execution.programs import assemble
from itt_sweep.execution.recipes import RECIPES
from itt_sweep.execution.types import Limits
from itt_sweep.modeling import load_model_and_tokenizer


def evaluate_language(model, tokenizer, language: str, spec: dict[str, Any], data_dir: Path,
                      reference_dir: Path) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Metrics of one eval language and one record per problem (prompt, completion, verdict)."""
    problems = load_problems(language, split="test", data_dir=data_dir, limit=spec["eval_problems"])
    recipe = RECIPES[language]
    gen = GenerationConfig(max_new_tokens=spec["max_new_tokens"], batch_size=spec["batch_size"],
                           keep_stop=recipe.keep_stop)
    completions = generate_completions(model, tokenizer, [format_problem(p) for p in problems],
                                       recipe.stop_sequences, gen)
    limits = Limits(timeout_s=spec["timeout_s"])
    programs = [assemble(p.prompt, c[0], p.test, language, p.entry_point, p.task_id).model_copy(
        update={"limits": limits}) for p, c in zip(problems, completions, strict=True)]
    verdicts = execute(programs, workers=spec["workers"], allow_unsandboxed=spec["allow_unsandboxed"])
    refs = verified_references(language, problems, data_dir, reference_dir, limits, spec["allow_unsandboxed"])
    pairs = [(p.prompt, r) for p in problems for r in refs.get(p.task_id, [])]
    passed = [v.status == "passed" for v in verdicts]
    metrics = {
        "pass_at_1": sum(pass_at_k(1, int(ok), 1) for ok in passed) / len(problems),
        "compile_rate": sum(v.compiled for v in verdicts) / len(problems),
        "ref_nll": reference_nll(model, tokenizer, pairs) if pairs else math.nan,
        "n_problems": float(len(problems)),
        "n_references": float(len(pairs)),
    }
    records = [{"task_id": p.task_id, "completion": c[0], "status": v.status, "compile_s": v.compile_s,
                "run_s": v.run_s, "stderr": v.stderr[-2000:]}
               for p, c, v in zip(problems, completions, verdicts, strict=True)]
    return metrics, records


def evaluate_model(model_dir: Path, languages: Sequence[str], spec: dict[str, Any], data_dir: Path,
                   reference_dir: Path) -> tuple[dict[str, dict[str, float]], dict[str, list[dict[str, Any]]]]:
    model, tokenizer = load_model_and_tokenizer(str(model_dir))
    if torch.cuda.is_available():
        model = model.to("cuda", dtype=torch.bfloat16)
    model.eval()
    metrics, records = {}, {}
    for language in languages:
        metrics[language], records[language] = evaluate_language(model, tokenizer, language, spec, data_dir,
                                                                 reference_dir)
    return metrics, records
