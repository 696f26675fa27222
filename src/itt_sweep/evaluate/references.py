"""Reference solutions for `ref_nll`: solutions that our own executor has seen pass.

MBXP's canonical solutions are empty for go, perl, scala and swift and wrong in places, so a reference is a
canonical solution that passes, or, for a problem without one, a sample completion that passes. Verifying
costs compile time, so the result is cached per (language, problems, code version) under the storage path.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from filelock import FileLock

from itt_sweep.config import stable_hash
from itt_sweep.data.mbxp import Problem, load_sample_completions
from itt_sweep.execution.executor import execute
from itt_sweep.execution.programs import assemble
from itt_sweep.execution.types import Limits

REFERENCES_VERSION = "refs-1"


def _passing(problems: Sequence[Problem], candidates: dict[str, list[str]], limits: Limits,
             allow_unsandboxed: bool) -> dict[str, list[str]]:
    jobs = [(p, c) for p in problems for c in candidates.get(p.task_id, [])]
    programs = [assemble(p.prompt, c, p.test, p.language, p.entry_point, p.task_id).model_copy(
        update={"limits": limits}) for p, c in jobs]
    verdicts = execute(programs, allow_unsandboxed=allow_unsandboxed)
    passed: dict[str, list[str]] = {}
    for (p, c), v in zip(jobs, verdicts, strict=True):
        if v.status == "passed":
            passed.setdefault(p.task_id, []).append(c)
    return passed


def verified_references(language: str, problems: Sequence[Problem], data_dir: Path, cache_dir: Path,
                        limits: Limits, allow_unsandboxed: bool = False) -> dict[str, list[str]]:
    """task_id -> passing reference solutions (possibly empty for problems that have none)."""
    key = stable_hash({"lang": language, "ids": [p.task_id for p in problems], "v": REFERENCES_VERSION})
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{language}-{key}.json"
    with FileLock(str(path) + ".lock"):
        if path.is_file():
            return json.loads(path.read_text())
        canonical = {p.task_id: [p.canonical_solution] for p in problems if p.canonical_solution}
        refs = _passing(problems, canonical, limits, allow_unsandboxed)
        missing = [p for p in problems if p.task_id not in refs]
        samples = load_sample_completions(language, data_dir=data_dir)
        for task_id, good in _passing(missing, samples, limits, allow_unsandboxed).items():
            refs[task_id] = good[:1]
        path.write_text(json.dumps(refs, indent=1, sort_keys=True))
    return refs
