"""One compiler call for many programs, without letting one broken program fail the others.

javac, kotlinc, scalac, mcs and tsc spend seconds starting up (a JVM, the C# compiler, the TypeScript
standard library) and little on each further file, so programs of these languages are compiled together:
each program goes to its own folder `<key>/` and its own package or namespace `<key>` (the recipe's
`Batch.prefix`/`suffix`), so that their classes and top-level names never collide. The key is a hash of the
program's text: the same program gets the same package in any batch. The syntax checks of Python,
JavaScript and Ruby (`checkers`) go the same way, one interpreter for a whole chunk.

A call that fails is settled without giving up the batch:

* errors the compiler attributes to files (`<key>/Main.java:3: error: ...`) become those programs'
  `compile_error` verdicts, with their own messages; the others go through the next call (javac and scalac
  stop after syntax errors before checking types, so a second round finds the type errors);
* a failure that names no file, or a call that times out, is split in halves, down to single programs, so
  a program that breaks the compiler in some unforeseen way only fails itself.

A program counts as compiled only when a call that contained it exited 0, exactly as when compiled alone;
or, for programs whose `type_errors` is "ignore" in a language with a `Recipe.type_error` pattern (tsc,
which writes JavaScript despite type errors), when every error of the call is such a type error in one of
its files.
A recipe's batch may settle itself (`Batch.settles_itself`, Scala's `IttScalaBatch`): the call runs those
rounds in one warm compiler JVM and exits 0 once the files left compile cleanly, printing the errors of the
files it dropped, which become their verdicts.
Sharing a call is safe because none of these compilers runs the code it compiles (javac gets `-proc:none`;
kotlinc and scalac load no plugins; Scala macros cannot be used in the run that defines them; the checkers
only parse).
Each call runs in a fresh folder (`call-<n>/`), sandboxed like any step, as one leased user; afterwards
the folder is sealed (owned by us, see `steps.seal`) so that runs copy outputs nobody could tamper with.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from itt_sweep.execution.recipes import Batch, Recipe
from itt_sweep.execution.sandbox import StepResult, run_step
from itt_sweep.execution.steps import hand_to, make_links, make_step, remove_tree, seal
from itt_sweep.execution.tests_ran import program_text
from itt_sweep.execution.types import Limits, Program, Verdict
from itt_sweep.execution.users import lease_user
from itt_sweep.execution.verdicts import is_bwrap_failure, sandbox_error

_OUTPUT_PER_PROGRAM = 64 << 10  # compiler messages kept per program in a call
_MAX_OUTPUT = 16 << 20


def program_key(program: Program) -> str:
    """The package/namespace name of a program in a batch: a valid identifier in every batch language."""
    return "p" + hashlib.sha1(program.text.encode("utf-8", errors="replace")).hexdigest()[:16]


@dataclass
class BatchBuild:
    """The outcome of compiling a batch: per key, a failure verdict, or the call folder with its outputs.

    The folder is removed by `release` once every compiled program has copied its artifacts.
    """

    folder: Path
    failures: dict[str, Verdict] = field(default_factory=dict)
    outputs: dict[str, Path] = field(default_factory=dict)
    compile_s: dict[str, float] = field(default_factory=dict)
    _pending: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def retain(self, count: int) -> None:
        with self._lock:
            self._pending += count
        if count == 0:
            self.release(0)

    def release(self, count: int = 1) -> None:
        with self._lock:
            self._pending -= count
            done = self._pending <= 0
        if done:
            remove_tree(self.folder)


def compile_batch(recipe: Recipe, programs: list[Program], sandboxed: bool) -> BatchBuild:
    """Compile `programs` (one language with a `Batch`) in a new folder; never raises for what they contain.

    The caller owns the folder: `BatchBuild.retain`/`release` remove it once the runs are done with it.
    """
    assert recipe.batch is not None
    sources = {program_key(p): program_text(p) for p in programs}
    limits = max((p.limits for p in programs), key=lambda limits: limits.compile_timeout_s)
    ignore_types = recipe.type_error is not None and all(p.type_errors == "ignore" for p in programs)
    folder = Path(tempfile.mkdtemp(prefix="itt-batch-"))
    folder.chmod(0o711)  # the sandbox user must reach its call folder inside, not list the others
    build = BatchBuild(folder=folder)
    try:
        with lease_user(sweep=not sandboxed) as uid:
            batch = recipe.batch
            if ignore_types and batch.compile_ignoring_types:
                batch = replace(batch, compile=batch.compile_ignoring_types)
            settler = _Settler(recipe, batch, limits, sources, build, sandboxed, uid)
            settler.type_error = re.compile(recipe.type_error) if ignore_types and recipe.type_error else None
            settler.settle(list(sources))
        seal(folder)
    except BaseException:
        remove_tree(folder)
        raise
    return build


class _Settler:
    """Runs compiler calls until every key is compiled or has its verdict (see the module docstring)."""

    def __init__(self, recipe: Recipe, batch: Batch, limits: Limits, sources: dict[str, str], build: BatchBuild,
                 sandboxed: bool, uid: int | None) -> None:
        self.recipe, self.batch, self.limits, self.sources = recipe, batch, limits, sources
        self.build, self.sandboxed, self.uid = build, sandboxed, uid
        self.calls = 0
        self.type_error: re.Pattern[str] | None = None  # errors that do not fail a program (see module doc)

    def settle(self, keys: list[str]) -> None:
        while keys:
            call_dir, result = self._call(keys)
            if result.spawn_error or is_bwrap_failure(result):
                for key in keys:
                    self.build.failures[key] = sandbox_error(result.spawn_error or result.stderr,
                                                             self.build.compile_s[key])
                return
            if result.returncode == 0 and not result.timed_out:
                failed = self._own_failures(keys, result) if self.batch.settles_itself else {}
                self.build.outputs.update(dict.fromkeys([key for key in keys if key not in failed], call_dir))
                return
            attributed = {} if result.timed_out else attributed_errors(result.stdout + "\n" + result.stderr,
                                                                       keys, self.recipe.file_name)
            if attributed and self._type_errors_only(result, attributed):
                self.build.outputs.update(dict.fromkeys(keys, call_dir))  # the compiler wrote every output
                return
            if self.type_error is not None:  # fail the programs with other errors, try the rest again
                attributed = {k: m for k, m in attributed.items() if not self._only_type_errors(m)} or attributed
            if len(keys) == 1 and not attributed:
                attributed = {keys[0]: _whole_output(result, self.limits)}
            if attributed:
                self._record_failures(attributed)
                keys = [key for key in keys if key not in attributed]
                continue
            half = len(keys) // 2
            self.settle(keys[:half])
            keys = keys[half:]

    def _type_errors_only(self, result: StepResult, attributed: dict[str, str]) -> bool:
        """Whether the call failed for tolerated type errors alone: every error line names one of its files
        and is a type error."""
        if self.type_error is None or result.timed_out:
            return False
        errors = [line for line in (result.stdout + "\n" + result.stderr).splitlines() if re.search(r"\berror\b", line)]
        return all(self.type_error.search(line) and re.match(r"^(?:\./)?p[0-9a-f]{16}/", line) for line in errors)

    def _only_type_errors(self, message: str) -> bool:
        assert self.type_error is not None
        headings = [line for line in message.splitlines() if line.startswith(self.recipe.file_name)]
        return bool(headings) and all(self.type_error.search(line) for line in headings)

    def _own_failures(self, keys: list[str], result: StepResult) -> dict[str, str]:
        """A self-settling call exited 0: the programs it printed errors for failed, the rest compiled."""
        failed = attributed_errors(result.stdout + "\n" + result.stderr, keys, self.recipe.file_name)
        self._record_failures(failed)
        return failed

    def _record_failures(self, messages: dict[str, str]) -> None:
        for key, message in messages.items():
            self.build.failures[key] = Verdict(status="compile_error", compile_s=self.build.compile_s[key],
                                               stderr=message)

    def _call(self, keys: list[str]) -> tuple[Path, StepResult]:
        call_dir = self.build.folder / f"call-{self.calls}"
        self.calls += 1
        call_dir.mkdir(parents=True)
        prefix, suffix = self.batch.prefix, self.batch.suffix
        paths = []
        for key in keys:
            path = call_dir / key / self.recipe.file_name
            path.parent.mkdir()
            text = prefix.replace("{key}", key) + self.sources[key] + suffix.replace("{key}", key)
            path.write_bytes(text.encode("utf-8", errors="replace"))
            paths.append(f"{key}/{self.recipe.file_name}")
        for folder in self.batch.folders:
            (call_dir / folder).mkdir()
        make_links(self.recipe, self.limits, call_dir)
        hand_to(call_dir, self.uid)
        cap = min(max(self.limits.max_output_bytes, _OUTPUT_PER_PROGRAM * len(keys)), _MAX_OUTPUT)
        limits = self.limits.model_copy(update={"max_output_bytes": cap})
        wall = self.limits.compile_timeout_s + self.batch.per_program_s * len(keys)
        step = make_step(self.recipe, limits, call_dir, self.batch.compile, compiling=True, sources=paths,
                         wall_s=wall)
        result = run_step(step, self.sandboxed, self.uid)
        share = result.duration_s / len(keys)
        for key in keys:
            self.build.compile_s[key] = self.build.compile_s.get(key, 0.0) + share
        return call_dir, result


def attributed_errors(output: str, keys: list[str], file_name: str) -> dict[str, str]:
    """key -> the compiler's error messages about that program's file (paths shortened to the file name).

    A message starts on a line that begins with `<key>/<file>`, a position maybe, then `error` (javac,
    kotlinc, scalac, mcs, tsc and our `checkers` all write that); the lines that follow it (source
    excerpts, carets, notes) belong to it until the next line that names a file.
    """
    wanted = set(keys)
    names_file = re.compile(r"^(?:\./)?(p[0-9a-f]{16})/" + re.escape(file_name) + r"\b")
    is_error = re.compile(r"^(?:\./)?p[0-9a-f]{16}/" + re.escape(file_name) + r"(?:[:(]\S*)?\s+(?:fatal )?error\b")
    messages: dict[str, list[str]] = {}
    current: str | None = None
    for line in output.splitlines():
        match = names_file.match(line)
        if match:
            current = match.group(1) if match.group(1) in wanted and is_error.match(line) else None
            if current is not None:
                messages.setdefault(current, []).append(line.replace(f"{current}/", ""))
        elif current is not None and line.strip() and not _names_no_file(line):
            messages[current].append(line.replace(f"{current}/", ""))
    return {key: "\n".join(lines) for key, lines in messages.items()}


def _names_no_file(line: str) -> bool:
    """Lines about the whole call ("3 errors", "Compilation failed: 2 error(s)", javac's "Note: ..."):
    nobody's."""
    return re.match(r"^\s*(\d+ errors?( found)?|\d+ warnings?( found)?|Compilation failed:.*|"
                    r"Found \d+ errors?.*|Note: .*)\s*$", line) is not None


def _whole_output(result: StepResult, limits: Limits) -> str:
    text = "\n".join(part for part in (result.stdout.strip(), result.stderr.strip()) if part)
    if result.timed_out:
        text += f"\n[compilation stopped after {limits.compile_timeout_s:g} s]"
    return text
