"""The training loop of one stage, read top to bottom: engine → resume → steps → checkpoints → export.

It runs in every Ray Train worker (`train_loop_per_worker`) and, for the GPU benchmark, without Ray through
`run_stage_loop(job, LocalSession())`. Everything a worker needs is in the `StageJob`, so the loop is the same
on a laptop and on a cluster.

Job fields used by the GPU benchmark (benchmarks/bench_train.py) and harmless elsewhere: `fresh_model` (a
random model from a config instead of `init_model`), `data.kind: synthetic` (random full-length token rows),
`training.compile` (torch.compile through DeepSpeed) and `export: false` (no final Hugging Face export). Every
step's wall time is kept in the history (`step_time`).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from itt_sweep.modeling import load
from itt_sweep.train.batches import Encoded, collate, encode_pairs, pack, rank_micro_batches, step_indices
from itt_sweep.train.ds_config import deepspeed_config
from itt_sweep.train.job import StageJob
from itt_sweep.train.session import LocalSession, RaySession, Session
from itt_sweep.train.stage_data import stage_pairs

CHECKPOINT_TAG = "ckpt"


def cpu_threads(cpus_per_worker: float) -> int:
    """Threads of a CPU worker: the CPUs the sweep gives it (Ray reserves them), at least one.

    Fewer threads than reserved CPUs wastes them; more oversubscribes the node (two workers of 2 threads on 2
    cores were 25x slower than of 1 thread each)."""
    return max(1, int(cpus_per_worker))


def prepare_runtime(use_gpu: bool, threads: int = 1) -> None:
    """CPU workers: `threads` OMP threads and no shared-memory comm op (minutes of C++ on first use)."""
    if use_gpu:
        return
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    import deepspeed.comm.torch  # noqa: F401  (the attribute resolves to torch; the module is what we patch)

    sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None


def lr_lambda(warmup: int, total: int):
    """Linear warmup to the peak, then linear decay to 10% of it."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.1, 1.0 - 0.9 * (step - warmup) / max(1, total - warmup))
    return factor


def build_model(job: StageJob):
    """(model, tokenizer) of `init_model` through the one loader (hub id, dir, GGUF file, revision), or a fresh
    model from `fresh_model` and no tokenizer.

    The fresh model is built on the GPU directly: initialising 1B parameters on the host takes longer than the
    benchmark's timed steps.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    if job.fresh_model:
        use_gpu = job.training.use_gpu
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if use_gpu else torch.device("cpu")
        torch.manual_seed(job.seed)
        with device:
            model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**job.fresh_model), dtype=torch.float32)
        return model, None
    if job.init_model is None:
        raise ValueError(f"stage job {job.key} names neither init_model nor fresh_model")
    return load(job.init_model, dtype=torch.float32)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weight matrices only: biases, norms and other 1-d parameters are left alone, as in
    every fine-tuning recipe (decaying a norm's gain towards 0 only harms)."""
    decay, keep = [], []
    for _, param in model.named_parameters():
        if param.requires_grad:
            (decay if param.dim() >= 2 else keep).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]


def build_engine(job: StageJob, world_size: int):
    import deepspeed

    stage, training = job.stage, job.training
    model, tokenizer = build_model(job)
    if training.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    optimizer = torch.optim.AdamW(param_groups(model, stage.weight_decay), lr=stage.learning_rate,
                                  betas=(0.9, 0.95), fused=True if training.use_gpu else None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(stage.warmup_steps, stage.steps))
    micro, accum = stage.batch_split(world_size)
    config = deepspeed_config(
        zero_stage=training.zero_stage, micro_batch=micro, grad_accum=accum,
        world_size=world_size, grad_clip=stage.grad_clip, bf16=job.bf16,
        offload_optimizer=training.offload_optimizer, offload_params=training.offload_params)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=config)
    if training.compile:
        engine.compile()  # torch.compile of the module; DeepSpeed keeps its gradient hooks outside the graph
    return engine, tokenizer, micro


def synthetic_examples(n: int, seq_len: int, vocab_size: int, seed: int) -> list[Encoded]:
    """Random full-length rows, every token in the loss: what a throughput benchmark needs, no padding."""
    rows = torch.randint(0, vocab_size, (n, seq_len), generator=torch.Generator().manual_seed(seed)).tolist()
    return [Encoded(row, row) for row in rows]


def stage_examples(job: StageJob, tokenizer) -> tuple[list[Encoded], list[Encoded]]:
    data, seq_len = job.data, job.stage.seq_len
    if data.kind == "synthetic":
        return (synthetic_examples(data.train_examples, seq_len, data.vocab_size, job.seed),
                synthetic_examples(data.val_examples, seq_len, data.vocab_size, job.seed + 1))
    train_pairs, val_pairs = stage_pairs(job, tokenizer)
    train = encode_pairs(tokenizer, train_pairs, seq_len)
    if job.stage.packing:
        train = pack(train, seq_len)
    return train, encode_pairs(tokenizer, val_pairs, seq_len)


