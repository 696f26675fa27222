"""The local worker pool: every program of a call, deduplicated, batch-compiled where possible, run in parallel.

Identical programs (same language, text, limits and type-error mode) are executed once and share the verdict: verdicts
depend only on what a program does, and sampled completions repeat often. Programs of batch languages are
split into one chunk per worker (at most `Batch.max_programs` each); a chunk's compile job queues one run
job per compiled program on the same pool, so compiling one chunk overlaps with running another. Any
failure of our own machinery becomes a `sandbox_error` verdict for the programs it touched, never an
exception for the caller.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from itt_sweep.execution.batching import BatchBuild, compile_batch, program_key
from itt_sweep.execution.jobs import run_compiled, run_single
from itt_sweep.execution.recipes import RECIPES, Recipe, missing_requirements
from itt_sweep.execution.toolchains import build_support
from itt_sweep.execution.types import Program, Verdict
from itt_sweep.execution.verdicts import sandbox_error

log = logging.getLogger(__name__)


def default_workers() -> int:
    """The cores this process may use (its CPU affinity, which containers narrow), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def execute_local(programs: Sequence[Program], workers: int, sandboxed: bool, batch: bool = True) -> list[Verdict]:
    """Verdicts of `programs`, in order, from a pool of `workers` threads on this machine.

    `batch=False` compiles every program of a batch language on its own (a batch of one): the naive mode
    that the benchmark compares against, with the same verdicts.
    """
    slot_of: dict[tuple, int] = {}
    slots = [slot_of.setdefault((p.language, p.text, p.limits, p.type_errors), len(slot_of)) for p in programs]
    unique: list[Program] = [None] * len(slot_of)  # type: ignore[list-item]
    for program, slot in zip(programs, slots, strict=True):
        unique[slot] = unique[slot] or program
    results = _Pool(unique, workers, sandboxed, batch).run()
    return [results[slot] for slot in slots]


class _Pool:
    def __init__(self, programs: list[Program], workers: int, sandboxed: bool, batch: bool) -> None:
        self.programs, self.workers, self.sandboxed, self.batch = programs, workers, sandboxed, batch
        self.results: list[Verdict | None] = [None] * len(programs)
        self.executor = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="itt-exec")
        self.outstanding = 0
        self.done = threading.Condition()

    def run(self) -> list[Verdict]:
        groups: dict[tuple[str, str], list[int]] = {}  # one batch never mixes type-error modes
        for index, program in enumerate(self.programs):
            groups.setdefault((program.language, program.type_errors), []).append(index)
        singles = []
        try:
            for (language, _), members in groups.items():
                missing = missing_requirements(language)
                recipe = RECIPES.get(language)
                if missing or recipe is None:
                    self._fail(members, f"cannot run {language}: " + "; ".join(missing))
                elif recipe.batch is None:
                    singles += [(recipe, index) for index in members]
                else:
                    for chunk in self._chunks(recipe, members):
                        self._submit(self._compile_chunk, recipe, chunk)
            for recipe, index in singles:
                self._submit(self._single, recipe, index)
            with self.done:
                self.done.wait_for(lambda: self.outstanding == 0)
        finally:
            self.executor.shutdown(wait=True)
        return [verdict or sandbox_error("the executor produced no verdict") for verdict in self.results]

    def _chunks(self, recipe: Recipe, members: list[int]) -> list[list[int]]:
        assert recipe.batch is not None
        if not self.batch:
            return [[index] for index in members]
        size = min(recipe.batch.max_programs, math.ceil(len(members) / self.workers))
        return [members[start:start + size] for start in range(0, len(members), size)]

    def _submit(self, job: Callable[..., None], *args: object) -> None:
        with self.done:
            self.outstanding += 1
        self.executor.submit(self._guarded, job, args)

    def _guarded(self, job: Callable[..., None], args: tuple) -> None:
        try:
            job(*args)
        except Exception:  # a bug of ours: the job's programs got sandbox_error verdicts where it could
            log.exception("executor job %s failed", getattr(job, "__name__", job))
        finally:
            with self.done:
                self.outstanding -= 1
                self.done.notify_all()

    def _fail(self, members: list[int], message: str) -> None:
        for index in members:
            self.results[index] = sandbox_error(message)

    def _single(self, recipe: Recipe, index: int) -> None:
        try:
            self.results[index] = run_single(recipe, self.programs[index], self.sandboxed)
        except Exception as error:
            self._fail([index], _describe(error, self.programs[index]))
            raise

    def _compile_chunk(self, recipe: Recipe, chunk: list[int]) -> None:
        programs = [self.programs[index] for index in chunk]
        try:
            build_support(recipe.language)
            build = compile_batch(recipe, programs, self.sandboxed)
        except Exception as error:
            self._fail(chunk, _describe(error, programs[0]))
            raise
        runs = []
        for index, program in zip(chunk, programs, strict=True):
            key = program_key(program)
            if key in build.failures:
                self.results[index] = build.failures[key]
            elif key in build.outputs:
                runs.append((index, key))
            else:
                self.results[index] = sandbox_error(f"batch compile settled no verdict for {key}")
        build.retain(len(runs))
        for index, key in runs:
            self._submit(self._run_compiled, recipe, index, key, build)

    def _run_compiled(self, recipe: Recipe, index: int, key: str, build: BatchBuild) -> None:
        try:
            self.results[index] = run_compiled(recipe, self.programs[index], key, build.outputs[key],
                                               build.compile_s[key], self.sandboxed)
        except Exception as error:
            self._fail([index], _describe(error, self.programs[index]))
            raise
        finally:
            build.release()


def _describe(error: Exception, program: Program) -> str:
    return f"executor error on {program.task_id or program.language}: {type(error).__name__}: {error}"
