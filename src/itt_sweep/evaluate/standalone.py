"""`itt-sweep eval`: stage 3 without a sweep, on any model or on any samples file.

Researchers score a base model before they plan a sweep, re-score saved completions after a toolchain fix,
and use the sandboxed executor as a drop-in for mxeval's. Both modes run stage 3's own functions
(`evaluate_model`; `execute_language` + `score_language`), so a number from `eval` and one from a sweep
trial mean the same thing.

Model mode writes `OUT/<language>.jsonl` (one line per sample) and `OUT/metrics.json`; its working state
(saved generations, finished languages) lives in `OUT/stage3/`, so a rerun with the same `--out` continues.
Samples mode writes `OUT/<file name>_results.jsonl` (each input line plus `passed` and `result`, as mxeval
does) and `OUT/metrics.json`; finished languages are kept in `OUT/.scored/`. Every JSON file written loads
with `json.load` (NaN becomes null; mxeval writes its pass@k with `str(dict)`).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from itt_sweep.config import EvaluationSpec, stable_hash
from itt_sweep.data.mbxp import LANGUAGES, Problem, load_problem_file, load_problems
from itt_sweep.evaluate.generation import Generation
from itt_sweep.evaluate.samples_file import Sample, read_samples
from itt_sweep.evaluate.stage3 import (
    Generated,
    Stage3Stats,
    eval_problems,
    evaluate_model,
    execute_language,
    fingerprint,
    prepare_out_dir,
    score_language,
)
from itt_sweep.modeling import ModelRef

Say = Callable[[str], None]
TRIAL_MODEL_FILE = "model.json"  # a trial dir's pointer to its stage-2 model (sweep/trial.py writes it)


class EvalInputError(ValueError):
    """An `eval` input that cannot be used: one line for the user, nothing written."""


def resolve_model(name: str, gguf_file: str | None = None, revision: str | None = None) -> ModelRef:
    """A hub id, a model dir, a stage-cache entry (a model dir too), or a sweep's trial dir."""
    path = Path(name)
    if (path / TRIAL_MODEL_FILE).is_file():
        return ModelRef(name=json.loads((path / TRIAL_MODEL_FILE).read_text())["model"])
    trial_config = path / "config.json"
    if trial_config.is_file() and "trial_key" in json.loads(trial_config.read_text()):
        raise EvalInputError(f"{path} is a trial dir whose stage 2 has not finished (no {TRIAL_MODEL_FILE})")
    return ModelRef(name=name, gguf_file=gguf_file, revision=revision)


def problems_for(source: str | None, languages: Sequence[str] | None, data_dir: Path | None
                 ) -> dict[str, list[Problem]]:
    """`--problems`: a number (MBXP's first N test problems per language), a JSONL file in MBXP's format, or
    None (every MBXP test problem)."""
    if source is not None and not source.isdigit():
        found = load_problem_file(Path(source))
        chosen = list(languages) if languages else list(found)
        absent = [lang for lang in chosen if lang not in found]
        if absent:
            raise EvalInputError(f"--problems {source} has no problems in {', '.join(absent)} "
                                 f"(it has {', '.join(found)})")
        return {lang: found[lang] for lang in chosen}
    limit = int(source) if source is not None else None
    return eval_problems(list(languages or ("python",)), limit, data_dir)


def every_problem(data_dir: Path | None) -> dict[str, list[Problem]]:
    """All MBXP problems of every language present (samples may answer any split)."""
    found = {}
    for language in LANGUAGES:
        try:
            found[language] = load_problems(language, data_dir=data_dir)
        except (OSError, ValueError):  # a language whose file is not in this data dir
            continue
    return found


def eval_model(ref: ModelRef, problems: dict[str, list[Problem]], spec: EvaluationSpec, data_dir: Path,
               out_dir: Path, reference_dir: Path, say: Say) -> dict[str, Any]:
    """Zero-shot generation, sandboxed execution and scoring of every language; returns metrics.json."""
    state = out_dir / "stage3"
    _say_resumed(state, fingerprint(ref, problems, spec), list(problems), say)
    stats = Stage3Stats()
    with _Bars({lang: len(items) * spec.num_samples for lang, items in problems.items()}) as bars:
        metrics, records = evaluate_model(ref, problems, spec, data_dir, reference_dir, state, stats, bars.advance)
    for language, rows in records.items():
        _write_lines(out_dir / f"{language}.jsonl", rows)
    summary = {"model": ref.model_dump(), "settings": spec.model_dump(mode="json"),
               "languages": {lang: _finite(m) for lang, m in metrics.items()},
               "seconds": {"wall": stats.wall_s, "load": stats.load_s, "generate": stats.generate_s,
                           "ref_nll": stats.ref_nll_s}, "reused_languages": stats.reused_languages}
    _write_json(out_dir / "metrics.json", summary)
    return summary


