"""The training loop of one stage, read top to bottom: engine → resume → steps → checkpoints → export.

It runs in every Ray Train worker (`train_loop_per_worker`) and, for the GPU benchmark, without Ray through
`run_stage_loop(job, LocalSession())`. Everything a worker needs is in the job dict, so the loop is the same
on a laptop and on a cluster.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from itt_sweep.train.batches import collate, encode_pairs, rank_micro_batches, step_indices
from itt_sweep.train.ds_config import deepspeed_config
from itt_sweep.train.session import LocalSession, RaySession, Session
from itt_sweep.train.stage_data import stage_pairs

CHECKPOINT_TAG = "ckpt"


def prepare_runtime(use_gpu: bool) -> None:
    """CPU workers: one OMP thread (2 threads were 25x slower) and no shared-memory comm op (minutes of C++)."""
    if use_gpu:
        return
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    import deepspeed.comm.torch  # noqa: F401  (the attribute resolves to torch; the module is what we patch)

    sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None


def lr_lambda(warmup: int, total: int):
    """Linear warmup to the peak, then linear decay to 10% of it."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.1, 1.0 - 0.9 * (step - warmup) / max(1, total - warmup))
    return factor


def build_engine(job: dict[str, Any], world_size: int):
    import deepspeed
    from transformers import AutoModelForCausalLM, AutoTokenizer

    stage, training = job["stage"], job["training"]
    tokenizer = AutoTokenizer.from_pretrained(job["init_model"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(job["init_model"], dtype=torch.float32)
    if training["gradient_checkpointing"]:
        model.gradient_checkpointing_enable()
    optimizer = torch.optim.AdamW(model.parameters(), lr=stage["learning_rate"],
                                  weight_decay=stage["weight_decay"], betas=(0.9, 0.95))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(stage["warmup_steps"], stage["steps"]))
    micro = max(1, math.ceil(stage["batch_size"] / (world_size * stage["grad_accum_steps"])))
    config = deepspeed_config(
        zero_stage=training["zero_stage"], micro_batch=micro, grad_accum=stage["grad_accum_steps"],
        world_size=world_size, grad_clip=stage["grad_clip"], bf16=job["bf16"],
        offload_optimizer=training["offload_optimizer"], offload_params=training["offload_params"])
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=config)
    return engine, tokenizer, micro


def mean_over_ranks(value: float) -> float:
    """The logged train loss is the mean of all ranks' losses, not rank 0's share."""
    if not torch.distributed.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return float(t.item() / torch.distributed.get_world_size())


@torch.no_grad()
def validation_loss(engine, val_set, pad_id: int, micro: int, rank: int, world: int) -> float:
    """Token-weighted loss over the whole validation set, summed across ranks."""
    engine.eval()
    totals = torch.zeros(2, dtype=torch.float64)
    mine = list(range(rank, len(val_set), world))
    for i in range(0, len(mine), micro):
        batch = {k: v.to(engine.device) for k, v in collate([val_set[j] for j in mine[i:i + micro]], pad_id).items()}
        n_tokens = (batch["labels"][:, 1:] != -100).sum()
        loss = engine(**batch).loss
        totals += torch.tensor([loss.float().item() * n_tokens.item(), n_tokens.item()], dtype=torch.float64)
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(totals)
    engine.train()
    return float(totals[0] / max(totals[1], 1))


