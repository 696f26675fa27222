"""Unprivileged uids leased to one step at a time, and the hunt for processes they leave behind.

When the executor runs as root, every step runs as a uid of its own from a pool (`$ITT_SANDBOX_UID_BASE`,
default 61000, 512 of them; never the uid of an existing account), leased across threads and processes with
`flock`. That makes RLIMIT_NPROC hold (the kernel does not apply it to root), keeps files only root may read
unreadable, and gives a handle on everything the step started. A uid is only leased while no process of it
is alive and hardly any zombie is left (the kernel counts unreaped tasks against RLIMIT_NPROC). Steps run
without bubblewrap may leave processes behind, so their lease ends by killing every process of the uid;
under bubblewrap the kernel already did that with the PID namespace. Not root: no lease, the step runs as
the caller (see `sandbox` for what that loses).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

UID_POOL_SIZE = 512
_LINGERING_ZOMBIES = 4  # bubblewrap's own exiting helper may linger as one


def _uid_base() -> int:
    return int(os.environ.get("ITT_SANDBOX_UID_BASE", "61000"))


@functools.lru_cache(maxsize=4096)
def _is_account(uid: int) -> bool:
    with contextlib.suppress(KeyError):
        return bool(pwd.getpwuid(uid))
    return False


@contextlib.contextmanager
def lease_user(sweep: bool = True) -> Iterator[int | None]:
    """An unprivileged uid used by nobody else while the block runs; None when we are not root.

    `sweep=False` when every step of the lease ran under bubblewrap: nothing of them can outlive it.
    """
    if os.geteuid() != 0:
        yield None
        return
    uid, lock = _acquire_uid()
    try:
        yield uid
    finally:
        if sweep:
            kill_user_processes(uid)
        lock.close()


def _acquire_uid() -> tuple[int, IO[str]]:
    """Lock the first uid of the pool that nobody holds and that has no process left (one pass over /proc
    for all of them; a uid whose last step is still exiting is simply passed over)."""
    lock_dir = Path(tempfile.gettempdir()) / "itt-sweep-sandbox-uids"
    lock_dir.mkdir(mode=0o700, exist_ok=True)
    pool = range(_uid_base(), _uid_base() + UID_POOL_SIZE)
    tasks = _tasks_of(pool)
    for uid in pool:
        live, zombies = tasks.get(uid, ([], []))
        if live or len(zombies) > _LINGERING_ZOMBIES or _is_account(uid):
            continue
        lock = open(lock_dir / f"{uid}.lock", "w")  # noqa: SIM115 -- stays open while leased
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            continue
        return uid, lock
    raise RuntimeError(f"no free sandbox uid among the {UID_POOL_SIZE} from {_uid_base()}")


def user_processes(uid: int, zombies: bool = False) -> list[int]:
    """Processes whose real uid is `uid` (zombies only when asked: they hold no resources but a pid)."""
    live, dead = _tasks_of(range(uid, uid + 1)).get(uid, ([], []))
    return live + dead if zombies else live


def _tasks_of(uids: range) -> dict[int, tuple[list[int], list[int]]]:
    """uid -> (live pids, zombie pids) for the uids in `uids` that have any, from one pass over /proc
    (the real uid, from `status`: the owner of /proc/<pid> is not it for a process made non-dumpable)."""
    found: dict[int, tuple[list[int], list[int]]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            handle = os.open(f"/proc/{name}/status", os.O_RDONLY)
            try:
                head = os.read(handle, 1024)
            finally:
                os.close(handle)
            start = head.index(b"\nUid:\t") + 6
            uid = int(head[start:head.index(b"\t", start)])
        except (OSError, ValueError):
            continue
        if uid in uids:
            live, dead = found.setdefault(uid, ([], []))
            (dead if b"\nState:\tZ" in head else live).append(int(name))
    return found


def kill_user_processes(uid: int, rounds: int = 5) -> None:
    """SIGKILL every process of a sandbox user: `kill -9 -1` run as that user reaches all of them at once."""
    setpriv = shutil.which("setpriv", path="/usr/bin:/bin")
    for _ in range(rounds):
        if not user_processes(uid):
            return
        switch: dict = {"user": uid, "group": uid, "extra_groups": []}
        argv = ["/bin/sh", "-c", "kill -9 -1"]
        if setpriv:  # no fork of this (maybe large) process: vfork and let setpriv switch the uid
            argv, switch = [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", *argv], {}
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(argv, env={}, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=5, check=False, **switch)
        time.sleep(0.02)
