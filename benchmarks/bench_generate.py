"""Generation throughput: our static-cache CUDA-graph decoder against plain Hugging Face `generate`.

Same model, same left-padded prompts, greedy decoding, in one run: new tokens per second of HF `generate` with
its default dynamic cache (what a user calls), of HF `generate` with a static cache (eager; the reference our
decoder must equal token for token), and of `itt_sweep.evaluate.fast_generation.greedy_generate`. Every pair of
outputs is compared exactly.

Default (CPU): a tiny random Llama with a BPE tokenizer trained on MBXP, on MBXP python test prompts when the
data directory is there (else synthetic prompts). `--gpu`: the 1.1B Llama shape in bf16 with random weights on
synthetic prompts of 64-256 tokens, batches 64 and 256, 128 new tokens. Random weights never choose EOS on
purpose, so every row runs the full length: a fair throughput test; repetitive outputs do not matter since
only equality is checked. Writes $OUT/gpu_generate.json (else benchmarks/results/), or generate.json on CPU.

    python benchmarks/bench_generate.py --gpu
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import common
import torch

from itt_sweep.evaluate.fast_generation import cache_argument, greedy_generate, new_static_cache


def synthetic_prompts(n: int, vocab_size: int, min_len: int, max_len: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, vocab_size) for _ in range(rng.randint(min_len, max_len))] for _ in range(n)]


def mbxp_prompts(n: int, vocab_size: int) -> tuple[list[list[int]], Any] | None:
    """MBXP python test prompts, tokenised with a scratch BPE tokenizer of the model's vocabulary size."""
    from itt_sweep.data.mbxp import load_problems
    from itt_sweep.modeling import train_tokenizer

    data_dir = next((Path(d) for d in (os.environ.get("ITT_DATA_DIR"), common.REPO / "data",
                                       common.REPO.parent / "shared" / "data")
                     if d and (Path(d) / "mbxp" / "metadata.json").is_file()), None)
    if data_dir is None:
        return None
    problems = load_problems("python", split="test", data_dir=data_dir)
    tokenizer = train_tokenizer([p.prompt + (p.canonical_solution or "") for p in problems], vocab_size)
    return [tokenizer(p.prompt)["input_ids"] for p in problems[:n]], tokenizer


def left_pad(prompts: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, width - len(p):] = torch.tensor(p)
        mask[row, width - len(p):] = 1
    return ids.to(device), mask.to(device)


def generate(method: str, model, ids: torch.Tensor, mask: torch.Tensor, max_new: int, eos: int,
             pad: int) -> torch.Tensor:
    """`ours`: CUDA graph on a GPU (strict: a failed capture is an error, not a silent eager run)."""
    if method == "ours":
        return greedy_generate(model, ids, mask, max_new, eos_token_id=eos, pad_token_id=pad,
                               cuda_graph=ids.device.type == "cuda")
    if method == "ours_eager":
        return greedy_generate(model, ids, mask, max_new, eos_token_id=eos, pad_token_id=pad, cuda_graph=False)
    kwargs: dict[str, Any] = dict(attention_mask=mask, max_new_tokens=max_new, do_sample=False, num_beams=1,
                                  repetition_penalty=1.0, pad_token_id=pad, eos_token_id=eos)
    if method == "hf_static":  # an explicit cache of our length: `generate` would reuse an older, longer one
        kwargs.update({cache_argument(model): new_static_cache(model, ids.shape[1] + max_new - 1),
                       "disable_compile": True})
    with torch.inference_mode():
        return model.generate(ids, **kwargs)


