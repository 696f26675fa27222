"""How each MBXP language is compiled and run: one declarative entry per language, no `if language == ...`.

A recipe names the file the program is written to, the compile step (for interpreted languages a syntax
check, so that "compiled" means the same thing in every language), the run step, the binaries they need,
the line that installs them, and the strings that end greedy generation of one function (cut with
`programs.trim_completion`). Argument and environment templates may use `{file}`, `{stem}`, `{heap_mb}` (the
program's memory budget), `{compile_heap_mb}`, `{toolchain_dir}` and `{workdir}`.

Recipes exist for python, javascript, typescript, java, cpp, perl, ruby, php and go. Kotlin, Scala, C# and
Swift have none yet: `doctor` reports them unavailable and the executor gives their programs `sandbox_error`.

Memory: most runtimes live under RLIMIT_AS = the program's budget. Managed runtimes reserve far more address
space than they use, so their recipes give a `memory_slack_mb` on top of the budget and cap their own heap
with `{heap_mb}` (`-Xmx` for the JVM, `--max-old-space-size` for node): a heap bomb then dies with the
runtime's own out-of-memory error, which the executor reports as `memory_exceeded`.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from itt_sweep.execution.types import LANGUAGES

SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"

# Messages the MBXP tests raise when an assertion fails, across languages (see the `test` fields).
TEST_FAILURE_MARKERS = (
    r"test case \d+ (did not|failed to) pass",
    r"Error at \d+th assert statement",
    r"Error at test case \d+",
    r"Assertion `.*' failed",
)
# Out-of-memory messages of the runtimes we support; checked before the test-failure markers.
MEMORY_MARKERS = (
    r"^MemoryError",
    r"java\.lang\.OutOfMemoryError",
    r"std::bad_alloc",
    r"JavaScript heap out of memory|Array buffer allocation failed|Fatal process out of memory",
    r"NoMemoryError|failed to allocate memory",
    r"Allowed memory size of \d+ bytes exhausted|^PHP Fatal error:\s+Out of memory",
    r"^Out of memory!",
    r"fatal error: (runtime: )?out of memory",
    r"OutOfMemoryException",
)

_JVM_FLAGS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:-UsePerfData", "-Xshare:auto",
              "-XX:ReservedCodeCacheSize=64m", "-XX:CompressedClassSpaceSize=64m",
              "-XX:MaxMetaspaceSize=192m", "-XX:MaxDirectMemorySize=64m")
_BRACE_STOPS = ("\n}",)
CPP_FLAGS = ("-std=c++17", "-O1")  # scripts/install_toolchains.sh builds its precompiled header with these


@dataclass(frozen=True)
class Recipe:
    """Everything the executor and the generator need to know about one language."""

    language: str
    file_name: str
    compile: tuple[str, ...] | None
    run: tuple[str, ...]
    tools: tuple[str, ...]
    install_hint: str
    stop_sequences: tuple[str, ...]
    keep_stop: bool = False  # brace languages: the stop ("\n}") closes the function and stays
    failure_markers: tuple[str, ...] = TEST_FAILURE_MARKERS
    memory_slack_mb: int | None = 0  # RLIMIT_AS = budget + slack; None: no RLIMIT_AS
    compile_memory_mb: int = 2048
    node_modules: tuple[str, ...] = ()  # packages the tests `require`, looked up under the toolchain dir
    env: tuple[tuple[str, str], ...] = field(default=())  # values may use the argument placeholders
    links: tuple[tuple[str, str], ...] = ()  # symlinks made in the work directory: (name, target template)

    @property
    def stem(self) -> str:
        return Path(self.file_name).stem


RECIPES: dict[str, Recipe] = {
    "python": Recipe(
        language="python",
        file_name="main.py",
        compile=("python3", "-I", "-m", "py_compile", "{file}"),
        run=("python3", "-I", "{file}"),
        tools=("python3",),
        install_hint="apt-get install -y python3",
        stop_sequences=("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\nassert ", "\n#", "\n@"),
        failure_markers=(r"^AssertionError",),
    ),
    "javascript": Recipe(
        language="javascript",
        file_name="main.js",
        compile=("node", "--check", "{file}"),
        run=("node", "--max-old-space-size={heap_mb}", "--stack-size=4000", "{file}"),
        tools=("node",),
        install_hint="apt-get install -y nodejs npm && scripts/install_toolchains.sh (lodash)",
        stop_sequences=_BRACE_STOPS,
        keep_stop=True,
        memory_slack_mb=512,
        node_modules=("lodash",),
    ),
    "java": Recipe(
        language="java",
        file_name="Main.java",
        compile=("javac", "-J-Xmx{compile_heap_mb}m", *(f"-J{flag}" for flag in _JVM_FLAGS),
                 "-encoding", "UTF-8", "-nowarn", "-d", ".", "{file}"),
        run=("java", "-Xmx{heap_mb}m", "-Xss16m", *_JVM_FLAGS, "-cp", ".", "{stem}"),
        tools=("javac", "java"),
        install_hint="apt-get install -y default-jdk-headless",
        stop_sequences=_BRACE_STOPS,
        keep_stop=True,
        memory_slack_mb=1536,  # metaspace, code cache, class space, 16 MiB thread stacks
        compile_memory_mb=1024,
        env=(("MALLOC_ARENA_MAX", "2"),),  # glibc reserves 64 MiB of address space per arena otherwise
    ),
    "cpp": Recipe(
        language="cpp",
        file_name="main.cpp",
        # -I{toolchain_dir}/pch finds the precompiled <bits/stdc++.h> that scripts/install_toolchains.sh
        # builds with exactly these flags (3x faster compiles); g++ silently ignores it if absent or stale.
        compile=("g++", *CPP_FLAGS, "-I{toolchain_dir}/pch", "-o", "{stem}", "{file}"),
        run=("./{stem}",),
        tools=("g++",),
        install_hint="apt-get install -y g++",
        stop_sequences=_BRACE_STOPS,
        keep_stop=True,
        compile_memory_mb=4096,
    ),
    "typescript": Recipe(
        language="typescript",
        file_name="main.ts",
        # Type errors count as compile errors (tsc exits 2 and still emits JavaScript; we do not run it).
        compile=("tsc", "--target", "es2022", "--module", "commonjs", "--types", "node", "--skipLibCheck",
                 "--pretty", "false", "{file}"),
        run=("node", "--max-old-space-size={heap_mb}", "--stack-size=4000", "{stem}.js"),
        tools=("node", "tsc"),
        install_hint="apt-get install -y nodejs npm && scripts/install_toolchains.sh typescript",
        stop_sequences=_BRACE_STOPS,
        keep_stop=True,
        memory_slack_mb=512,
        compile_memory_mb=2048,
        node_modules=("typescript", "@types/node", "lodash", "mathjs", "heap-js"),
        links=(("node_modules", "{toolchain_dir}/node_modules"),),  # tsc resolves imports from the file up
    ),
    "perl": Recipe(
        language="perl",
        file_name="main.pl",
        compile=("perl", "-c", "{file}"),
        run=("perl", "{file}"),
        tools=("perl",),
        install_hint="apt-get install -y perl libdata-compare-perl",
        stop_sequences=_BRACE_STOPS,
        keep_stop=True,
    ),
    "ruby": Recipe(
        language="ruby",
        file_name="main.rb",
        compile=("ruby", "-c", "{file}"),
        run=("ruby", "-rset", "{file}"),  # Ruby < 3.2 does not autoload Set, which some solutions use
        tools=("ruby",),
        install_hint="apt-get install -y ruby",
        stop_sequences=("\nend",),
        keep_stop=True,
    ),
    "php": Recipe(
        language="php",
        file_name="main.php",
        compile=("php", "-l", "{file}"),
        run=("php", "-d", "display_errors=stderr", "-d", "log_errors=0", "-d", "memory_limit={heap_mb}M", "{file}"),
        tools=("php",),
        install_hint="apt-get install -y php-cli",
        stop_sequences=_BRACE_STOPS,
        keep_stop=True,
    ),
    "go": Recipe(
        language="go",
        file_name="main.go",
        compile=("go", "build", "-o", "{stem}", "{file}"),
        run=("./{stem}",),
        tools=("go",),
        install_hint="apt-get install -y golang-go",
        stop_sequences=_BRACE_STOPS,
        keep_stop=True,
        memory_slack_mb=1024,  # the Go runtime reserves ~700 MiB of address space at start-up
        env=(("GOCACHE", "{workdir}/.gocache"), ("GOPATH", "{workdir}/go"), ("GO111MODULE", "off"),
             ("GOFLAGS", "-buildvcs=false"), ("GOMEMLIMIT", "{heap_mb}MiB"), ("GOMAXPROCS", "2")),
    ),
}


def toolchain_dir() -> Path:
    """Home of toolchain extras (npm packages, C++ header): `$ITT_TOOLCHAIN_DIR`, else the checkout's
    `.cache/toolchains`, found from this file so that Ray workers with another working dir agree."""
    if "ITT_TOOLCHAIN_DIR" in os.environ:
        return Path(os.environ["ITT_TOOLCHAIN_DIR"]).resolve()
    checkout = Path(__file__).resolve().parents[3]
    base = checkout if (checkout / "pyproject.toml").is_file() else Path.cwd()
    return base / ".cache" / "toolchains"


def search_path() -> str:
    """Where tools are looked up: toolchain npm binaries, the system directories, then the caller's PATH.

    System directories come before the caller's PATH on purpose: a tool under a private home (a pyenv shim,
    say) may not be readable by the unprivileged user the sandbox runs programs as.
    """
    parts = [str(toolchain_dir() / "node_modules" / ".bin"), SYSTEM_PATH, os.environ.get("PATH", "")]
    return ":".join(part for part in parts if part)


def resolve_tool(name: str) -> str | None:
    """Absolute path of a tool, or None when it is not installed."""
    if "/" in name:
        return name
    return shutil.which(name, path=search_path())


def get_recipe(language: str) -> Recipe:
    try:
        return RECIPES[language]
    except KeyError:
        known = ", ".join(sorted(RECIPES))
        raise KeyError(f"no execution recipe for language {language!r}; recipes exist for: {known}") from None


def missing_requirements(language: str) -> list[str]:
    """What keeps a language from running here: missing binaries and npm packages, in words."""
    if language not in RECIPES:
        return [f"no recipe for {language!r}"]
    recipe = RECIPES[language]
    missing = [f"{tool} not on PATH" for tool in recipe.tools if resolve_tool(tool) is None]
    modules = toolchain_dir() / "node_modules"
    missing += [f"npm package {name} not in {modules}" for name in recipe.node_modules
                if not (modules / name).is_dir()]
    return missing


def available(language: str) -> bool:
    return not missing_requirements(language)


def doctor() -> dict[str, tuple[bool, str]]:
    """Per MBXP language: ready or not, and what to install when not."""
    report: dict[str, tuple[bool, str]] = {}
    for language in LANGUAGES:
        missing = missing_requirements(language)
        if not missing:
            tools = ", ".join(str(resolve_tool(tool)) for tool in RECIPES[language].tools)
            report[language] = (True, f"ready ({tools})")
        elif language not in RECIPES:
            report[language] = (False, missing[0])
        else:
            report[language] = (False, "; ".join(missing) + f" -- install: {RECIPES[language].install_hint}")
    return report
