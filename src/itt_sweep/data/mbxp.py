"""MBXP (MBPP in 13 languages): problems, the task-number splits, and sample completions.

MBXP keeps MBPP's task numbers in every language, so one split table serves all of them; that is what
lets stage 2 train on MBPP *train* problems of one language while stage 3 evaluates on the *test*
problems of every language without any problem crossing over. Trials load the same files over and
over, so parsed files are cached per (path, modification time).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from itt_sweep.data.paths import data_dir as resolve_data_dir
from itt_sweep.data.paths import read_jsonl, require_file

MBXP_VERSION = "mbxp-1"
MBXP_FOLDER = "mbxp"
METADATA_FILE = "metadata.json"
EXAMPLES_METADATA_FILE = "metadata_examples.json"

LANGUAGES: tuple[str, ...] = (
    "python", "java", "javascript", "typescript", "kotlin", "ruby", "php",
    "cpp", "csharp", "go", "perl", "scala", "swift",
)  # fmt: skip

Split = Literal["prompt", "test", "validation", "train"]
# MBPP's own split by task number (Austin et al. 2021), inclusive bounds.
SPLIT_RANGES: dict[str, tuple[int, int]] = {
    "prompt": (1, 10),
    "test": (11, 510),
    "validation": (511, 600),
    "train": (601, 974),
}
SPLITS: tuple[str, ...] = tuple(SPLIT_RANGES)


@dataclass(frozen=True)
class Problem:
    """One MBXP problem in one language; `prompt` already holds the signature and docstring."""

    task_id: str
    number: int | None  # MBPP's task number; None in datasets whose ids have none (`load_problem_file`)
    language: str
    prompt: str
    entry_point: str
    test: str
    canonical_solution: str | None
    description: str


def split_of(number: int) -> Split:
    """The MBPP split a task number belongs to."""
    for split, (low, high) in SPLIT_RANGES.items():
        if low <= number <= high:
            return split  # type: ignore[return-value]
    raise ValueError(f"MBPP task number {number} is outside 1..974")


def task_number(task_id: str) -> int:
    """`MBJP/12` -> 12."""
    try:
        return int(task_id.rsplit("/", 1)[1])
    except (IndexError, ValueError):
        raise ValueError(f"task_id {task_id!r} is not of the form '<PREFIX>/<number>'") from None


def check_language(language: str) -> str:
    """Return `language` if MBXP has it, else raise a ValueError naming the allowed languages."""
    if language not in LANGUAGES:
        raise ValueError(f"unknown MBXP language {language!r}; allowed: {', '.join(LANGUAGES)}")
    return language


def load_problems(
    language: str,
    split: str | None = None,
    data_dir: Path | None = None,
    limit: int | None = None,
) -> list[Problem]:
    """Problems of one language, sorted by task number, optionally one split and the first `limit`."""
    check_language(language)
    if split is not None and split not in SPLIT_RANGES:
        raise ValueError(f"unknown MBPP split {split!r}; allowed: {', '.join(SPLITS)}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    path = _language_file(language, data_dir, METADATA_FILE, "MBXP problems")
    problems = list(_parse_problems(str(path), path.stat().st_mtime_ns))
    if split is not None:
        problems = [p for p in problems if split_of(p.number) == split]
    return problems if limit is None else problems[:limit]


def problems_file(language: str, data_dir: Path | None = None) -> Path:
    """The file `load_problems` reads for `language` (its fingerprint goes into stage-cache keys)."""
    check_language(language)
    return _language_file(language, data_dir, METADATA_FILE, "MBXP problems")


def load_sample_completions(language: str, data_dir: Path | None = None) -> dict[str, list[str]]:
    """task_id -> sample completions (mxeval's `examples/*_samples.jsonl`) for one language.

    These are the only reference solutions for the languages whose canonical solutions are empty.
    """
    check_language(language)
    path = _language_file(language, data_dir, EXAMPLES_METADATA_FILE, "MBXP sample completions")
    parsed = _parse_samples(str(path), path.stat().st_mtime_ns)
    return {task_id: list(completions) for task_id, completions in parsed}


def _language_file(language: str, data_dir: Path | None, metadata_name: str, what: str) -> Path:
    folder = resolve_data_dir(data_dir) / MBXP_FOLDER
    metadata_path = require_file(folder / metadata_name, "MBXP metadata")
    mapping = _read_metadata(str(metadata_path), metadata_path.stat().st_mtime_ns)
    if language not in mapping:
        raise ValueError(f"{metadata_path} has no entry for {language!r}; it lists {', '.join(mapping)}")
    return require_file(folder / mapping[language], f"{what} for {language}")


@functools.lru_cache(maxsize=8)
def _read_metadata(path: str, mtime_ns: int) -> dict[str, str]:
    with open(path, encoding="utf-8") as handle:
        return dict(json.load(handle))


@functools.lru_cache(maxsize=32)
def _parse_problems(path: str, mtime_ns: int) -> tuple[Problem, ...]:
    problems = [_problem_from_record(record, path) for record in read_jsonl(path)]
    return tuple(sorted(problems, key=lambda p: p.number))


@functools.lru_cache(maxsize=16)
def _parse_samples(path: str, mtime_ns: int) -> tuple[tuple[str, tuple[str, ...]], ...]:
    grouped: dict[str, list[str]] = {}
    for record in read_jsonl(path):
        completion = record.get("completion")
        if isinstance(completion, str):
            grouped.setdefault(record["task_id"], []).append(completion)
    return tuple((task_id, tuple(items)) for task_id, items in grouped.items())


def _problem_from_record(record: dict, path: str) -> Problem:
    try:
        canonical = record.get("canonical_solution")
        return Problem(
            task_id=record["task_id"],
            number=task_number(record["task_id"]),
            language=record["language"],
            prompt=record["prompt"],
            entry_point=record["entry_point"],
            test=record["test"],
            canonical_solution=canonical if isinstance(canonical, str) and canonical.strip() else None,
            description=record.get("description") or "",
        )
    except KeyError as missing:
        raise ValueError(f"{path}: record {record.get('task_id', '?')} lacks field {missing}") from None


PROBLEM_FIELDS = ("task_id", "prompt", "test", "entry_point", "language")


def load_problem_file(path: Path) -> dict[str, list[Problem]]:
    """language -> problems of any dataset in MBXP's format (mxeval's multilingual HumanEval files, say).

    The task ids are the file's own: nothing downstream reads a number or prefix out of them. A broken file
    is refused whole, naming its first offending lines.
    """
    path = require_file(Path(path), "problems file")
    problems: dict[str, list[Problem]] = {}
    bad: list[str] = []
    seen: set[str] = set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        why = _problem_line_error(line, seen)
        if why:
            bad.append(f"line {number}: {why}")
            continue
        record = json.loads(line)
        seen.add(record["task_id"])
        try:
            task = task_number(record["task_id"])
        except ValueError:
            task = None
        canonical = record.get("canonical_solution")
        problems.setdefault(record["language"], []).append(Problem(
            record["task_id"], task, record["language"], record["prompt"], record["entry_point"], record["test"],
            canonical if isinstance(canonical, str) and canonical.strip() else None,
            record.get("description") or ""))
    if bad:
        raise ValueError(f"{path}: {len(bad)} bad line(s), first: " + "; ".join(bad[:5]))
    if not problems:
        raise ValueError(f"{path}: no problems")
    return problems


def _problem_line_error(line: str, seen: set[str]) -> str | None:
    try:
        record = json.loads(line)
    except ValueError as err:
        return f"not JSON ({err.msg})"
    if not isinstance(record, dict):
        return "not a JSON object"
    missing = [name for name in PROBLEM_FIELDS if not isinstance(record.get(name), str)]
    if missing:
        return f"no string field {', '.join(missing)}"
    if record["language"] not in LANGUAGES:
        return f"unknown language {record['language']!r} (allowed: {', '.join(LANGUAGES)})"
    if record["task_id"] in seen:
        return f"task_id {record['task_id']!r} appears twice"
    return None
