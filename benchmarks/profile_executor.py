"""Where the executor's fixed cost per program goes: a per-phase profile of cheap programs through `execute`.

For each language asked (default php, perl, python: interpreters that start in ~10 ms, so what we add is
visible) it runs the same `--programs` MBXP canonical solutions (sample completions where a language has
none) through the product's own `execute(programs, workers=1)`, with the executor's phase functions wrapped
in timers (uid lease, work directory, file hand-over, each sandbox step split into spawn, capture and
kill, removal). Next to it, the floors measured in the same run: the program's interpreter run directly
(`subprocess.run`, as the reference harness does), the same under a bare `bwrap --unshare-all` with the
recipe's mounts, and a bare `bwrap ... true`. Medians per program over `--repeats` passes; written to
`benchmarks/results/executor_profile.json`.

    python benchmarks/profile_executor.py                    # ~1 min on 2 cores
    python benchmarks/profile_executor.py --languages php --programs 40
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import resource
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import common
from bench_executor import benchmark_programs, data_dir

from itt_sweep.execution import execute, jobs, pool, sandbox, steps, users
from itt_sweep.execution.recipes import get_recipe
from itt_sweep.execution.tests_ran import program_text
from itt_sweep.execution.toolchains import resolve_tool
from itt_sweep.execution.types import Limits, Program

# (module, attribute, phase): the functions of the product's path that are timed, where they are looked up
PHASES = (
    (users, "_acquire_uid", "lease: pick a free uid (/proc scan)"),
    (users, "kill_user_processes", "lease end: hunt the uid's processes"),
    (jobs, "hand_to", "hand the work dir to the uid"),
    (jobs, "make_links", "links"),
    (jobs, "make_step", "fill templates"),
    (jobs, "copy_into", "copy batch artifacts"),
    (steps, "remove_tree", "remove the work dir"),
    (sandbox.subprocess, "Popen", "step: spawn (vfork + exec chain)"),
    (sandbox, "_capture", "step: run + read output"),
    (sandbox, "_kill_tree", "step: kill group + reap"),
    (jobs, "run_verdict", "verdict"),
    (pool, "compile_batch", "batch compile or syntax check (whole chunk)"),
)


class Timers:
    def __init__(self) -> None:
        self.seconds: collections.Counter[str] = collections.Counter()
        self.calls: collections.Counter[str] = collections.Counter()

    def wrap(self, function: Callable, phase: str) -> Callable:
        @functools.wraps(function)
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - started
                self.calls[phase] += 1
        return timed


@contextlib.contextmanager
def instrumented(timers: Timers) -> Iterator[None]:
    originals = [getattr(module, name) for module, name, _ in PHASES]
    try:
        for (module, name, phase), original in zip(PHASES, originals, strict=True):
            setattr(module, name, timers.wrap(original, phase))
        yield
    finally:
        for (module, name, _), original in zip(PHASES, originals, strict=True):
            setattr(module, name, original)


def profile_execute(programs: list[Program]) -> dict[str, Any]:
    sandbox.bwrap_status()  # once per process, with a step of its own: not part of any program's cost
    timers = Timers()
    with instrumented(timers):
        started = time.perf_counter()
        verdicts = execute(programs, workers=1)
        total = time.perf_counter() - started
    n = len(programs)
    return {"per_program_ms": 1000 * total / n,
            "phases_ms": {phase: 1000 * s / n for phase, s in timers.seconds.most_common()},
            "calls_per_program": {phase: timers.calls[phase] / n for phase in timers.seconds},
            "passed": sum(v.passed for v in verdicts)}


def floors(language: str, programs: list[Program]) -> dict[str, float]:
    """ms per program of the bare pieces: the recipe's commands (compile, if any, then run) directly, as the
    reference harness runs them (wall, and their own CPU), the same under a bare bwrap, and a bare
    `bwrap ... true`."""
    recipe = get_recipe(language)
    templates = [t for t in (recipe.compile, recipe.run) if t is not None]
    bwrap, true = resolve_tool("bwrap"), resolve_tool("true")
    timings: dict[str, list[float]] = collections.defaultdict(list)
    for program in programs:
        for mode in ("direct", "bare bwrap", "bare bwrap + true"):
            with tempfile.TemporaryDirectory() as folder:
                workdir = Path(folder)
                (workdir / recipe.file_name).write_text(program_text(program))
                started, cpu = time.perf_counter(), _children_cpu_s()
                for template in templates[:1] if mode.endswith("true") else templates:
                    compiling = template is recipe.compile
                    step = steps.make_step(recipe, program.limits, workdir, template, compiling=compiling)
                    argv = [resolve_tool(step.argv[0]) or step.argv[0], *step.argv[1:]]
                    env = sandbox._environment(step, argv, sandboxed=mode != "direct")
                    if mode != "direct":
                        argv = [bwrap, *sandbox.bwrap_argv(step)[1:], *([true] if mode.endswith("true") else argv)]
                    done = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, check=False, timeout=60)
                    if done.returncode != 0:
                        break  # a compile error: the harness would not run it either
                timings[mode].append(1000 * (time.perf_counter() - started))
                if mode == "direct":  # the commands' own CPU (a compiler's), children included
                    timings["direct, CPU"].append(1000 * (_children_cpu_s() - cpu))
    return {name: statistics.median(values) for name, values in timings.items()}


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def profile_language(language: str, count: int, repeats: int) -> dict[str, Any]:
    programs = benchmark_programs(language, count, 0, data_dir(), Limits(timeout_s=10))
    if not programs:
        programs = benchmark_programs(language, 0, count, data_dir(), Limits(timeout_s=10))
    runs = [profile_execute(programs) for _ in range(repeats)]
    median_run = sorted(runs, key=lambda r: r["per_program_ms"])[len(runs) // 2]
    return {"programs": len(programs), "per_program_ms_runs": [round(r["per_program_ms"], 2) for r in runs],
            **median_run, "floors_ms": floors(language, programs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--languages", nargs="+", default=["php", "perl", "python"])
    parser.add_argument("--programs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="result file (default benchmarks/results/executor_profile.json)")
    args = parser.parse_args()
    report = {language: profile_language(language, args.programs, args.repeats) for language in args.languages}
    for language, row in report.items():
        print(f"\n{language}: {row['per_program_ms']:.1f} ms per program through execute (workers=1), "
              f"runs {row['per_program_ms_runs']}")
        for phase, ms in row["phases_ms"].items():
            print(f"  {ms:7.2f} ms  {phase}  ({row['calls_per_program'][phase]:.2f} calls)")
        for name, ms in row["floors_ms"].items():
            print(f"  floor {ms:7.2f} ms  {name}")
    common.write_json(common.result_path("executor_profile.json", args.out),
                      {"machine": common.machine_info(), "settings": vars(args), "languages": report})


if __name__ == "__main__":
    main()