def timed(method: str, model, ids, mask, max_new: int, eos: int, pad: int, repeats: int):
    """(output, median seconds) over `repeats` runs after one short warm-up run."""
    generate(method, model, ids, mask, min(4, max_new), eos, pad)
    seconds = []
    for _ in range(repeats):
        sync(ids.device)
        start = time.perf_counter()
        out = generate(method, model, ids, mask, max_new, eos, pad)
        sync(ids.device)
        seconds.append(time.perf_counter() - start)
    return out, statistics.median(seconds)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def new_token_count(out: torch.Tensor, width: int, eos: int) -> int:
    """Tokens a row really generated: up to and including its first EOS, or all of them."""
    new = out[:, width:]
    hit = new == eos
    lengths = torch.where(hit.any(1), hit.int().argmax(1) + 1, new.shape[1])
    return int(lengths.sum())


def compare(a: torch.Tensor, b: torch.Tensor) -> dict[str, Any]:
    if a.shape != b.shape:
        return {"identical": False, "shapes": [list(a.shape), list(b.shape)]}
    rows = (a != b).any(1)
    first = (a != b).int().argmax(1)[rows]
    return {"identical": not bool(rows.any()), "rows_differing": int(rows.sum()),
            "earliest_difference_column": int(first.min()) if bool(rows.any()) else None}


def bench_batch(model, prompts: list[list[int]], args: argparse.Namespace, eos: int, pad: int) -> dict[str, Any]:
    """Every method on the same left-padded batch: timings, then every pair of outputs compared exactly."""
    device = next(model.parameters()).device
    ids, mask = left_pad(prompts, pad, device)
    width, outputs = ids.shape[1], {}
    row: dict[str, Any] = {"batch": len(prompts), "prompt_width": width,
                           "mean_prompt_tokens": statistics.mean(map(len, prompts))}
    for method in args.methods:
        repeats = args.ours_repeats if method == "ours" else args.hf_repeats
        print(f"  batch {len(prompts)}: {method} ...", flush=True)
        try:
            out, seconds = timed(method, model, ids, mask, args.max_new_tokens, eos, pad, repeats)
        except RuntimeError as exc:  # e.g. a forward that cannot be recorded in a CUDA graph: keep the others
            row[method] = {"error": f"{type(exc).__name__}: {exc}"[:800]}
            print(f"    failed: {row[method]['error']}", flush=True)
            continue
        n_new = new_token_count(out, width, eos)
        outputs[method] = out
        row[method] = {"seconds": seconds, "new_tokens": n_new, "new_tokens_per_s": n_new / seconds}
        print(f"    {seconds:.3f} s, {n_new / seconds:,.0f} new tokens/s", flush=True)
    for ours in ("ours", "ours_eager"):
        for reference in ("hf_static", "hf_dynamic"):
            if ours in outputs and reference in outputs:
                row[f"{ours}_vs_{reference}"] = compare(outputs[ours], outputs[reference])
    if "hf_static" in outputs and "hf_dynamic" in outputs:
        row["hf_static_vs_hf_dynamic"] = compare(outputs["hf_static"], outputs["hf_dynamic"])
    for reference in ("hf_dynamic", "hf_static"):
        if "ours" in outputs and reference in outputs:
            row[f"speedup_vs_{reference}"] = row["ours"]["new_tokens_per_s"] / row[reference]["new_tokens_per_s"]
    return row


def build_model(cfg: dict[str, Any], device, dtype):
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    with device:
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg), dtype=dtype)
    return model.eval()


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    cfg = dict(common.LLAMA_1B if args.gpu and not args.tiny else common.LLAMA_TINY)
    n_prompts = max(args.batches)
    source, prompts = "synthetic", None
    if not args.gpu:
        found = mbxp_prompts(n_prompts, cfg["vocab_size"])
        if found is not None and len(found[0]) >= n_prompts:
            prompts, tokenizer = found
            cfg.update(vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)
            source = "mbxp python test prompts"
    if prompts is None:
        prompts = synthetic_prompts(n_prompts, cfg["vocab_size"], *args.prompt_len)
    eos, pad = cfg["eos_token_id"], cfg.get("pad_token_id") or 0
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    start = time.perf_counter()
    model = build_model(cfg, device, dtype)
    print(f"model ready in {time.perf_counter() - start:.1f} s on {device} ({dtype})", flush=True)
    rows = [bench_batch(model, prompts[:b], args, eos, pad) for b in args.batches]
    report = {"machine": common.machine_info(), "model": cfg, "dtype": str(dtype), "prompts": source,
              "max_new_tokens": args.max_new_tokens, "decoding": "greedy", "batches": rows}
    if dtype != torch.float32 and args.identity_batch:
        del model
        report["identity_fp32"] = identity_check(cfg, prompts[:args.identity_batch], device, eos, pad,
                                                 args.max_new_tokens)
        print(f"identity in fp32: {report['identity_fp32']}", flush=True)
    return report


