"""The sweep-file schema: good files expand to the right matrix, bad ones fail naming the field."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from itt_sweep.config import SweepFileError, load_sweep, parse_sweep, stable_hash, trial_count

REPO = Path(__file__).resolve().parents[1]


def test_every_sweep_file_validates_and_opens_with_its_run_command():
    for path in sorted((REPO / "sweeps").glob("*.yaml")):
        first = path.read_text().splitlines()[0]
        assert first.startswith("# Run:"), f"{path.name} must open with the command that runs it"
        load_sweep(path)


def test_smoke_matrix_expands_to_one_trial_per_cell(smoke_raw):
    sweep = parse_sweep(smoke_raw)
    assert [c.key for c in sweep.cells()] == [
        "none__python__s0", "conala_nl2python__python__s0",
        "codexglue_java_cs_translation__python__s0", "all__python__s0"]
    assert trial_count(sweep) == 4


def test_matrix_is_the_full_grid_times_samples(smoke_raw):
    raw = copy.deepcopy(smoke_raw)
    raw["matrix"]["seeds"] = [0, 1, 2]
    raw["matrix"]["source_languages"] = ["python", "java"]
    raw["search"] = {"num_samples": 2, "space": {"target.learning_rate": {"type": "loguniform",
                                                                          "low": 1e-4, "high": 1e-2}}}
    assert trial_count(parse_sweep(raw)) == 4 * 2 * 3 * 2


def _mutate(raw: dict, dotted: str, value) -> dict:
    raw = copy.deepcopy(raw)
    *parents, last = dotted.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
    if value is _DELETE:
        node.pop(last)
    else:
        node[last] = value
    return raw


_DELETE = object()

BAD = [
    ("matrix.intermediate_tasks", ["conala"], "matrix.intermediate_tasks", "conala_nl2python"),
    ("matrix.intermediate_tasks", [], "matrix.intermediate_tasks", "at least 1"),
    ("matrix.source_languages", ["cobol"], "matrix.source_languages", "python"),
    ("eval_languages", ["klingon"], "eval_languages", "javascript"),
    ("matrix.seeds", [1, 1], "matrix.seeds", "unique"),
    ("matrix.seeds", [-1], "matrix.seeds", "greater than or equal to 0"),
    ("stages.target.steps", -5, "stages.target.steps", "greater than 0"),
    ("stages.target.learning_rate", 0, "stages.target.learning_rate", "greater than 0"),
    ("stages.target.warmup_steps", 500, "stages.target", "warmup_steps"),
    ("training.zero_stage", 4, "training.zero_stage", "0, 1, 2 or 3"),
    ("training.offload_params", True, "training", "zero_stage: 3"),
    ("model.name", "scratch:huge", "model.name", "scratch:tiny"),
    ("search.space", {"target.lr": {"type": "uniform", "low": 0, "high": 1}}, "search.space", "target.learning_rate"),
    ("search.space", {"target.learning_rate": {"type": "loguniform", "low": 0, "high": 1}},
     "search.space.target.learning_rate", "low > 0"),
    ("search.space", {"target.learning_rate": {"type": "uniform", "low": 2, "high": 1}},
     "search.space.target.learning_rate", "low < high"),
    ("search.scheduler", "hyperband", "search.scheduler", "'none' or 'asha'"),
    ("training.precision", "fp8", "training.precision", "'auto', 'fp32' or 'bf16'"),
    ("evaluation.timeout_s", 0, "evaluation.timeout_s", "greater than 0"),
    ("name", "has spaces", "name", "pattern"),
    ("stages.target.stepz", 3, "stages.target.stepz", "unknown field"),
    ("matrix", _DELETE, "matrix", "Field required"),
    ("stages.target.steps", 99999999999999999999999, "stages.target.steps", "less than or equal to 10000000"),
    ("stages.target.batch_size", 7, "stages.target.batch_size", "multiple of micro_batch_size"),
    ("stages.intermediate.micro_batch_size", 3, "stages.intermediate.batch_size", "x num_workers (2)"),
    ("stages.target.grad_accum_steps", 2, "stages.target.grad_accum_steps", "unknown field"),
    ("stages.target.prompt_format", "instruct", "stages.target.prompt_format", "'completion' or 'chat'"),
    ("evaluation.prompt_format", "instruct", "evaluation.prompt_format", "'completion' or 'chat'"),
    ("evaluation.max_new_tokens", {"klingon": 64}, "evaluation.max_new_tokens", "unknown language"),
    ("model.name", "", "model.name", "hub id"),
    ("evaluation.typescript_type_errors", "warn", "evaluation.typescript_type_errors", "'fail' or 'ignore'"),
]


@pytest.mark.parametrize(("field", "value", "where", "hint"), BAD, ids=[f"{b[0]}={b[1]!r}"[:60] for b in BAD])
def test_bad_sweep_file_names_the_field_and_the_allowed_values(smoke_raw, field, value, where, hint):
    with pytest.raises(SweepFileError) as err:
        parse_sweep(_mutate(smoke_raw, field, value), "bad.yaml")
    message = str(err.value)
    assert "bad.yaml" in message
    line = next((p for p in err.value.problems if p.startswith(where)), None)
    assert line is not None, message
    assert hint in line, message


def test_not_yaml_and_not_a_mapping_are_clear_errors(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(SweepFileError, match="not valid YAML"):
        load_sweep(broken)
    broken.write_text("- just\n- a list\n")
    with pytest.raises(SweepFileError, match="YAML mapping"):
        load_sweep(broken)
    with pytest.raises(SweepFileError, match="file not found"):
        load_sweep(tmp_path / "missing.yaml")


def test_sweep_file_that_is_not_utf8_is_one_clear_error(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(SweepFileError) as err:
        load_sweep(path)
    assert err.value.problems == [line for line in err.value.problems if "not UTF-8" in line]
    proc = subprocess.run([sys.executable, "-m", "itt_sweep.cli", "validate", str(path)], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "not UTF-8" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latin1.yaml"]


def test_batch_size_is_per_optimizer_step_across_workers(smoke_raw):
    sweep = parse_sweep(_mutate(_mutate(smoke_raw, "stages.target.batch_size", 16), "training.num_workers", 2))
    assert sweep.stages.target.batch_split(2) == (8, 1)  # micro batch = batch / workers by default
    sweep = parse_sweep(_mutate(smoke_raw, "stages.target.micro_batch_size", 2))
    assert sweep.stages.target.batch_split(2) == (2, 2)  # 8 = 2 per worker x 2 workers x 2 accumulation steps


def test_learning_rate_defaults_follow_the_kind_of_model(smoke_raw):
    raw = copy.deepcopy(smoke_raw)
    del raw["stages"]["target"]["learning_rate"]
    assert parse_sweep(raw).stages.target.learning_rate == 3e-4  # scratch: learns from nothing
    raw["model"] = {"name": "Salesforce/codegen-350M-mono"}
    sweep = parse_sweep(raw)
    assert sweep.stages.target.learning_rate == 2e-5  # pretrained: fine-tuned
    assert sweep.stages.intermediate.learning_rate == 3e-3  # what the file says stays


def test_max_new_tokens_per_language(smoke_raw):
    sweep = parse_sweep(_mutate(smoke_raw, "evaluation.max_new_tokens", {"default": 128, "java": 256}))
    assert sweep.evaluation.new_tokens("java") == 256 and sweep.evaluation.new_tokens("python") == 128


def test_pass_at_k_sampling_is_checked_before_anything_runs(smoke_raw):
    raw = _mutate(smoke_raw, "evaluation", {"num_samples": 10, "temperature": 0.8, "pass_k": [1, 10]})
    assert parse_sweep(raw).evaluation.ks == [1, 10]
    with pytest.raises(SweepFileError, match="evaluation.temperature > 0"):
        parse_sweep(_mutate(smoke_raw, "evaluation", {"num_samples": 10}))
    with pytest.raises(SweepFileError, match="k=20 needs evaluation.num_samples >= 20"):
        parse_sweep(_mutate(smoke_raw, "evaluation", {"num_samples": 10, "temperature": 0.8, "pass_k": [20]}))
    assert parse_sweep(smoke_raw).evaluation.ks == [1]  # greedy pass@1 by default


def test_stable_hash_ignores_key_order():
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})


def test_validate_cli_fails_before_ray_and_writes_nothing(tmp_path, smoke_raw):
    bad = _mutate(smoke_raw, "training.zero_stage", 7)
    bad["storage"] = {"path": str(tmp_path / "runs")}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    proc = subprocess.run([sys.executable, "-m", "itt_sweep.cli", "validate", str(path)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert "training.zero_stage" in proc.stderr
    assert "ray" not in proc.stderr.lower()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]
