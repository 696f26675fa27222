"""Reference solutions for `ref_nll`: solutions that our own executor has seen pass.

MBXP's canonical solutions are empty for go, perl, scala and swift, and wrong in places (the ones we know of
are listed in `execution/known_bad_canonical.yaml`), so a problem's reference is its canonical solution when
that is not listed and passes, else the first of its sample completions (`examples/*_samples.jsonl`) that
passes, else none.
Verifying costs compile and run time, so the result is cached per (language, problems, limits, harness
version) under the storage path; concurrent trials wait for the one computing it instead of repeating it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from filelock import FileLock

from itt_sweep.config import stable_hash
from itt_sweep.data.mbxp import Problem, load_sample_completions
from itt_sweep.execution.executor import execute
from itt_sweep.execution.known_bad import known_bad_canonical
from itt_sweep.execution.programs import assemble
from itt_sweep.execution.types import Limits

# Bump when a change of the harness (recipes, batching, verdicts) can change which solutions pass.
REFERENCES_VERSION = "refs-3"


def verified_references(language: str, problems: Sequence[Problem], data_dir: Path, cache_dir: Path,
                        limits: Limits, allow_unsandboxed: bool = False) -> dict[str, list[str]]:
    """task_id -> passing reference solutions: one per problem that has any, none for the others."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{language}-{_cache_key(language, problems, limits)}.json"
    with FileLock(str(path) + ".lock"):
        cached = _read(path)
        if cached is not None:
            return cached
        known_bad = known_bad_canonical()  # never a reference, even when it passes by chance
        canonical = {p.task_id: [p.canonical_solution] for p in problems
                     if p.canonical_solution and p.task_id not in known_bad}
        references = _passing(problems, canonical, limits, allow_unsandboxed)
        without = [p for p in problems if p.task_id not in references]
        samples = load_sample_completions(language, data_dir=data_dir) if without else {}
        for task_id, passing in _passing(without, samples, limits, allow_unsandboxed).items():
            references[task_id] = passing[:1]
        _write(path, references)
    return references


def cached_references(language: str, problems: Sequence[Problem], cache_dir: Path,
                      limits: Limits) -> dict[str, list[str]] | None:
    """What `verified_references` would return, if it is cached already; None otherwise (never verifies, never
    waits): stage 3 scores cached references while it prefills their prompts."""
    return _read(cache_dir / f"{language}-{_cache_key(language, problems, limits)}.json")


def _passing(problems: Sequence[Problem], candidates: dict[str, list[str]], limits: Limits,
             allow_unsandboxed: bool) -> dict[str, list[str]]:
    """task_id -> the candidates that pass its tests (all candidates of all problems in one executor call,
    so the compiled languages pay for one batch)."""
    jobs = [(p, c) for p in problems for c in candidates.get(p.task_id, [])]
    programs = [assemble(p.prompt, c, p.test, p.language, p.entry_point, p.task_id).model_copy(
        update={"limits": limits}) for p, c in jobs]
    verdicts = execute(programs, allow_unsandboxed=allow_unsandboxed)
    passed: dict[str, list[str]] = {}
    for (p, c), v in zip(jobs, verdicts, strict=True):
        if v.passed:
            passed.setdefault(p.task_id, []).append(c)
    return passed


def _cache_key(language: str, problems: Sequence[Problem], limits: Limits) -> str:
    listed = known_bad_canonical()
    content = [(p.task_id, p.prompt, p.test, p.canonical_solution, p.task_id in listed) for p in problems]
    return stable_hash({"lang": language, "problems": content, "limits": limits.model_dump(),
                        "v": REFERENCES_VERSION})


def _read(path: Path) -> dict[str, list[str]] | None:
    """The cached references, or None when there are none (or the file is damaged: recompute)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write(path: Path, references: dict[str, list[str]]) -> None:
    """Write to a temporary name, then rename: a crash never leaves a half-written cache entry."""
    handle, temporary = tempfile.mkstemp(prefix=path.name, dir=path.parent)
    with os.fdopen(handle, "w") as out:
        json.dump(references, out, indent=1, sort_keys=True)
    os.replace(temporary, path)
