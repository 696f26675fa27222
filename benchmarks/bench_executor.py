"""Executor throughput: our executor against a naive mode of our own, on real MBXP programs, in one run.

Per available language: the first `--per-language` canonical solutions of the test split (none for go, perl,
scala and swift) plus the first `--samples` sample completions (`examples/*_samples.jsonl`), through

* **ours**: `execute(programs)`: batch compiles, a worker pool sized to the cores, deduplication;
* **naive**: `execute(programs, workers=1, batch=False)`: one compile and one run per program, one process
  each, one program at a time; the same sandbox and recipes, so the verdicts must agree.

Languages run one after the other, each as ours, naive, ours, ours (interleaved, so drifting load on a shared
machine hits both modes); a language's time for ours is the median of its runs. Reported per language and
overall: programs/s of each mode, their ratio, pass rate, how many verdicts the two modes share, and ours
against the reference harness's figures on this machine kind (`vs_mxeval`, see `MXEVAL_SECONDS`). Writes
`benchmarks/results/executor.json`. The timings are wall-clock on whatever else the machine is doing: read
`load_before`/`load_after` with them.

`--audit` instead runs every canonical solution of every available language (all splits) and writes
`benchmarks/results/canonical_audit.json`: pass rates, and the failures missing from
`execution/known_bad_canonical.yaml` (new defects, or harness regressions) or listed there but passing now.

    python benchmarks/bench_executor.py                       # ~20 min on 2 cores (naive kotlin and scala)
    python benchmarks/bench_executor.py --per-language 5 --samples 5 --languages python java
    python benchmarks/bench_executor.py --audit
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import time
from pathlib import Path
from typing import Any

import common

from itt_sweep.data.mbxp import load_problems, load_sample_completions
from itt_sweep.execution import LANGUAGES, assemble, available, execute, known_bad_canonical
from itt_sweep.execution.types import Limits, Program, Verdict

# The reference harness (mxeval: plain subprocesses, no isolation, 2 workers) on this machine kind (2 vCPUs),
# on this benchmark's default set (<= 40 canonical solutions + 40 samples per language): seconds per language
# from the side-by-side run of issue 17 where it gives them, programs/s from DESIGN.md ("Executing generated
# code") for the others, and the whole set's 356 s (840 programs, issue 17). Ours is compared with these
# figures ("vs_mxeval") and with its own naive mode measured in the same run ("ratio").
MXEVAL_SECONDS = {"php": (80, 0.55), "perl": (40, 0.31), "go": (40, 2.75), "ruby": (80, 1.52),
                  "python": (80, 1.27)}  # language: (programs, seconds)
MXEVAL_PROGRAMS_PER_S = {"javascript": 12, "csharp": 5.7, "java": 1.1, "typescript": 0.9, "cpp": 0.74,
                         "kotlin": 0.25, "scala": 0.21,
                         **{language: n / seconds for language, (n, seconds) in MXEVAL_SECONDS.items()}}
MXEVAL_OVERALL = (840, 356.0)


def data_dir() -> Path:
    return Path(os.environ.get("ITT_DATA_DIR") or common.REPO.parent / "shared" / "data")


def benchmark_programs(language: str, canonical: int, samples: int, data: Path,
                       limits: Limits | None = None) -> list[Program]:
    """The first `canonical` canonical solutions and `samples` sample completions of the test split."""
    problems = load_problems(language, split="test", data_dir=data)
    chosen = [assemble(p.prompt, p.canonical_solution, p.test, language, p.entry_point, p.task_id)
              for p in problems if p.canonical_solution][:canonical]
    completions = load_sample_completions(language, data_dir=data)
    chosen += [assemble(p.prompt, completions[p.task_id][0], p.test, language, p.entry_point, p.task_id)
               for p in problems if completions.get(p.task_id)][:samples]
    return [program.model_copy(update={"limits": limits or Limits()}) for program in chosen]


def timed(programs: list[Program], naive: bool) -> tuple[float, list[Verdict]]:
    started = time.monotonic()
    verdicts = execute(programs, workers=1, batch=False) if naive else execute(programs)
    return time.monotonic() - started, verdicts


def bench_language(language: str, programs: list[Program], repeats: int) -> dict[str, Any]:
    ours_s, naive_s = [], 0.0
    ours_time, ours = timed(programs, naive=False)
    ours_s.append(ours_time)
    naive_s, naive = timed(programs, naive=True)
    for _ in range(repeats - 1):
        ours_s.append(timed(programs, naive=False)[0])
    statuses = collections.Counter(v.status for v in ours)
    return {**_figures(language, programs, ours_s, naive_s, statuses),
            "verdicts_agree": sum(a.status == b.status for a, b in zip(ours, naive, strict=True)),
            "ratio_ceiling": _ratio_ceiling(programs, naive_s, statuses["timeout"])}


def _ratio_ceiling(programs: list[Program], naive_s: float, timeouts: int) -> float | None:
    """The best ratio any executor could reach on these programs: a program that loops forever costs its
    full timeout in both modes, so ours can never take less than one timeout per worker's share of them."""
    if not timeouts:
        return None
    workers = len(os.sched_getaffinity(0))
    return naive_s / (programs[0].limits.timeout_s * -(-timeouts // workers))


def _figures(language: str, programs: list[Program], ours_s: list[float], naive_s: float,
             statuses: collections.Counter) -> dict[str, Any]:
    median = statistics.median(ours_s)
    return {
        "programs": len(programs), "ours_s": [round(s, 2) for s in ours_s], "ours_median_s": round(median, 2),
        "naive_s": round(naive_s, 2), "ours_per_s": len(programs) / median, "naive_per_s": len(programs) / naive_s,
        "ratio": naive_s / median, "pass_rate": statuses["passed"] / len(programs), "statuses": dict(statuses),
        "mxeval_per_s": MXEVAL_PROGRAMS_PER_S.get(language),
        "vs_mxeval": len(programs) / median / MXEVAL_PROGRAMS_PER_S[language]
        if language in MXEVAL_PROGRAMS_PER_S else None,
    }


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()
    results: dict[str, Any] = {}
    for language in args.languages:
        if not available(language):
            print(f"{language}: unavailable here, skipped", flush=True)
            continue
        programs = benchmark_programs(language, args.per_language, args.samples, data_dir(),
                                      Limits(timeout_s=args.timeout))
        results[language] = bench_language(language, programs, args.repeats)
        row = results[language]
        print(f"{language}: {row['programs']} programs, ours {row['ours_median_s']} s, naive {row['naive_s']} s, "
              f"ratio {row['ratio']:.1f}, pass {row['pass_rate']:.1%}"
              + (f", ceiling {row['ratio_ceiling']:.1f} ({row['statuses']['timeout']} timeouts)"
                 if row["ratio_ceiling"] else ""), flush=True)
    total = sum(r["programs"] for r in results.values())
    ours_total = sum(r["ours_median_s"] for r in results.values())
    naive_total = sum(r["naive_s"] for r in results.values())
    overall = {"programs": total, "ours_s": round(ours_total, 1), "naive_s": round(naive_total, 1),
               "ours_per_s": total / ours_total, "naive_per_s": total / naive_total,
               "ratio": naive_total / ours_total,
               # against the reference harness's whole-set time: only when this run was that set
               "vs_mxeval": MXEVAL_OVERALL[1] / ours_total if total == MXEVAL_OVERALL[0] else None,
               "pass_rate": sum(r["statuses"].get("passed", 0) for r in results.values()) / total}
    return {"machine": common.machine_info(), "load_before": load_before, "load_after": os.getloadavg(),
            "settings": {"per_language": args.per_language, "samples": args.samples, "repeats": args.repeats,
                         "timeout_s": args.timeout, "workers": len(os.sched_getaffinity(0))},
            "languages": results, "overall": overall}


def run_audit(args: argparse.Namespace) -> dict[str, Any]:
    """Every canonical solution of every available language against the known_bad table."""
    table = known_bad_canonical()
    report: dict[str, Any] = {}
    for language in args.languages:
        if not available(language):
            continue
        problems = [p for p in load_problems(language, data_dir=data_dir()) if p.canonical_solution]
        if not problems:  # go, perl, scala, swift
            continue
        programs = [assemble(p.prompt, p.canonical_solution, p.test, language, p.entry_point, p.task_id)
                    for p in problems]
        seconds, verdicts = timed(programs, naive=False)
        failing = {p.task_id: v for p, v in zip(problems, verdicts, strict=True) if not v.passed}
        test_split = [p.task_id for p in problems if 11 <= p.number <= 510]
        report[language] = {
            "canonical": len(problems), "passed": len(problems) - len(failing), "seconds": round(seconds, 1),
            "pass_rate": 1 - len(failing) / len(problems),
            "test_split_pass_rate": 1 - sum(t in failing for t in test_split) / len(test_split),
            "unexplained": {t: {"status": v.status, "stderr": v.stderr[:600]} for t, v in failing.items()
                            if t not in table},
            "listed_but_passing": sorted(t for p in problems if (t := p.task_id) in table and t not in failing
                                         and table[t].kind != "undefined_behavior"),  # those pass by chance
        }
        print(f"{language}: {report[language]['passed']}/{len(problems)} pass in {seconds:.0f} s; "
              f"unexplained {len(report[language]['unexplained'])}, "
              f"stale {len(report[language]['listed_but_passing'])}", flush=True)
    return {"machine": common.machine_info(), "languages": report}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-language", type=int, default=40, help="canonical solutions per language")
    parser.add_argument("--samples", type=int, default=40, help="sample completions per language")
    parser.add_argument("--repeats", type=int, default=3, help="runs of ours per language (median)")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="run timeout per program (10 s: the sweep default; a sample that loops forever "
                             "costs this much in both modes)")
    parser.add_argument("--languages", nargs="+", default=list(LANGUAGES), choices=LANGUAGES)
    parser.add_argument("--audit", action="store_true", help="audit all canonical solutions instead")
    parser.add_argument("--out", help="result file (default benchmarks/results/executor.json or canonical_audit.json)")
    args = parser.parse_args()
    if args.audit:
        common.write_json(common.result_path("canonical_audit.json", args.out), run_audit(args))
        return
    payload = run_benchmark(args)
    rows = [{"language": lang, **{k: r[k] for k in ("programs", "ours_per_s", "naive_per_s", "ratio", "pass_rate",
                                                      "verdicts_agree", "mxeval_per_s", "vs_mxeval")}}
            for lang, r in payload["languages"].items()]
    rows.append({"language": "overall", **{k: payload["overall"][k] for k in ("programs", "ours_per_s", "naive_per_s",
                                                                             "ratio", "pass_rate", "vs_mxeval")}})
    common.write_json(common.result_path("executor.json", args.out), payload)
    print(common.table(rows, ["language", "programs", "ours_per_s", "naive_per_s", "ratio", "pass_rate",
                              "verdicts_agree", "mxeval_per_s", "vs_mxeval"]))


if __name__ == "__main__":
    main()
