"""Training stages: the batch order that makes resume exact, the stage cache, and real ZeRO runs in Ray Train."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from itt_sweep.train.batches import encode_pair, rank_micro_batches, step_indices
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


def stage_job(model: Path, data_dir: Path, zero: int, key: str) -> dict:
    return {"key": key, "stage_name": "target", "init_model": str(model), "seed": 0, "bf16": False,
            "stage": {"steps": 4, "learning_rate": 1e-3, "warmup_steps": 1, "batch_size": 4, "grad_accum_steps": 1,
                      "seq_len": 128, "weight_decay": 0.0, "grad_clip": 1.0, "eval_every": 2,
                      "checkpoint_every": 2},
            "training": {"zero_stage": zero, "offload_optimizer": False, "offload_params": False, "num_workers": 2,
                         "use_gpu": False, "cpus_per_worker": 0.5, "precision": "fp32",
                         "gradient_checkpointing": False},
            "data": {"kind": "target", "task": None, "source_language": "python", "data_dir": str(data_dir),
                     "train_limit": 32, "val_limit": 8}}


@pytest.fixture(scope="module")
def local_ray():
    import ray

    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(address="local", include_dashboard=False, num_cpus=2)
    yield
    ray.shutdown()


@pytest.mark.slow
@pytest.mark.parametrize("zero", [2, 3])
def test_zero_stage_trains_in_two_ray_workers_and_exports_a_loadable_model(
        zero, tiny_model, data_dir, tmp_path, local_ray):
    from transformers import AutoModelForCausalLM

    job = stage_job(tiny_model, data_dir, zero, key=f"zero{zero}")
    entry, trained = run_stage(job, tmp_path / "stages", str(tmp_path / "train"))
    assert trained and is_complete(entry)
    metrics = json.loads((entry / "stage_metrics.json").read_text())
    assert [h["step"] for h in metrics["history"]] == [1, 2, 3, 4]
    assert metrics["final"]["target_val_loss"] > 0
    model = AutoModelForCausalLM.from_pretrained(entry)
    assert model.num_parameters() > 0
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

    job = stage_job(tiny_model, data_dir, 2, key="shared")
    job["training"]["num_workers"] = 1
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: run_stage(job, tmp_path / "stages", str(tmp_path / "train")), range(2)))
    assert results[0][0] == results[1][0]
    assert sorted(trained for _, trained in results) == [False, True]
    ledger = (tmp_path / "train" / "ledger.jsonl").read_text().splitlines()
    assert len(ledger) == 1


def test_a_cache_entry_with_a_truncated_file_is_rebuilt(tiny_model, data_dir, tmp_path, local_ray):
    job = stage_job(tiny_model, data_dir, 2, key="rebuilt")
    job["training"]["num_workers"] = 1
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

    job = stage_job(tiny_model, data_dir, 2, key="killed")
    job["training"]["num_workers"] = 1
    job["stage"].update(steps=40, eval_every=4, checkpoint_every=4)
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
