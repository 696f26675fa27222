"""What both benchmarks share: model shapes, FLOP accounting, step statistics, machine facts, result files.

Every result file starts with the same header (card, versions, date, commit), so figures from different
machines and library versions are never mixed up. The GPU runs write under `$OUT` when the device machine sets
it (that folder comes back to the caller), else under `benchmarks/results/`.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
if str(REPO / "src") not in sys.path:  # the GPU machine gets the repo, not an installed package
    sys.path.insert(0, str(REPO / "src"))

# Dense bf16 tensor-core peak of an H100/H200 SXM (datasheet, no sparsity): the denominator of MFU here.
PEAK_BF16_FLOPS = 989e12

# TinyLlama-1.1B's shape (issue 8): 1,100,048,384 parameters, untied embeddings.
LLAMA_1B: dict[str, Any] = dict(model_type="llama", hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                                num_attention_heads=32, num_key_value_heads=4, vocab_size=32000,
                                max_position_embeddings=2048, rms_norm_eps=1e-5, tie_word_embeddings=False,
                                bos_token_id=1, eos_token_id=2)
# The same code path in seconds on a CPU (`--tiny`).
LLAMA_TINY: dict[str, Any] = dict(LLAMA_1B, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, vocab_size=1024,
                                  max_position_embeddings=1024)


def parameter_count(cfg: dict[str, Any]) -> int:
    """All parameters of a Llama config, embeddings and LM head included (the `N` of 6N)."""
    h, f, n_layers, vocab = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    kv = h // cfg["num_attention_heads"] * cfg["num_key_value_heads"]
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * f + 2 * h  # q, o; k, v; gate, up, down; two RMSNorms
    embeddings = vocab * h * (1 if cfg.get("tie_word_embeddings") else 2)
    return n_layers * per_layer + h + embeddings


def flops_per_token(cfg: dict[str, Any], seq_len: int, causal: bool = True) -> float:
    """Training FLOPs per token: 6N for the weights plus 12·layers·hidden·seq for attention scores.

    The attention term counts QK^T and AV forward and backward over the full square; a causal mask needs only
    half of it, so `causal=True` halves it (the convention of this project). The issue's reference MFU figures
    (49.1k tokens/s ↔ 0.382 on a 1.1B model) use the full square: `causal=False` reproduces them.
    """
    attention = 12 * cfg["num_hidden_layers"] * cfg["hidden_size"] * seq_len
    return 6 * parameter_count(cfg) + (attention / 2 if causal else attention)


def mfu(tokens_per_s: float, cfg: dict[str, Any], seq_len: int, causal: bool = True) -> float:
    return tokens_per_s * flops_per_token(cfg, seq_len, causal) / PEAK_BF16_FLOPS


def step_stats(step_times: list[float], tokens_per_step: list[int], warmup: int) -> dict[str, Any]:
    """Median step time and throughput over the steps after `warmup` (compilation, allocator growth)."""
    times, tokens = step_times[warmup:], tokens_per_step[warmup:]
    if not times:
        raise ValueError(f"no timed steps: {len(step_times)} steps, {warmup} of them warm-up")
    median = statistics.median(times)
    return {"timed_steps": len(times), "warmup_steps": warmup, "median_step_s": median,
            "min_step_s": min(times), "max_step_s": max(times), "warmup_s": sum(step_times[:warmup]),
            "tokens_per_step": statistics.median(tokens), "tokens_per_s": statistics.median(tokens) / median,
            "step_times_s": [round(t, 5) for t in step_times]}


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def machine_info() -> dict[str, Any]:
    """Card, versions and date for the header of a result file (read without importing DeepSpeed)."""
    import torch

    info: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": _git_commit(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "versions": {name: _version(name) for name in ("torch", "transformers", "deepspeed", "ray")},
        "device": "cpu",
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(device=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    compute_capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda)
    return info


def find_data_dir() -> Path:
    for candidate in (os.environ.get("ITT_DATA_DIR"), REPO / "data", REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "mbxp" / "metadata.json").is_file():
            return Path(candidate)
    raise SystemExit("no data directory (set ITT_DATA_DIR or run `make data`)")


def result_path(name: str, out: str | None = None) -> Path:
    """`out` if given; else `$OUT/name` on the device machine; else `benchmarks/results/name`."""
    if out:
        return Path(out)
    if os.environ.get("OUT"):
        return Path(os.environ["OUT"]) / name
    return RESULTS / name


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    print(f"wrote {path}", flush=True)
    return path


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain-text table: the device call returns only the end of the output, so results end with one."""
    cells = [[_fmt(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)