def run_stage_loop(job: dict[str, Any], session: Session) -> dict[str, Any]:
    """Train one stage; returns the final metrics (rank 0's view)."""
    prepare_runtime(job["training"]["use_gpu"])
    rank, world = session.rank, session.world_size
    stage = job["stage"]
    engine, tokenizer, micro = build_engine(job, world)
    train_pairs, val_pairs = stage_pairs(job)
    train_set = encode_pairs(tokenizer, train_pairs, stage["seq_len"])
    val_set = encode_pairs(tokenizer, val_pairs, stage["seq_len"])
    global_batch = micro * world * stage["grad_accum_steps"]

    start_step, history = 0, []
    checkpoint = session.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt_dir:
            if Path(ckpt_dir, "stage_metrics.json").exists():  # finished before a restart: hand it on
                done = json.loads(Path(ckpt_dir, "stage_metrics.json").read_text())["final"]
                session.report(done, checkpoint_dir=ckpt_dir if rank == 0 else None, export=True)
                return done
            _, client_state = engine.load_checkpoint(ckpt_dir, tag=CHECKPOINT_TAG)
        start_step, history = client_state["step"], client_state["history"]
        session.log(f"resumed at step {start_step} from {checkpoint.path}")

    prefix = job["stage_name"]
    val_loss, t0 = float("nan"), time.perf_counter()
    for step in range(start_step, stage["steps"]):
        indices = step_indices(len(train_set), global_batch, step, job["seed"])
        step_loss = 0.0
        micro_batches = rank_micro_batches(indices, rank, world, micro)
        for ids in micro_batches:
            batch = {k: v.to(engine.device) for k, v in collate([train_set[i] for i in ids], tokenizer.pad_token_id).items()}
            loss = engine(**batch).loss
            engine.backward(loss)
            engine.step()
            step_loss += loss.item() / len(micro_batches)
        step_loss = mean_over_ranks(step_loss)
        history.append({"step": step + 1, "train_loss": step_loss, "lr": engine.get_lr()[0],
                        "time": time.perf_counter() - t0})
        last = step + 1 == stage["steps"]
        metrics = {f"{prefix}_step": step + 1, f"{prefix}_train_loss": step_loss, "stage": prefix}
        if (step + 1) % stage["eval_every"] == 0 or last:
            val_loss = validation_loss(engine, val_set, tokenizer.pad_token_id, micro, rank, world)
            history[-1]["val_loss"] = val_loss
            metrics[f"{prefix}_val_loss"] = val_loss
        if last:
            break
        if (step + 1) % stage["checkpoint_every"] == 0:
            save_and_report(engine, session, metrics, {"step": step + 1, "history": history})
        elif f"{prefix}_val_loss" in metrics:
            session.report(metrics)
    final = {f"{prefix}_step": stage["steps"], f"{prefix}_val_loss": val_loss, "stage": prefix,
             f"{prefix}_train_loss": history[-1]["train_loss"] if history else float("nan")}
    export_and_report(engine, tokenizer, session, final, history)
    return final


def save_and_report(engine, session: Session, metrics: dict[str, Any], client_state: dict[str, Any]) -> None:
    """A DeepSpeed checkpoint (every rank writes its shard) handed to Ray Train, which merges the ranks' dirs."""
    with tempfile.TemporaryDirectory(prefix="itt-ckpt-") as tmp:
        engine.save_checkpoint(tmp, tag=CHECKPOINT_TAG, client_state=client_state)
        session.report(metrics, checkpoint_dir=tmp)


def export_and_report(engine, tokenizer, session: Session, metrics: dict[str, Any],
                      history: list[dict[str, Any]]) -> None:
    """Consolidated Hugging Face weights (ZeRO-3 shards gathered) so stage 3 and users can from_pretrained."""
    if engine.zero_optimization_stage() == 3:
        state = engine._zero3_consolidated_16bit_state_dict()
    else:
        state = engine.module.state_dict()
    with tempfile.TemporaryDirectory(prefix="itt-export-") as tmp:
        if session.rank == 0:
            engine.module.save_pretrained(tmp, state_dict={k: v.float() for k, v in state.items()})
            tokenizer.save_pretrained(tmp)
            Path(tmp, "stage_metrics.json").write_text(json.dumps({"final": metrics, "history": history}))
        session.report(metrics, checkpoint_dir=tmp if session.rank == 0 else None, export=True)


def train_loop_per_worker(job: dict[str, Any]) -> None:
    """Entry point for `TorchTrainer`."""
    run_stage_loop(job, RaySession())


def run_without_ray(job: dict[str, Any]) -> dict[str, Any]:
    """Single-process run of the same loop (benchmarks, GPU machine without Ray)."""
    return run_stage_loop(job, LocalSession())
