"""MLflow: one parent run per sweep, one child run per trial, found again by tag after any restart.

Runs are looked up by stable tags (`itt.sweep_hash`, `itt.trial_key`) before one is created, so a resumed
sweep or trial logs into the run it had, never a second one. Trials log from their own process in batches
(`log_batch`), so the Ray driver loop never waits on the tracking server.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from itt_sweep.tracking.summary import summary_metrics

BATCH = 1000  # MLflow's limit of metrics per log_batch call


class TrackingUnavailableError(RuntimeError):
    """The tracking server cannot be reached; raised before any trial starts."""


def absolute_uri(uri: str) -> str:
    """A relative sqlite path made absolute: Ray runs trials in other working directories, where a relative
    `sqlite:///mlflow.db` would silently create a second, empty store."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        return prefix + str(Path(uri[len(prefix):]).resolve())
    return uri


def client_for(uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=uri)


def check_reachable(uri: str, timeout_s: float = 10.0) -> None:
    """Fail fast, with one clear message, when an http(s) tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s).read()
    except OSError as exc:
        raise TrackingUnavailableError(
            f"tracking.uri: MLflow server {uri} is unreachable ({exc}); start it with `make tracking-up` "
            f"or set tracking.uri to sqlite:///mlflow.db") from None


EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def experiment_id(client: MlflowClient, name: str) -> str:
    """The experiment's id, created if needed; tagged as model training (not GenAI) either way.

    Earlier MLflow 3 UIs pick the experiment's view from this tag. The 3.17 UI ignores it and follows its
    own GenAI / model-training switch (default GenAI), which a URL sets with `?workflowType=machine_learning`
    (`ui_url.runs_url`); the tag still says what the experiment holds."""
    key, kind = EXPERIMENT_KIND
    found = client.get_experiment_by_name(name)
    if found is None:
        return client.create_experiment(name, tags={key: kind})
    if key not in found.tags:  # created before the tag, or by hand
        client.set_experiment_tag(found.experiment_id, key, kind)
    return found.experiment_id


def find_run(client: MlflowClient, exp_id: str, tags: dict[str, str]) -> str | None:
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = client.search_runs([exp_id], filter_string=query, max_results=2)
    return runs[0].info.run_id if runs else None


def find_or_create_run(client: MlflowClient, exp_id: str, tags: dict[str, str], run_name: str,
                       key_tags: Iterable[str]) -> str:
    """Reuse the run whose key tags match, else create it (resumes log into their old run)."""
    run_id = find_run(client, exp_id, {k: tags[k] for k in key_tags})
    if run_id is None:
        run_id = client.create_run(exp_id, tags=tags, run_name=run_name).info.run_id
    elif client.get_run(run_id).info.status != "RUNNING":
        client.update_run(run_id, status="RUNNING")
    return run_id


def flatten(prefix: str, nested: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in nested.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        out.update(flatten(name, value) if isinstance(value, dict) else {name: value})
    return out


def log_eval_run(uri: str, experiment: str, run_name: str, params: dict[str, Any],
                 metrics: dict[str, dict[str, float | None]], artifacts: Sequence[Path]) -> str:
    """One finished MLflow run for an `itt-sweep eval`: flattened params, `eval/<language>/<metric>` as in
    sweep trials (so the UI compares them side by side), the output files as artifacts; returns its id."""
    from mlflow.entities import Metric, Param

    check_reachable(uri)
    client = client_for(absolute_uri(uri))
    run_id = client.create_run(experiment_id(client, experiment), run_name=run_name,
                               tags={"itt.role": "eval"}).info.run_id
    now = int(time.time() * 1000)
    rows = [Metric(f"eval/{lang}/{name}", float(value), now, 0) for lang, per in metrics.items()
            for name, value in per.items() if value is not None and math.isfinite(value)]
    rows += [Metric(name, value, now, 0) for name, value in summary_metrics(metrics).items()]
    flat = [Param(key, str(value)[:6000]) for key, value in flatten("", params).items()]
    for start in range(0, max(len(rows), len(flat)), 100):  # MLflow's batch limits
        client.log_batch(run_id, metrics=rows[start:start + 100], params=flat[start:start + 100])
    for path in artifacts:
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id)
    return run_id
