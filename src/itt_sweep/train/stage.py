"""One training stage as a Ray Train run, behind a content-addressed stage cache.

A stage's output (consolidated HF model + tokenizer + metrics) lives in `<storage>/stages/<key>/`, where the
key hashes (base model, upstream key, stage config, seed). The entry is copied to a temp name and renamed
when complete, with a manifest of file sizes; an entry whose files do not match its manifest is never read.
Trials that need an entry another trial is writing wait on a file lock instead of training it twice.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from filelock import FileLock

from itt_sweep.config import stable_hash
from itt_sweep.train.job import StageJob

log = logging.getLogger(__name__)

MANIFEST = "COMPLETE.json"
# stage-2: joint prompt/completion tokenisation, BOS rule, fp32 master-weight export, no decay on norms/biases
STAGE_CODE_VERSION = "stage-2"


def stage_key(base_model: str, upstream_key: str | None, stage_config: dict[str, Any], seed: int) -> str:
    return stable_hash({"base": base_model, "upstream": upstream_key, "stage": stage_config, "seed": seed,
                        "code": STAGE_CODE_VERSION})


def write_manifest(entry: Path) -> None:
    files = {str(p.relative_to(entry)): p.stat().st_size for p in sorted(entry.rglob("*")) if p.is_file()}
    (entry / MANIFEST).write_text(json.dumps({"files": files}, indent=1))


def is_complete(entry: Path) -> bool:
    """True only for an entry whose every listed file exists with its recorded size."""
    manifest = entry / MANIFEST
    if not manifest.is_file():
        return False
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError):
        return False
    return all((entry / name).is_file() and (entry / name).stat().st_size == size for name, size in files.items())


def publish(source_dir: Path, entry: Path) -> Path:
    """Copy a finished export into the cache atomically (temp name, manifest, rename)."""
    tmp = entry.with_name(f"{entry.name}.tmp-{uuid.uuid4().hex[:8]}")
    shutil.copytree(source_dir, tmp)
    write_manifest(tmp)
    if entry.exists():  # a corrupt leftover: move it aside, never read it
        shutil.rmtree(entry)
    os.rename(tmp, entry)
    return entry


def fit_stage(job: StageJob, run_name: str, storage_path: str, ledger_dir: Path | None = None) -> Path:
    """Run the stage under TorchTrainer; calling it again with the same name resumes from the last checkpoint.

    `storage_path` is where Ray Train keeps the run and its checkpoints: a local dir or a URI (s3://...). The
    ledger goes to `ledger_dir`, by default `storage_path` itself, which must then be local."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from itt_sweep.train.loop import train_loop_per_worker

    if ledger_dir is None and "://" in storage_path:
        raise ValueError(f"a remote storage_path ({storage_path}) needs a local ledger_dir")
    training = job.training
    callbacks = []
    try:
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks.append(TuneReportCallback())
    except RuntimeError:  # not inside a Tune trial (a direct `itt-sweep` stage run or a test)
        pass
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=job.model_dump(mode="json"),
        scaling_config=ScalingConfig(num_workers=training.num_workers, use_gpu=training.use_gpu,
                                     resources_per_worker={"CPU": training.cpus_per_worker}),
        # one checkpoint kept: the latest step to resume from, then the export that replaces it (a SmolLM2
        # stage's step checkpoint with optimizer state is 2.1 GB; a study's 33 stages would fill the disk)
        run_config=RunConfig(name=run_name, storage_path=storage_path, callbacks=callbacks,
                             checkpoint_config=CheckpointConfig(num_to_keep=1),
                             failure_config=FailureConfig(max_failures=job.max_failures),
                             worker_runtime_env={"env_vars": worker_env(training.use_gpu,
                                                                        training.cpus_per_worker)}),
    )
    record_fit(ledger_dir or Path(storage_path), run_name)
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"stage {run_name} finished without an exported model")
    return Path(result.checkpoint.to_directory())


def record_fit(storage: Path, run_name: str) -> None:
    """One ledger line per training run started, so "never retrained" can be counted, not assumed."""
    storage.mkdir(parents=True, exist_ok=True)
    with (storage / "ledger.jsonl").open("a") as f:
        f.write(json.dumps({"run": run_name, "pid": os.getpid(), "time": time.time()}) + "\n")


def worker_env(use_gpu: bool, cpus_per_worker: float = 1) -> dict[str, str]:
    """CPU workers: as many OMP threads as CPUs Ray reserves for each (set before torch is imported)."""
    from itt_sweep.train.loop import cpu_threads

    return {} if use_gpu else {"OMP_NUM_THREADS": str(cpu_threads(cpus_per_worker)), "DS_ACCELERATOR": "cpu"}


def run_stage(job: StageJob, cache_root: Path, storage_path: str,
              ledger_dir: Path | None = None) -> tuple[Path, bool]:
    """The cached model dir of this stage, training it first if needed; returns (path, trained_now).

    The cache is always local (file lock, rename); the Ray Train run may be remote (see `fit_stage`)."""
    cache_root.mkdir(parents=True, exist_ok=True)
    entry = cache_root / job.key
    if is_complete(entry):
        return entry, False
    with FileLock(str(cache_root / f"{job.key}.lock")):
        if is_complete(entry):  # another trial finished it while we waited
            return entry, False
        export = fit_stage(job, run_name=f"stage-{job.key}", storage_path=storage_path, ledger_dir=ledger_dir)
        try:
            publish(export, entry)
        finally:
            shutil.rmtree(export, ignore_errors=True)
    log.info("stage %s trained and cached at %s", job.stage_name, entry)
    return entry, True


def stage_metrics(entry: Path) -> dict[str, Any]:
    return json.loads((entry / "stage_metrics.json").read_text())
