"""Execution on a Ray cluster: chunks of programs as Ray tasks that need the custom resource `sandbox`.

On a cluster the GPU nodes generate and the CPU nodes execute: start the CPU nodes with
`ray start --address=<head> --resources='{"sandbox": <cores>}'` (and the toolchains installed). Each task
takes one unit of `sandbox` and no Ray CPU (trials may hold every CPU of a node; the sandbox resource is
what bounds execution), and runs its chunk on the local pool with one worker. Chunks hold one language,
so a chunk of a batch language is one compiler call on its node.

`execute` picks this backend when Ray is initialised in this process and the cluster advertises `sandbox`;
the sandbox check (bubblewrap, `allow_unsandboxed`) then happens on the executing node, where it matters.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

from itt_sweep.execution.recipes import RECIPES
from itt_sweep.execution.types import Program, Verdict
from itt_sweep.execution.verdicts import sandbox_error

RESOURCE = "sandbox"
MIN_CHUNK = 8
MAX_CHUNK = 64  # for languages without a batch recipe: bounds the work lost with a failed node


def sandbox_capacity() -> float:
    """Units of the `sandbox` resource in the Ray cluster this process is connected to (0 when none)."""
    if "ray" not in sys.modules:  # nobody imported Ray, so it cannot be initialised
        return 0.0
    import ray

    if not ray.is_initialized():
        return 0.0
    return float(ray.cluster_resources().get(RESOURCE, 0.0))


def chunk_programs(programs: Sequence[Program], capacity: float) -> list[list[int]]:
    """Indices of `programs` in chunks of one language each, about one chunk per sandbox unit."""
    groups: dict[str, list[int]] = {}
    for index, program in enumerate(programs):
        groups.setdefault(program.language, []).append(index)
    chunks = []
    for language, members in groups.items():
        recipe = RECIPES.get(language)
        cap = recipe.batch.max_programs if recipe is not None and recipe.batch is not None else MAX_CHUNK
        size = min(cap, max(MIN_CHUNK, math.ceil(len(members) / max(capacity, 1.0))))
        chunks += [members[start:start + size] for start in range(0, len(members), size)]
    return chunks


def execute_distributed(programs: Sequence[Program], *, allow_unsandboxed: bool = False,
                        batch: bool = True) -> list[Verdict]:
    """Verdicts of `programs`, in order, from Ray tasks on the nodes that offer `sandbox`."""
    import ray

    capacity = sandbox_capacity()
    if capacity <= 0:
        raise RuntimeError(f"the Ray cluster has no '{RESOURCE}' resource: start CPU nodes with "
                           f"--resources='{{\"{RESOURCE}\": <cores>}}' or use the local backend")
    # SPREAD: outside the calling trial's placement group (whose bundles hold no `sandbox`), over the sandbox nodes
    task = ray.remote(_execute_chunk).options(resources={RESOURCE: 1}, num_cpus=0, max_retries=2,
                                              scheduling_strategy="SPREAD")
    chunks = chunk_programs(programs, capacity)
    refs = [task.remote([programs[index] for index in chunk], allow_unsandboxed, batch) for chunk in chunks]
    verdicts: list[Verdict | None] = [None] * len(programs)
    for chunk, chunk_verdicts in zip(chunks, ray.get(refs), strict=True):
        for index, verdict in zip(chunk, chunk_verdicts, strict=True):
            verdicts[index] = verdict
    return [verdict or sandbox_error("no verdict came back from Ray") for verdict in verdicts]


def _execute_chunk(programs: list[Program], allow_unsandboxed: bool, batch: bool) -> list[Verdict]:
    """One Ray task: the local pool with one worker on the node the task landed on."""
    from itt_sweep.execution.executor import sandbox_mode
    from itt_sweep.execution.pool import execute_local

    sandboxed = sandbox_mode(len(programs), allow_unsandboxed)
    return execute_local(programs, workers=1, sandboxed=sandboxed, batch=batch)
