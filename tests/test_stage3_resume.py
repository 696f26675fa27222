"""Stage 3 resumes per language: SIGKILL the sweep once one language is scored, resume, and check that no
saved generation is made again and no finished language is scored again (real processes, Ray, executor)."""

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
LANGUAGES = ["python", "java", "kotlin"]  # kotlinc is slow: the kill lands while kotlin still executes


def write_sweep(tmp_path: Path, data_dir: Path) -> Path:
    stage = {"steps": 2, "learning_rate": 3e-3, "warmup_steps": 1, "batch_size": 4, "seq_len": 128,
             "eval_every": 2, "checkpoint_every": 2}
    raw = {
        "name": "s3resume",
        "model": {"name": "scratch:tiny"},
        "data": {"dir": str(data_dir), "target_train_problems": 16, "target_val_problems": 4, "eval_problems": 4},
        "matrix": {"intermediate_tasks": ["none"], "source_languages": ["python"], "seeds": [0]},
        "eval_languages": LANGUAGES,
        "stages": {"intermediate": stage, "target": stage},
        "training": {"zero_stage": 2, "num_workers": 1, "cpus_per_worker": 1},
        # sampled: pass@k in a sweep, and each (problem, sample) seeded alone, so a resume cannot shift them
        "evaluation": {"max_new_tokens": 16, "batch_size": 4, "timeout_s": 10, "num_samples": 2,
                       "temperature": 0.8, "pass_k": [1, 2]},
        "storage": {"path": str(tmp_path / "runs")},
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db", "deliver_timeout_s": 5},
    }
    path = tmp_path / "s3resume.yaml"
    path.write_text("# Run: itt-sweep run s3resume.yaml\n" + yaml.safe_dump(raw))
    return path


def test_a_trial_killed_in_stage_3_resumes_at_the_unfinished_languages(tmp_path, data_dir):
    sweep_file = write_sweep(tmp_path, data_dir)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    log = (tmp_path / "driver.log").open("ab")
    trial = tmp_path / "runs" / "s3resume" / "trials" / "none__python__s0__n0"
    stage3 = trial / "stage3"

    def start(*args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "itt_sweep.cli", *args], cwd=tmp_path, env=env,
                                stdout=log, stderr=subprocess.STDOUT)

    proc = start("run", str(sweep_file))
    deadline = time.monotonic() + 600
    while not (stage3 / "python.json").exists():
        assert proc.poll() is None, (tmp_path / "driver.log").read_text()[-4000:]
        assert time.monotonic() < deadline, "stage 3 never scored python"
        time.sleep(0.05)
    kill_tree(proc.pid)
    proc.wait()
    assert not (trial / "metrics.json").exists(), "the trial finished before the kill: nothing to resume"
    unfinished = [lang for lang in LANGUAGES if not (stage3 / f"{lang}.json").exists()]
    assert unfinished, "every language was scored before the kill"
    scored = {lang: (stage3 / f"{lang}.json").stat().st_mtime_ns for lang in LANGUAGES
              if (stage3 / f"{lang}.json").exists()}
    generated = [json.loads(line)["language"] for line in (stage3 / "generation_ledger.jsonl").read_text().splitlines()]

    resumed = start("resume", str(tmp_path / "runs" / "s3resume"))
    assert resumed.wait(timeout=900) == 0, (tmp_path / "driver.log").read_text()[-5000:]
    ledger = [json.loads(line)["language"] for line in (stage3 / "generation_ledger.jsonl").read_text().splitlines()]
    assert sorted(ledger) == sorted(LANGUAGES)  # each language generated exactly once, across both runs
    assert ledger[:len(generated)] == generated
    for lang, mtime in scored.items():
        assert (stage3 / f"{lang}.json").stat().st_mtime_ns == mtime  # finished languages were not rescored
    metrics = json.loads((trial / "metrics.json").read_text())["eval"]
    assert set(metrics) == set(LANGUAGES)
    for lang in LANGUAGES:
        rows = [json.loads(line) for line in (trial / "completions" / f"{lang}.jsonl").read_text().splitlines()]
        assert len(rows) == 8 and sorted({r["sample"] for r in rows}) == [0, 1]  # 4 problems x 2 samples
        assert metrics[lang]["n_problems"] == 4 and 0 <= metrics[lang]["pass_at_2"] <= 1
    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("itt-sweep/s3resume")
    run = next(r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("itt.role") != "sweep")
    assert {f"eval/{lang}/pass_at_2" for lang in LANGUAGES} <= set(run.data.metrics)
    heatmaps = {p.name for p in (tmp_path / "runs" / "s3resume" / "heatmaps").glob("*")}
    assert "absolute_python_pass_at_2.csv" in heatmaps  # one baseline trial: absolute tables, no deltas
