"""One trial, as a Ray Tune function trainable: stage 1 → stage 2 → stage 3, logged to its MLflow child run.

The trial writes its resolved config and metrics as JSON into its own directory (jiant style), so the
transfer table can be rebuilt from storage even when MLflow is down.
"""

from __future__ import annotations

import json
import math
import time
import traceback
from pathlib import Path
from typing import Any

from itt_sweep.config import Cell, StageSpec, SweepConfig
from itt_sweep.data.mbxp import problems_file
from itt_sweep.data.paths import fingerprint
from itt_sweep.data.tasks import CONTROL, NONE, task_files, task_version
from itt_sweep.modeling import ModelRef
from itt_sweep.sweep.prepare import reference_dir
from itt_sweep.sweep.storage import TRAIN_DIR
from itt_sweep.sweep.trial_logs import output_to, trial_log_dir
from itt_sweep.train.job import StageData, StageJob
from itt_sweep.train.stage import run_stage, stage_key, stage_metrics

SEARCH_SECTIONS = {"intermediate": ("stages", "intermediate"), "target": ("stages", "target"),
                   "training": ("training",)}


def apply_overrides(sweep: SweepConfig, hp: dict[str, Any]) -> SweepConfig:
    """The sweep config with this trial's sampled hyperparameters written into their sections."""
    raw = sweep.model_dump()
    for dotted, value in hp.items():
        section, field = dotted.split(".", 1)
        target = raw
        for part in SEARCH_SECTIONS[section]:
            target = target[part]
        target[field] = value
    return SweepConfig.model_validate(raw)


def stage_job(sweep: SweepConfig, ctx: dict[str, Any], cell: Cell, stage_name: str, spec: StageSpec,
              init_model: ModelRef, upstream_key: str | None) -> StageJob:
    """The job of one stage; its key hashes what changes the trained weights (not where or how fast)."""
    intermediate = stage_name == "intermediate"
    data = StageData(
        kind=stage_name,
        task=cell.intermediate_task if intermediate else None,
        task_version=task_version(cell.intermediate_task) if intermediate else None,
        # stage 1 does not depend on the source language, except the control's, which trains on its problems
        source_language=None if intermediate and cell.intermediate_task != CONTROL else cell.source_language,
        train_limit=sweep.data.intermediate_train_examples if intermediate else sweep.data.target_train_problems,
        val_limit=sweep.data.intermediate_val_examples if intermediate else sweep.data.target_val_problems,
        files=data_fingerprint(cell, intermediate, Path(ctx["data_dir"])),
    )
    bf16 = sweep.training.precision == "bf16" or (sweep.training.precision == "auto" and sweep.training.use_gpu)
    unkeyed = {"cpus_per_worker", "compile"}
    keyed = {"data": data.model_dump(), "stage": spec.model_dump(),
             "training": sweep.training.model_dump(exclude=unkeyed), "bf16": bf16}
    key = stage_key(ctx["base_model_key"], upstream_key, keyed, cell.seed)
    return StageJob(key=key, stage_name=stage_name, init_model=init_model, seed=cell.seed, bf16=bf16, stage=spec,
                    training=sweep.training, data=data.model_copy(update={"data_dir": ctx["data_dir"]}),
                    max_failures=sweep.resources.max_failures)


def data_fingerprint(cell: Cell, intermediate: bool, data_dir: Path) -> str:
    """Which copy of the data a stage reads, for its cache key (the task versions name only the mapping)."""
    files = task_files(cell.intermediate_task, data_dir, cell.source_language) if intermediate else \
        [problems_file(cell.source_language, data_dir)]
    return fingerprint(files)


def run_trial(config: dict[str, Any], ctx: dict[str, Any]) -> None:
    """Tune entry point: `config` holds the cell and the sampled hyperparameters; `ctx` the sweep context.
    What the trial prints goes to `<sweep>/logs/<trial key>/trial.log` (`trial_logs`)."""
    with output_to(trial_log_dir(ctx["sweep_dir"], config["trial_key"]) / "trial.log"):
        try:
            _run_trial(config, ctx)
        except BaseException:
            traceback.print_exc()  # the log the console points to holds the whole error, not Ray's snippet
            raise


