"""The checked-in list of canonical MBXP solutions that fail on our harness, each with its reason.

Some canonical solutions are wrong (a data defect: camelCase names in the body and snake_case in the
signature, tests that contradict the solution, solutions cut off mid-function), some need a newer
toolchain than the one Debian ships (Kotlin 1.3's nullable `max()`), a few pass or fail by chance
(undefined behaviour: C++ that reads uninitialised variables), and some exit with status 0 before their
tests run (`exits_early`: mxeval counts them as passed; here a pass needs the tests to have run, see
`tests_ran`). We never patch the data: each such
solution is listed in `known_bad_canonical.yaml` with its kind and reason, the tests expect every other
canonical solution to pass, and `evaluate.references` never uses a listed one.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict

TABLE = Path(__file__).with_name("known_bad_canonical.yaml")
# undefined_behavior: the solution reads uninitialised memory, so it passes or fails by what the stack holds
Kind = Literal["data_defect", "toolchain_version", "undefined_behavior", "exits_early"]


class KnownBad(BaseModel):
    """Why one canonical solution fails: a defect of the data, or a toolchain older than its author's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Kind
    reason: str


@functools.lru_cache(maxsize=1)
def known_bad_canonical() -> dict[str, KnownBad]:
    """task_id -> why its canonical solution fails (every language, from the checked-in table)."""
    raw = yaml.safe_load(TABLE.read_text(encoding="utf-8")) or {}
    return {task_id: KnownBad.model_validate(entry) for task_id, entry in raw.items()}
