"""Where the executor finds its tools, and the one toolchain piece it builds itself (the C# test support).

Compilers and runtimes come from the system (`scripts/install_toolchains.sh` installs them); extras live in
the toolchain directory: npm packages for the JavaScript/TypeScript tests, the precompiled C++ header, and
`csharp/`, our stand-in for the NuGet library `CompareNetObjects` that the C# tests call, plus the launcher
that runs one program out of a batch-compiled DLL. Both C# pieces are compiled from `execution/csharp/*.cs`
once, into a folder named after a hash of their sources, so an edited source is rebuilt and never mixed up
with a stale DLL.
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
from pathlib import Path

SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
CSHARP_SOURCES = Path(__file__).with_name("csharp")
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


def tool_home(name: str) -> Path | None:
    """The installation a tool belongs to (`<home>/bin/<tool>` after symlinks): where Kotlin's and Scala's
    runtime jars are found."""
    path = resolve_tool(name)
    return Path(path).resolve().parent.parent if path else None


# ---------------------------------------------------------------- C# test support

def csharp_support_dir() -> Path:
    """The folder holding this version of the C# support DLL and launcher (it may not be built yet)."""
    return toolchain_dir() / "csharp" / _csharp_sources_digest()


@functools.lru_cache(maxsize=1)
def _csharp_sources_digest() -> str:
    digest = hashlib.sha256()
    for source in sorted(CSHARP_SOURCES.glob("*.cs")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()[:12]


def csharp_support_missing() -> str | None:
    """Why the C# support is unusable, or None when it is built."""
    folder = csharp_support_dir()
    if (folder / CSHARP_SUPPORT_DLL).is_file() and (folder / CSHARP_LAUNCHER).is_file():
        return None
    return f"C# test support not built in {folder} (scripts/install_toolchains.sh csharp builds it)"


def build_csharp_support() -> Path:
    """Compile the support DLL and launcher with `mcs` unless this version is built; safe to call from many
    processes at once (the first builds, the others wait). Raises RuntimeError when mcs fails."""
    folder = csharp_support_dir()
    if csharp_support_missing() is None:
        return folder
    mcs = resolve_tool("mcs")
    if mcs is None:
        raise RuntimeError("mcs is not installed (apt-get install -y mono-mcs mono-runtime mono-devel)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if csharp_support_missing() is None:
            return folder
        staging = Path(tempfile.mkdtemp(prefix=".build-", dir=folder.parent))
        try:
            _mcs(mcs, ["-target:library", f"-out:{staging / CSHARP_SUPPORT_DLL}",
                       str(CSHARP_SOURCES / "CompareNetObjects.cs")])
            _mcs(mcs, [f"-out:{staging / CSHARP_LAUNCHER}", str(CSHARP_SOURCES / "IttLauncher.cs")])
            staging.chmod(0o755)
            os.replace(staging, folder)
        finally:
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(staging)
    return folder


def _mcs(mcs: str, arguments: list[str]) -> None:
    done = subprocess.run([mcs, "-optimize+", "-nologo", *arguments], capture_output=True, text=True,
                          timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"building the C# test support failed:\n{done.stdout}{done.stderr}")
