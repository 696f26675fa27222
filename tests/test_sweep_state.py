"""scripts/sweep_state.sh: a stopped sweep carried to another machine without its weights."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "sweep_state.sh"


def state(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True)


def fake_sweep(checkout: Path) -> dict[str, Path]:
    """The files a stopped local sweep leaves: what resume and the analysis read, and the weights they do not."""
    runs = checkout / "runs"
    files = {
        "resolved": runs / "s" / "sweep.resolved.yaml",
        "tune": runs / "s" / "tune" / "experiment_state-2026.json",
        "trial": runs / "s" / "trials" / "none__python__s0__n0" / "metrics.json",
        "log": runs / "s" / "logs" / "driver.log",
        "ledger": runs / "s" / "train" / "ledger.jsonl",
        "reference": runs / "references" / "python.json",
        "stage_metrics": runs / "stages" / "abc123" / "stage_metrics.json",
        "mlflow_db": checkout / "mlflow.db",
        "artifact": checkout / "mlruns" / "1" / "r" / "artifacts" / "samples.jsonl",
    }
    weights = {
        "stage_weights": runs / "stages" / "abc123" / "model.safetensors",
        "step_checkpoint": runs / "s" / "train" / "stage-abc123" / "step_0000004" / "model.safetensors",
    }
    for name, path in {**files, **weights}.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)
    return {**files, **weights}


def test_save_then_restore_brings_back_the_state_but_no_weights(tmp_path):
    checkout = tmp_path / "checkout"
    paths = fake_sweep(checkout)
    archive = tmp_path / "out" / "state.tar.gz"
    saved = state("save", "runs/s", str(archive), cwd=checkout)
    assert saved.returncode == 0, saved.stderr
    shutil.rmtree(checkout)

    restored = state("restore", str(archive), cwd=tmp_path)
    assert restored.returncode == 0, restored.stderr
    for name, path in paths.items():
        if name in ("stage_weights", "step_checkpoint"):
            assert not path.exists(), name
        else:
            assert path.read_text() == name, name


def test_restore_never_overwrites_an_existing_file(tmp_path):
    checkout = tmp_path / "checkout"
    paths = fake_sweep(checkout)
    archive = tmp_path / "state.tar.gz"
    assert state("save", "runs/s", str(archive), cwd=checkout).returncode == 0
    paths["trial"].write_text("newer")

    restored = state("restore", str(archive), cwd=tmp_path)
    assert restored.returncode != 0
    assert paths["trial"].read_text() == "newer"


def test_save_of_a_dir_that_is_no_sweep_names_it(tmp_path):
    (tmp_path / "empty").mkdir()
    saved = state("save", "empty", str(tmp_path / "a.tar.gz"), cwd=tmp_path)
    assert saved.returncode == 1
    assert "not a sweep dir (no sweep.resolved.yaml)" in saved.stderr
    assert not (tmp_path / "a.tar.gz").exists()
