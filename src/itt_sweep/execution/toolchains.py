"""Where the executor finds its tools, and the harness pieces it builds itself.

Compilers and runtimes come from the system (`scripts/install_toolchains.sh` installs them); extras live in
the toolchain directory: npm packages for the JavaScript/TypeScript tests, the precompiled C++ header, and
the supports compiled from `execution/support/<language>/`: for C#, our stand-in for the NuGet library
`CompareNetObjects` that the C# tests call plus the launcher that runs one program out of a batch-compiled
DLL; for Scala, the batch compiler driver. Each is compiled once, into a folder named after a hash of its
sources, so an edited source is rebuilt and never mixed up with a stale build.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
SUPPORT_SOURCES = Path(__file__).with_name("support")
CSHARP_SUPPORT_DLL = "CompareNetObjects.dll"
CSHARP_LAUNCHER = "IttLauncher.exe"


def toolchain_dir() -> Path:
    """Home of toolchain extras: `$ITT_TOOLCHAIN_DIR`, else the checkout's `.cache/toolchains`, found from
    this file so that Ray workers with another working directory agree."""
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


@functools.cache
def ruby_gem_paths() -> str:
    """RUBYLIB for programs run with `--disable-gems`: the load paths of the installed gems that are not part
    of Ruby's standard library (bundled gems such as prime and matrix), so that they can still be required.
    RubyGems costs every Ruby start ~45 ms here (9 ms without it); it is asked once, on the host, with a fixed
    script, and "" when Ruby is missing or cannot answer."""
    ruby = resolve_tool("ruby")
    script = "puts Gem::Specification.reject(&:default_gem?).flat_map(&:full_require_paths)"
    if ruby is None:
        return ""
    try:
        listed = subprocess.run([ruby, "-e", script], capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return ":".join(line for line in listed.splitlines() if line.startswith("/"))


def tool_home(name: str) -> Path | None:
    """The installation a tool belongs to (`<home>/bin/<tool>` after symlinks): where Kotlin's and Scala's
    runtime jars are found."""
    path = resolve_tool(name)
    return Path(path).resolve().parent.parent if path else None


# ---------------------------------------------------------------- supports we build (C#, Scala)

@dataclass(frozen=True)
class Support:
    """A piece of harness we compile ourselves, once, into `<toolchain dir>/<name>/<hash of its sources>`."""

    name: str
    sources: tuple[str, ...]  # file names under `SUPPORT_SOURCES/<name>/`
    products: tuple[str, ...]  # what the build leaves in the folder
    compiler: str  # the tool that builds it
    install_hint: str

    @property
    def source_dir(self) -> Path:
        return SUPPORT_SOURCES / self.name


SUPPORTS = {
    # The C# tests call CompareLogic (NuGet's CompareNetObjects); the launcher runs one program of a batch DLL.
    "csharp": Support("csharp", ("CompareNetObjects.cs", "IttLauncher.cs"), (CSHARP_SUPPORT_DLL, CSHARP_LAUNCHER),
                      "mcs", "apt-get install -y mono-mcs mono-runtime mono-devel"),
    # Settles a Scala batch's compile errors in one warm compiler JVM (see the source's header).
    "scala": Support("scala", ("IttScalaBatch.scala",), ("itt/IttScalaBatch.class",), "scalac",
                     "apt-get install -y scala"),
}


def support_dir(language: str) -> Path:
    """The folder holding this version of a language's support (it may not be built yet)."""
    return toolchain_dir() / language / _sources_digest(language)


@functools.cache
def _sources_digest(language: str) -> str:
    support = SUPPORTS[language]
    digest = hashlib.sha256()
    for name in support.sources:
        digest.update(name.encode() + b"\0" + (support.source_dir / name).read_bytes())
    return digest.hexdigest()[:12]


def support_missing(language: str) -> str | None:
    """Why a language's support is unusable, or None when it is built (or the language needs none)."""
    if language not in SUPPORTS:
        return None
    folder = support_dir(language)
    if all((folder / product).is_file() for product in SUPPORTS[language].products):
        return None
    return f"{language} support not built in {folder} (scripts/install_toolchains.sh {language} builds it)"


def build_support(language: str) -> Path | None:
    """Compile a language's support unless this version is built; safe to call from many processes at once
    (the first builds, the others wait). None for a language without support; RuntimeError when the build
    fails."""
    if language not in SUPPORTS:
        return None
    support, folder = SUPPORTS[language], support_dir(language)
    if support_missing(language) is None:
        return folder
    compiler = resolve_tool(support.compiler)
    if compiler is None:
        raise RuntimeError(f"{support.compiler} is not installed ({support.install_hint})")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if support_missing(language) is None:
            return folder
        staging = Path(tempfile.mkdtemp(prefix=".build-", dir=folder.parent))
        try:
            _BUILDERS[language](compiler, support, staging)
            for root, dirs, _files in os.walk(staging):  # the sandbox users read it
                for name in [root, *(os.path.join(root, d) for d in dirs)]:
                    os.chmod(name, 0o755)
            os.replace(staging, folder)
        finally:
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(staging)
    return folder


def _build_csharp(mcs: str, support: Support, out: Path) -> None:
    source = support.source_dir
    _compile(support, [mcs, "-optimize+", "-nologo", "-target:library", f"-out:{out / CSHARP_SUPPORT_DLL}",
                       str(source / "CompareNetObjects.cs")])
    _compile(support, [mcs, "-optimize+", "-nologo", f"-out:{out / CSHARP_LAUNCHER}", str(source / "IttLauncher.cs")])


def _build_scala(scalac: str, support: Support, out: Path) -> None:
    _compile(support, [scalac, "-nowarn", "-d", str(out), *(str(support.source_dir / s) for s in support.sources)])


_BUILDERS = {"csharp": _build_csharp, "scala": _build_scala}


def _compile(support: Support, argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"building the {support.name} support failed:\n{done.stdout}{done.stderr}")