def _run_trial(config: dict[str, Any], ctx: dict[str, Any]) -> None:
    from ray import tune

    from itt_sweep.tracking.summary import cell_params
    from itt_sweep.tracking.trial_run import TrialRun

    cell = Cell(*config["cell"])
    hp = config.get("hp", {})
    sweep = apply_overrides(SweepConfig.model_validate(ctx["sweep"]), hp)
    key, started = config["trial_key"], time.perf_counter()
    trial_dir = Path(ctx["sweep_dir"]) / "trials" / key
    trial_dir.mkdir(parents=True, exist_ok=True)
    tags = {"itt.intermediate_task": cell.intermediate_task, "itt.source_language": cell.source_language,
            "itt.seed": str(cell.seed), "itt.cell": cell.key, "itt.sweep": sweep.name}
    run = TrialRun(ctx["tracking_uri"], ctx["experiment_id"], ctx["parent_run_id"], key, tags,
                   trial_dir / ".tracking")
    run.start()
    # the cell and searched values flat (`task`, `source`, `seed`, `target_lr`, ...) for the UI's compare views
    run.log_params({**cell_params(*cell, hp), "hp": hp, "stages": sweep.stages.model_dump(),
                    "training": sweep.training.model_dump(), "evaluation": sweep.evaluation.model_dump(),
                    "model": sweep.model.model_dump()})
    (trial_dir / "config.json").write_text(json.dumps({"cell": list(cell), "hp": hp, "trial_key": key,
                                                       "sweep": sweep.model_dump(mode="json")}, indent=1))
    phases: dict[str, Any] = {}
    try:
        model_dir, val_loss = train_stages(sweep, ctx, cell, run, trial_log_dir(ctx["sweep_dir"], key), phases)
        # `itt-sweep eval --model <trial dir>` finds the trained model through this
        (trial_dir / "model.json").write_text(json.dumps({"model": str(model_dir)}) + "\n")
        tune.report({"stage": "eval", "target_step": sweep.stages.target.steps, "target_val_loss": val_loss})
        metrics, records, phases["eval"] = run_stage3(sweep, model_dir, ctx, trial_dir)
    except BaseException:
        run.finish("FAILED")
        run.deliver(timeout_s=10)
        raise
    write_completions(trial_dir, records)
    write_record(trial_dir, cell, key, val_loss, metrics, phases)
    clock = time.perf_counter()
    run.log_eval(metrics, val_loss)
    run.log_artifacts([trial_dir / "config.json", trial_dir / "completions"])
    run.finish()
    run.deliver(timeout_s=sweep.tracking.deliver_timeout_s)
    phases.update(tracking_s=time.perf_counter() - clock, trial_s=time.perf_counter() - started)
    write_record(trial_dir, cell, key, val_loss, metrics, phases)  # again, with the delivery's time
    run.log_timings(phases)
    run.log_artifacts([trial_dir / "metrics.json"])
    run.deliver(timeout_s=sweep.tracking.deliver_timeout_s)
    flat = {f"eval/{lang}/{name}": v for lang, per in metrics.items() for name, v in per.items()}
    tune.report({"stage": "done", "target_step": sweep.stages.target.steps, "target_val_loss": val_loss,
                 "trial_key": key, **flat})


def train_stages(sweep: SweepConfig, ctx: dict[str, Any], cell: Cell, run, log_dir: Path | None = None,
                 phases: dict[str, Any] | None = None) -> tuple[Path, float]:
    """Stages 1 and 2 through the stage cache; returns the stage-2 model dir and its validation loss.
    The Ray Train workers write their output under `log_dir`; where each stage's time went goes to `phases`."""
    from ray import tune

    model, upstream = ModelRef.model_validate(ctx["base_model"]), None
    stages = [("target", sweep.stages.target)]
    if cell.intermediate_task != NONE:
        stages.insert(0, ("intermediate", sweep.stages.intermediate))
    ledger = Path(ctx["sweep_dir"]) / TRAIN_DIR  # local even when the Ray Train runs go to storage.checkpoints
    val_loss = math.nan
    for name, spec in stages:
        job = stage_job(sweep, ctx, cell, name, spec, model, upstream)
        job = job.model_copy(update={"log_dir": str(log_dir) if log_dir else None})
        tune.report({"stage": name, f"{name}_steps": spec.steps})  # the live view's stage clock starts here
        clock = time.perf_counter()
        entry, trained_now = run_stage(job, Path(ctx["storage_root"]) / "stages", ctx["train_storage"], ledger)
        done = stage_metrics(entry)
        if phases is not None:
            phases[name] = stage_phases(time.perf_counter() - clock, trained_now, done.get("phases", {}))
        if not trained_now:  # the live view counts it as a cache hit, not as a stage's training time
            tune.report({"stage": name, "cached": True, f"{name}_step": spec.steps, f"{name}_steps": spec.steps})
        run.log_stage(name, done["history"], job.key, trained_now)
        model, upstream = ModelRef(name=str(entry)), job.key
        val_loss = done["final"].get(f"{name}_val_loss", math.nan)
    return Path(model.name), val_loss


