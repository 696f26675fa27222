"""Everything a sweep checks and builds before Ray starts: preflight checks, the base model, the context.

Checks that can fail (data dir, toolchains, storage, checkpoint storage, tracking, GPUs) run here so a bad sweep
fails before any trial starts, with one message naming the field, and writes nothing.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from itt_sweep.config import SweepConfig, SweepFileError, stable_hash
from itt_sweep.data.mbxp import load_problems
from itt_sweep.data.paths import data_dir as resolve_data_dir
from itt_sweep.data.prompts import format_example
from itt_sweep.data.tasks import ALL, CONTROL, NONE, load_task_examples
from itt_sweep.modeling import SCRATCH_VERSION, ModelRef, build_scratch, check_loadable, is_scratch
from itt_sweep.sweep.cpu_lease import TRIAL_CPUS
from itt_sweep.sweep.storage import local_path, probe_uri, ray_locations
from itt_sweep.sweep.trial_logs import quiet_driver

log = logging.getLogger(__name__)


def preflight(sweep: SweepConfig, source: str) -> Path:
    """Environment checks that the schema cannot do; returns the resolved data dir."""
    problems: list[str] = []
    try:
        data = resolve_data_dir(sweep.data.dir)
        load_problems(sweep.matrix.source_languages[0], split="train", data_dir=data, limit=1)
    except (FileNotFoundError, ValueError) as exc:
        problems.append(f"data.dir: {exc}")
        data = Path(sweep.data.dir or ".")
    from itt_sweep.execution.recipes import RECIPES, available

    for lang in sweep.eval_languages:
        if not available(lang):
            problems.append(f"eval_languages: {lang} has no toolchain on this machine "
                            f"(install: {RECIPES[lang].install_hint}; see `itt-sweep doctor`)")
    model_problem = check_model(sweep)
    if model_problem:
        problems.append(f"model: {model_problem}")
    cpu_problem = check_local_cpus(sweep)
    if cpu_problem:
        problems.append(cpu_problem)
    if sweep.training.use_gpu and not _gpus_available():
        problems.append("training.use_gpu: true, but this machine has no GPU (set use_gpu: false)")
    storage_problem = check_writable(Path(sweep.storage.path).expanduser())
    if storage_problem:
        problems.append(f"storage.path: {storage_problem}")
    checkpoints_problem = check_checkpoints(sweep.storage.checkpoints)
    if checkpoints_problem:
        problems.append(f"storage.checkpoints: {checkpoints_problem}")
    if in_ray_job():
        problems += ray_job_problems(sweep)
    if problems:
        raise SweepFileError(source, problems)
    from itt_sweep.tracking.mlflow_runs import TrackingUnavailableError, check_reachable

    try:
        check_reachable(sweep.tracking.uri)
    except TrackingUnavailableError as exc:
        raise SweepFileError(source, [str(exc)]) from None
    return data


def check_local_cpus(sweep: SweepConfig) -> str | None:  # "<field>: <problem>", or None
    """On the embedded local cluster, a trial's CPU and its training workers must fit this machine at once,
    and so must stage 3's `evaluation.cpus`, or Ray would wait for CPUs forever. A real cluster (RAY_ADDRESS)
    autoscales: not checked."""
    if os.environ.get("RAY_ADDRESS") or in_ray_job() or sweep.training.use_gpu:
        return None
    training, have = sweep.training, os.cpu_count() or 1
    need = TRIAL_CPUS + training.num_workers * training.cpus_per_worker
    if need > have:
        return (f"training.cpus_per_worker: a trial needs {need:g} CPUs while it trains (its own {TRIAL_CPUS} + "
                f"num_workers {training.num_workers} x cpus_per_worker {training.cpus_per_worker:g}), this machine "
                f"has {have}; lower them (a worker of 0.5 CPU still runs one thread)")
    if sweep.evaluation.cpus > have:
        return f"evaluation.cpus: stage 3 needs {sweep.evaluation.cpus} CPUs, this machine has {have}"
    return None


def check_model(sweep: SweepConfig) -> str | None:
    """Why the base model cannot be used, or None: its config and tokenizer load (not its weights), it has an
    EOS token, and a chat template where a prompt format needs one. Scratch models are built by us."""
    if is_scratch(sweep.model.name):
        return None
    return check_loadable(resolved_ref(sweep), needs_chat_template="chat" in sweep.prompt_formats())


def resolved_ref(sweep: SweepConfig) -> ModelRef:
    """The base model's reference with a local directory made absolute (trials run in other directories)."""
    ref = ModelRef(**sweep.model.model_dump())
    local = Path(ref.name).expanduser()
    if local.is_dir():
        return ref.model_copy(update={"name": str(local.resolve())})
    return ref


def in_ray_job() -> bool:
    """True in the driver of a Ray Job (`make sweep` on a cluster): Ray sets this variable for entrypoints."""
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ


