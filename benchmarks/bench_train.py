"""Training throughput: our stage loop (DeepSpeed) against a plain PyTorch loop on the same model and data.

Default (CPU, issue 4): a tiny scratch Llama on MBXP python training problems, (a) a plain loop in this
process and (b) our stage through Ray Train + DeepSpeed ZeRO-2 with one worker; step times are medians over the
steps after warm-up, startup is reported apart. Writes benchmarks/results/train.json.

`--gpu` (issue 8): the 1.1B Llama shape on synthetic full-length rows, four variants, each in its own process
(clean GPU memory, its own timeout, a halved micro-batch after an out-of-memory): plain eager, plain compiled
(bf16 autocast, fused AdamW, SDPA), ours eager and ours compiled (our loop module, DeepSpeed ZeRO-2 bf16,
without Ray). Reports tokens/s, MFU and peak memory. Writes $OUT/gpu_train.json or
benchmarks/results/gpu_train.json. `--tiny` runs the same path with a tiny model, on a CPU if there is no GPU.

    python benchmarks/bench_train.py                 # CPU benchmark (needs Ray and the data directory)
    python benchmarks/bench_train.py --gpu           # on one GPU, ~4 min on an H100
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import torch

from itt_sweep.train.batches import collate, rank_micro_batches, step_indices
from itt_sweep.train.job import StageJob
from itt_sweep.train.loop import lr_lambda, synthetic_examples, to_device

VARIANTS = ("plain_eager", "ours_eager", "plain_compile", "ours_compile")  # the cheap ones first
OOM_EXIT = 3  # a variant's process exits with this after an out-of-memory error: retry with half the batch
SEQ_LEN = 2048


# ---------------------------------------------------------------------------------------------- the plain loop
def plain_loop(model, examples, micro: int, steps: int, device, bf16: bool, compile_model: bool,
               lr: float = 3e-4, pad_id: int = 0, seed: int = 0, on_step=None) -> list[float]:
    """The reference: AdamW (fused on GPU), bf16 autocast, clipping and the LR schedule our stage uses."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.95),
                                  fused=True if device.type == "cuda" else None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(min(3, steps), steps))
    if compile_model:
        model.compile()
    model.train()
    times = []
    for step in range(steps):
        start = time.perf_counter()
        for ids in rank_micro_batches(step_indices(len(examples), micro, step, seed), 0, 1, micro):
            batch = to_device(collate([examples[i] for i in ids], pad_id), device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = model(**batch).loss
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()  # waits for the device, as our loop does once per step
        times.append(time.perf_counter() - start)
        print(f"  step {step + 1}/{steps}: {times[-1]:.3f} s", flush=True)
        if on_step is not None:
            on_step()
    return times


def stage_job(model_cfg: dict[str, Any] | None, init_model: str | None, data: dict[str, Any], *, steps: int,
              micro: int, seq_len: int, use_gpu: bool, compile_model: bool, export: bool) -> StageJob:
    """A job for `itt_sweep.train.loop`, as the sweep builds one, with no evaluation or checkpoint mid-run."""
    job = {"key": "bench", "stage_name": "bench", "init_model": {"name": init_model} if init_model else None,
           "seed": 0, "bf16": use_gpu,
           "export": export,
           "stage": {"steps": steps, "learning_rate": 3e-4, "warmup_steps": min(3, steps), "batch_size": micro,
                     "seq_len": seq_len, "weight_decay": 0.0, "grad_clip": 1.0,
                     "eval_every": 10**9, "checkpoint_every": 10**9},
           "training": {"zero_stage": 2, "offload_optimizer": False, "offload_params": False, "num_workers": 1,
                        "use_gpu": use_gpu, "cpus_per_worker": 1, "precision": "bf16" if use_gpu else "fp32",
                        "gradient_checkpointing": False, "compile": compile_model},
           "data": data}
    if model_cfg is not None:
        job["fresh_model"] = model_cfg
    return StageJob.model_validate(job)


# ------------------------------------------------------------------------------------------------ GPU variants
def run_variant(name: str, micro: int, steps: int, tiny: bool, profile_steps: int = 0) -> dict[str, Any]:
    """One variant in this process; returns its step times and peak memory, and with `profile_steps` the
    top kernels of that many further steps (profiled after the timed ones, so the timings stay clean)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = common.LLAMA_TINY if tiny else common.LLAMA_1B
    seq_len = 128 if tiny else SEQ_LEN
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    bf16, compile_model = device.type == "cuda", name.endswith("_compile")
    if device.type == "cpu":
        torch.set_num_threads(1)  # as our loop does on a CPU (prepare_runtime), so the two compare
    n_examples = max(4 * micro, 16)
    profiler = step_profiler(device, steps, profile_steps)
    on_step = profiler.step if profiler is not None else None
    steps += profile_steps + (1 if profile_steps else 0)  # one profiler warm-up step, then the profiled ones
    start = time.perf_counter()
    if name.startswith("plain"):
        torch.manual_seed(0)
        with device:
            model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg), dtype=torch.float32)
        examples = synthetic_examples(n_examples, seq_len, cfg["vocab_size"], seed=0)
        times = plain_loop(model, examples, micro, steps, device, bf16, compile_model, on_step=on_step)
    else:
        from itt_sweep.train.loop import run_without_ray

        os.environ.update(MASTER_ADDR="127.0.0.1", RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
        data = {"kind": "synthetic", "vocab_size": cfg["vocab_size"], "train_examples": n_examples,
                "val_examples": 0}
        job = stage_job(cfg, None, data, steps=steps, micro=micro, seq_len=seq_len, use_gpu=bf16,
                        compile_model=compile_model, export=False)
        times = [h["step_time"] for h in run_without_ray(job, on_step=on_step)["history"]]
    timed_steps = len(times) - profile_steps - (1 if profile_steps else 0)
    result = {"variant": name, "micro_batch": micro, "seq_len": seq_len, "wall_s": time.perf_counter() - start,
              "step_times": times[:timed_steps], "tokens_per_step": micro * seq_len}
    if profiler is not None:
        profiler.stop()
        result["profile"] = top_kernels(profiler, device, profile_steps)
    if device.type == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        result["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
    return result


def step_profiler(device, wait: int, active: int):
    """A started torch profiler that records `active` steps after `wait` + 1 warm-up step (None for 0)."""
    if not active:
        return None
    from torch.profiler import ProfilerActivity, profile, schedule

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    profiler = profile(activities=activities, schedule=schedule(wait=wait, warmup=1, active=active))
    profiler.start()
    return profiler


def top_kernels(profiler, device, steps: int, limit: int = 30) -> list[dict[str, Any]]:
    """Where a step's time goes: the ops/kernels with the most self time per step (device time on a GPU)."""
    attribute = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = [e for e in profiler.key_averages()
              if getattr(e, attribute, 0) > 0 and not e.key.startswith("ProfilerStep")]
    events.sort(key=lambda e: getattr(e, attribute), reverse=True)
    return [{"name": e.key[:160], "ms_per_step": getattr(e, attribute) / 1e3 / steps, "calls_per_step": e.count / steps}
            for e in events[:limit]]


def variant_main(args: argparse.Namespace) -> int:
    """Entry point of a variant's own process: writes its result file, or exits with OOM_EXIT."""
    try:
        result = run_variant(args.variant, args.micro, args.steps, args.tiny, args.profile_steps)
    except torch.OutOfMemoryError as exc:
        print(f"{args.variant}: out of memory at micro-batch {args.micro}: {exc}", flush=True)
        return OOM_EXIT
    except RuntimeError as exc:
        if "out of memory" not in str(exc):
            raise
        print(f"{args.variant}: out of memory at micro-batch {args.micro}: {exc}", flush=True)
        return OOM_EXIT
    Path(args.result).write_text(json.dumps(result))
    return 0


def spawn_variant(name: str, micro: int, steps: int, tiny: bool, timeout: float, port: int,
                  profile_steps: int = 0) -> dict[str, Any]:
    """Run a variant in a child process group (compile workers included), killed whole at the timeout."""
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        result_file = Path(tmp, "result.json")
        cmd = [sys.executable, __file__, "--variant", name, "--micro", str(micro), "--steps", str(steps),
               "--result", str(result_file), "--profile-steps", str(profile_steps)] + (["--tiny"] if tiny else [])
        env = dict(os.environ, MASTER_PORT=str(port), PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(cmd, env=env, start_new_session=True)
        # A group in its own session outlives us unless we end it: on our timeout, a SIGTERM, and at its end.
        previous = signal.signal(signal.SIGTERM, lambda *_: (kill_group(proc), sys.exit(143)))
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"variant": name, "micro_batch": micro, "status": f"timeout after {timeout:.0f} s"}
        finally:
            kill_group(proc)
            signal.signal(signal.SIGTERM, previous)
        if code == OOM_EXIT:
            return {"variant": name, "micro_batch": micro, "status": "oom"}
        if code != 0 or not result_file.exists():
            return {"variant": name, "micro_batch": micro, "status": f"failed (exit {code})"}
        return {**json.loads(result_file.read_text()), "status": "ok"}


def kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):  # the whole group has already exited
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def summarize_variant(raw: dict[str, Any], cfg: dict[str, Any], warmup: int) -> dict[str, Any]:
    if raw["status"] != "ok":
        return raw
    times = raw.pop("step_times")
    stats = common.step_stats(times, [raw["tokens_per_step"]] * len(times), warmup)
    tokens_per_s, seq_len = stats["tokens_per_s"], raw["seq_len"]
    return {**raw, **stats, "mfu": common.mfu(tokens_per_s, cfg, seq_len),
            "mfu_reference_convention": common.mfu(tokens_per_s, cfg, seq_len, causal=False)}


