"""The MLflow child run of one trial, as the trial process sees it.

The run is found again by its `itt.trial_key` tag after any restart, so a trial has exactly one run. Each
stage's history is queued once (a marker in the trial's outbox state), so no step is ever logged twice.
All calls go through the trial's `Outbox`, so an unreachable server delays the logs but loses nothing.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag

from itt_sweep.tracking.mlflow_runs import BATCH, client_for, find_or_create_run, flatten
from itt_sweep.tracking.outbox import Outbox
from itt_sweep.tracking.summary import summary_metrics

log = logging.getLogger(__name__)


class TrialRun:
    def __init__(self, uri: str, exp_id: str, parent_run_id: str, trial_key: str, tags: dict[str, str],
                 trial_dir: Path):
        self.client = client_for(uri)
        self.exp_id = exp_id
        self.tags = {"itt.trial_key": trial_key, "mlflow.parentRunId": parent_run_id, **tags}
        self.outbox = Outbox(trial_dir)
        self.trial_key = trial_key
        state = self.outbox.state()
        state.update(uri=uri, exp_id=exp_id, tags=self.tags, trial_key=trial_key)
        self.outbox.save_state(state)
        self.flush()

    @classmethod
    def from_outbox(cls, directory: Path) -> TrialRun:
        """Reopen a trial's run from its outbox alone (the driver or `itt-sweep sync` delivering late logs)."""
        state = Outbox(directory).state()
        tags = dict(state["tags"])
        parent = tags.pop("mlflow.parentRunId")
        tags.pop("itt.trial_key")
        return cls(state["uri"], state["exp_id"], parent, state["trial_key"], tags, directory)

    # -- delivery -------------------------------------------------------------------------------------------
    def _run_id(self) -> str:
        state = self.outbox.state()
        if state["run_id"] is None:
            state["run_id"] = find_or_create_run(self.client, self.exp_id, self.tags, run_name=self.trial_key,
                                                 key_tags=("itt.trial_key", "mlflow.parentRunId"))
            self.client.log_batch(state["run_id"], tags=[RunTag(k, v) for k, v in self.tags.items()])
            self.outbox.save_state(state)
        return state["run_id"]

    def _apply(self, run_id: str, op: dict[str, Any]) -> None:
        kind = op["op"]
        if kind == "metrics":
            metrics = [Metric(k, v, ts, step) for k, v, ts, step in op["rows"]]
            for i in range(0, len(metrics), BATCH):
                self.client.log_batch(run_id, metrics=metrics[i:i + BATCH])
        elif kind == "params":
            known = self.client.get_run(run_id).data.params
            params = [Param(k, v) for k, v in op["params"].items() if k not in known]
            for i in range(0, len(params), 100):
                self.client.log_batch(run_id, params=params[i:i + 100])
        elif kind == "tags":
            self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in op["tags"].items()])
        elif kind == "artifacts":
            for path in map(Path, op["paths"]):
                if path.is_dir():
                    self.client.log_artifacts(run_id, str(path), artifact_path=path.name)
                elif path.is_file():
                    self.client.log_artifact(run_id, str(path))
        elif kind == "status":
            self.client.set_terminated(run_id, status=op["status"])
        elif kind == "running":
            self.client.update_run(run_id, status="RUNNING")

    def flush(self) -> bool:
        """Deliver queued calls in order; False (and a warning) while the server is unreachable."""
        try:
            run_id = self._run_id()
            state = self.outbox.state()
            for op in self.outbox.ops()[state["delivered"]:]:
                self._apply(run_id, op)
                state["delivered"] += 1
                self.outbox.save_state(state)
            return True
        except Exception as exc:  # noqa: BLE001  (any tracking failure must not stop training)
            log.warning("MLflow unreachable for trial %s (%s); %d call(s) queued in %s", self.trial_key,
                        str(exc).splitlines()[0][:200], len(self.outbox.pending()), self.outbox.queue)
            return False

    def _send(self, op: dict[str, Any]) -> None:
        self.outbox.append(op)
        self.flush()

    def deliver(self, timeout_s: float, interval_s: float = 5.0) -> bool:
        """At the end of a trial: keep trying for a while; whatever is left is delivered by the driver later."""
        deadline = time.monotonic() + timeout_s
        while not self.flush():
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval_s)
        return True

    # -- what a trial logs ----------------------------------------------------------------------------------
    def start(self) -> None:
        self._send({"op": "running"})

    def log_params(self, params: dict[str, Any]) -> None:
        self._send({"op": "params", "params": {k: str(v)[:6000] for k, v in flatten("", params).items()}})

    def log_stage(self, stage: str, history: list[dict[str, Any]], cache_key: str, trained_now: bool) -> None:
        """Per-step train loss, lr and validation loss of a stage, queued exactly once."""
        if self.outbox.has_marker(stage):
            return
        now = int(time.time() * 1000)
        rows = [(f"{stage}/{name}", float(row[name]), now, int(row["step"])) for row in history
                for name in ("train_loss", "lr", "val_loss") if name in row and math.isfinite(row[name])]
        self.outbox.append({"op": "metrics", "rows": rows})
        self.outbox.append({"op": "tags", "tags": {f"itt.stage_key.{stage}": cache_key,
                                                    f"itt.stage_trained_here.{stage}": str(trained_now).lower()}})
        self.outbox.add_marker(stage)
        self.flush()

    def log_eval(self, metrics: dict[str, dict[str, float]], val_loss: float) -> None:
        if self.outbox.has_marker("eval"):
            return
        now = int(time.time() * 1000)
        rows = [(f"eval/{lang}/{name}", float(v), now, 0) for lang, per in metrics.items()
                for name, v in per.items() if math.isfinite(v)]
        # the same numbers under short names for the UI's columns and charts (tracking/summary.py)
        rows += [(name, value, now, 0) for name, value in summary_metrics(metrics).items()]
        if math.isfinite(val_loss):
            rows.append(("val_loss", float(val_loss), now, 0))
        self.outbox.append({"op": "metrics", "rows": rows})
        self.outbox.add_marker("eval")
        self.flush()

    def log_timings(self, phases: dict[str, Any]) -> None:
        """Where the trial's time went, as metrics `time/<stage>/<phase>` (seconds) and `time/trial_s`."""
        now = int(time.time() * 1000)
        flat = flatten("time", phases)
        rows = [(name.replace(".", "/"), float(v), now, 0) for name, v in flat.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
        self._send({"op": "metrics", "rows": rows})

    def log_artifacts(self, paths: list[Path]) -> None:
        self._send({"op": "artifacts", "paths": [str(p) for p in paths]})

    def finish(self, status: str = "FINISHED") -> None:
        self._send({"op": "status", "status": status})


def deliver_pending(sweep_dir: Path) -> int:
    """Deliver every trial's queued MLflow calls; returns how many trials still have calls queued."""
    left = 0
    for directory in sorted(Path(sweep_dir).glob("trials/*/.tracking")):
        if Outbox(directory).pending() or Outbox(directory).state()["run_id"] is None:
            left += not TrialRun.from_outbox(directory).flush()
    return left
