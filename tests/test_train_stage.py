"""Training stages: the batch order that makes resume exact, the stage cache, and real ZeRO runs in Ray Train."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from itt_sweep.train.batches import encode_pair, rank_micro_batches, step_indices
from itt_sweep.train.job import StageJob
from itt_sweep.train.loop import validation_batches
from itt_sweep.train.stage import is_complete, publish, run_stage


def test_batches_depend_only_on_seed_and_step():
    assert step_indices(10, 4, 7, seed=3) == step_indices(10, 4, 7, seed=3)
    assert step_indices(10, 4, 7, seed=3) != step_indices(10, 4, 7, seed=4)
    epoch = [i for s in range(5) for i in step_indices(10, 2, s, seed=0)]
    assert sorted(epoch) == list(range(10))  # one epoch visits every example once


def test_ranks_split_a_step_without_overlap():
    idx = step_indices(100, 8, 0, seed=0)
    shares = [i for r in range(2) for mb in rank_micro_batches(idx, r, 2, 2) for i in mb]
    assert sorted(shares) == sorted(idx)


def test_prompt_tokens_are_masked_from_the_loss(tmp_path):
    from itt_sweep.modeling import train_tokenizer

    tok = train_tokenizer(["def f(x):\n    return x\n"] * 20, vocab_size=280)
    enc = encode_pair(tok, "def f(x):\n", "    return x\n", seq_len=64)
    n_prompt = len(tok("def f(x):\n")["input_ids"])
    assert enc.labels[:n_prompt] == [-100] * n_prompt
    assert enc.labels[n_prompt:] == enc.input_ids[n_prompt:]
    assert enc.labels[-1] == tok.eos_token_id


def test_cache_entry_with_a_truncated_file_is_not_complete(tmp_path):
    src = tmp_path / "export"
    src.mkdir()
    (src / "model.safetensors").write_bytes(b"x" * 1000)
    entry = publish(src, tmp_path / "cache" / "abc")
    assert is_complete(entry)
    with open(entry / "model.safetensors", "r+b") as f:
        f.truncate(10)
    assert not is_complete(entry)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, data_dir):
    from itt_sweep.data.mbxp import load_problems
    from itt_sweep.modeling import build_scratch

    texts = [p.prompt + (p.canonical_solution or "") for p in load_problems("python", "train", data_dir=data_dir)]
    return build_scratch("tiny", texts, tmp_path_factory.mktemp("models") / "tiny")


def stage_job(model: Path, data_dir: Path, zero: int, key: str, workers: int = 2, val_limit: int = 8,
              bf16: bool = False, **stage) -> StageJob:
    return StageJob.model_validate({
        "key": key, "stage_name": "target", "init_model": {"name": str(model)}, "seed": 0, "bf16": bf16,
        "stage": {"steps": 4, "learning_rate": 1e-3, "warmup_steps": 1, "batch_size": 4, "seq_len": 128,
                  "weight_decay": 0.0, "grad_clip": 1.0, "eval_every": 2, "checkpoint_every": 2, **stage},
        "training": {"zero_stage": zero, "num_workers": workers, "cpus_per_worker": 0.5,
                     "precision": "bf16" if bf16 else "fp32"},
        "data": {"kind": "target", "source_language": "python", "data_dir": str(data_dir),
                 "train_limit": 32, "val_limit": val_limit}})


@pytest.fixture(scope="module")
def local_ray():
    import ray

    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(address="local", include_dashboard=False, num_cpus=2)
    yield
    ray.shutdown()


@pytest.mark.parametrize(("n", "world", "micro"), [(5, 2, 2), (90, 4, 8), (1, 4, 1), (7, 3, 2), (8, 2, 4)])
def test_every_rank_runs_the_same_number_of_validation_forwards(n, world, micro):
    plans = [validation_batches(n, rank, world, micro) for rank in range(world)]
    assert len({len(plan) for plan in plans}) == 1
    assert sorted(i for plan in plans for batch in plan for i in batch) == list(range(n))
    assert all(len(batch) <= micro for plan in plans for batch in plan)


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("zero", [2, 3])
def test_zero_stage_trains_in_two_ray_workers_and_exports_a_loadable_model(
        zero, tiny_model, data_dir, tmp_path, local_ray):
    from transformers import AutoModelForCausalLM

    # 5 validation problems on 2 ranks, micro-batches of 2: 3 and 2 examples, which used to be 2 and 1
    # forwards, and ZeRO-3 (a gather in every forward) then waited forever
    job = stage_job(tiny_model, data_dir, zero, key=f"zero{zero}", val_limit=5)
    entry, trained = run_stage(job, tmp_path / "stages", str(tmp_path / "train"))
    assert trained and is_complete(entry)
    metrics = json.loads((entry / "stage_metrics.json").read_text())
    assert [h["step"] for h in metrics["history"]] == [1, 2, 3, 4]
    assert metrics["final"]["target_val_loss"] > 0
    model = AutoModelForCausalLM.from_pretrained(entry)
    assert model.num_parameters() > 0
    run_dir = tmp_path / "train" / f"stage-zero{zero}"
    kept = sorted(p.name for p in run_dir.iterdir() if p.is_dir())
    assert kept == ["export"], kept  # step checkpoints (weights + optimizer state) are not left behind
    again, trained_again = run_stage(job, tmp_path / "stages", str(tmp_path / "train"))
    assert again == entry and not trained_again  # the cache answers; nothing is retrained


def test_packing_fills_rows_and_keeps_the_loss_mask():
    from itt_sweep.train.batches import Encoded, pack

    examples = [Encoded([1, 2, 3, 9], [-100, -100, 3, 9]), Encoded([4, 5, 9], [-100, 5, 9]),
                Encoded([6, 7, 8, 9], [-100, 7, 8, 9])]
    rows = pack(examples, seq_len=8)
    assert [r.input_ids for r in rows] == [[1, 2, 3, 9, 4, 5, 9], [6, 7, 8, 9]]
    assert rows[0].labels == [-100, -100, 3, 9, -100, 5, 9]
    assert all(len(r.input_ids) <= 8 for r in rows)


def test_two_concurrent_trials_sharing_a_stage_train_it_once(tiny_model, data_dir, tmp_path, local_ray):
    """Both callers get the same cache entry; the ledger shows one training run."""
    from concurrent.futures import ThreadPoolExecutor

    job = stage_job(tiny_model, data_dir, 2, key="shared", workers=1)
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: run_stage(job, tmp_path / "stages", str(tmp_path / "train")), range(2)))
    assert results[0][0] == results[1][0]
    assert sorted(trained for _, trained in results) == [False, True]
    ledger = (tmp_path / "train" / "ledger.jsonl").read_text().splitlines()
    assert len(ledger) == 1


def test_a_cache_entry_with_a_truncated_file_is_rebuilt(tiny_model, data_dir, tmp_path, local_ray):
    job = stage_job(tiny_model, data_dir, 2, key="rebuilt", workers=1)
    entry, _ = run_stage(job, tmp_path / "stages", str(tmp_path / "train"))
    with open(entry / "model.safetensors", "r+b") as f:
        f.truncate(100)
    again, trained = run_stage(job, tmp_path / "stages", str(tmp_path / "train2"))
    assert trained and is_complete(again)
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(again)  # loads: the truncated file was replaced


@pytest.mark.slow
def test_killed_training_worker_resumes_from_the_last_checkpoint(tiny_model, data_dir, tmp_path, local_ray):
    """SIGKILL the Ray Train worker after a registered checkpoint: FailureConfig restarts it from that step."""
    import threading
    import time

    from tests.procs import cmdline, descendants, kill_tree

    job = stage_job(tiny_model, data_dir, 2, key="killed", workers=1, steps=40, eval_every=4, checkpoint_every=4)
    done: dict = {}
    thread = threading.Thread(target=lambda: done.update(r=run_stage(job, tmp_path / "stages", str(tmp_path / "t"))))
    thread.start()
    snapshot = tmp_path / "t" / "stage-killed" / "checkpoint_manager_snapshot.json"
    deadline, killed = time.monotonic() + 300, False
    while time.monotonic() < deadline and not killed:
        if snapshot.exists() and '"step_' in snapshot.read_text():
            workers = [p for p in descendants(os.getpid()) if "RayTrainWorker" in cmdline(p)]
            if workers:
                kill_tree(workers[0])
                killed = True
        time.sleep(0.1)
    thread.join(timeout=600)
    assert killed and "r" in done
    metrics = json.loads((done["r"][0] / "stage_metrics.json").read_text())
    assert [h["step"] for h in metrics["history"]] == list(range(1, 41))
    assert metrics["resumed_from_steps"] and all(s % 4 == 0 and s > 0 for s in metrics["resumed_from_steps"])


def _sentencepiece_tokenizer():
    """A Unigram tokenizer with SentencePiece's whitespace rule (Llama-style): spaces become "▁", and a text
    starts with one; no normaliser, so code's spaces and newlines survive."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = ["def f(x):\n    return x + 1\n", "def g(a, b):\n    if a:\n        return b\n    return a\n"] * 50
    sp = Tokenizer(models.Unigram())  # Llama 2's fast tokenizer: "▁" in front of every text, spaces as "▁"
    sp.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    sp.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=False)
    sp.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    sp.train_from_iterator(corpus, trainers.UnigramTrainer(vocab_size=120, special_tokens=["<s>", "</s>", "<pad>"],
                                                           unk_token="<s>", show_progress=False))
    sp.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=sp, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def test_sentencepiece_completion_keeps_its_indentation():
    tok = _sentencepiece_tokenizer()
    prompt, completion = "def f(x):\n", "    return x + 1\n"
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    alone = tok(completion, add_special_tokens=False)["input_ids"]
    assert tok.decode(prompt_ids + alone) != prompt + completion  # the old way: one space too many
    enc = encode_pair(tok, prompt, completion, seq_len=64)
    n_prompt = next(i for i, label in enumerate(enc.labels) if label != -100)
    assert enc.input_ids[:n_prompt] == [tok.bos_token_id] + prompt_ids
    completion_ids = enc.input_ids[n_prompt:-1]  # without the EOS the trainer appends
    assert enc.input_ids[-1] == tok.eos_token_id
    assert tok.decode(prompt_ids + completion_ids) == prompt + completion