def default_micro_batch() -> int:
    """16 fits in an H200's 141 GB without activation checkpointing (the reference); 8 in an H100's 80 GB."""
    if not torch.cuda.is_available():
        return 4
    return 16 if torch.cuda.get_device_properties(0).total_memory > 100 * 2**30 else 8


def gpu_suite(args: argparse.Namespace) -> dict[str, Any]:
    cfg = common.LLAMA_TINY if args.tiny else common.LLAMA_1B
    micro, deadline = args.micro or default_micro_batch(), time.monotonic() + args.budget_s
    rows: list[dict[str, Any]] = []
    ports = iter(range(29500, 29600))  # a fresh rendezvous port for every process, retries included
    for name in args.variants.split(","):
        while True:
            left = deadline - time.monotonic()
            if left < 30:
                rows.append({"variant": name, "micro_batch": micro, "status": "skipped: out of time"})
                break
            print(f"=== {name}: micro-batch {micro}, {args.steps} steps ({left:.0f} s left)", flush=True)
            raw = spawn_variant(name, micro, args.steps, args.tiny, min(left, args.variant_timeout_s),
                                port=next(ports), profile_steps=args.profile_steps)
            if raw["status"] == "oom" and micro > 1:
                micro //= 2  # every later variant runs at the smaller size too, so they stay comparable
                continue
            rows.append(summarize_variant(raw, cfg, args.warmup))
            break
    return {"machine": common.machine_info(), "model": cfg, "parameters": common.parameter_count(cfg),
            "flops_per_token": common.flops_per_token(cfg, rows[0].get("seq_len", SEQ_LEN)),
            "mfu_definition": "tokens/s * (6N + 12*layers*hidden*seq/2) / 989e12; mfu_reference_convention "
                              "drops the /2 (causal) as the issue's reference figures do",
            "variants": rows, "ratios": ratios(rows)}


