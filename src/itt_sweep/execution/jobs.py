"""The two jobs a program goes through, each in its own work directory as its own leased user.

`run_single` compiles and runs a program of a language without a batch recipe (compile, if any, and run in
the same directory). `run_compiled` runs a program whose batch compile succeeded: its artifacts are copied
from the sealed compile folder into a fresh directory, so that no program can see or change what another
one runs.
"""

from __future__ import annotations

from pathlib import Path

from itt_sweep.execution.recipes import Recipe
from itt_sweep.execution.sandbox import run_step
from itt_sweep.execution.steps import copy_into, hand_to, make_links, make_step, work_directory
from itt_sweep.execution.tests_ran import expects_marker, program_text
from itt_sweep.execution.types import Program, Verdict
from itt_sweep.execution.users import lease_user
from itt_sweep.execution.verdicts import compile_failure, run_verdict


def run_single(recipe: Recipe, program: Program, sandboxed: bool) -> Verdict:
    """Compile and run one program in a fresh work directory that is removed afterwards."""
    limits = program.limits
    with lease_user(sweep=not sandboxed) as uid, work_directory(uid) as workdir:
        (workdir / recipe.file_name).write_bytes(program_text(program).encode("utf-8", errors="replace"))
        make_links(recipe, limits, workdir)
        hand_to(workdir, uid)
        compile_s = 0.0
        if recipe.compile is not None:
            step = make_step(recipe, limits, workdir, recipe.compile, compiling=True)
            built = run_step(step, sandboxed, uid)
            compile_s = built.duration_s
            failure = compile_failure(built, limits)
            if failure is not None:
                return failure
        ran = run_step(make_step(recipe, limits, workdir, recipe.run, compiling=False), sandboxed, uid)
    return run_verdict(recipe, ran, compile_s, expects_marker(program))


def run_compiled(recipe: Recipe, program: Program, key: str, outputs: Path, compile_s: float,
                 sandboxed: bool) -> Verdict:
    """Run one batch-compiled program (`key`, its outputs under `outputs`) in a fresh work directory.

    A missing artifact is not copied: the run then fails the way the runtime reports it (a class that is
    not there), as it would have had the program been compiled alone.
    """
    assert recipe.batch is not None
    with lease_user(sweep=not sandboxed) as uid, work_directory(uid) as workdir:
        for source, target in recipe.batch.artifacts:
            artifact = outputs / source.replace("{key}", key)
            if artifact.exists():
                copy_into(artifact, workdir / target.replace("{key}", key))
        hand_to(workdir, uid)
        step = make_step(recipe, program.limits, workdir, recipe.run, compiling=False, key=key)
        ran = run_step(step, sandboxed, uid)
    return run_verdict(recipe, ran, compile_s, expects_marker(program))
