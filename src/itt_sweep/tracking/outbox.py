"""A per-trial outbox for MLflow calls: training never waits on, or dies with, the tracking server.

Every logging call is first appended to `<trial dir>/mlflow_outbox.jsonl`, then delivered in order. When the
server is unreachable the call stays queued and the trial goes on; the next call, the end of the trial, the
end of the sweep or `itt-sweep sync` deliver it later. Metrics carry the timestamp taken when they were
queued, and MLflow's SQL store keys metric rows on (key, timestamp, step, value), so a call repeated after a
crash between "sent" and "marked delivered" does not duplicate a step.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class Outbox:
    def __init__(self, directory: Path):
        self.queue = directory / "mlflow_outbox.jsonl"
        self.state_path = directory / "mlflow_state.json"
        directory.mkdir(parents=True, exist_ok=True)

    def state(self) -> dict[str, Any]:
        if self.state_path.is_file():
            return json.loads(self.state_path.read_text())
        return {"delivered": 0, "run_id": None, "markers": []}

    def save_state(self, state: dict[str, Any]) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state_path)

    def append(self, op: dict[str, Any]) -> None:
        with self.queue.open("a") as f:
            f.write(json.dumps(op) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def ops(self) -> list[dict[str, Any]]:
        if not self.queue.is_file():
            return []
        lines = self.queue.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def pending(self) -> list[dict[str, Any]]:
        return self.ops()[self.state()["delivered"]:]

    def has_marker(self, marker: str) -> bool:
        return marker in self.state()["markers"]

    def add_marker(self, marker: str) -> None:
        state = self.state()
        state["markers"].append(marker)
        self.save_state(state)
