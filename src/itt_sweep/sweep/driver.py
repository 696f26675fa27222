"""The Ray Tune driver: the matrix of cells × the search space, run, resume, and the heatmap at the end."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from itt_sweep.config import SweepConfig, SweepFileError, load_sweep, trial_count
from itt_sweep.data.tasks import CONTROL
from itt_sweep.sweep.prepare import in_ray_job, preflight, sweep_context
from itt_sweep.sweep.progress import SweepView
from itt_sweep.sweep.schedulers import make_scheduler
from itt_sweep.sweep.search import CellSearcher
from itt_sweep.sweep.storage import TUNE_DIR, tune_location, tune_state_header
from itt_sweep.sweep.trial import run_trial
from itt_sweep.sweep.trial_logs import verbose

log = logging.getLogger(__name__)
# Trials fail over to their outbox quickly instead of sitting in MLflow's default retry backoff (minutes).
TRIAL_ENV = {"TOKENIZERS_PARALLELISM": "false", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
             "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def init_ray() -> None:
    """The embedded local cluster unless RAY_ADDRESS points at a real one."""
    import ray

    if ray.is_initialized():
        return
    # Stage-1 results carry no stage-2 loss; ASHA and the searcher skip results without their metric.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    if not verbose():
        # Tune's new output engine prints its "Configuration for experiment" table, "View detailed results
        # here" and a TensorBoard hint even at verbose=0 (ray/tune/experimental/output.py: experiment_started
        # is not gated by the verbosity); the legacy engine at verbosity 0 prints nothing. The live view
        # (progress.SweepView) is the console's, and the Tune folder is in `itt-sweep status`.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    address = os.environ.get("RAY_ADDRESS") or "local"
    # Workers' and Ray's own actors' output stays in Ray's logs and the trials' log files (`trial_logs`), so
    # the console holds the live view; ITT_VERBOSE=1 brings it back.
    ray.init(address=address, include_dashboard=False, log_to_driver=verbose(),
             runtime_env={"env_vars": {**TRIAL_ENV, **({"ITT_VERBOSE": "1"} if verbose() else {})}})


def leave_job_copy(ctx: dict[str, Any]) -> None:
    """In a Ray Job, work from the sweep dir: the job's copy of the checkout (its starting directory) is
    Ray's to delete or unpack again, and Tune resolves paths against the current directory."""
    if in_ray_job():
        os.chdir(ctx["sweep_dir"])


def callbacks(sweep: SweepConfig, ctx: dict[str, Any]) -> list:
    return [SweepView(total=trial_count(sweep), concurrency=sweep.resources.max_concurrent_trials,
                      sweep_dir=ctx["sweep_dir"])]


def trainable(ctx: dict[str, Any]):
    """A trial holds one CPU throughout; stage 3 takes more for itself once training has freed them (on GPU
    sweeps a Ray task with a GPU, on CPU sweeps a lease, see `cpu_lease`)."""
    from ray import tune

    from itt_sweep.sweep.cpu_lease import TRIAL_CPUS

    return tune.with_resources(tune.with_parameters(run_trial, ctx=ctx), {"CPU": TRIAL_CPUS})


def start_tracking(sweep: SweepConfig, ctx: dict[str, Any], sweep_path: Path) -> None:
    from itt_sweep.tracking.mlflow_runs import absolute_uri, client_for, experiment_id, find_or_create_run
    from itt_sweep.tracking.summary import NOTE_TAG, set_runs_view, sweep_description

    uri = absolute_uri(sweep.tracking.uri)
    client = client_for(uri)
    exp = experiment_id(client, sweep.tracking.experiment or f"itt-sweep/{sweep.name}")
    tags = {"itt.sweep": sweep.name, "itt.sweep_hash": sweep.config_hash(), "itt.role": "sweep"}
    parent = find_or_create_run(client, exp, tags, run_name=sweep.name, key_tags=("itt.sweep", "itt.sweep_hash"))
    client.set_tag(parent, NOTE_TAG, sweep_description(sweep, ctx["sweep_dir"]))  # the run's description
    set_runs_view(client, exp, sweep.eval_languages)  # the trials' table `make ui` opens
    resolved = Path(ctx["sweep_dir"]) / "sweep.resolved.yaml"
    header = f"# resolved from {sweep_path}\n" + tune_state_header(sweep, ctx)
    resolved.write_text(header + yaml.safe_dump(ctx["sweep"], sort_keys=False))
    client.log_artifact(parent, str(resolved))
    ctx.update(tracking_uri=uri, experiment_id=exp, parent_run_id=parent)


