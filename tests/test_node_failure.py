"""A Ray worker *node* dies mid-training on a multi-node cluster (this machine, fake autoscaling provider):
the trial is retried and its stage continues from the last checkpoint, not from step 0."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import yaml

from tests.fake_cluster import fake_cluster, worker_raylets
from tests.procs import cmdline, descendants, kill_tree

pytestmark = pytest.mark.slow

STEPS, EVERY = 40, 4
WORKERS = {"cpu_worker": {"resources": {"CPU": 2, "sandbox": 2}, "node_config": {}, "min_workers": 0,
                          "max_workers": 3}}


def write_sweep(tmp_path, data_dir):
    stage = {"steps": STEPS, "learning_rate": 3e-3, "warmup_steps": 2, "batch_size": 4, "seq_len": 128,
             "eval_every": EVERY, "checkpoint_every": EVERY}
    raw = {"name": "nodekill", "data": {"dir": str(data_dir), "target_train_problems": 64, "eval_problems": 2},
           "matrix": {"intermediate_tasks": ["none"]}, "eval_languages": ["python"],
           "stages": {"target": stage}, "training": {"zero_stage": 2, "num_workers": 1, "cpus_per_worker": 1},
           "evaluation": {"max_new_tokens": 16, "batch_size": 2},
           "resources": {"max_failures": 3},
           "storage": {"path": str(tmp_path / "runs")},
           "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db", "deliver_timeout_s": 5}}
    path = tmp_path / "nodekill.yaml"
    path.write_text("# Run: RAY_ADDRESS=... itt-sweep run nodekill.yaml\n" + yaml.safe_dump(raw))
    return path


def training_node(head) -> int | None:
    """The worker raylet whose node runs the Ray Train worker."""
    for raylet in worker_raylets(head):
        if any("RayTrainWorker" in cmdline(p) for p in descendants(raylet)):
            return raylet
    return None


def registered_checkpoint(train_dir) -> bool:
    """A checkpoint Ray Train has recorded as reported (a directory alone may still be half-uploaded)."""
    return any('"step_' in p.read_text() for p in train_dir.glob("stage-*/checkpoint_manager_snapshot.json"))


def test_killed_worker_node_is_survived_from_the_last_checkpoint(tmp_path, data_dir):
    sweep = write_sweep(tmp_path, data_dir)
    with fake_cluster(tmp_path, WORKERS) as (address, env, head):
        log = (tmp_path / "driver.log").open("wb")
        driver = subprocess.Popen([sys.executable, "-m", "itt_sweep.cli", "run", str(sweep)], cwd=tmp_path, env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
        train_dir = tmp_path / "runs" / "nodekill" / "train"
        deadline, killed = time.monotonic() + 600, None
        while time.monotonic() < deadline and killed is None:
            assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-4000:]
            node = training_node(head)
            if node and registered_checkpoint(train_dir):
                kill_tree(node)
                killed = node
            time.sleep(0.2)
        assert killed, "no checkpoint was written on a worker node"
        assert driver.wait(timeout=900) == 0, (tmp_path / "driver.log").read_text()[-6000:]

    stages = list((tmp_path / "runs" / "stages").glob("*/stage_metrics.json"))
    assert len(stages) == 1
    stage = json.loads(stages[0].read_text())
    assert [h["step"] for h in stage["history"]] == list(range(1, STEPS + 1))
    assert stage["resumed_from_steps"] and all(s % EVERY == 0 and s > 0 for s in stage["resumed_from_steps"])
    trial_dir = tmp_path / "runs" / "nodekill" / "trials" / "none__python__s0__n0"
    record = json.loads((trial_dir / "metrics.json").read_text())
    assert set(record["eval"]) == {"python"}
