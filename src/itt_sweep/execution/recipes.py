"""How each MBXP language is compiled and run: one declarative entry per language, no `if language == ...`.

A recipe names the file the program is written to, the compile step (for interpreted languages a syntax
check, so that "compiled" means the same thing in every language), the run step, the binaries they need,
the line that installs them, and the strings that end greedy generation of one function (cut with
`programs.trim_completion`). Argument and environment templates may use `{file}`, `{stem}`, `{heap_mb}` (the
program's memory budget), `{compile_heap_mb}`, `{toolchain_dir}`, `{workdir}`, `{tmpdir}` (the step's private
temporary folder: the sandbox's own tmpfs under bubblewrap, the work directory without it), `{ruby_gems}` (the
load paths of Ruby's installed non-standard gems, `toolchains.ruby_gem_paths`), `{runtime_cp}` (the runtime
jars of the language, JVM languages), `{tool_cp}` (every jar of the compiler's home), `{support}` (the
language's support folder, see `toolchains`) and, in batch recipes, `{key}`, `{sources}` and `{checker}`.

Languages whose compiler pays seconds of start-up per call (java, kotlin, scala, csharp, typescript) have a
`Batch`: many programs go through one compiler call, each in its own package or namespace named `{key}`
(see `batching`); a single program is a batch of one, so verdicts do not depend on how programs were grouped.
Python, JavaScript and Ruby have one too: their syntax check (`checkers`) takes a whole chunk in one process.

Memory: most runtimes live under RLIMIT_AS = the program's budget. Managed runtimes reserve far more address
space than they use, so their recipes give a `memory_slack_mb` on top of the budget and cap their own heap
with `{heap_mb}` (`-Xmx` for the JVM, `--max-old-space-size` for node, `max-heap-size` for mono): a heap
bomb then dies with the runtime's own out-of-memory error, which the executor reports as `memory_exceeded`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from itt_sweep.execution.toolchains import resolve_tool, tool_home, toolchain_dir
from itt_sweep.execution.types import LANGUAGES

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

# Printed on stderr by the run step of a recipe with `checked_in_run` once the program passed the language's
# own check; its absence makes the run a `compile_error` (see `verdicts`).
COMPILED_MARKER = "itt-sweep: compiled (8e41c6d0)"
# The check in front of the run for a language whose checker is a separate interpreter call (`php -l`):
# `sh -c` runs it, reports its output and exit status on failure, else prints the marker and execs the run.
_CHECK_THEN_RUN = ('out=$("$1" -l "$2" 2>&1) || {{ status=$?; printf "%s\\n" "$out" >&2; exit $status; }}; '
                   f'echo "{COMPILED_MARKER}" >&2; shift 2; exec "$@"')

# No container detection: every limit is set here (it costs a JVM ~10 ms of reading cgroup files at start).
_JVM_FLAGS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:-UsePerfData", "-Xshare:auto",
              "-XX:-UseContainerSupport",
              "-XX:ReservedCodeCacheSize=64m", "-XX:CompressedClassSpaceSize=64m",
              "-XX:MaxMetaspaceSize=192m", "-XX:MaxDirectMemorySize=64m")
# Compilers stop at C1 too: the optimising JIT costs javac and kotlinc about twice the CPU it saves, even on
# a batch (measured here: 128 Java files 7.9 -> 4.0 CPU-s, 80 Kotlin files 13.6 -> 6.7 CPU-s).
_JVM_COMPILER_OPTS = ("-Xss8m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:-UsePerfData -Xshare:auto "
                      "-XX:-UseContainerSupport "
                      "-XX:ReservedCodeCacheSize=128m -XX:CompressedClassSpaceSize=128m -XX:MaxMetaspaceSize=512m")
_JVM_RUN = ("java", "-Xmx{heap_mb}m", "-Xss16m", *_JVM_FLAGS)
_JVM_ENV = (("MALLOC_ARENA_MAX", "2"),)  # glibc reserves 64 MiB of address space per arena otherwise
_BRACE_STOPS = ("\n}",)
# What each runtime reads of the host (beyond `mounts.SYSTEM_PATHS` and its tools' homes); nothing else of
# the host is visible to a program (`sandbox`).
_JVM_MOUNTS = ("/usr/lib/jvm", "/etc/java-*", "/usr/share/java")
CPP_FLAGS = ("-std=c++17", "-O1")  # scripts/install_toolchains.sh builds its precompiled header with these
SWIFT_HINT = ("Swift cannot be installed on this machine kind: Debian has no swift package; where swift.org "
              "ships a toolchain for the OS, unpack it and put swiftc on PATH")


@dataclass(frozen=True)
class Batch:
    """How many programs of one language share one compiler call.

    Each program is written to `{key}/<file_name>` in a common folder, `prefix` before its first line (on
    that line, so that line numbers in messages stay the program's own) and `suffix` after it, both with
    `{key}` replaced (they take no other placeholder); `compile` gets every such path in place of the
    argument `{sources}`. `artifacts` (folder path, work-directory path) are what one program's run needs
    from the compiler output; `folders` are made before each call (scalac needs its `-d` to exist).
    """

    compile: tuple[str, ...]
    artifacts: tuple[tuple[str, str], ...]
    folders: tuple[str, ...] = ()
    prefix: str = ""
    suffix: str = ""
    max_programs: int = 128
    per_program_s: float = 2.0  # compile wall-clock budget per program, on top of compile_timeout_s
    settles_itself: bool = False  # the call drops files with errors and compiles the rest (IttScalaBatch)
    compile_ignoring_types: tuple[str, ...] | None = None  # `compile` when type errors are ignored


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
    batch: Batch | None = None  # when set, `compile` is unused: programs are compiled through it
    failure_markers: tuple[str, ...] = TEST_FAILURE_MARKERS
    memory_slack_mb: int | None = 0  # RLIMIT_AS = budget + slack; None: no RLIMIT_AS
    compile_memory_mb: int = 2048
    node_modules: tuple[str, ...] = ()  # packages the tests `require`, looked up under the toolchain dir
    runtime_jars: tuple[tuple[str, str], ...] = ()  # (tool, jar under the tool's home): `{runtime_cp}`
    env: tuple[tuple[str, str], ...] = field(default=())  # values may use the argument placeholders
    compile_env: tuple[tuple[str, str], ...] = ()  # added to `env` for compile steps
    links: tuple[tuple[str, str], ...] = ()  # symlinks made in the compile folder: (name, target template)
    compile_tool: str | None = None  # whose home's jars are `{tool_cp}`
    # A compiler message (the line naming the file) that is a type error only, and after which the compiler
    # still wrote runnable output: such programs run when their `Program.type_errors` is "ignore".
    type_error: str | None = None
    mounts: tuple[str, ...] = ()  # host paths (globs) its steps read, beyond the system ones (`mounts`)
    # The run step checks the program first, as a compile step would, and prints COMPILED_MARKER once it
    # passed: one sandboxed step per program instead of two (the check costs less than a sandbox start).
    checked_in_run: bool = False

    @property
    def stem(self) -> str:
        return Path(self.file_name).stem


def _package_batch(compile: tuple[str, ...], **options) -> Batch:
    """A JVM batch: each program in its own package `{key}`, its classes taken from `classes/{key}`."""
    return Batch(compile=compile, artifacts=(("classes/{key}", "{key}"),), prefix="package {key}; ",
                 **{"folders": ("classes",), **options})


def _checked_batch(interpreter: str, *options: str) -> Batch:
    """An interpreted language: one `checkers` process checks the syntax of a whole chunk (`{checker}` is
    replaced by the checker's source), then each program runs from its own copy of its file."""
    *flags, file_name = options
    return Batch(compile=(interpreter, *flags, "{checker}", "{sources}"),
                 artifacts=((f"{{key}}/{file_name}", file_name),), max_programs=256, per_program_s=0.5)


RECIPES: dict[str, Recipe] = {
    "python": Recipe(
        language="python",
        file_name="main.py",
        compile=None,
        run=("python3", "-I", "{file}"),
        batch=_checked_batch("python3", "-I", "-c", "main.py"),
        tools=("python3",),
        mounts=("/usr/lib/python3*",),
        install_hint="apt-get install -y python3",
        stop_sequences=("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\nassert ", "\n#", "\n@"),
        failure_markers=(r"^AssertionError",),
    ),
    "javascript": Recipe(
        language="javascript",
        file_name="main.js",
        compile=None,
        run=("node", "--max-old-space-size={heap_mb}", "--stack-size=4000", "{file}"),
        batch=_checked_batch("node", "-e", "main.js"),
        tools=("node",),
        install_hint="apt-get install -y nodejs npm && scripts/install_toolchains.sh javascript",
        stop_sequences=_BRACE_STOPS,
        keep_stop=True,
        memory_slack_mb=512,
        node_modules=("lodash",),
    ),
    "typescript": Recipe(
        language="typescript",
        file_name="main.ts",
        compile=None,
        run=("node", "--max-old-space-size={heap_mb}", "--stack-size=4000", "main.js"),
        tools=("node", "tsc"),
        install_hint="apt-get install -y nodejs npm && scripts/install_toolchains.sh typescript",
        stop_sequences=_BRACE_STOPS,
        keep_stop=True,
        # Type errors count as compile errors (tsc exits 2 and still emits JavaScript; we do not run it).
        # `export {}` makes every file a module, so programs in one call never see each other's names.
        batch=Batch(compile=("tsc", "--target", "es2022", "--module", "commonjs", "--types", "node",
                             "--skipLibCheck", "--pretty", "false", "{sources}"),
                    artifacts=(("{key}/main.js", "main.js"),), suffix="\nexport {};\n", max_programs=256,
                    per_program_s=1.0,
                    # mxeval's `tsc --target es5 --lib es2016`: `const` becomes `var`, so reassigning one
                    # (a type error) runs, as the MBXP paper's numbers count it
                    compile_ignoring_types=("tsc", "--target", "es5", "--lib", "es2016", "--module", "commonjs",
                                            "--types", "node", "--skipLibCheck", "--pretty", "false",
                                            "{sources}")),
        # TS1xxx are tsc's syntax errors; every other code is a type (semantic) error
        type_error=r": error TS(?!1\d{3}:)\d+:",
        memory_slack_mb=512,
        node_modules=("typescript", "@types/node", "lodash", "mathjs", "heap-js"),
        links=(("node_modules", "{toolchain_dir}/node_modules"),),  # tsc resolves imports from the file up
    ),
    "java": Recipe(
        language="java",
        file_name="Main.java",
        compile=None,
        run=(*_JVM_RUN, "-cp", ".", "{key}.Main"),
        tools=("javac", "java"),
        mounts=_JVM_MOUNTS,
        install_hint="apt-get install -y default-jdk-headless",
        stop_sequences=_BRACE_STOPS,
        keep_stop=True,
        batch=_package_batch(("javac", "-J-Xmx{compile_heap_mb}m", *(f"-J{o}" for o in _JVM_COMPILER_OPTS.split()),
                              "-encoding", "UTF-8", "-nowarn", "-proc:none", "-implicit:none", "-Xmaxerrs",
                              "100000", "-d", "classes", "{sources}"), folders=(), per_program_s=1.0),
        memory_slack_mb=1536,  # metaspace, code cache, class space, 16 MiB thread stacks
        compile_memory_mb=1536,
        env=_JVM_ENV,
    ),
    "kotlin": Recipe(
        language="kotlin",
        file_name="main.kt",
        compile=None,
        run=(*_JVM_RUN, "-cp", "{runtime_cp}:.", "{key}.MainKt"),
        tools=("kotlinc", "java"),
        mounts=(*_JVM_MOUNTS, "/usr/share/kotlin"),
        install_hint="apt-get install -y kotlin",
        stop_sequences=_BRACE_STOPS,
        keep_stop=True,
        # kotlinc 1.3 defaults to -jvm-target 1.6: no static interface calls
        batch=_package_batch(("kotlinc", "-J-Xmx{compile_heap_mb}m", "-nowarn", "-jvm-target", "1.8", "-d", "classes",
                              "{sources}")),
        memory_slack_mb=1536,
        runtime_jars=(("kotlinc", "lib/kotlin-stdlib.jar"),),
        env=_JVM_ENV,
        compile_env=(("JAVA_OPTS", _JVM_COMPILER_OPTS),),
    ),
    "scala": Recipe(
        language="scala",
        file_name="main.scala",
        compile=None,
        run=(*_JVM_RUN, "-cp", "{runtime_cp}:.", "{key}.Main"),
        tools=("scalac", "java"),
        mounts=(*_JVM_MOUNTS, "/usr/share/scala*"),
        install_hint="apt-get install -y scala",
        stop_sequences=("\n    }",),  # the prompt opens `def` inside `object Main`, indented by 4
        keep_stop=True,
        # scalac needs up to three cold calls to settle a batch with errors; our driver does them in one JVM
        batch=_package_batch(("java", "-Xmx{compile_heap_mb}m", *_JVM_COMPILER_OPTS.split(), "-cp",
                              "{tool_cp}:{support}", "itt.IttScalaBatch", "classes", "{sources}"),
                             settles_itself=True),
        memory_slack_mb=1536,
        runtime_jars=(("scalac", "lib/scala-library.jar"),),
        env=_JVM_ENV,
        compile_tool="scalac",
    ),
    "csharp": Recipe(
        language="csharp",
        file_name="main.cs",
        compile=None,
        run=("mono", "{support}/IttLauncher.exe", "batch.dll", "{key}"),
        tools=("mcs", "mono"),
        mounts=("/usr/lib/mono", "/usr/lib/cli", "/etc/mono", "/usr/lib/libmono*", "/usr/lib/libMono*"),
        install_hint="apt-get install -y mono-mcs mono-runtime mono-devel",
        stop_sequences=("\n        }",),  # the prompt opens a method of `class Program`, indented by 8
        keep_stop=True,
        batch=Batch(compile=("mcs", "-target:library", "-out:batch.dll", "-nologo", "-warn:0", "-d:DEBUG",
                             "-r:System.Numerics.dll", "-r:{support}/CompareNetObjects.dll", "{sources}"),
                    artifacts=(("batch.dll", "batch.dll"),), prefix="namespace {key} { ", suffix="\n}\n",
                    per_program_s=0.5),
        memory_slack_mb=1024,
        env=(("MONO_GC_PARAMS", "max-heap-size={heap_mb}m"),),
    ),
    "cpp": Recipe(
        language="cpp",
        file_name="main.cpp",
        # -I{toolchain_dir}/pch finds the precompiled <bits/stdc++.h> that scripts/install_toolchains.sh
        # builds with exactly these flags (3x faster compiles); g++ silently ignores it if absent or stale.
        compile=("g++", *CPP_FLAGS, "-I{toolchain_dir}/pch", "-o", "{stem}", "{file}"),
        run=("./{stem}",),
        tools=("g++",),
        mounts=("/usr/include", "/usr/lib/gcc", "/usr/libexec/gcc"),
        install_hint="apt-get install -y g++",
        stop_sequences=_BRACE_STOPS,
        keep_stop=True,
        compile_memory_mb=4096,
    ),
    "go": Recipe(
        language="go",
        file_name="main.go",
        # no symbol table and no DWARF in the binary: linking costs ~30% less CPU (318 -> 226 ms a program
        # here), and a panic's stack trace still names functions and lines (it reads the pclntab)
        compile=("go", "build", "-ldflags=-s -w", "-o", "{stem}", "{file}"),
        run=("./{stem}",),
        tools=("go",),
        mounts=("/usr/lib/go", "/usr/lib/go-*", "/usr/share/go", "/usr/share/go-*"),
        install_hint="apt-get install -y golang-go",
        stop_sequences=_BRACE_STOPS,
        keep_stop=True,
        memory_slack_mb=1024,  # the Go runtime reserves ~700 MiB of address space at start-up
        # The build cache on the sandbox's tmpfs: go creates 256 folders in a new cache, which cost ~0.3 s a
        # program to make and remove on the host's disk and nothing on a tmpfs that vanishes with the step.
        # (Go <= 1.19 ships the standard library precompiled; the cache only holds the program's own build.)
        env=(("GOCACHE", "{tmpdir}/gocache"), ("GOPATH", "{workdir}/go"), ("GO111MODULE", "off"),
             ("GOFLAGS", "-buildvcs=false"), ("GOMEMLIMIT", "{heap_mb}MiB"), ("GOMAXPROCS", "2")),
    ),
    "swift": Recipe(
        language="swift",
        file_name="main.swift",
        compile=("swiftc", "-Onone", "-o", "{stem}", "{file}"),  # -Onone: `assert` is checked
        run=("./{stem}",),
        tools=("swiftc",),
        install_hint=SWIFT_HINT,
        stop_sequences=_BRACE_STOPS,
        keep_stop=True,
        memory_slack_mb=1024,
        compile_memory_mb=4096,
    ),
    "perl": Recipe(
        language="perl",
        file_name="main.pl",
        # `perl -c` in the run itself: an INIT block runs once compilation (BEGIN and CHECK blocks included)
        # succeeded and before the program's first statement; `-M5;...` adds it without touching the file
        compile=None,
        run=("perl", "-M5;INIT{{print STDERR qq(\\n" + COMPILED_MARKER + "\\n)}}", "{file}"),
        checked_in_run=True,
        tools=("perl",),
        mounts=("/usr/share/perl*", "/etc/perl"),
        install_hint="apt-get install -y perl libdata-compare-perl",
        stop_sequences=_BRACE_STOPS,
        keep_stop=True,
    ),
    "ruby": Recipe(
        language="ruby",
        file_name="main.rb",
        compile=None,
        # Ruby < 3.2 does not autoload Set, which some solutions use. Without RubyGems a start costs 9 ms, not
        # ~55: the gems it would have found (prime, matrix, ...) are on RUBYLIB instead.
        run=("ruby", "--disable-gems", "-rset", "{file}"),
        env=(("RUBYLIB", "{ruby_gems}"),),
        batch=_checked_batch("ruby", "--disable-gems", "-e", "main.rb"),
        tools=("ruby",),
        mounts=("/usr/lib/ruby", "/usr/share/rubygems-integration", "/var/lib/gems"),
        install_hint="apt-get install -y ruby",
        stop_sequences=("\nend",),
        keep_stop=True,
    ),
    "php": Recipe(
        language="php",
        file_name="main.php",
        compile=None,
        # `php -l {file}`, then (it passed) the run, in one sandboxed step (`_CHECK_THEN_RUN`)
        run=("sh", "-c", _CHECK_THEN_RUN, "itt-check", "php", "{file}",
             "php", "-d", "display_errors=stderr", "-d", "log_errors=0", "-d", "memory_limit={heap_mb}M", "{file}"),
        checked_in_run=True,
        tools=("php",),
        mounts=("/etc/php", "/usr/lib/php", "/usr/share/php*"),
        install_hint="apt-get install -y php-cli",
        stop_sequences=_BRACE_STOPS,
        keep_stop=True,
    ),
}


def get_recipe(language: str) -> Recipe:
    try:
        return RECIPES[language]
    except KeyError:
        known = ", ".join(sorted(RECIPES))
        raise KeyError(f"no execution recipe for language {language!r}; recipes exist for: {known}") from None


def tool_classpath(recipe: Recipe) -> str:
    """The `{tool_cp}` of a recipe: every jar of its compiler's home, as the compiler's own launcher has."""
    home = tool_home(recipe.compile_tool) if recipe.compile_tool else None
    return _home_jars(home) if home else ""


@functools.cache
def _home_jars(home: Path) -> str:
    """Looked up once per home: every step of every program fills in its placeholders."""
    return ":".join(str(jar) for jar in sorted((home / "lib").glob("*.jar")))


def runtime_classpath(recipe: Recipe) -> str:
    """The `{runtime_cp}` of a recipe: its runtime jars, found under the homes of the tools that own them."""
    jars = []
    for tool, jar in recipe.runtime_jars:
        home = tool_home(tool)
        jars.append(str(home / jar) if home else jar)
    return ":".join(jars)


def missing_requirements(language: str) -> list[str]:
    """What keeps a language from running here: missing binaries, npm packages and runtime jars, in words."""
    if language not in RECIPES:
        return [f"no recipe for {language!r}"]
    recipe = RECIPES[language]
    missing = [f"{tool} not on PATH" for tool in recipe.tools if resolve_tool(tool) is None]
    modules = toolchain_dir() / "node_modules"
    missing += [f"npm package {name} not in {modules}" for name in recipe.node_modules
                if not (modules / name).is_dir()]
    if not missing:
        missing += [f"{jar} not found" for jar in runtime_classpath(recipe).split(":") if jar and
                    not Path(jar).is_file()]
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