def run_sweep(sweep_path: str | Path) -> SweepOutcome:
    """Validate, prepare, run every trial, then build and log the heatmaps; returns the heatmap dir."""
    sweep = load_sweep(sweep_path)
    data = preflight(sweep, str(sweep_path))
    ctx = sweep_context(sweep, data)
    start_tracking(sweep, ctx, Path(sweep_path))
    leave_job_copy(ctx)
    init_ray()
    from ray import tune

    tuner = tune.Tuner(
        trainable(ctx),
        tune_config=tune.TuneConfig(search_alg=CellSearcher(sweep), scheduler=make_scheduler(sweep),
                                    num_samples=trial_count(sweep),
                                    max_concurrent_trials=sweep.resources.max_concurrent_trials),
        run_config=tune.RunConfig(name=TUNE_DIR, storage_path=ctx["ray_storage"], callbacks=callbacks(sweep, ctx),
                                  verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=sweep.resources.max_failures)),
    )
    results = tuner.fit()
    return finish_sweep(sweep, ctx, results)


def resume_sweep(sweep_dir: str | Path, resume_errored: bool = True) -> SweepOutcome:
    """Continue an interrupted sweep from its Tune experiment (in the sweep dir, or at the storage.checkpoints URI
    its sweep.resolved.yaml records): finished trials are not rerun."""
    sweep_dir = Path(sweep_dir).resolve()
    resolved = sweep_dir / "sweep.resolved.yaml"
    if not resolved.is_file():
        raise FileNotFoundError(f"{sweep_dir} is not a sweep directory (no sweep.resolved.yaml)")
    sweep = load_sweep(resolved)
    location = tune_location(sweep_dir, sweep)  # read before start_tracking rewrites the file
    data = preflight(sweep, str(resolved))
    from ray import tune

    if not tune.Tuner.can_restore(location):
        field = "storage.checkpoints" if sweep.storage.checkpoints else "storage.path"
        raise SweepFileError(resolved, [f"{field}: no Tune experiment to resume at {location}"])
    ctx = {**sweep_context(sweep, data), "tune_location": location}
    start_tracking(sweep, ctx, resolved)
    leave_job_copy(ctx)
    init_ray()
    log.info("resuming sweep %s from its Tune experiment at %s", sweep.name, location)
    tuner = tune.Tuner.restore(location, trainable=trainable(ctx), resume_errored=resume_errored,
                               restart_errored=False)
    return finish_sweep(sweep, ctx, tuner.fit())


@dataclass
class SweepOutcome:
    heatmap_dir: Path
    outputs: list[Path]
    n_trials: int
    n_errors: int
    n_planned: int = 0
    n_finished: int = 0
    sweep_dir: Path | None = None

    @property
    def stopped(self) -> bool:
        """The sweep ended before every planned trial did, none of them by failing: it was interrupted."""
        return not self.n_errors and self.n_finished < self.n_planned


def finish_sweep(sweep: SweepConfig, ctx: dict[str, Any], results) -> SweepOutcome:
    from itt_sweep.analysis.report import write_outputs
    from itt_sweep.analysis.results import load_records, to_frame
    from itt_sweep.tracking.mlflow_runs import client_for
    from itt_sweep.tracking.trial_run import deliver_pending

    errors = [r for r in results if r.error]
    undelivered = deliver_pending(Path(ctx["sweep_dir"]))
    if undelivered:
        log.warning("%d trial(s) still have MLflow calls queued; run `itt-sweep sync %s` when the server is back",
                    undelivered, ctx["sweep_dir"])
    # MLflow first; when it is down (or lost runs) the trial directories hold the same numbers.
    records, origin = load_records(Path(ctx["sweep_dir"]), ctx["tracking_uri"], ctx["parent_run_id"])
    log.info("transfer tables from %s: %d trial record(s)", origin, len(records))
    out = Path(ctx["sweep_dir"]) / "heatmaps"
    out.mkdir(exist_ok=True)
    frame = to_frame(records) if records else None
    paths = write_outputs(frame, out) if records else []
    extra = []  # with the compute-matched control in the matrix, the deltas against it too
    if records and CONTROL in sweep.matrix.intermediate_tasks:
        extra = write_outputs(frame, out / f"vs_{CONTROL}", baseline=CONTROL)
    client = client_for(ctx["tracking_uri"])
    for path in paths:
        client.log_artifact(ctx["parent_run_id"], str(path), artifact_path="heatmaps")
    for path in extra:
        client.log_artifact(ctx["parent_run_id"], str(path), artifact_path=f"heatmaps/vs_{CONTROL}")
    outcome = SweepOutcome(out, paths, len(results), len(errors), n_planned=trial_count(sweep),
                           n_finished=results.num_terminated, sweep_dir=Path(ctx["sweep_dir"]))
    status = "FAILED" if errors else "KILLED" if outcome.stopped else "FINISHED"  # KILLED: resume continues it
    client.set_terminated(ctx["parent_run_id"], status=status)
    if errors:
        keys = [(r.config or {}).get("trial_key", "?") for r in errors]
        log.error("%d trial(s) failed: %s; `itt-sweep status %s` says why, with their logs", len(errors),
                  ", ".join(keys), ctx["sweep_dir"])
    return outcome
