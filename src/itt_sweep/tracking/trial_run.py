"""The MLflow child run of one trial, as the trial process sees it.

Each stage's metric history is logged once, when the stage is complete, and marked with a tag; a trial that
restarts after the tag was written does not log that history again, so no step is ever duplicated.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from itt_sweep.tracking.mlflow_runs import (
    client_for,
    find_or_create_run,
    flatten,
    log_metrics_batch,
    log_params,
    set_tags,
)


class TrialRun:
    def __init__(self, uri: str, exp_id: str, parent_run_id: str, trial_key: str, tags: dict[str, str]):
        self.client = client_for(uri)
        all_tags = {"itt.trial_key": trial_key, "mlflow.parentRunId": parent_run_id, **tags}
        self.run_id = find_or_create_run(self.client, exp_id, all_tags, run_name=trial_key,
                                         key_tags=("itt.trial_key", "mlflow.parentRunId"))
        set_tags(self.client, self.run_id, all_tags)

    def _logged(self, marker: str) -> bool:
        return self.client.get_run(self.run_id).data.tags.get(f"itt.logged.{marker}") == "1"

    def log_params(self, params: dict[str, Any]) -> None:
        log_params(self.client, self.run_id, flatten("", params))

    def log_stage(self, stage: str, history: list[dict[str, Any]], cache_key: str, trained_now: bool) -> None:
        """Per-step train loss, lr and validation loss of a stage, once."""
        if self._logged(stage):
            return
        rows = []
        for row in history:
            for name in ("train_loss", "lr", "val_loss"):
                if name in row and math.isfinite(row[name]):
                    rows.append((f"{stage}/{name}", row[name], row["step"]))
        log_metrics_batch(self.client, self.run_id, rows)
        set_tags(self.client, self.run_id, {f"itt.logged.{stage}": "1", f"itt.stage_key.{stage}": cache_key,
                                            f"itt.stage_trained_here.{stage}": str(trained_now).lower()})

    def log_eval(self, metrics: dict[str, dict[str, float]], val_loss: float) -> None:
        if self._logged("eval"):
            return
        rows = [(f"eval/{lang}/{name}", value, 0) for lang, per in metrics.items()
                for name, value in per.items() if math.isfinite(value)]
        if math.isfinite(val_loss):
            rows.append(("val_loss", val_loss, 0))
        log_metrics_batch(self.client, self.run_id, rows)
        set_tags(self.client, self.run_id, {"itt.logged.eval": "1"})

    def log_artifacts(self, directory: Path) -> None:
        self.client.log_artifacts(self.run_id, str(directory))

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)
