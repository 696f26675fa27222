"""Where a training loop reports to: Ray Train inside workers, or a plain local stand-in for benchmarks.

The loop talks only to this small interface, so the same module runs under Ray Train on a cluster and as a
single process on a GPU machine that has no Ray.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("itt_sweep.train")


class Session(Protocol):
    rank: int
    world_size: int

    def get_checkpoint(self) -> Any: ...

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None = None, export: bool = False) -> None: ...

    def log(self, message: str) -> None: ...

    def step_done(self) -> None: ...


class RaySession:
    """Ray Train worker session: reports go to the TorchTrainer (and on to Tune through its callback)."""

    def __init__(self) -> None:
        import ray.train

        context = ray.train.get_context()
        self.rank = context.get_world_rank()
        self.world_size = context.get_world_size()

    def get_checkpoint(self) -> Any:
        import ray.train

        return ray.train.get_checkpoint()

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None = None, export: bool = False) -> None:
        import ray.train

        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        name = None
        if export:
            name = "export"
        elif checkpoint_dir is not None:
            # Every rank must use the same directory name so Ray merges their shards into one checkpoint.
            step = next((v for k, v in metrics.items() if k.endswith("_step")), 0)
            name = f"step_{int(step):07d}"
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)

    def log(self, message: str) -> None:
        log.warning("[rank %d] %s", self.rank, message)

    def step_done(self) -> None:
        pass


class _LocalCheckpoint:
    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def as_directory(self):
        from contextlib import nullcontext

        return nullcontext(self.path)


class LocalSession:
    """One process, no Ray: keeps the latest checkpoint in a temp dir and the reports in a list."""

    def __init__(self, checkpoint_root: str | None = None, on_step: Callable[[], None] | None = None) -> None:
        self.rank, self.world_size = 0, 1
        self.on_step = on_step  # the GPU benchmark's profiler steps here
        self.root = Path(checkpoint_root or tempfile.mkdtemp(prefix="itt-local-"))
        self.reports: list[dict[str, Any]] = []
        self.latest: _LocalCheckpoint | None = None

    def get_checkpoint(self) -> _LocalCheckpoint | None:
        return self.latest

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None = None, export: bool = False) -> None:
        self.reports.append(dict(metrics))
        if checkpoint_dir:
            dest = self.root / ("export" if export else f"ckpt_{len(self.reports):05d}")
            shutil.copytree(checkpoint_dir, dest, dirs_exist_ok=True)
            self.latest = _LocalCheckpoint(dest)

    def log(self, message: str) -> None:
        log.warning(message)

    def step_done(self) -> None:
        if self.on_step is not None:
            self.on_step()