def stage_phases(wall_s: float, trained_now: bool, loop: dict[str, float]) -> dict[str, Any]:
    """A stage's wall time split into the loop's phases and the rest: starting and ending the Ray Train worker
    group, handing the checkpoint over, publishing to the stage cache. A cache hit costs only its wall time."""
    if not trained_now:
        return {"wall_s": wall_s, "cached": True}
    spent = sum(v for k, v in loop.items() if k.endswith("_s") and not k.endswith("_per_s"))
    return {"wall_s": wall_s, "cached": False, **loop, "workers_and_handover_s": max(0.0, wall_s - spent)}


class EvalProgress:
    """Stage 3's progress for the live view: the language being generated and the samples generated of all,
    sent to Tune at most every `every_s` (each report is a result row Tune keeps, so not one per sample).
    Only where stage 3 runs in the trial's process (CPU sweeps): a Ray task cannot report to the trial."""

    def __init__(self, problems_per_language: dict[str, int], samples: int = 1, every_s: float = 10.0) -> None:
        self.total = sum(problems_per_language.values()) * samples
        self.done, self.every_s, self.last = 0, every_s, 0.0

    def __call__(self, language: str, rows: int) -> None:
        from ray import tune

        self.done += rows
        now = time.monotonic()
        if now - self.last >= self.every_s or self.done >= self.total:
            self.last = now
            tune.report({"stage": "eval", "eval_language": language, "eval_step": min(self.done, self.total),
                         "eval_steps": self.total})


def evaluate_with_stats(*args: Any, progress: EvalProgress | None = None
                        ) -> tuple[dict[str, dict[str, float]], dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """`evaluate_model` and where its time went (a Ray task returns only what the function returns)."""
    from dataclasses import asdict

    from itt_sweep.evaluate.stage3 import Stage3Stats, evaluate_model

    stats = Stage3Stats()
    metrics, records = evaluate_model(*args, stats=stats, progress=progress)
    return metrics, records, {**asdict(stats), "new_tokens_per_s": stats.new_tokens / stats.generate_s
                              if stats.generate_s > 0 else math.nan}


def run_stage3(sweep: SweepConfig, model_dir: Path, ctx: dict[str, Any], trial_dir: Path):
    """Generation on a GPU when the sweep trains on GPUs: a Ray task that takes the GPU training just freed
    (the trial itself holds only its CPU); on CPU sweeps, in the trial process, which generates with
    `evaluation.cpus` threads: its own CPU and the rest leased from Ray now that training has freed them
    (`cpu_lease`). Per-language results go to `<trial>/stage3/` as they finish, so a restarted trial
    continues stage 3 where it stopped."""
    from itt_sweep.evaluate.stage3 import eval_problems
    from itt_sweep.sweep.cpu_lease import TRIAL_CPUS, leased_cpus

    data_dir = Path(ctx["data_dir"])
    args = (ModelRef(name=str(model_dir)), eval_problems(sweep.eval_languages, sweep.data.eval_problems, data_dir),
            sweep.evaluation, data_dir, reference_dir(Path(ctx["storage_root"])), trial_dir / "stage3")
    if not sweep.training.use_gpu:
        sizes = {lang: len(items) for lang, items in args[1].items()}
        with leased_cpus(sweep.evaluation.cpus - TRIAL_CPUS) as waited_s:
            metrics, records, stats = evaluate_with_stats(
                *args, progress=EvalProgress(sizes, sweep.evaluation.num_samples))
        return metrics, records, {**stats, "cpu_lease_wait_s": waited_s}
    import ray

    # DEFAULT: outside the trial's placement group, whose bundle has no GPU
    task = ray.remote(evaluate_with_stats).options(num_gpus=1, num_cpus=sweep.evaluation.cpus,
                                              scheduling_strategy="DEFAULT")
    return ray.get(task.remote(*args))


def write_record(trial_dir: Path, cell: Cell, key: str, val_loss: float, metrics: dict[str, dict[str, float]],
                 phases: dict[str, Any] | None = None) -> None:
    """`metrics.json`: the trial's numbers, from which the transfer tables can be rebuilt without MLflow."""
    record = {"trial_key": key, "intermediate_task": cell.intermediate_task,
              "source_language": cell.source_language, "seed": cell.seed,
              "val_loss": val_loss if math.isfinite(val_loss) else None, "eval": metrics,
              "phases": phases or {}}
    (trial_dir / "metrics.json").write_text(json.dumps(record, indent=1))


def write_completions(trial_dir: Path, records: dict[str, list[dict[str, Any]]]) -> None:
    out = trial_dir / "completions"
    out.mkdir(exist_ok=True)
    for language, rows in records.items():
        (out / f"{language}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