def identity_check(cfg: dict[str, Any], prompts: list[list[int]], device, eos: int, pad: int,
                   max_new: int) -> dict[str, Any]:
    """Ours against HF generate in fp32. With random bf16 weights the logits are near-tied, and any change of
    kernel or reduction order (even HF's static vs dynamic cache) flips tokens; in fp32 ties are rare, so a
    difference there is a real one."""
    model = build_model(cfg, device, torch.float32)
    ids, mask = left_pad(prompts, pad, device)
    outputs = {method: generate(method, model, ids, mask, max_new, eos, pad) for method in ("ours", "hf_dynamic")}
    return {"batch": len(prompts), "max_new_tokens": max_new,
            "ours_vs_hf_dynamic": compare(outputs["ours"], outputs["hf_dynamic"])}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", action="store_true", help="the 1.1B model in bf16, batches 64 and 256")
    parser.add_argument("--tiny", action="store_true", help="with --gpu: a tiny model (runs on a CPU)")
    parser.add_argument("--batches", type=lambda s: [int(b) for b in s.split(",")], default=None)
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--prompt-len", type=int, nargs=2, default=(64, 256), metavar=("MIN", "MAX"))
    parser.add_argument("--methods", type=lambda s: s.split(","), default=None,
                        help="of hf_dynamic, hf_static, ours_eager, ours (default: all on a GPU, no ours_eager "
                             "on a CPU, where ours is the eager path)")
    parser.add_argument("--hf-repeats", type=int, default=1, help="timed runs of each other method (median)")
    parser.add_argument("--ours-repeats", type=int, default=3, help="timed runs of our decoder (median)")
    parser.add_argument("--identity-batch", type=int, default=32,
                        help="on a GPU, also compare ours with HF generate in fp32 on this many prompts (0: skip)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    full_gpu = args.gpu and not args.tiny
    args.batches = args.batches or ([64, 256] if full_gpu else [8, 16])
    args.max_new_tokens = args.max_new_tokens or (128 if full_gpu else 24)
    on_gpu = torch.cuda.is_available()
    args.methods = args.methods or ["hf_dynamic", "hf_static"] + (["ours_eager"] if on_gpu else []) + ["ours"]
    if args.tiny:
        args.prompt_len = (8, 40)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    name = "gpu_generate.json" if args.gpu else "generate.json"
    common.write_json(common.result_path(name, args.out) if args.gpu or args.out else common.RESULTS / name, report)
    lines = [{"batch": row["batch"],
              **{f"{m} tok/s": row.get(m, {}).get("new_tokens_per_s") for m in args.methods},
              "speedup": row.get("speedup_vs_hf_dynamic"),
              "ours=hf_static": row.get("ours_vs_hf_static", {}).get("identical"),
              "ours=hf_dynamic": row.get("ours_vs_hf_dynamic", {}).get("identical")} for row in report["batches"]]
    print(common.table(lines, list(lines[0])))
    if "identity_fp32" in report:  # bf16: speed only; exactness is judged in fp32 (see identity_check)
        return 0 if report["identity_fp32"]["ours_vs_hf_dynamic"]["identical"] else 1
    return 0 if all(row.get("ours_vs_hf_static", {}).get("identical") for row in report["batches"]) else 1


if __name__ == "__main__":
    sys.exit(main())