def score_samples(path: Path, problems: dict[str, list[Problem]], spec: EvaluationSpec, ks: Sequence[int],
                  out_dir: Path, say: Say) -> dict[str, Any]:
    """Verdicts and pass@k of a samples file; refuses the whole file (nothing written) on any bad line."""
    samples = read_samples(path, problems)
    by_language: dict[str, list[Sample]] = {}
    for sample in samples:
        by_language.setdefault(sample.problem.language, []).append(sample)
    state = out_dir / ".scored"
    key = stable_hash({"file": _digest(path), "timeout_s": spec.timeout_s, "ks": sorted(ks)})
    _say_resumed(state, key, list(by_language), say)
    prepare_out_dir(state, key)
    scored: dict[str, dict[str, Any]] = {}
    for language, items in by_language.items():
        saved = state / f"{language}.json"
        if not saved.is_file():
            start = time.perf_counter()
            done = _as_generated(language, items)
            metrics, records = score_language(None, None, done, execute_language(done, spec), {}, Stage3Stats(),
                                              ks)
            for meaningless in ("ref_nll", "n_references", "n_prompt_too_long", "truncated_rate"):
                metrics.pop(meaningless)  # no model, no generation
            _write_json(saved, {"metrics": metrics, "records": records})
            say(f"{language}: {len(items)} sample(s) scored in {time.perf_counter() - start:.1f} s")
        scored[language] = json.loads(saved.read_text())
    _write_lines(out_dir / f"{path.name}_results.jsonl", _results(samples, by_language, scored))
    summary = {"samples_file": str(path), "settings": {"timeout_s": spec.timeout_s, "k": sorted(ks)},
               "languages": {lang: _finite(s["metrics"]) for lang, s in scored.items()}}
    _write_json(out_dir / "metrics.json", summary)
    return summary


def _as_generated(language: str, items: list[Sample]) -> Generated:
    """A language's samples in stage 3's shape: one problem per task, its samples in file order."""
    tasks = _group(items)
    problems = [group[0].problem for group in tasks.values()]
    completions = [[s.completion for s in group] for group in tasks.values()]
    generations = [Generation(texts, [False] * len(texts)) for texts in completions]
    return Generated(language, problems, generations, completions)


def _results(samples: list[Sample], by_language: dict[str, list[Sample]],
             scored: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each input line plus `passed` and `result` (mxeval's names), in the file's order."""
    verdict: dict[int, dict[str, Any]] = {}
    for language, items in by_language.items():
        order = [s for group in _group(items).values() for s in group]  # the records' order
        for sample, row in zip(order, scored[language]["records"], strict=True):
            verdict[sample.line] = row
    out = []
    for sample in samples:
        row = verdict[sample.line]
        status = row["status"]
        result = {"passed": "passed", "timeout": "timed out", "failed": "failed"}.get(status, f"failed: {status}")
        out.append({**sample.record, "language": sample.problem.language, "passed": status == "passed",
                    "result": result, "compile_s": row["compile_s"], "run_s": row["run_s"],
                    "stderr": row["stderr"][-500:]})
    return out


def _group(items: list[Sample]) -> dict[str, list[Sample]]:
    tasks: dict[str, list[Sample]] = {}
    for sample in items:
        tasks.setdefault(sample.problem.task_id, []).append(sample)
    return tasks


def _say_resumed(state: Path, key: str, languages: list[str], say: Say) -> None:
    stamp = state / "FINGERPRINT"
    if not stamp.is_file() or stamp.read_text().strip() != key:
        return
    finished = [lang for lang in languages if (state / f"{lang}.json").is_file()]
    generated = [lang for lang in languages if lang not in finished
                 and (state / f"{lang}.generations.json").is_file()]
    parts = [f"finished languages kept: {', '.join(finished) or 'none'}"]
    if generated:
        parts.append(f"saved generations reused: {', '.join(generated)}")
    say(f"resuming in {state.parent}: " + "; ".join(parts))


class _Bars:
    """One progress bar per language (samples generated); quiet when stderr is not a terminal."""

    def __init__(self, totals: dict[str, int]):
        from tqdm import tqdm

        self.bars = {lang: tqdm(total=total, desc=f"{lang:<10}", unit="sample", position=i, leave=True,
                                dynamic_ncols=True, disable=None) for i, (lang, total) in enumerate(totals.items())}

    def advance(self, language: str, rows: int) -> None:
        self.bars[language].update(rows)

    def __enter__(self) -> _Bars:
        return self

    def __exit__(self, *exc: object) -> None:
        for bar in self.bars.values():
            bar.close()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _finite(metrics: dict[str, float]) -> dict[str, float | None]:
    return {name: None if isinstance(value, float) and not math.isfinite(value) else value
            for name, value in metrics.items()}


def _write_lines(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(row, allow_nan=False) + "\n" for row in rows))
    tmp.replace(path)


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, allow_nan=False))
    tmp.replace(path)