def ratios(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Ours over plain in tokens/s (>1: ours is faster), for the pairs that both finished."""
    speed = {r["variant"]: r["tokens_per_s"] for r in rows if r.get("status") == "ok"}
    pairs = {"ours_eager/plain_eager": ("ours_eager", "plain_eager"),
             "ours_compile/plain_compile": ("ours_compile", "plain_compile"),
             "best_ours/plain_compile": (max((v for v in speed if v.startswith("ours")), key=speed.get,
                                             default=None), "plain_compile")}
    return {k: speed[a] / speed[b] for k, (a, b) in pairs.items() if a in speed and b in speed}


# ------------------------------------------------------------------------------------------------ CPU benchmark
def cpu_suite(args: argparse.Namespace) -> dict[str, Any]:
    """Issue 4's comparison: the plain loop here, then our stage in one Ray Train worker, same steps and data."""
    from transformers import AutoTokenizer

    from itt_sweep.data.mbxp import load_problems
    from itt_sweep.modeling import build_scratch
    from itt_sweep.train.batches import encode_pairs
    from itt_sweep.train.stage_data import stage_pairs

    data_dir = common.find_data_dir()
    work = Path(tempfile.mkdtemp(prefix="bench-train-cpu-"))
    texts = [p.prompt + (p.canonical_solution or "") for p in load_problems("python", "train", data_dir=data_dir)]
    model_dir = build_scratch("tiny", texts, work / "model")
    data = {"kind": "target", "task": None, "source_language": "python", "data_dir": str(data_dir),
            "train_limit": None, "val_limit": 16}
    job = stage_job(None, str(model_dir), data, steps=args.steps, micro=args.micro or 8, seq_len=256,
                    use_gpu=False, compile_model=False, export=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    examples = encode_pairs(tokenizer, stage_pairs(job)[0], 256)
    tokens = [sum(len(examples[i].input_ids) for i in step_indices(len(examples), job.stage.batch_size, s, 0))
              for s in range(args.steps)]
    # The plain loop runs before and after ours, so a change in machine load between them shows and averages out.
    before = plain_cpu_run(model_dir, examples, job, tokenizer.pad_token_id)
    ours, startup = ours_in_ray(job, work)
    after = plain_cpu_run(model_dir, examples, job, tokenizer.pad_token_id)
    w = args.warmup
    plain_stats = common.step_stats(before + after[w:], tokens + tokens[w:], w)  # both runs, warm-ups out
    ours_stats = common.step_stats(ours, tokens, args.warmup)
    ratio = ours_stats["median_step_s"] / plain_stats["median_step_s"]
    plain_stats["median_step_s_before_and_after_ours"] = [
        common.step_stats(run, tokens, args.warmup)["median_step_s"] for run in (before, after)]
    return {"machine": common.machine_info(), "model": "scratch:tiny", "steps": args.steps,
            "batch_size": job.stage.batch_size, "seq_len": 256, "plain": plain_stats,
            "ours_ray_deepspeed": {**ours_stats, **startup}, "step_time_ratio_ours_over_plain": ratio,
            "goal": "ratio <= 1.3", "meets_goal": ratio <= 1.3}


def plain_cpu_run(model_dir: Path, examples, job: StageJob, pad_id: int) -> list[float]:
    from transformers import AutoModelForCausalLM

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in our CPU workers (OMP_NUM_THREADS=1)
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        return plain_loop(model, examples, job.stage.batch_size, job.stage.steps, torch.device("cpu"),
                          bf16=False, compile_model=False, lr=job.stage.learning_rate, pad_id=pad_id)
    finally:
        torch.set_num_threads(threads)


def ours_in_ray(job: StageJob, work: Path) -> tuple[list[float], dict[str, float]]:
    """Our stage through `fit_stage` (TorchTrainer, one worker); the time outside the steps is startup."""
    import ray

    from itt_sweep.train.stage import fit_stage

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    start = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray_init = time.perf_counter() - start
    try:
        start = time.perf_counter()
        export = fit_stage(job, run_name="bench-train", storage_path=str(work / "ray"))
        wall = time.perf_counter() - start
    finally:
        ray.shutdown()
    times = [h["step_time"] for h in json.loads((export / "stage_metrics.json").read_text())["history"]]
    return times, {"ray_init_s": ray_init, "fit_wall_s": wall, "outside_steps_s": wall - sum(times)}


# ---------------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", action="store_true", help="the four GPU variants on the 1.1B model")
    parser.add_argument("--tiny", action="store_true", help="with --gpu: a tiny model (runs on a CPU)")
    parser.add_argument("--steps", type=int, default=None, help="steps per run, warm-up included")
    parser.add_argument("--warmup", type=int, default=3, help="first steps left out of the statistics")
    parser.add_argument("--micro", type=int, default=None, help="micro-batch (default: by GPU memory)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--budget-s", type=float, default=330, help="--gpu: time for all variants together")
    parser.add_argument("--variant-timeout-s", type=float, default=210)
    parser.add_argument("--profile-steps", type=int, default=0,
                        help="--gpu: profile this many steps after the timed ones; the top kernels go in the result")
    parser.add_argument("--out", default=None, help="result file (default: by mode, see the module doc)")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # internal: run one variant in this process
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 15 if args.gpu or args.variant else 30
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.variant:
        return variant_main(args)
    if args.gpu:
        report = gpu_suite(args)
        common.write_json(common.result_path("gpu_train.json", args.out), report)
        print(common.table(report["variants"], ["variant", "status", "micro_batch", "tokens_per_s", "mfu",
                                                "mfu_reference_convention", "peak_memory_gib", "warmup_s"]))
        print("ratios (tokens/s, ours over plain):", json.dumps(report["ratios"]))
        return 0 if any(r.get("status") == "ok" for r in report["variants"]) else 1
    report = cpu_suite(args)
    common.write_json(Path(args.out) if args.out else common.RESULTS / "train.json", report)
    print(common.table([{"loop": "plain", **report["plain"]}, {"loop": "ours (Ray+DeepSpeed)",
                                                                **report["ours_ray_deepspeed"]}],
                       ["loop", "median_step_s", "tokens_per_s", "warmup_s"]))
    print(f"step time ours/plain: {report['step_time_ratio_ours_over_plain']:.3f} (goal <= 1.3); startup "
          f"outside steps {report['ours_ray_deepspeed']['outside_steps_s']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