def test_bos_is_added_the_same_way_in_training_generation_and_scoring():
    from itt_sweep.encoding import encode_pair as joint_ids
    from itt_sweep.encoding import encode_prompt

    tok = _sentencepiece_tokenizer()
    bos = tok.bos_token_id
    assert tok("x")["input_ids"][0] == bos  # this tokenizer adds BOS by default
    prompt = "def f(x):\n"
    train = encode_pair(tok, prompt, "    return x\n", seq_len=64)
    scored, n_prompt = joint_ids(tok, prompt, "    return x\n")
    generated_from = encode_prompt(tok, prompt)
    assert train.input_ids[0] == scored[0] == generated_from[0] == bos
    assert scored[:n_prompt] == generated_from == train.input_ids[:n_prompt]
    assert train.input_ids.count(bos) == 1


def test_no_bos_where_the_tokenizer_adds_none():
    from itt_sweep.encoding import encode_prompt
    from itt_sweep.modeling import train_tokenizer

    tok = train_tokenizer(["def f(x):\n    return x\n"] * 20, vocab_size=280)
    assert encode_prompt(tok, "def f(x):\n") == tok("def f(x):\n", add_special_tokens=False)["input_ids"]


EXPORT_SCRIPT = r"""
import json, os, sys
import torch
from itt_sweep.train.loop import run_without_ray
from itt_sweep.train.job import StageJob
job = StageJob.model_validate_json(sys.argv[1])
result = run_without_ray(job)
print(json.dumps({"val_loss": result[job.stage_name + "_val_loss"]}))
"""


