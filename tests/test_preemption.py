"""Preemption: SIGKILL the sweep driver (and its Ray processes) at three points, resume, and check that nothing
was lost and nothing was done twice: real processes, real Ray, DeepSpeed and MLflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.procs import kill_tree

pytestmark = pytest.mark.slow

STEPS, EVERY = 24, 4
TASKS = ["none", "conala_nl2python", "codexglue_java_cs_translation"]


def write_sweep(tmp_path: Path, data_dir: Path) -> Path:
    stage = {"steps": STEPS, "learning_rate": 3e-3, "warmup_steps": 2, "batch_size": 4, "seq_len": 128,
             "eval_every": EVERY, "checkpoint_every": EVERY}
    raw = {
        "name": "preempt",
        "model": {"name": "scratch:tiny"},
        "data": {"dir": str(data_dir), "intermediate_train_examples": 64, "intermediate_val_examples": 8,
                 "target_train_problems": 64, "eval_problems": 2},
        "matrix": {"intermediate_tasks": TASKS, "source_languages": ["python"], "seeds": [0]},
        "eval_languages": ["python"],
        "stages": {"intermediate": stage, "target": stage},
        "training": {"zero_stage": 2, "num_workers": 1, "cpus_per_worker": 1},
        "evaluation": {"max_new_tokens": 16, "batch_size": 2, "timeout_s": 10},
        "storage": {"path": str(tmp_path / "runs")},
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db", "deliver_timeout_s": 5},
    }
    path = tmp_path / "preempt.yaml"
    path.write_text("# Run: itt-sweep run preempt.yaml\n" + yaml.safe_dump(raw))
    return path


class Sweep:
    def __init__(self, tmp_path: Path, data_dir: Path):
        self.tmp, self.file = tmp_path, write_sweep(tmp_path, data_dir)
        self.dir = tmp_path / "runs" / "preempt"
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
        self.env.pop("RAY_ADDRESS", None)
        self.log = (tmp_path / "driver.log").open("ab")

    def start(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "itt_sweep.cli", *args], cwd=self.tmp, env=self.env,
                                stdout=self.log, stderr=subprocess.STDOUT)

    def finished(self) -> int:
        return len(list(self.dir.glob("trials/*/metrics.json")))

    def step_checkpoints(self) -> set[Path]:
        """Checkpoints Ray Train has registered (in its snapshot): a directory alone may still be half-written,
        and a restart then rightly begins at step 0."""
        found = set()
        for snapshot in self.dir.glob("train/stage-*/checkpoint_manager_snapshot.json"):
            try:
                results = json.loads(snapshot.read_text())["checkpoint_results"]
            except (ValueError, KeyError):
                continue  # being rewritten right now
            found |= {snapshot.parent / r["checkpoint_dir_name"] for r in results
                      if r["checkpoint_dir_name"].startswith("step_")}
        return found

    def cached(self) -> set[str]:
        return {p.parent.name for p in (self.tmp / "runs" / "stages").glob("*/COMPLETE.json")}


def kill_when(sweep: Sweep, proc: subprocess.Popen, min_finished: int, timeout_s: float = 600) -> dict:
    """SIGKILL the driver tree once `min_finished` trials are done and a new stage checkpoint shows a stage
    mid-training (not yet in the stage cache)."""
    seen = sweep.step_checkpoints()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        log = (sweep.tmp / "driver.log").read_text
        assert proc.poll() is None, "the sweep ended before the kill point: " + log()[-3000:]
        fresh = sweep.step_checkpoints() - seen
        if sweep.finished() >= min_finished and fresh:
            cached = sweep.cached()
            if any(p.parent.name.removeprefix("stage-") not in cached for p in fresh):
                kill_tree(proc.pid)
                proc.wait()
                return {"time": time.time(), "cached": cached, "finished": sweep.finished()}
        time.sleep(0.1)
    kill_tree(proc.pid)
    raise AssertionError("kill point never reached")


def test_sweep_survives_three_driver_kills_with_every_trial_exactly_once(tmp_path, data_dir):
    sweep = Sweep(tmp_path, data_dir)
    kills = [kill_when(sweep, sweep.start("run", str(sweep.file)), min_finished=1)]
    from itt_sweep.sweep.status import cell_table

    table = {row["cell"]: row for row in cell_table(sweep.dir)}  # what `itt-sweep status` shows after a kill
    assert sum(row["done"] for row in table.values()) == kills[0]["finished"]
    assert sum(row["running"] + row["pending"] for row in table.values()) == len(TASKS) - kills[0]["finished"]
    kills.append(kill_when(sweep, sweep.start("resume", str(sweep.dir)), min_finished=1))
    kills.append(kill_when(sweep, sweep.start("resume", str(sweep.dir)), min_finished=2))
    final = sweep.start("resume", str(sweep.dir))
    assert final.wait(timeout=900) == 0, (tmp_path / "driver.log").read_text()[-5000:]
    assert [k["finished"] for k in kills][0] >= 1
    assert all(row["done"] == 1 for row in cell_table(sweep.dir))

    # every trial exactly once in the Tune results
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(str(sweep.dir / "tune"))
    keys = [t.config["trial_key"] for t in analysis.trials]
    assert sorted(keys) == sorted(f"{t}__python__s0__n0" for t in TASKS)
    assert all(t.status == "TERMINATED" for t in analysis.trials)

    # exactly one MLflow child run per trial, FINISHED, with a full history and no duplicated step
    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("itt-sweep/preempt")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("itt.role") == "sweep"]
    children = [r for r in runs if "itt.trial_key" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(r.data.tags["itt.trial_key"] for r in children) == sorted(keys)
    for child in children:
        assert child.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "target/train_loss")]
        assert sorted(steps) == list(range(1, STEPS + 1))

    # finished stages were never trained again after a kill
    ledger = [json.loads(line) for line in (sweep.dir / "train" / "ledger.jsonl").read_text().splitlines()]
    for kill in kills:
        retrained = [e["run"] for e in ledger if e["time"] > kill["time"]
                     and e["run"].removeprefix("stage-") in kill["cached"]]
        assert retrained == []

    # interrupted stages continued from their checkpoint step, not from step 0
    resumed = {}
    for metrics_file in (tmp_path / "runs" / "stages").glob("*/stage_metrics.json"):
        stage = json.loads(metrics_file.read_text())
        assert [h["step"] for h in stage["history"]] == list(range(1, STEPS + 1))
        if stage["resumed_from_steps"]:
            resumed[metrics_file.parent.name] = stage["resumed_from_steps"]
    assert resumed, "no stage was resumed from a checkpoint"
    assert all(s > 0 and s % EVERY == 0 for steps in resumed.values() for s in steps)
