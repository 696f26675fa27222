"""Turn programs into verdicts: `execute` is the executor's one entry point.

    verdicts = execute(programs)                      # local pool, or Ray tasks when a cluster offers them

Programs are deduplicated, batch-compiled where the language allows (`batching`), and run in parallel
(`pool`), or shipped as Ray tasks to the nodes that advertise the `sandbox` resource (`distributed`).
Verdicts only depend on what a program does, so deterministic programs get the same verdicts run after
run, in any backend and any grouping, and nothing a program does makes `execute` raise: a failure of our
own machinery becomes a `sandbox_error` verdict carrying the reason. What the sandbox guarantees, and what
it does not, is in `sandbox`'s docstring; what an exit means is in `verdicts`'.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

from itt_sweep.execution.distributed import execute_distributed, sandbox_capacity
from itt_sweep.execution.pool import default_workers, execute_local
from itt_sweep.execution.sandbox import SandboxUnavailableError, bwrap_status
from itt_sweep.execution.types import Program, Verdict
from itt_sweep.execution.verdicts import classify

__all__ = ["classify", "execute", "execute_one", "sandbox_mode"]

log = logging.getLogger(__name__)

Backend = Literal["auto", "local", "ray"]


def execute(programs: Sequence[Program], workers: int | None = None, *, allow_unsandboxed: bool = False,
            batch: bool = True, backend: Backend = "auto") -> list[Verdict]:
    """Run every program (compile, then run with its tests) and return one verdict each, in order.

    `workers`: local pool size (default: the cores this process may use). `batch=False` compiles each
    program alone (slower, same verdicts). `backend`: "local", "ray" (tasks needing the `sandbox`
    resource), or "auto" = "ray" when Ray is initialised here and its cluster has that resource.
    Refuses with `SandboxUnavailableError` when bubblewrap cannot run, unless `allow_unsandboxed`.
    """
    if backend not in ("auto", "local", "ray"):
        raise ValueError(f"backend must be 'auto', 'local' or 'ray', not {backend!r}")
    if backend == "ray" or (backend == "auto" and programs and sandbox_capacity() > 0):
        return execute_distributed(programs, allow_unsandboxed=allow_unsandboxed, batch=batch) if programs else []
    sandboxed = sandbox_mode(len(programs), allow_unsandboxed)
    if not programs:
        return []
    return execute_local(programs, workers or default_workers(), sandboxed, batch)


def execute_one(program: Program, sandboxed: bool) -> Verdict:
    """One program on this machine, alone; `sandboxed=False` runs it under rlimits and (as root)
    a leased uid only, as `allow_unsandboxed` does when bubblewrap is missing."""
    return execute_local([program], workers=1, sandboxed=sandboxed)[0]


def sandbox_mode(count: int, allow_unsandboxed: bool) -> bool:
    """True when bubblewrap works here; False when it does not and the caller accepts that (with a warning
    on every call); SandboxUnavailableError otherwise."""
    sandboxed, reason = bwrap_status()
    if sandboxed:
        return True
    if not allow_unsandboxed:
        raise SandboxUnavailableError(
            f"{reason}. Generated code would run without namespace isolation; install bubblewrap "
            "(scripts/install_toolchains.sh) or pass allow_unsandboxed=True to accept the risk.")
    log.warning("running %d programs WITHOUT a sandbox (%s): rlimits and process-group kills only", count, reason)
    return False