@pytest.mark.slow
def test_export_writes_the_fp32_master_weights_of_a_bf16_run(tiny_model, data_dir, tmp_path):
    """bf16 training keeps fp32 master weights; the export must be those, not their bf16 rounding."""
    import subprocess
    import sys

    import torch
    from safetensors.torch import load_file

    job = stage_job(tiny_model, data_dir, 2, key="bf16", workers=1, bf16=True, steps=3, learning_rate=1e-4,
                    eval_every=3, checkpoint_every=100)
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT="29731", RANK="0", LOCAL_RANK="0",
               WORLD_SIZE="1", DS_ACCELERATOR="cpu", TMPDIR=str(tmp_path))
    root = tmp_path / "local"
    script = EXPORT_SCRIPT.replace("run_without_ray(job)", f"run_without_ray(job, checkpoint_root={str(root)!r})")
    out = subprocess.run([sys.executable, "-c", script, job.model_dump_json()], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    exported = load_file(root / "export" / "model.safetensors")
    initial = load_file(tiny_model / "model.safetensors")
    weight = "model.layers.0.mlp.down_proj.weight"
    assert not torch.equal(exported[weight], initial[weight])  # it trained
    moved = [name for name in exported if not torch.equal(exported[name], initial[name])]
    assert moved
    for name in moved:
        w = exported[name]
        assert w.dtype == torch.float32
        assert not torch.equal(w, w.bfloat16().float()), f"{name} is bf16-rounded"


def test_cpu_threads_follow_the_cpus_each_worker_holds():
    from itt_sweep.train.loop import cpu_threads
    from itt_sweep.train.stage import worker_env

    assert [cpu_threads(c) for c in (0.5, 1, 2, 8)] == [1, 1, 2, 8]
    assert worker_env(False, 4)["OMP_NUM_THREADS"] == "4"
    assert worker_env(False, 0.5)["OMP_NUM_THREADS"] == "1"
    assert "OMP_NUM_THREADS" not in worker_env(True, 8)


def test_weight_decay_skips_biases_and_norms():
    import torch

    from itt_sweep.train.loop import param_groups

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    decay, keep = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and keep["weight_decay"] == 0.0
    assert {tuple(p.shape) for p in decay["params"]} == {(4, 4), (2, 4)}
    assert len(keep["params"]) == 4 and all(p.dim() == 1 for p in keep["params"])  # 2 biases + norm gain/bias