def to_device(batch: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    """The batch on the device; an all-ones attention mask is dropped (the same attention without it).

    Without a mask SDPA takes its causal fast path (flash attention); with one, torch.compile never does.
    """
    if bool(batch["attention_mask"].all()):
        batch = {k: v for k, v in batch.items() if k != "attention_mask"}
    return {k: v.to(device) for k, v in batch.items()}


def mean_over_ranks(value: float, device) -> float:
    """The logged train loss is the mean of all ranks' losses, not rank 0's share."""
    if not torch.distributed.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)  # NCCL reduces only GPU tensors
    torch.distributed.all_reduce(t)
    return float(t.item() / torch.distributed.get_world_size())


def validation_batches(n_examples: int, rank: int, world: int, micro: int) -> list[list[int]]:
    """This rank's validation batches; every rank gets the same number of them.

    ZeRO-3 gathers the parameters in every forward, a collective call: a rank with one batch fewer than the
    others would leave them waiting forever. A rank whose share ran out gets empty batches, which the loop
    runs as a forward on a stand-in example that counts for nothing.
    """
    mine = list(range(rank, n_examples, world))
    per_rank = -(-n_examples // world)
    n_batches = -(-per_rank // micro)
    return [mine[i * micro:(i + 1) * micro] for i in range(n_batches)]


@torch.no_grad()
def validation_loss(engine, val_set, pad_id: int, micro: int, rank: int, world: int) -> float:
    """Token-weighted loss over the whole validation set, summed across ranks."""
    engine.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=engine.device)
    for ids in validation_batches(len(val_set), rank, world, micro):
        batch = to_device(collate([val_set[j] for j in ids or [0]], pad_id), engine.device)
        loss = engine(**batch).loss  # every rank runs this forward, even for a stand-in batch
        if not ids:
            continue
        n_tokens = (batch["labels"][:, 1:] != -100).sum().double()
        if n_tokens > 0:
            totals += torch.stack([loss.double() * n_tokens, n_tokens])
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(totals)
    engine.train()
    return float(totals[0] / totals[1]) if totals[1] > 0 else float("nan")


def run_stage_loop(job: StageJob | dict[str, Any], session: Session) -> dict[str, Any]:
    """Train one stage; returns the final metrics (rank 0's view) and, under "history", the per-step log."""
    job = StageJob.model_validate(job)
    prepare_runtime(job.training.use_gpu, cpu_threads(job.training.cpus_per_worker))
    rank, world = session.rank, session.world_size
    stage = job.stage
    clock = time.perf_counter()
    engine, tokenizer, micro = build_engine(job, world)
    phases = {"engine_init_s": time.perf_counter() - clock}  # model load + DeepSpeed init (this attempt)
    pad_id = tokenizer.pad_token_id if tokenizer is not None else 0
    clock = time.perf_counter()
    train_set, val_set = stage_examples(job, tokenizer)
    phases["data_s"] = time.perf_counter() - clock
    global_batch = stage.batch_size

    start_step, history, resumes = 0, [], []
    checkpoint = session.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt_dir:
            if Path(ckpt_dir, "stage_metrics.json").exists():  # finished before a restart: hand it on
                done = json.loads(Path(ckpt_dir, "stage_metrics.json").read_text())
                session.report(done["final"], checkpoint_dir=ckpt_dir if rank == 0 else None, export=True)
                return {**done["final"], "history": done["history"]}
            _, client_state = engine.load_checkpoint(ckpt_dir, tag=CHECKPOINT_TAG)
        start_step, history = client_state["step"], client_state["history"]
        resumes = client_state.get("resumes", []) + [start_step]
        session.log(f"resumed at step {start_step} from {checkpoint.path}")

    prefix = job.stage_name
    val_loss, t0, trained_tokens = float("nan"), time.perf_counter(), 0
    phases.update(steps_s=0.0, validation_s=0.0, checkpoint_s=0.0)
    for step in range(start_step, stage.steps):
        step_start = time.perf_counter()
        indices = step_indices(len(train_set), global_batch, step, job.seed)
        step_loss, tokens = torch.zeros((), device=engine.device), 0
        micro_batches = rank_micro_batches(indices, rank, world, micro)
        for ids in micro_batches:
            batch = to_device(collate([train_set[i] for i in ids], pad_id), engine.device)
            tokens += batch["input_ids"].numel()
            loss = engine(**batch).loss
            engine.backward(loss)
            engine.step()
            step_loss += loss.detach().float() / len(micro_batches)
        step_loss = mean_over_ranks(step_loss.item(), engine.device)  # .item() waits for the GPU: true step time
        now = time.perf_counter()
        phases["steps_s"] += now - step_start
        trained_tokens += tokens * world
        history.append({"step": step + 1, "train_loss": step_loss, "lr": engine.get_lr()[0],
                        "time": now - t0, "step_time": now - step_start})
        session.step_done()
        last = step + 1 == stage.steps
        metrics = {f"{prefix}_step": step + 1, f"{prefix}_steps": stage.steps, f"{prefix}_train_loss": step_loss,
                   f"{prefix}_tokens_per_s": tokens * world / (now - step_start), "stage": prefix}
        if (step + 1) % stage.eval_every == 0 or last:
            clock = time.perf_counter()
            val_loss = validation_loss(engine, val_set, pad_id, micro, rank, world)
            phases["validation_s"] += time.perf_counter() - clock
            history[-1]["val_loss"] = val_loss
            metrics[f"{prefix}_val_loss"] = val_loss
        if last:
            break
        if (step + 1) % stage.checkpoint_every == 0:
            clock = time.perf_counter()
            save_and_report(engine, session, metrics, {"step": step + 1, "history": history, "resumes": resumes})
            phases["checkpoint_s"] += time.perf_counter() - clock
        elif f"{prefix}_val_loss" in metrics:
            session.report(metrics)
    final = {f"{prefix}_step": stage.steps, f"{prefix}_val_loss": val_loss, "stage": prefix,
             f"{prefix}_train_loss": history[-1]["train_loss"] if history else float("nan")}
    phases["tokens_per_s"] = trained_tokens / phases["steps_s"] if phases["steps_s"] > 0 else float("nan")
    if job.export:
        export_and_report(engine, tokenizer, session, final, history, resumes, phases)
    else:
        session.report(final)
    return {**final, "history": history}


def save_and_report(engine, session: Session, metrics: dict[str, Any], client_state: dict[str, Any]) -> None:
    """A DeepSpeed checkpoint (every rank writes its shard) handed to Ray Train, which merges the ranks' dirs."""
    with tempfile.TemporaryDirectory(prefix="itt-ckpt-") as tmp:
        engine.save_checkpoint(tmp, tag=CHECKPOINT_TAG, client_state=client_state)
        session.report(metrics, checkpoint_dir=tmp)


def fp32_state_dict(engine, keep: bool) -> dict[str, torch.Tensor]:
    """The fp32 master weights, whole: what the optimizer holds, not the bf16 copy the forward ran on.

    Exporting `module.state_dict()` of a bf16 run would round every weight to 8 bits of mantissa, and small
    fine-tuning updates vanish in that rounding; stage 2 must start from what stage 1 learned. Each call
    gathers one parameter from all ranks (a collective under ZeRO), so every rank runs this, in the same
    order; only the rank that writes the export (`keep`) holds the result, one host copy per node at most.
    """
    from deepspeed import zero
    from deepspeed.utils import safe_get_full_fp32_param

    state: dict[str, torch.Tensor] = {}
    for name, param in engine.module.named_parameters():
        full = safe_get_full_fp32_param(param)
        if full is None and hasattr(param, "ds_id"):  # a frozen ZeRO-3 parameter: no optimizer copy
            with zero.GatheredParameters([param]):
                full = param.data.detach().clone()
        if keep:
            state[name] = (param.data if full is None else full).detach().float().cpu().clone()
    if not keep:
        return state
    for prefix, module in engine.module.named_modules():
        for name, buffer in module.named_buffers(recurse=False):
            if name not in module._non_persistent_buffers_set:  # what save_pretrained would write
                state[f"{prefix}.{name}" if prefix else name] = buffer.detach().cpu().clone()
    return state


def export_and_report(engine, tokenizer, session: Session, metrics: dict[str, Any],
                      history: list[dict[str, Any]], resumes: list[int], phases: dict[str, float] | None = None
                      ) -> None:
    """Consolidated fp32 Hugging Face weights (ZeRO shards gathered), so stage 3 and users can from_pretrained.
    `phases`: where this attempt's time went (rank 0's clock), saved with the metrics, the export included."""
    clock = time.perf_counter()
    state = fp32_state_dict(engine, keep=session.rank == 0)
    with tempfile.TemporaryDirectory(prefix="itt-export-") as tmp:
        if session.rank == 0:
            engine.module.save_pretrained(tmp, state_dict=state)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
            phases = {**(phases or {}), "export_s": time.perf_counter() - clock}
            Path(tmp, "stage_metrics.json").write_text(json.dumps(
                {"final": metrics, "history": history, "resumed_from_steps": resumes, "phases": phases}))
        session.report(metrics, checkpoint_dir=tmp if session.rank == 0 else None, export=True)


def train_loop_per_worker(job: dict[str, Any]) -> None:
    """Entry point for `TorchTrainer`: the job arrives as the dict `StageJob.model_dump()` made."""
    from itt_sweep.sweep.trial_logs import output_to

    session = RaySession()
    log_dir = job.get("log_dir")
    log = Path(log_dir) / f"{job['stage_name']}-rank{session.rank}.log" if log_dir else None
    with output_to(log):
        try:
            run_stage_loop(job, session)
        except BaseException:
            traceback.print_exc()  # Ray Train keeps only a snippet of a worker's error
            raise


def run_without_ray(job: StageJob | dict[str, Any], on_step: Callable[[], None] | None = None,
                    checkpoint_root: str | None = None) -> dict[str, Any]:
    """Single-process run of the same loop (benchmarks, GPU machine without Ray); `on_step` is called after
    every step (a profiler's `step`); checkpoints and the export go under `checkpoint_root` (default: a temp
    dir)."""
    return run_stage_loop(job, LocalSession(checkpoint_root=checkpoint_root, on_step=on_step))
