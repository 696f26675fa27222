"""From a recipe's templates to sandbox steps, and the work directories they run in.

Every step of every program runs in a fresh directory owned by the user leased for it; this module makes
those directories, fills the templates' placeholders, and removes the directories again whatever the
program left in them (unreadable files, read-only folders).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from itt_sweep.execution.checkers import CHECKERS
from itt_sweep.execution.recipes import Recipe, runtime_classpath, tool_classpath
from itt_sweep.execution.sandbox import Step
from itt_sweep.execution.toolchains import SUPPORTS, ruby_gem_paths, support_dir, toolchain_dir
from itt_sweep.execution.types import Limits

COMPILE_MIN_PROCESSES = 128  # compilers are JVMs and node: many threads, each counted by RLIMIT_NPROC


def placeholders(recipe: Recipe, limits: Limits, workdir: Path, key: str = "") -> dict[str, object]:
    """Values of the template placeholders (see `recipes`)."""
    return {"file": recipe.file_name, "stem": recipe.stem, "heap_mb": limits.memory_mb,
            "compile_heap_mb": recipe.compile_memory_mb, "toolchain_dir": toolchain_dir(), "workdir": workdir,
            "runtime_cp": runtime_classpath(recipe), "tool_cp": tool_classpath(recipe),
            "support": support_dir(recipe.language) if recipe.language in SUPPORTS else "", "key": key,
            "tmpdir": "{tmpdir}",  # known only when the step runs: filled in by `sandbox`
            "ruby_gems": ruby_gem_paths() if "ruby" in recipe.tools else ""}


def make_step(recipe: Recipe, limits: Limits, workdir: Path, template: Sequence[str], *, compiling: bool,
              key: str = "", sources: Sequence[str] = (), wall_s: float | None = None) -> Step:
    """A compile or run step of `recipe`; `sources` replace the argument `{sources}` (batch compiles), the
    language's syntax checker the argument `{checker}`."""
    fields = placeholders(recipe, limits, workdir, key)
    argv: list[str] = []
    for part in template:
        if part == "{sources}":
            argv.extend(sources)
        elif part == "{checker}":
            argv.append(CHECKERS[recipe.language])
        else:
            argv.append(part.format(**fields))
    env = [(name, value.format(**fields)) for name, value in recipe.env]
    if compiling:
        env += [(name, value.format(**fields)) for name, value in recipe.compile_env]
    if recipe.node_modules:
        env.append(("NODE_PATH", str(toolchain_dir() / "node_modules")))
    budget = recipe.compile_memory_mb if compiling else limits.memory_mb
    default_wall = limits.compile_timeout_s if compiling else limits.timeout_s
    return Step(
        argv=argv,
        workdir=workdir,
        wall_s=wall_s or default_wall,
        address_space_mb=None if recipe.memory_slack_mb is None else budget + recipe.memory_slack_mb,
        max_output_bytes=limits.max_output_bytes,
        max_processes=max(limits.max_processes, COMPILE_MIN_PROCESSES) if compiling else limits.max_processes,
        max_file_mb=limits.max_file_mb,
        env=tuple(env),
        mounts=recipe.mounts,
        tools=recipe.tools,
    )


def make_links(recipe: Recipe, limits: Limits, workdir: Path) -> None:
    fields = placeholders(recipe, limits, workdir)
    for name, target in recipe.links:
        (workdir / name).symlink_to(target.format(**fields))


@contextlib.contextmanager
def work_directory(uid: int | None, prefix: str = "itt-exec-") -> Iterator[Path]:
    """A fresh directory owned by `uid` (when given), removed with everything in it afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        if uid is not None:
            os.chown(workdir, uid, uid)
        yield workdir
    finally:
        remove_tree(workdir)


def seal(path: Path) -> None:
    """Take a finished compile folder back from its sandbox user: owned by us, writable by nobody else, so
    that a later program leasing the same uid cannot tamper with what other programs will run."""
    if os.geteuid() != 0:
        return
    for root, dirs, files in os.walk(path, followlinks=False):
        for name in [*dirs, *files]:
            with contextlib.suppress(OSError):
                os.lchown(os.path.join(root, name), 0, 0)
    with contextlib.suppress(OSError):
        os.chown(path, 0, 0)


def copy_into(source: Path, target: Path) -> None:
    """Place one compiled artifact (a file or a folder) in a program's work directory."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target, symlinks=True)
    else:
        shutil.copyfile(source, target)


def hand_to(path: Path, uid: int | None) -> None:
    """Give a work directory and its contents to the user that will run in it."""
    if uid is None:
        return
    os.chown(path, uid, uid)
    for root, dirs, files in os.walk(path, followlinks=False):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(root, name), uid, uid)


def remove_tree(path: Path) -> None:
    """Delete a work directory even when the program left unreadable or unwritable entries in it."""
    def fix_and_retry(function, target, _exc_info) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(target), 0o700)
            os.chmod(target, 0o700)
            function(target)

    if path.exists():
        shutil.rmtree(path, onerror=fix_and_retry)