def ray_job_problems(sweep: SweepConfig) -> list[str]:
    """A Ray Job runs in a temporary copy of the checkout on the head node, deleted after the job (and
    replaced whenever the working dir is unpacked again): results under a relative path would go with it."""
    where = "use an absolute path on the cluster's shared storage (cluster.yaml: /mnt/efs/...)"
    problems = []
    if not Path(sweep.storage.path).expanduser().is_absolute():
        problems.append(f"storage.path: {sweep.storage.path!r} is relative, inside the Ray Job's temporary copy "
                        f"of the checkout; {where}")
    uri = sweep.tracking.uri
    if uri.startswith("sqlite:///") and not uri.removeprefix("sqlite:///").startswith("/"):
        problems.append(f"tracking.uri: {uri!r} is relative, inside the Ray Job's temporary copy of the checkout; "
                        f"{where}, or the MLflow server on the head (http://127.0.0.1:5000)")
    return problems


def check_writable(path: Path) -> str | None:
    """Why `path` cannot hold the sweep's outputs, or None; probes with a temp file that it removes again."""
    probe = path if path.exists() else next((p for p in path.parents if p.exists()), Path("/"))
    if not probe.is_dir():
        return f"{path} cannot be created: {probe} is not a directory"
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        return f"{path} is not writable ({probe}: {exc.strerror})"
    return None


def check_checkpoints(location: str | None) -> str | None:
    """Why Ray could not keep its state at `storage.checkpoints`, or None (also when it is unset).

    A local path is probed like storage.path; object storage by writing and deleting a small object, failing in
    seconds when the endpoint is unreachable, so a wrong bucket or missing credentials never reach a trial."""
    if location is None:
        return None
    local = local_path(location)
    if local is not None:
        return check_writable(local)
    reason = probe_uri(location)
    return f"cannot write {location}: {reason}" if reason else None


def _gpus_available() -> bool:
    if os.environ.get("RAY_ADDRESS"):
        return True  # a cluster's GPUs live on its worker nodes; Ray schedules against them
    import torch

    return torch.cuda.is_available()


def scratch_corpus(sweep: SweepConfig, data: Path) -> list[str]:
    """Texts the scratch tokenizer learns from: MBXP train problems of every language used + stage-1 data."""
    texts = []
    for lang in dict.fromkeys([*sweep.matrix.source_languages, *sweep.eval_languages]):
        texts += [p.prompt + (p.canonical_solution or "") for p in load_problems(lang, "train", data_dir=data)]
    for task in sweep.matrix.intermediate_tasks:
        if task not in (NONE, ALL, CONTROL):
            texts += ["\n".join(format_example(e)) for e in load_task_examples(task, "train", data, limit=500)]
    return texts


def base_model(sweep: SweepConfig, data: Path, storage_root: Path) -> tuple[ModelRef, str]:
    """(reference, cache key) of the base model; scratch models are built once and cached. A local directory
    is keyed by its absolute path: two directories of the same name may hold different weights."""
    name = sweep.model.name
    if not is_scratch(name):
        ref = resolved_ref(sweep)
        return ref, stable_hash({"model": ref.name, "gguf": ref.gguf_file, "rev": ref.revision})
    texts = scratch_corpus(sweep, data)
    key = stable_hash({"preset": name, "v": SCRATCH_VERSION, "corpus": stable_hash(texts, 32)})
    path = build_scratch(name.split(":", 1)[1], texts, storage_root / "models" / f"{name.replace(':', '-')}-{key}")
    return ModelRef(name=str(path)), key


def reference_dir(storage_root: Path) -> Path:
    """Where a sweep's verified references are cached: under the storage root, shared by its sweeps."""
    return storage_root / "references"


def verify_references(sweep: SweepConfig, data: Path, storage_root: Path) -> float:
    """Verifies (or finds cached) every eval language's references before the first trial, so that every
    trial scores them on its prompts' prefill, one scoring path for the whole sweep (the first trial would
    otherwise score them afterwards, in other batches, 5th-digit apart); returns the seconds it took."""
    from itt_sweep.evaluate.references import verified_references
    from itt_sweep.evaluate.stage3 import eval_problems
    from itt_sweep.execution.types import Limits

    start = time.perf_counter()
    limits = Limits(timeout_s=sweep.evaluation.timeout_s)
    for lang, problems in eval_problems(sweep.eval_languages, sweep.data.eval_problems, data).items():
        verified_references(lang, problems, data, reference_dir(storage_root), limits,
                            sweep.evaluation.allow_unsandboxed)
    return time.perf_counter() - start


def sweep_context(sweep: SweepConfig, data: Path) -> dict[str, Any]:
    storage_root = Path(sweep.storage.path).expanduser().resolve()
    sweep_dir = storage_root / sweep.name
    sweep_dir.mkdir(parents=True, exist_ok=True)
    quiet_driver(sweep_dir)  # before the base model is built: its progress bars go to the driver log
    model_ref, model_key = base_model(sweep, data, storage_root)
    log.info("references of %d eval languages verified in %.0f s", len(sweep.eval_languages),
             verify_references(sweep, data, storage_root))
    return {"sweep": sweep.model_dump(mode="json"), "data_dir": str(data.resolve()),
            "storage_root": str(storage_root), "sweep_dir": str(sweep_dir),
            "base_model": model_ref.model_dump(), "base_model_key": model_key, **ray_locations(sweep, sweep_dir)}
