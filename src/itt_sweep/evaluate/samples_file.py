"""A samples file in mxeval's format, read strictly: every line is checked before anything runs.

mxeval's `evaluate_functional_correctness samples.jsonl` takes one JSON object per line with `task_id` and
`completion`; `language` is optional here where the task id already says it (it names one problem of one
language). Several lines may share a task: that is how pass@k gets its samples. A file with any bad line is
refused whole, each kind of fault on one line naming its first offenders, and nothing is written: a
half-scored file would read as a result.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from itt_sweep.data.mbxp import LANGUAGES, Problem

SHOWN = 5  # offenders named per kind of fault


class SamplesFileError(ValueError):
    """A samples file that cannot be scored as it is."""


@dataclass(frozen=True)
class Sample:
    """One line: the record as read (written back with its verdict) and the problem it answers."""

    line: int
    record: dict[str, Any]
    problem: Problem

    @property
    def completion(self) -> str:
        return self.record["completion"]


def read_samples(path: Path, problems: Mapping[str, Sequence[Problem]]) -> list[Sample]:
    """Every line of `path` matched to its problem, in file order, or a `SamplesFileError` listing faults."""
    if not Path(path).is_file():
        raise SamplesFileError(f"samples file {path} does not exist")
    index = {p.task_id: p for items in problems.values() for p in items}
    faults: dict[str, list[str]] = {}
    samples = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            kind, detail, sample = _check(number, line, index)
            if kind:
                faults.setdefault(kind, []).append(f"line {number}{detail}")
            else:
                samples.append(sample)
    if faults:
        raise SamplesFileError(_describe(path, faults))
    if not samples:
        raise SamplesFileError(f"{path}: no samples")
    return samples


def _check(number: int, line: str, index: Mapping[str, Problem]) -> tuple[str | None, str, Sample | None]:
    """(kind of fault, detail, None) or (None, "", the sample)."""
    try:
        record = json.loads(line)
    except ValueError as err:
        return "malformed", f" (not JSON: {err.msg})", None
    if not isinstance(record, dict):
        return "malformed", " (not a JSON object)", None
    missing = [name for name in ("task_id", "completion") if not isinstance(record.get(name), str)]
    if missing:
        return "malformed", f" (no string {' or '.join(missing)})", None
    language = record.get("language")
    if language is not None and language not in LANGUAGES:
        return "unknown language", f" ({language!r})", None
    problem = index.get(record["task_id"])
    if problem is None:
        return "unknown task id", f" ({record['task_id']!r})", None
    if language is not None and language != problem.language:
        return "language does not match the task", f" ({record['task_id']!r} is {problem.language})", None
    return None, "", Sample(number, record, problem)


def _describe(path: Path, faults: dict[str, list[str]]) -> str:
    lines = [f"{path}: refused, nothing was scored or written:"]
    for kind, where in faults.items():
        more = f" and {len(where) - SHOWN} more" if len(where) > SHOWN else ""
        lines.append(f"  {kind}: {len(where)} line(s): {', '.join(where[:SHOWN])}{more}")
    if "unknown task id" in faults:
        lines.append("  (task ids are matched against --problems FILE, or MBXP's problems of every language)")
    if "unknown language" in faults:
        lines.append(f"  (languages: {', '.join(LANGUAGES)})")
    return "\n".join(lines)
