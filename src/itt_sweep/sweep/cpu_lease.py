"""Hold more of Ray's CPUs for a while: what stage 3 generates with on CPU sweeps, beyond the trial's own.

A trial holds one CPU from start to end (its placement group), and its training workers hold theirs only
while they train. Stage 3 on CPU runs in the trial's process, so that it can report its progress to Tune,
and generates with `evaluation.cpus` threads. Holding those CPUs for the whole trial would leave training
too few on a small machine (two cores: the trial's two and the workers' one do not fit), and generating
with more threads than the trial holds would take cores Ray gives to other trials. So, once training has
freed its CPUs, the trial leases the rest from Ray: an idle actor that asks for them, outside the trial's
placement group, kept alive until generation ends. Ray's accounting then says what the machine is doing.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

log = logging.getLogger(__name__)

TRIAL_CPUS = 1  # what a trial's placement group holds: its own process, and stage 3 on CPU with the lease
WAIT_NOTICE_S = 30.0  # how long a lease may wait for CPUs before it says so in the trial's log


class _Lease:
    """Does nothing: it exists so that Ray counts its CPUs as taken."""

    def ready(self) -> bool:
        return True


@contextlib.contextmanager
def leased_cpus(cpus: float) -> Iterator[float]:
    """Hold `cpus` more CPUs from Ray for the block; yields the seconds spent waiting for them. Nothing is
    leased for `cpus <= 0` or outside Ray (the standalone evaluator owns its machine)."""
    import ray

    if cpus <= 0 or not ray.is_initialized():
        yield 0.0
        return
    start = time.perf_counter()
    # DEFAULT: outside the trial's placement group, whose bundle has only the trial's own CPU
    actor = ray.remote(_Lease).options(num_cpus=cpus, scheduling_strategy="DEFAULT").remote()
    try:
        ready = actor.ready.remote()
        while not ray.wait([ready], timeout=WAIT_NOTICE_S)[0]:
            log.info("stage 3 waits for %g more CPU(s) from Ray (other trials hold them)", cpus)
        ray.get(ready)
        yield time.perf_counter() - start
    finally:
        ray.kill(actor)
