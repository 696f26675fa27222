"""Bad sweep files that only the environment can reject (data, toolchains, storage, tracking, GPUs): each fails
at start, before Ray and before any trial, with one message naming the field, and writes nothing.
The schema-level half of the bad-input table is in test_config.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


CASES = {
    "data dir missing": ({"data": {"dir": "/nonexistent/itt-data"}}, "data.dir", "make data"),
    "swift has no toolchain here": ({"eval_languages": ["python", "swift"]}, "eval_languages", "swift"),
    "gpu requested on a cpu machine": ({"training": {"use_gpu": True}}, "training.use_gpu", "no GPU"),
    "storage under a file": ({"storage": {"path": "{tmp}/a_file/runs"}}, "storage.path", "not a directory"),
    "storage on a read-only fs": ({"storage": {"path": "/proc/itt-runs"}}, "storage.path", "not writable"),
    "model that does not exist": ({"model": {"name": "/nonexistent/model"}}, "model", "cannot load"),
    "gguf file that is not there": ({"model": {"name": "{tmp}", "gguf_file": "missing.gguf"}}, "model",
                                    "cannot load"),
    "more cpus than the machine has": ({"training": {"num_workers": 2, "cpus_per_worker": 64}},
                                       "training.cpus_per_worker", "this machine has"),
    "stage 3 wants more cpus than the machine has": ({"evaluation": {"cpus": 512}}, "evaluation.cpus",
                                                     "this machine has"),
    "tracking server unreachable": ({"tracking": {"uri": "http://127.0.0.1:{port}"}}, "tracking.uri", "unreachable"),
    # in a Ray Job the working dir is Ray's temporary copy of the checkout: results there would be lost
    "relative storage in a ray job": ({"storage": {"path": "runs"}}, "storage.path", "temporary copy",
                                      {"RAY_JOB_CONFIG_JSON_ENV_VAR": "{}"}),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_environment_errors_fail_before_any_trial_and_write_nothing(case, tmp_path, smoke_raw, data_dir):
    override, field, hint, *job_env = CASES[case]
    raw = {**smoke_raw, "data": {**smoke_raw["data"], "dir": str(data_dir)},
           "storage": {"path": str(tmp_path / "runs")}, "tracking": {"uri": f"sqlite:///{tmp_path}/m.db"}}
    text = yaml.safe_dump(override).replace("{tmp}", str(tmp_path)).replace("{port}", str(closed_port()))
    for section, value in yaml.safe_load(text).items():
        raw[section] = {**raw[section], **value} if isinstance(value, dict) else value
    (tmp_path / "a_file").write_text("not a directory")
    sweep = tmp_path / "bad.yaml"
    sweep.write_text("# Run: itt-sweep run bad.yaml\n" + yaml.safe_dump(raw))
    before = _files(tmp_path)
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, **(job_env[0] if job_env else {})}
    proc = subprocess.run([sys.executable, "-m", "itt_sweep.cli", "run", str(sweep)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.strip().startswith("- ")]
    assert len(errors) == 1 and errors[0].strip().startswith(f"- {field}:") and hint in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert _files(tmp_path) == before  # no storage dir, no MLflow store, no Ray session files here
