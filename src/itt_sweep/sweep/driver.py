"""The Ray Tune driver: the matrix of cells × the search space, run, resume, and the heatmap at the end."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from itt_sweep.config import SweepConfig, load_sweep
from itt_sweep.sweep.prepare import preflight, sweep_context
from itt_sweep.sweep.trial import run_trial

log = logging.getLogger(__name__)
TUNE_DIR = "tune"


def search_space(sweep: SweepConfig) -> dict[str, Any]:
    from ray import tune

    makers = {"loguniform": lambda d: tune.loguniform(d.low, d.high),
              "uniform": lambda d: tune.uniform(d.low, d.high),
              "randint": lambda d: tune.randint(int(d.low), int(d.high)),
              "choice": lambda d: tune.choice(d.values)}
    return {name: makers[dist.type](dist) for name, dist in sweep.search.space.items()}


def scheduler(sweep: SweepConfig):
    if sweep.search.scheduler == "none":
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="target_step", metric="target_val_loss", mode="min",
                         max_t=sweep.stages.target.steps, grace_period=sweep.search.grace_period)


def init_ray() -> None:
    """The embedded local cluster unless RAY_ADDRESS points at a real one."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS") or "local"
    ray.init(address=address, include_dashboard=False, log_to_driver=True,
             runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})


def trainable(ctx: dict[str, Any]):
    from ray import tune

    return tune.with_resources(tune.with_parameters(run_trial, ctx=ctx), {"CPU": 1})


def start_tracking(sweep: SweepConfig, ctx: dict[str, Any], sweep_path: Path) -> None:
    from itt_sweep.tracking.mlflow_runs import client_for, experiment_id, find_or_create_run

    client = client_for(sweep.tracking.uri)
    exp = experiment_id(client, sweep.tracking.experiment or f"itt-sweep/{sweep.name}")
    tags = {"itt.sweep": sweep.name, "itt.sweep_hash": sweep.config_hash(), "itt.role": "sweep"}
    parent = find_or_create_run(client, exp, tags, run_name=sweep.name, key_tags=("itt.sweep", "itt.sweep_hash"))
    resolved = Path(ctx["sweep_dir"]) / "sweep.resolved.yaml"
    resolved.write_text(f"# resolved from {sweep_path}\n" + yaml.safe_dump(ctx["sweep"], sort_keys=False))
    client.log_artifact(parent, str(resolved))
    ctx.update(tracking_uri=sweep.tracking.uri, experiment_id=exp, parent_run_id=parent)


def run_sweep(sweep_path: str | Path) -> SweepOutcome:
    """Validate, prepare, run every trial, then build and log the heatmaps; returns the heatmap dir."""
    sweep = load_sweep(sweep_path)
    data = preflight(sweep, str(sweep_path))
    ctx = sweep_context(sweep, data)
    start_tracking(sweep, ctx, Path(sweep_path))
    init_ray()
    from ray import tune

    cells = [list(c) for c in sweep.cells()]
    tuner = tune.Tuner(
        trainable(ctx),
        param_space={"cell": tune.grid_search(cells), "hp": search_space(sweep)},
        tune_config=tune.TuneConfig(num_samples=sweep.search.num_samples, scheduler=scheduler(sweep),
                                    max_concurrent_trials=sweep.resources.max_concurrent_trials),
        run_config=tune.RunConfig(name=TUNE_DIR, storage_path=ctx["sweep_dir"],
                                  failure_config=tune.FailureConfig(max_failures=sweep.resources.max_failures)),
    )
    results = tuner.fit()
    return finish_sweep(sweep, ctx, results)


def resume_sweep(sweep_dir: str | Path, resume_errored: bool = True) -> SweepOutcome:
    """Continue an interrupted sweep from its Tune experiment: finished trials are not rerun."""
    sweep_dir = Path(sweep_dir).resolve()
    resolved = sweep_dir / "sweep.resolved.yaml"
    if not resolved.is_file():
        raise FileNotFoundError(f"{sweep_dir} is not a sweep directory (no sweep.resolved.yaml)")
    sweep = load_sweep(resolved)
    data = preflight(sweep, str(resolved))
    ctx = sweep_context(sweep, data)
    start_tracking(sweep, ctx, resolved)
    init_ray()
    from ray import tune

    tuner = tune.Tuner.restore(str(sweep_dir / TUNE_DIR), trainable=trainable(ctx),
                               resume_errored=resume_errored)
    return finish_sweep(sweep, ctx, tuner.fit())


@dataclass
class SweepOutcome:
    heatmap_dir: Path
    outputs: list[Path]
    n_trials: int
    n_errors: int


def finish_sweep(sweep: SweepConfig, ctx: dict[str, Any], results) -> SweepOutcome:
    from itt_sweep.analysis.heatmap import write_outputs
    from itt_sweep.analysis.results import records_from_dirs, records_from_mlflow, to_frame
    from itt_sweep.tracking.mlflow_runs import client_for

    errors = [r for r in results if r.error]
    try:
        records = records_from_mlflow(ctx["tracking_uri"], ctx["parent_run_id"])
    except Exception as exc:  # noqa: BLE001  (MLflow down: the run dirs hold the same numbers)
        log.warning("MLflow unavailable (%s); building the heatmap from run directories", exc)
        records = records_from_dirs(Path(ctx["sweep_dir"]))
    out = Path(ctx["sweep_dir"]) / "heatmaps"
    out.mkdir(exist_ok=True)
    paths = write_outputs(to_frame(records), out) if records else []
    client = client_for(ctx["tracking_uri"])
    for path in paths:
        client.log_artifact(ctx["parent_run_id"], str(path), artifact_path="heatmaps")
    client.set_terminated(ctx["parent_run_id"], status="FAILED" if errors else "FINISHED")
    if errors:
        log.error("%d trial(s) failed: %s", len(errors), ", ".join(str(r.error)[:200] for r in errors))
    return SweepOutcome(out, paths, len(results), len(errors))
