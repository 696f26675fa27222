"""A reduced smoke sweep through the real stack: Ray Tune + Ray Train + DeepSpeed + MLflow + compilers."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slow


def reduced_sweep(smoke_raw: dict, tmp_path: Path, data_dir: Path) -> Path:
    raw = dict(smoke_raw)
    raw.update(
        name="e2e",
        data={"dir": str(data_dir), "intermediate_train_examples": 64, "intermediate_val_examples": 8,
              "target_train_problems": 64, "eval_problems": 4},
        matrix={"intermediate_tasks": ["none", "conala_nl2python"], "source_languages": ["python"], "seeds": [0]},
        eval_languages=["python", "javascript"],
        storage={"path": str(tmp_path / "runs")},
        tracking={"uri": f"sqlite:///{tmp_path}/mlflow.db"},
        # 2 CPUs: the trial's own and one leased from Ray once training has freed it (cpu_lease)
        evaluation={"max_new_tokens": 24, "batch_size": 4, "timeout_s": 10, "cpus": 2},
    )
    small = {"steps": 4, "learning_rate": 3e-3, "warmup_steps": 1, "batch_size": 4, "seq_len": 128,
             "eval_every": 2, "checkpoint_every": 2}
    raw["stages"] = {"intermediate": small, "target": small}
    path = tmp_path / "e2e.yaml"
    path.write_text("# Run: itt-sweep run e2e.yaml\n" + yaml.safe_dump(raw))
    return path


def test_reduced_smoke_sweep_logs_runs_metrics_and_heatmap(smoke_raw, tmp_path, data_dir):
    sweep = reduced_sweep(smoke_raw, tmp_path, data_dir)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-m", "itt_sweep.cli", "run", str(sweep)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-6000:]
    assert "heatmap_python_ref_nll.png" in proc.stdout

    sweep_dir = tmp_path / "runs" / "e2e"
    heatmap = sweep_dir / "heatmaps" / "heatmap_python_ref_nll.png"
    assert heatmap.stat().st_size > 10_000
    matrix = pd.read_csv(sweep_dir / "heatmaps" / "heatmap_python_ref_nll.csv", index_col=0)
    assert list(matrix.index) == ["conala_nl2python"]
    assert all(math.isfinite(v) for v in matrix.loc["conala_nl2python", ["python", "javascript"]])

    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("itt-sweep/e2e")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("itt.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 2
    assert parents[0].info.status == "FINISHED"
    for child in children:
        assert child.info.status == "FINISHED"
        metrics = child.data.metrics
        for lang in ("python", "javascript"):
            assert 0.0 <= metrics[f"eval/{lang}/pass_at_1"] <= 1.0
            assert 0.0 <= metrics[f"eval/{lang}/compile_rate"] <= 1.0
            assert math.isfinite(metrics[f"eval/{lang}/ref_nll"])
        history = client.get_metric_history(child.info.run_id, "target/train_loss")
        assert sorted(m.step for m in history) == [1, 2, 3, 4]
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"metrics.json", "config.json", "completions"} <= artifacts
    conala = next(c for c in children if c.data.tags["itt.intermediate_task"] == "conala_nl2python")
    assert len(client.get_metric_history(conala.info.run_id, "intermediate/train_loss")) == 4
    parent_artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id, "heatmaps")}
    assert "heatmaps/heatmap_python_pass_at_1.png" in parent_artifacts

    record = json.loads((sweep_dir / "trials" / "none__python__s0__n0" / "metrics.json").read_text())
    assert set(record["eval"]) == {"python", "javascript"}

    # where the time went: per phase in metrics.json and MLflow, summed by `itt-sweep status`
    phases = json.loads((sweep_dir / "trials" / "conala_nl2python__python__s0__n0" / "metrics.json").read_text())[
        "phases"]
    assert phases["intermediate"]["steps_s"] > 0 and phases["target"]["engine_init_s"] > 0
    assert phases["eval"]["generate_s"] > 0 and phases["eval"]["execute_s"] > 0
    # the driver verified the references before any trial: every trial scored them on the prefill
    assert sorted(path.name.split("-")[0] for path in (tmp_path / "runs" / "references").glob("*.json")) == [
        "javascript", "python"]
    for trial in ("none__python__s0__n0", "conala_nl2python__python__s0__n0"):
        eval_phase = json.loads((sweep_dir / "trials" / trial / "metrics.json").read_text())["phases"]["eval"]
        assert eval_phase["references_after"] == 0
    assert 0 <= phases["eval"]["cpu_lease_wait_s"] < 60  # stage 3 leased its second CPU inside the Tune trial
    assert 0 < phases["target"]["wall_s"] + phases["eval"]["wall_s"] < phases["trial_s"]
    assert conala.data.metrics["time/trial_s"] == phases["trial_s"]
    status = subprocess.run([sys.executable, "-m", "itt_sweep.cli", "status", str(sweep_dir)], cwd=tmp_path,
                            env={**env, "COLUMNS": "160"}, capture_output=True, text=True, timeout=300)
    assert status.returncode == 0, status.stderr[-3000:]
    assert "where the time of the finished trials went" in status.stdout, status.stdout
    assert "stage 1-2: training steps" in status.stdout and "stage 3: generation" in status.stdout

    # the console is the researcher's: Ray's actors and the workers write to the trials' log files
    console = proc.stdout + proc.stderr
    (tmp_path / "console.txt").write_text(console)  # what a user saw, kept with the test's files
    print(console[-6000:])
    assert "trial conala_nl2python__python__s0__n0 done in" in console  # one summary line per trial end
    for noise in ("(PlacementGroupCleaner", "(RayTrainWorker", "TrainingReport(", "all_gather_into_tensor"):
        assert noise not in console, (noise, console[-3000:])
    # stage 3 reports its language and samples generated to the live view (through Tune's results)
    rows = [json.loads(line) for path in (sweep_dir / "tune").glob("*/result.json")
            for line in path.read_text().splitlines() if line.strip()]
    progress = [r for r in rows if "eval_language" in r]
    assert progress and any(r["eval_step"] == r["eval_steps"] == 8 for r in progress), progress
    logs = sweep_dir / "logs" / "conala_nl2python__python__s0__n0"
    assert (logs / "trial.log").is_file()
    assert (logs / "intermediate-rank0.log").stat().st_size > 0 and (logs / "target-rank0.log").stat().st_size > 0


def damaged_data_dir(data_dir: Path, tmp_path: Path, task: str) -> Path:
    """The data directory with one task's validation split cut short mid-line, as an interrupted copy leaves
    it (stage 1 reads it; the driver reads only train splits); everything else links to the real files."""
    copy = tmp_path / "data"
    copy.mkdir()
    for entry in data_dir.iterdir():
        if entry.name != task:
            (copy / entry.name).symlink_to(entry)
    (copy / task).mkdir()
    for entry in (data_dir / task).iterdir():
        (copy / task / entry.name).symlink_to(entry)
    damaged = copy / task / "validation.jsonl"
    lines = damaged.read_text().splitlines()[:40]
    damaged.unlink()
    damaged.write_text("\n".join(lines) + "\n" + lines[-1][: len(lines[-1]) // 2] + "\n")  # line 41: half a row
    return copy


def test_a_failing_trial_is_reported_with_its_key_stage_error_and_log(smoke_raw, tmp_path, data_dir):
    """A trial whose stage 1 raises (its task's data file is damaged): the console and `itt-sweep status`
    name the trial, the stage and the error's last lines, and point to the trial's full log."""
    damaged = damaged_data_dir(data_dir, tmp_path, "conala_nl2python")
    sweep = reduced_sweep(smoke_raw, tmp_path, damaged)
    raw = yaml.safe_load(sweep.read_text())
    raw["matrix"]["intermediate_tasks"] = ["conala_nl2python"]
    raw["resources"] = {**raw.get("resources", {}), "max_failures": 0}
    sweep.write_text("# Run: itt-sweep run e2e.yaml\n" + yaml.safe_dump(raw))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-m", "itt_sweep.cli", "run", str(sweep)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    console = proc.stdout + proc.stderr
    (tmp_path / "console.txt").write_text(console)
    print(console[-6000:])
    assert proc.returncode != 0
    key = "conala_nl2python__python__s0__n0"
    log = tmp_path / "runs" / "e2e" / "logs" / key / "trial.log"
    assert f"trial {key} FAILED in stage intermediate:" in console
    assert "validation.jsonl:41: not a JSON line" in console  # the exception's last lines, naming the file
    assert f"full log: {log}" in console
    assert "validation.jsonl:41: not a JSON line" in log.read_text()  # the whole error, where the console points
    assert "DataFileError" in (log.parent / "intermediate-rank0.log").read_text()  # and the worker's own log
    assert "Trial task failed" not in console and "(pid=" not in console  # Tune's copy of it: driver log only
    assert "Trial task failed" in (tmp_path / "runs" / "e2e" / "logs" / "driver.log").read_text()
    for noise in ("(PlacementGroupCleaner", "(RayTrainWorker", "TrainingReport(", "Configuration for experiment"):
        assert noise not in console, (noise, console[-3000:])

    status = subprocess.run([sys.executable, "-m", "itt_sweep.cli", "status", str(tmp_path / "runs" / "e2e")],
                            cwd=tmp_path, env={**env, "COLUMNS": "160"}, capture_output=True, text=True,
                            timeout=300)
    assert f"trial {key} FAILED in stage intermediate:" in status.stdout, status.stdout + status.stderr
    assert "validation.jsonl:41: not a JSON line" in status.stdout and f"full log: {log}" in status.stdout
