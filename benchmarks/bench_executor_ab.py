"""Before/after of the executor in one run: `bench_executor.py` of a base commit against the working tree.

A change to the sandbox or the executor must say what it costs per program, measured where both sides see
the same machine load. This script checks the base commit out into a temporary git worktree and runs its
`bench_executor.py` and ours alternately (base, ours, ours, base, ... for `--rounds` rounds), each in a
fresh process on the same programs, toolchains and data; per language it reports the median programs/s of
each side over the rounds and their ratio (ours / base, > 1: faster now), and writes
`benchmarks/results/executor_ab.json`.

    python benchmarks/bench_executor_ab.py --base HEAD --languages python php perl cpp
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import common

from itt_sweep.execution.toolchains import toolchain_dir


def worktree(base: str, parent: Path) -> Path:
    path = parent / "base"
    subprocess.run(["git", "-C", str(common.REPO), "worktree", "add", "--detach", str(path), base], check=True,
                   capture_output=True)
    return path


def run_side(tree: Path, out: Path, bench_args: list[str]) -> dict[str, Any]:
    """One `bench_executor.py` run of `tree`, its own package first on the path, our toolchains and data."""
    env = {**os.environ, "ITT_TOOLCHAIN_DIR": str(toolchain_dir()),
           "ITT_DATA_DIR": os.environ.get("ITT_DATA_DIR") or str(common.REPO / "data"),
           "PYTHONPATH": str(tree / "src")}
    subprocess.run([sys.executable, str(tree / "benchmarks" / "bench_executor.py"), *bench_args, "--out", str(out)],
                   check=True, env=env, cwd=tree)
    return json.loads(out.read_text())


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    languages = sorted(set.intersection(*(set(r["languages"]) for side in runs.values() for r in side)))
    rows: dict[str, Any] = {}
    for language in languages:
        per_s = {side: [r["languages"][language]["ours_per_s"] for r in results] for side, results in runs.items()}
        medians = {side: statistics.median(values) for side, values in per_s.items()}
        rows[language] = {"base_per_s": per_s["base"], "ours_per_s": per_s["ours"],
                          "base_median_per_s": medians["base"], "ours_median_per_s": medians["ours"],
                          "ratio": medians["ours"] / medians["base"]}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="HEAD", help="the commit to compare the working tree against")
    parser.add_argument("--rounds", type=int, default=2, help="base/ours pairs, alternating which goes first")
    parser.add_argument("--out", help="result file (default benchmarks/results/executor_ab.json)")
    args, bench_args = parser.parse_known_args()
    bench_args = ["--repeats", "1", *bench_args]
    runs: dict[str, list[dict[str, Any]]] = {"base": [], "ours": []}
    with tempfile.TemporaryDirectory(prefix="itt-ab-") as scratch:
        base_tree = worktree(args.base, Path(scratch))
        try:
            for round_ in range(args.rounds):
                order = [("base", base_tree), ("ours", common.REPO)]
                for side, tree in order if round_ % 2 == 0 else order[::-1]:
                    print(f"round {round_ + 1}: {side}", flush=True)
                    runs[side].append(run_side(tree, Path(scratch) / f"{side}_{round_}.json", bench_args))
        finally:
            subprocess.run(["git", "-C", str(common.REPO), "worktree", "remove", "--force", str(base_tree)],
                           check=False, capture_output=True)
    base_commit = subprocess.run(["git", "-C", str(common.REPO), "rev-parse", args.base], capture_output=True,
                                 text=True, check=True).stdout.strip()
    rows = summarize(runs)
    payload = {"machine": common.machine_info(), "base": base_commit, "rounds": args.rounds,
               "bench_args": bench_args, "languages": rows, "runs": runs}
    common.write_json(common.result_path("executor_ab.json", args.out), payload)
    print(common.table([{"language": lang, **{k: r[k] for k in ("base_median_per_s", "ours_median_per_s", "ratio")}}
                        for lang, r in rows.items()], ["language", "base_median_per_s", "ours_median_per_s", "ratio"]))


if __name__ == "__main__":
    main()
