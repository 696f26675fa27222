"""What of the host a sandboxed step sees: the paths its toolchain declares, read-only, and nothing else.

Generated code is hostile and its output is stored (verdicts, artifacts, MLflow), so a program must not be
able to read the host's files: a user's checkout, credentials and `.env` files, the sweep's MLflow store,
other trials' completions, the stage cache, the data directory. bubblewrap therefore starts each step from
an empty root and binds, read-only, only

* `SYSTEM_PATHS`: what every step needs to start a dynamically linked program (the dynamic loader and the
  shared libraries, `/usr/bin` with the shells that toolchain launcher scripts use, the C.UTF-8 locale and
  Debian's `/etc/alternatives` links), and the merged-/usr links `/bin`, `/lib`, ... as the host has them;
* the recipe's own `mounts` (its runtime's library and configuration directories, see `recipes`);
* the home of each of the recipe's tools that lives outside the system prefixes (a JDK under
  `/usr/lib/jvm`, Kotlin under `/usr/share/kotlin`, a Swift toolchain unpacked under `/opt`);
* the project's toolchain directory (npm packages, the precompiled C++ header, our compiled supports).

The caller adds the step's own work directory (read-write), a private /tmp, /proc and /dev. Fail closed: a
path nobody declared is simply absent, and a recipe that misses one fails its own canonical-solution tests,
which is how a missing declaration is found. Patterns are globs (`/usr/lib/python3*`), expanded once per
process; a pattern that matches nothing on this host binds nothing.
"""

from __future__ import annotations

import functools
import glob
import os
from collections.abc import Iterable
from pathlib import Path

from itt_sweep.execution.toolchains import resolve_tool, toolchain_dir

SYSTEM_PATHS = (
    "/usr/bin",
    "/usr/lib/*-linux-gnu*",  # libc and every shared library (multiarch)
    "/usr/lib64",  # the dynamic loader (/lib64/ld-linux-x86-64.so.2)
    "/usr/lib/locale",  # C.UTF-8, the locale every step runs in
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",  # Debian: /usr/bin/java -> /etc/alternatives/java -> the JDK's binary
    "/usr/share/zoneinfo",  # time zones: PHP's date functions fail without them (MBPHP/343)
    "/etc/localtime",
)
# Top-level entries that merged-/usr systems make symlinks into /usr and older systems real directories.
ROOT_ENTRIES = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# A tool whose home is one of these is a system tool: its libraries are declared by the recipe, never the
# whole prefix (binding all of /usr/local would show whatever a user installed there).
_SYSTEM_PREFIXES = frozenset({"/", "/usr", "/usr/local"})


def bind_arguments(patterns: Iterable[str] = (), tools: Iterable[str] = ()) -> list[str]:
    """bubblewrap arguments that make the root file system the system paths, `patterns` and the homes of
    `tools`, read-only (see the module docstring)."""
    toolchains = toolchain_dir()  # absent in a Ray Job's uploaded copy of the checkout: nothing to bind then
    return list(_bind_arguments(tuple(patterns), tuple(tools), str(toolchains) if toolchains.is_dir() else None))


@functools.cache
def _bind_arguments(patterns: tuple[str, ...], tools: tuple[str, ...], toolchains: str | None) -> tuple[str, ...]:
    argv: list[str] = []
    for entry in ROOT_ENTRIES:
        if os.path.islink(entry):
            argv += ["--symlink", os.readlink(entry), entry]
        elif os.path.isdir(entry):
            argv += ["--ro-bind", entry, entry]
    for path in _outermost([*_expand((*SYSTEM_PATHS, *patterns)), *_tool_homes(tools), *filter(None, [toolchains])]):
        argv += ["--ro-bind", path, path]
    return tuple(argv)


def _expand(patterns: Iterable[str]) -> list[str]:
    return [match for pattern in patterns for match in sorted(glob.glob(pattern)) if os.path.exists(match)]


def _tool_homes(tools: Iterable[str]) -> list[str]:
    """`<home>` of each tool installed as `<home>/bin/<tool>` (after symlinks) outside the system prefixes."""
    homes = []
    for tool in tools:
        path = resolve_tool(tool)
        if path is None or not os.path.isabs(path):
            continue  # `./main`: the program's own build, in its work directory
        real = Path(path).resolve()
        home = real.parent.parent
        if str(home) not in _SYSTEM_PREFIXES:
            homes.append(str(home))
        elif not any(real.is_relative_to(prefix) for prefix in ("/usr/bin", "/bin")):
            homes.append(str(real))  # e.g. /usr/local/bin/<tool>: the binary itself, nothing beside it
    return homes


def _outermost(paths: Iterable[str]) -> list[str]:
    """The paths without those inside another one (bound already), sorted so that parents come first."""
    kept: list[str] = []
    for path in sorted({os.path.normpath(p) for p in paths}):
        if not any(path == outer or path.startswith(outer.rstrip("/") + "/") for outer in kept):
            kept.append(path)
    return kept
