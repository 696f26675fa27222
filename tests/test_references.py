"""Reference solutions for ref_nll: only solutions our executor saw pass, canonical first, cached per key."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from itt_sweep.data.mbxp import load_problems, load_sample_completions
from itt_sweep.evaluate.references import verified_references
from itt_sweep.execution import Limits, assemble, available, execute, known_bad_canonical

LIMITS = Limits(timeout_s=10.0)


def test_passing_canonical_solutions_are_the_references(data_dir: Path, tmp_path: Path) -> None:
    problems = load_problems("python", split="test", data_dir=data_dir, limit=4)
    references = verified_references("python", problems, data_dir, tmp_path, LIMITS)
    assert references == {p.task_id: [p.canonical_solution] for p in problems}


def test_a_wrong_canonical_solution_is_replaced_by_a_passing_sample(data_dir: Path, tmp_path: Path) -> None:
    [problem] = [p for p in load_problems("python", split="test", data_dir=data_dir, limit=2) if p.number == 11]
    broken = dataclasses.replace(problem, canonical_solution="    return None\n")
    sample = load_sample_completions("python", data_dir=data_dir)[problem.task_id][0]
    references = verified_references("python", [broken], data_dir, tmp_path, LIMITS)
    assert references == {problem.task_id: [sample]}  # MBPP/11's sample passes its tests


def test_languages_without_canonical_solutions_get_only_passing_samples(data_dir: Path, tmp_path: Path) -> None:
    if not available("go"):
        pytest.skip("go toolchain missing")
    problems = load_problems("go", split="test", data_dir=data_dir, limit=8)
    assert all(p.canonical_solution is None for p in problems)
    references = verified_references("go", problems, data_dir, tmp_path, LIMITS)
    samples = load_sample_completions("go", data_dir=data_dir)
    assert 0 < len(references) < len(problems)  # some samples of these eight pass, some do not compile
    by_id = {p.task_id: p for p in problems}
    for task_id, [reference] in references.items():
        assert reference == samples[task_id][0]
    programs = [assemble(by_id[t].prompt, refs[0], by_id[t].test, "go", by_id[t].entry_point)
                for t, refs in references.items()]
    assert all(v.passed for v in execute(programs))


def test_known_bad_canonical_solutions_never_become_references(data_dir: Path, tmp_path: Path) -> None:
    table = known_bad_canonical()
    problems = [p for p in load_problems("javascript", data_dir=data_dir) if p.task_id in table][:4]
    assert len(problems) == 4
    references = verified_references("javascript", problems, data_dir, tmp_path, LIMITS)
    for problem in problems:
        assert problem.canonical_solution not in references.get(problem.task_id, [])


def test_references_are_read_back_from_the_cache(data_dir: Path, tmp_path: Path) -> None:
    problems = load_problems("python", split="test", data_dir=data_dir, limit=2)
    first = verified_references("python", problems, data_dir, tmp_path, LIMITS)
    [entry] = tmp_path.glob("python-*.json")
    entry.write_text(json.dumps({"MBPP/11": ["from the cache"]}))
    assert verified_references("python", problems, data_dir, tmp_path, LIMITS) == {"MBPP/11": ["from the cache"]}
    other_limits = LIMITS.model_copy(update={"timeout_s": 11.0})
    assert verified_references("python", problems, data_dir, tmp_path, other_limits) == first


def test_a_damaged_cache_entry_is_recomputed(data_dir: Path, tmp_path: Path) -> None:
    problems = load_problems("python", split="test", data_dir=data_dir, limit=2)
    first = verified_references("python", problems, data_dir, tmp_path, LIMITS)
    [entry] = tmp_path.glob("python-*.json")
    entry.write_text('{"MBPP/11": [')  # a crash mid-write by an older version
    assert verified_references("python", problems, data_dir, tmp_path, LIMITS) == first
    assert json.loads(entry.read_text()) == first
