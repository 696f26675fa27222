"""A real pretrained model (SmolLM2-135M-Instruct, GGUF) through every stage: load, train, evaluate, export.

`scratch:tiny` tests the plumbing fast; these tests are the ones that show a real model works: its GGUF file
reaches every stage, its chat template makes chat prompts, its exports reload, and stage 3 executes what it
writes. Costs on a 2-core machine are in each test's docstring.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from itt_sweep.modeling import ModelRef, check_loadable, load
from tests.real_model import smollm2_ref

pytestmark = pytest.mark.slow
STATUSES = {"passed", "failed", "compile_error", "runtime_error", "timeout", "memory_exceeded"}


@pytest.fixture(scope="module")
def smollm2() -> ModelRef:
    return smollm2_ref()


def test_preflight_reads_config_and_tokenizer_of_the_gguf_model(smollm2):
    """~10 s: the tokenizer comes out of the GGUF file; a wrong file name is one line."""
    assert check_loadable(smollm2, needs_chat_template=True) is None
    wrong = smollm2.model_copy(update={"gguf_file": "SmolLM2-1.7B.gguf"})
    reason = check_loadable(wrong)
    assert reason is not None and reason.startswith("cannot load") and "\n" not in reason


def test_both_prompt_formats_generate_and_execute(smollm2, data_dir, tmp_path):
    """~1.5 min: stage 3 on the base model, completion and chat format, python x 2 problems each."""
    from itt_sweep.config import EvaluationSpec
    from itt_sweep.evaluate.stage3 import eval_problems, evaluate_model

    for fmt in ("completion", "chat"):
        spec = EvaluationSpec(prompt_format=fmt, max_new_tokens=96, batch_size=4, cpus=2)
        metrics, records = evaluate_model(smollm2, eval_problems(["python"], 2, data_dir), spec, data_dir,
                                          tmp_path / "refs")
        rows = records["python"]
        assert len(rows) == 2 and all(r["status"] in STATUSES for r in rows), rows
        assert metrics["python"]["n_prompt_too_long"] == 0
        assert torch.isfinite(torch.tensor(metrics["python"]["ref_nll"]))
        if fmt == "chat":
            # the reply is kept, and the completion is the code taken from it (the signature line dropped)
            assert all(r["reply"] for r in rows)
            assert all("```" not in r["completion"] for r in rows)
        else:
            assert all("reply" not in r for r in rows)


def test_eval_command_samples_the_gguf_model_for_pass_at_k(smollm2, data_dir, tmp_path):
    """~1 min: `itt-sweep eval` on the GGUF file, chat template, 2 sampled replies per problem."""
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "itt_sweep.cli", "eval", "--model", smollm2.name, "--gguf-file",
                           smollm2.gguf_file, "--languages", "python", "--problems", "2", "--prompt-format", "chat",
                           "--num-samples", "2", "--temperature", "0.7", "--k", "1,2", "--max-new-tokens", "48",
                           "--cpus", "2", "--out", str(out), "--data-dir", str(data_dir), "--reference-cache",
                           str(tmp_path / "refs")], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(line) for line in (out / "python.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["status"] in STATUSES for r in rows) and all(r["reply"] for r in rows)
    assert rows[0]["reply"] != rows[1]["reply"]  # two samples of one problem differ
    metrics = json.loads((out / "metrics.json").read_text())["languages"]["python"]
    assert {"pass_at_1", "pass_at_2"} <= set(metrics) and math.isfinite(metrics["ref_nll"])


def smollm2_sweep(tmp_path: Path, data_dir: Path, model: ModelRef) -> Path:
    raw = {
        "name": "real",
        "model": model.model_dump(exclude_none=True),
        "data": {"dir": str(data_dir), "intermediate_train_examples": 16, "intermediate_val_examples": 3,
                 "target_train_problems": 16, "target_val_problems": 3, "eval_problems": 3},
        "matrix": {"intermediate_tasks": ["conala_nl2python"], "source_languages": ["python"], "seeds": [0]},
        "eval_languages": ["python", "javascript"],
        "stages": {name: {"steps": 2, "learning_rate": 5e-5, "warmup_steps": 1, "batch_size": 2, "seq_len": 128,
                          "eval_every": 2, "checkpoint_every": 2, "prompt_format": "chat"}
                   for name in ("intermediate", "target")},
        "training": {"zero_stage": 2, "num_workers": 2, "cpus_per_worker": 0.5, "use_gpu": False},
        "evaluation": {"prompt_format": "chat", "max_new_tokens": 64, "batch_size": 4, "timeout_s": 10},
        "storage": {"path": str(tmp_path / "runs")},
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
    }
    path = tmp_path / "real.yaml"
    path.write_text("# Run: itt-sweep run real.yaml\n" + yaml.safe_dump(raw))
    return path


def test_gguf_model_through_itt_sweep_run(smollm2, data_dir, tmp_path):
    """~6 min: one trial, stage 1 (conala) -> stage 2 -> stage 3, ZeRO-2 on 2 CPU workers, chat format."""
    sweep = smollm2_sweep(tmp_path, data_dir, smollm2)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-m", "itt_sweep.cli", "run", str(sweep)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-6000:]

    entries = {json.loads((e / "stage_metrics.json").read_text())["final"]["stage"]: e
               for e in (tmp_path / "runs" / "stages").iterdir() if (e / "COMPLETE.json").is_file()}
    assert set(entries) == {"intermediate", "target"}
    base, _ = load(smollm2)
    stage1, _ = load(ModelRef(name=str(entries["intermediate"])))
    stage2, tokenizer = load(ModelRef(name=str(entries["target"])))
    # stage 1 started from the GGUF weights (a few small steps away from them), stage 2 from stage 1's export
    for name, weight in base.state_dict().items():
        assert weight.shape == stage1.state_dict()[name].shape
    assert base.num_parameters() == stage2.num_parameters() > 130_000_000
    moved = _distance(base, stage1)
    assert 0 < moved < 0.05 * _norm(base)
    assert 0 < _distance(stage1, stage2) < 0.05 * _norm(stage1)
    assert _distance(base, stage2) > 0
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"  # exported with the model

    trial = tmp_path / "runs" / "real" / "trials" / "conala_nl2python__python__s0__n0"
    config = json.loads((trial / "config.json").read_text())
    assert config["sweep"]["evaluation"]["prompt_format"] == "chat"
    assert config["sweep"]["model"]["gguf_file"] == smollm2.gguf_file
    for language in ("python", "javascript"):
        rows = [json.loads(line) for line in (trial / "completions" / f"{language}.jsonl").read_text().splitlines()]
        assert len(rows) == 3
        assert all(r["status"] in STATUSES for r in rows), rows  # executed, not skipped
        assert any(r["completion"].strip() for r in rows)
    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("itt-sweep/real")
    child = next(r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("itt.role") != "sweep")
    assert child.info.status == "FINISHED"
    assert child.data.params["evaluation.prompt_format"] == "chat"
    assert child.data.params["model.gguf_file"] == smollm2.gguf_file

    # the trained model scored again outside the sweep, through its trial dir
    out = tmp_path / "eval-trial"
    proc = subprocess.run([sys.executable, "-m", "itt_sweep.cli", "eval", "--model", str(trial), "--languages",
                           "javascript", "--problems", "2", "--prompt-format", "chat", "--max-new-tokens", "48",
                           "--out", str(out), "--data-dir", str(data_dir), "--reference-cache",
                           str(tmp_path / "refs")], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["model"]["name"] == str(entries["target"])
    assert summary["languages"]["javascript"]["n_problems"] == 2


@torch.no_grad()
def _distance(a, b) -> float:
    pairs = zip(a.parameters(), b.parameters(), strict=True)
    return sum(float((pa - pb).float().norm() ** 2) for pa, pb in pairs) ** 0.5


@torch.no_grad()
def _norm(model) -> float:
    return sum(float(p.float().norm() ** 2) for p in model.parameters()) ** 0.5


def test_fast_decoder_equals_hf_generate_on_real_weights(smollm2, data_dir):
    """~1.5 min: greedy fp32, MBXP prompts of 2 languages whose rows stop at different times (stop sequences
    and EOS); every completion equals HF generate's, or differs first at a near-tie (top-2 gap < 1e-4)."""
    from itt_sweep.data.mbxp import load_problems
    from itt_sweep.encoding import encode_prompt
    from itt_sweep.evaluate.generation import GenerationConfig, generate_completions
    from itt_sweep.execution.recipes import RECIPES

    model, tokenizer = load(smollm2)
    torch.set_num_threads(2)
    compared = 0
    for language in ("python", "java"):
        prompts = [p.prompt for p in load_problems(language, split="test", data_dir=data_dir, limit=6)]
        stops = RECIPES[language].stop_sequences
        runs = {decoder: generate_completions(model, tokenizer, prompts, stops,
                                              GenerationConfig(max_new_tokens=48, batch_size=6, decoder=decoder))
                for decoder in ("fast", "hf")}
        lengths = set()
        for prompt, fast, hf in zip(prompts, runs["fast"], runs["hf"], strict=True):
            compared += 1
            lengths.add(len(hf.texts[0]))
            if fast.texts == hf.texts:
                continue
            at = next(i for i, (a, b) in enumerate(zip(fast.tokens[0], hf.tokens[0], strict=False)) if a != b)
            with torch.no_grad():
                ids = torch.tensor([encode_prompt(tokenizer, prompt) + hf.tokens[0][:at]])
                top = torch.topk(model(ids).logits[0, -1].float(), 2).values
            assert float(top[0] - top[1]) < 1e-4, f"{language}: differs at token {at} without a near-tie"
        assert len(lengths) > 1  # rows really stopped at different times
    assert compared == 12
