"""The benchmark scripts, run for real with tiny settings: the GPU machine gets one try, so the code path it runs
must already work here (same scripts, a tiny model, the CPU)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"


def load_common():
    spec = importlib.util.spec_from_file_location("bench_common", BENCH / "common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(args: list[str], timeout: float, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "OUT"}  # results go where each test says
    full_env.update(PYTHONPATH=str(REPO / "src"), RAY_AUTH_MODE="disabled", **env)
    proc = subprocess.run(args, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_mfu_reproduces_the_issue_reference_figures_with_its_convention():
    common = load_common()
    cfg = common.LLAMA_1B
    assert common.parameter_count(cfg) == 1_100_048_384  # TinyLlama-1.1B
    assert common.mfu(49.1e3, cfg, 2048, causal=False) == pytest.approx(0.382, abs=0.001)
    assert common.mfu(60.6e3, cfg, 2048, causal=False) == pytest.approx(0.472, abs=0.001)
    # the causal convention counts half the attention scores, so the same speed is a lower MFU
    assert common.mfu(49.1e3, cfg, 2048) < common.mfu(49.1e3, cfg, 2048, causal=False)


def test_parameter_count_matches_the_model_built_from_the_config():
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    common = load_common()
    for cfg in (common.LLAMA_1B, common.LLAMA_TINY):
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg))
        assert model.num_parameters() == common.parameter_count(cfg)


def test_results_go_to_out_on_the_device_machine_and_to_results_here(monkeypatch, tmp_path):
    common = load_common()
    monkeypatch.delenv("OUT", raising=False)
    assert common.result_path("gpu_train.json") == REPO / "benchmarks" / "results" / "gpu_train.json"
    monkeypatch.setenv("OUT", str(tmp_path))
    assert common.result_path("gpu_train.json") == tmp_path / "gpu_train.json"
    assert common.result_path("gpu_train.json", out=str(tmp_path / "x.json")) == tmp_path / "x.json"


def test_generation_benchmark_finds_our_decoder_identical_to_hf_generate(tmp_path):
    out = tmp_path / "generate.json"
    run_script([sys.executable, "benchmarks/bench_generate.py", "--batches", "3,5", "--max-new-tokens", "8",
                "--hf-repeats", "1", "--ours-repeats", "1", "--out", str(out)], timeout=300)
    report = json.loads(out.read_text())
    assert report["machine"]["versions"]["torch"]
    assert [row["batch"] for row in report["batches"]] == [3, 5]
    for row in report["batches"]:
        assert row["ours_vs_hf_static"]["identical"] and row["ours_vs_hf_dynamic"]["identical"]
        assert row["ours"]["new_tokens"] > 0 and row["ours"]["new_tokens_per_s"] > 0


@pytest.mark.slow
def test_gpu_training_variants_run_on_a_tiny_model_and_report_throughput(tmp_path):
    out = tmp_path / "gpu_train.json"
    run_script([sys.executable, "benchmarks/bench_train.py", "--gpu", "--tiny", "--variants",
                "plain_eager,ours_eager", "--steps", "5", "--warmup", "2", "--profile-steps", "2",
                "--out", str(out)], timeout=600)
    report = json.loads(out.read_text())
    rows = {row["variant"]: row for row in report["variants"]}
    assert set(rows) == {"plain_eager", "ours_eager"}
    for row in rows.values():
        assert row["status"] == "ok" and row["timed_steps"] == 3 and row["tokens_per_s"] > 0  # profiled: apart
        assert 0 < row["mfu"] < row["mfu_reference_convention"]
        names = " ".join(op["name"] for op in row["profile"])
        assert "aten::mm" in names or "aten::addmm" in names, names  # the model's matmuls show up
        assert all(op["ms_per_step"] > 0 for op in row["profile"])
    assert report["ratios"]["ours_eager/plain_eager"] > 0


@pytest.mark.slow
def test_cpu_benchmark_compares_our_ray_deepspeed_stage_with_a_plain_loop(tmp_path, data_dir):
    out = tmp_path / "train.json"
    run_script([sys.executable, "benchmarks/bench_train.py", "--steps", "6", "--warmup", "2", "--out", str(out)],
               timeout=900, ITT_DATA_DIR=str(data_dir))
    report = json.loads(out.read_text())
    assert report["ours_ray_deepspeed"]["timed_steps"] == 4
    assert report["plain"]["timed_steps"] == 8  # the plain loop runs before and after ours
    assert report["step_time_ratio_ours_over_plain"] > 0
    assert report["ours_ray_deepspeed"]["outside_steps_s"] > 0  # startup is reported apart from the steps


@pytest.mark.slow
def test_gpu_check_script_runs_end_to_end_as_a_dry_run(tmp_path):
    proc = run_script(["bash", "benchmarks/gpu_check.sh", "--tiny"], timeout=900, PYTHON=sys.executable,
                      OUT=str(tmp_path), SITE=str(tmp_path / "site"))
    assert "generation exit 0, training exit 0" in proc.stdout
    assert {p.name for p in tmp_path.iterdir()} >= {"gpu_check.log", "gpu_generate.json", "gpu_train.json"}
    train = json.loads((tmp_path / "gpu_train.json").read_text())
    assert [row["status"] for row in train["variants"]] == ["ok"] * 4


def test_fp32_identity_check_compares_our_decoder_with_hf_generate(monkeypatch):
    """The GPU run judges exactness in fp32 (bf16 random weights have near-tied logits); the same code here."""
    import torch

    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_generate_under_test", BENCH / "bench_generate.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    cfg = dict(load_common().LLAMA_TINY)
    prompts = bench.synthetic_prompts(4, cfg["vocab_size"], 5, 12)
    result = bench.identity_check(cfg, prompts, torch.device("cpu"), cfg["eos_token_id"], 0, max_new=8)
    assert result["batch"] == 4 and result["ours_vs_hf_dynamic"]["identical"], result


@pytest.mark.slow
def test_stage3_benchmark_runs_both_paths_and_checks_identity(tmp_path, data_dir):
    """The stage-3 benchmark's code path with a scratch model, 2 languages x 3 problems (seconds)."""
    from itt_sweep.data.mbxp import load_problems
    from itt_sweep.modeling import build_scratch

    texts = [p.prompt + (p.canonical_solution or "") for p in load_problems("python", "train", data_dir=data_dir)]
    model = build_scratch("tiny", texts, tmp_path / "tiny")
    out = tmp_path / "stage3.json"
    run_script([sys.executable, "benchmarks/bench_stage3.py", "--model", str(model), "--languages",
                "python,javascript", "--problems", "3", "--max-new-tokens", "16", "--repeats", "1", "--out",
                str(out)], timeout=900, ITT_DATA_DIR=str(data_dir))
    report = json.loads(out.read_text())
    [run] = report["runs"]
    assert report["medians_per_batch"]["16"]["speedup_wall"] == run["speedup_wall"]
    assert run["identity"]["other_differences"] == 0
    assert run["identity"]["identical"] + run["identity"]["near_ties"] == 6
    for path in ("previous", "product"):
        assert run[path]["wall_s"] > 0 and 0 < run[path]["model_busy_fraction"] <= 1
