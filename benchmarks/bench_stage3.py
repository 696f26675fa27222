"""Stage 3 of one trial, end to end: the previous path against the product's path, same model and problems.

previous: HF `generate` (dynamic cache), one language after another: generate, execute, score (`ref_nll`).
product:  `itt_sweep.evaluate.stage3.evaluate_model` as a sweep trial calls it: the static-cache decoder with
          finished rows dropped, execution and reference checks in the background while the next language
          generates, `ref_nll` after the last generation.
Both run the product's own functions (`decoder: hf` vs `fast`; `evaluate_language` vs `evaluate_model`), with
the reference cache warmed first so that neither pays for verifying references. Greedy, fp32 on CPU.

Each batch size runs both paths `--repeats` times, alternating; the goal is judged on the medians.
Reported per path: wall time (model load left out: the product path loads its own copy), new tokens/s of
generation, the fraction of wall time the model was busy
(generation + ref_nll), and the identity check: every completion of the product equals the previous path's,
or it differs at a near-tie (top-2 logit gap at the first differing token below 1e-4, counted); any other
difference is a bug and fails the run.

    python benchmarks/bench_stage3.py                       # CPU: SmolLM2-135M, 4 languages x 20 problems
    python benchmarks/bench_stage3.py --gpu                 # device machine: batch 64 and 256
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import torch

from itt_sweep.config import EvaluationSpec
from itt_sweep.data.mbxp import load_problems
from itt_sweep.encoding import encode_prompt
from itt_sweep.evaluate.references import verified_references
from itt_sweep.evaluate.stage3 import (
    Stage3Stats,
    eval_problems,
    evaluate_model,
    execute_language,
    generate_language,
    load_for_eval,
    score_language,
)
from itt_sweep.execution.types import Limits
from itt_sweep.modeling import ModelRef

NEAR_TIE = 1e-4
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def previous_path(model, tokenizer, languages, spec: EvaluationSpec, n_problems: int, data_dir: Path,
                  ref_dir: Path) -> tuple[dict[str, Any], Stage3Stats]:
    """One language after another, HF generate, nothing overlapped (the stage 3 of before)."""
    stats, out = Stage3Stats(), {}
    start = time.perf_counter()
    hf = spec.model_copy(update={"decoder": "hf"})
    limits = Limits(timeout_s=spec.timeout_s)
    for language in languages:
        problems = load_problems(language, split="test", data_dir=data_dir, limit=n_problems)
        done = generate_language(model, tokenizer, language, problems, hf, None, stats)
        verdicts = execute_language(done, hf)
        refs = verified_references(language, problems, data_dir, ref_dir, limits, hf.allow_unsandboxed)
        out[language] = (done, score_language(model, tokenizer, done, verdicts, refs, stats))
    stats.wall_s = time.perf_counter() - start
    return out, stats


def product_path(model_ref: ModelRef, languages, spec: EvaluationSpec, n_problems: int, data_dir: Path,
                 ref_dir: Path) -> tuple[dict[str, Any], Stage3Stats]:
    stats = Stage3Stats()
    with tempfile.TemporaryDirectory(prefix="bench-stage3-") as out_dir:
        _, records = evaluate_model(model_ref, eval_problems(languages, n_problems, data_dir), spec, data_dir,
                                    ref_dir, Path(out_dir), stats)
        saved = {lang: json.loads((Path(out_dir) / f"{lang}.generations.json").read_text())
                 for lang in languages}
    return {"records": records, "generations": saved}, stats


@torch.no_grad()
def top2_gap(model, prompt_ids: list[int], prefix: list[int]) -> float:
    device = next(model.parameters()).device
    logits = model(torch.tensor([prompt_ids + prefix], device=device)).logits[0, -1].float()
    top = torch.topk(logits, 2).values
    return float(top[0] - top[1])


def identity(model, tokenizer, previous: dict[str, Any], product: dict[str, Any]) -> dict[str, Any]:
    """Completions compared problem by problem; a difference is a near-tie or a bug."""
    same = ties = bugs = 0
    details = []
    for language, (done, _) in previous.items():
        for problem, old, new in zip(done.problems, done.generations, product["generations"][language],
                                     strict=True):
            if old.texts == new["texts"]:
                same += 1
                continue
            old_tokens, new_tokens = old.tokens[0], new["tokens"][0]
            at = next((i for i, (a, b) in enumerate(zip(old_tokens, new_tokens, strict=False)) if a != b),
                      min(len(old_tokens), len(new_tokens)))
            gap = top2_gap(model, encode_prompt(tokenizer, problem.prompt), old_tokens[:at])
            tie = gap < NEAR_TIE
            ties, bugs = ties + tie, bugs + (not tie)
            details.append({"task_id": problem.task_id, "first_diff_token": at, "top2_gap": gap, "near_tie": tie})
    return {"identical": same, "near_ties": ties, "other_differences": bugs, "differences": details}


def summary(stats: Stage3Stats) -> dict[str, Any]:
    return {"wall_s": stats.wall_s - stats.load_s, "load_s": stats.load_s, "generate_s": stats.generate_s,
            "ref_nll_s": stats.ref_nll_s,
            "new_tokens": stats.new_tokens, "new_tokens_per_s": stats.new_tokens / stats.generate_s,
            "model_busy_fraction": stats.model_busy_fraction}


def find_model(name: str | None) -> ModelRef:
    if name:
        return ModelRef(name=name)
    for directory in (common.REPO / "models" / "SmolLM2-135M-Instruct",):
        if (directory / GGUF).is_file():
            return ModelRef(name=str(directory), gguf_file=GGUF)
    raise SystemExit("SmolLM2-135M-Instruct not found: run `make models` (or pass --model)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a model dir or hub id (default: SmolLM2-135M-Instruct GGUF)")
    parser.add_argument("--languages", default="python,javascript,java,cpp")
    parser.add_argument("--problems", type=int, default=20)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-sizes", default=None, help="default: 16 on CPU, 64,256 with --gpu")
    parser.add_argument("--cpus", type=int, default=2, help="generation threads on CPU")
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--repeats", type=int, default=3, help="runs of both paths per batch size (medians)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    data_dir = common.find_data_dir()
    model_ref = find_model(args.model)
    languages = args.languages.split(",")
    batch_sizes = [int(b) for b in (args.batch_sizes or ("64,256" if args.gpu else "16")).split(",")]
    ref_dir = Path(tempfile.mkdtemp(prefix="bench-stage3-refs-"))
    runs = []
    for batch in batch_sizes:
        spec = EvaluationSpec(max_new_tokens=args.max_new_tokens, batch_size=batch, cpus=args.cpus, timeout_s=10)
        model, tokenizer = load_for_eval(model_ref, spec)
        if torch.cuda.is_available() and not args.gpu:
            model = model.float()  # identity is judged in fp32
        for language in languages:  # warm the reference cache: neither path pays for it
            problems = load_problems(language, split="test", data_dir=data_dir, limit=args.problems)
            verified_references(language, problems, data_dir, ref_dir, Limits(timeout_s=10), False)
        for repeat in range(args.repeats):  # alternating, so a slow spell of the machine hits both paths
            previous, old_stats = previous_path(model, tokenizer, languages, spec, args.problems, data_dir, ref_dir)
            product, new_stats = product_path(model_ref, languages, spec, args.problems, data_dir, ref_dir)
            check = identity(model, tokenizer, previous, product)
            row = {"batch_size": batch, "repeat": repeat, "previous": summary(old_stats),
                   "product": summary(new_stats),
                   "speedup_wall": summary(old_stats)["wall_s"] / summary(new_stats)["wall_s"],
                   "speedup_new_tokens_per_s": (new_stats.new_tokens / new_stats.generate_s)
                   / (old_stats.new_tokens / old_stats.generate_s), "identity": check}
            runs.append(row)
            print(f"batch {batch} run {repeat + 1}: previous {row['previous']['wall_s']:.1f} s, product "
                  f"{row['product']['wall_s']:.1f} s ({row['speedup_wall']:.2f}x); busy "
                  f"{new_stats.model_busy_fraction:.2f} vs {old_stats.model_busy_fraction:.2f}; identical "
                  f"{check['identical']}, near-ties {check['near_ties']}, other {check['other_differences']}",
                  flush=True)
    goal = "GPU: >= 5x new tokens/s at 64 and 256, busy >= 0.9" if args.gpu else "CPU: >= 1.5x end to end"
    medians = {batch: {key: statistics.median(r[key] for r in runs if r["batch_size"] == batch)
                       for key in ("speedup_wall", "speedup_new_tokens_per_s")} for batch in batch_sizes}
    for batch in batch_sizes:
        medians[batch]["product_busy"] = statistics.median(r["product"]["model_busy_fraction"] for r in runs
                                                           if r["batch_size"] == batch)
    met = all(r["identity"]["other_differences"] == 0 for r in runs) and (
        all(m["speedup_new_tokens_per_s"] >= 5 and m["product_busy"] >= 0.9 for m in medians.values())
        if args.gpu else all(m["speedup_wall"] >= 1.5 for m in medians.values()))
    payload = {"machine": common.machine_info(), "model": str(model_ref), "languages": languages,
               "problems_per_language": args.problems, "max_new_tokens": args.max_new_tokens,
               "median_speedup_wall": statistics.median(r["speedup_wall"] for r in runs),
               "medians_per_batch": {str(b): m for b, m in medians.items()}, "runs": runs,
               "goal": goal, "meets_goal": met}
    common.write_json(common.result_path("gpu_stage3.json" if args.gpu else "stage3.json", args.out), payload)
    return 0 if all(r["identity"]["other_differences"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
