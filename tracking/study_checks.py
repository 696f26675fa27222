"""Checks on a finished study's numbers, before anyone reads its tables (issue: the SmolLM2 study).

1. The sweep and the standalone evaluator agree: `itt-sweep eval` of each `none` trial's stage-2 model, on the
   same problems with the same decoding and threads, gives the trial's own pass@1 and ref_nll.
2. Seeds differ in their training batches: the `none` trials' stage-2 losses differ from the first step on.
3. Every stage ran once per key: as many stage-1 entries as (task with a stage 1) x seed, none shared between
   seeds, and one stage 2 per trial.
4. Every trial has exactly one MLflow run.

    python tracking/study_checks.py runs/smollm2-study --out results/smollm2-study/checks.json
    (--reuse an earlier report: its agreement rows stand for the trials it covers)
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from mlflow.tracking import MlflowClient

from itt_sweep.data.tasks import CONTROL, NONE
from itt_sweep.sweep.prepare import reference_dir


def trials(sweep_dir: Path) -> dict[str, dict[str, Any]]:
    """trial key -> its config, metrics and stage-2 model dir (finished trials only)."""
    found = {}
    for trial in sorted((sweep_dir / "trials").iterdir()):
        if (trial / "metrics.json").is_file() and (trial / "model.json").is_file():
            found[trial.name] = {"dir": trial, "config": json.loads((trial / "config.json").read_text()),
                                 "metrics": json.loads((trial / "metrics.json").read_text()),
                                 "model": Path(json.loads((trial / "model.json").read_text())["model"])}
    return found


def agreement(sweep: dict[str, Any], found: dict[str, dict[str, Any]], data_dir: str, references: Path,
              earlier: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`itt-sweep eval` of every `none` trial against the trial's own stage-3 numbers, scored against the
    sweep's own verified `references` (cached ones are scored on their prompt's prefill, the rest afterwards,
    and the two paths differ in the 5th digit). Trials that `earlier` (a previous report's rows) already
    covers keep those rows: each standalone eval costs a whole stage 3, so the `none` trials can be checked
    while the rest of the study still runs."""
    evaluation = sweep["evaluation"]
    rows = [row for row in earlier if row["trial"] in found]
    covered = {row["trial"] for row in rows}
    for key, trial in found.items():
        if trial["metrics"]["intermediate_task"] != NONE or key in covered:
            continue
        with tempfile.TemporaryDirectory(prefix="study-check-") as out:
            command = [sys.executable, "-m", "itt_sweep.cli", "eval", "--model", str(trial["dir"]), "--languages",
                       ",".join(sweep["eval_languages"]), "--problems", str(sweep["data"]["eval_problems"]),
                       "--out", out, "--data-dir", data_dir, "--cpus", str(evaluation["cpus"]),
                       "--reference-cache", str(references),
                       "--batch-size", str(evaluation["batch_size"]), "--timeout-s", str(evaluation["timeout_s"]),
                       "--prompt-format", evaluation["prompt_format"]]
            max_new = evaluation["max_new_tokens"]
            command += ["--max-new-tokens", str(max_new) if isinstance(max_new, int)
                        else ",".join(f"{lang}={n}" for lang, n in max_new.items())]
            subprocess.run(command, check=True)
            standalone = json.loads((Path(out) / "metrics.json").read_text())["languages"]
        for language, theirs in standalone.items():
            ours = trial["metrics"]["eval"][language]
            rows.append({"trial": key, "language": language,
                         "pass_at_1": [ours["pass_at_1"], theirs["pass_at_1"]],
                         "ref_nll": [ours.get("ref_nll"), theirs.get("ref_nll")],
                         "agree": ours["pass_at_1"] == theirs["pass_at_1"] and _close(ours.get("ref_nll"),
                                                                                      theirs.get("ref_nll"))})
    return rows


def seeds_differ(found: dict[str, dict[str, Any]]) -> dict[str, Any]:
    firsts = {key: json.loads((t["model"] / "stage_metrics.json").read_text())["history"][0]["train_loss"]
              for key, t in found.items() if t["metrics"]["intermediate_task"] == NONE}
    return {"first_stage2_train_loss": firsts, "ok": len(set(firsts.values())) == len(firsts) > 1}


def trial_runs(sweep: dict[str, Any]) -> list:
    client = MlflowClient(sweep["tracking"]["uri"])
    experiment = client.get_experiment_by_name(sweep["tracking"].get("experiment") or f"itt-sweep/{sweep['name']}")
    return [run for run in client.search_runs([experiment.experiment_id], max_results=10_000)
            if run.data.tags.get("itt.trial_key")]


def stage_counts(found: dict[str, dict[str, Any]], runs: list) -> dict[str, Any]:
    """Stage keys as the finished trials' MLflow runs tag them: one stage 1 per (task, seed, source) among the
    finished trials that have one (seeds never share it; the source enters only the control's, which trains on
    the source's own data), and one stage 2 per trial. Only finished trials count, so a study checked in parts
    checks what it has."""
    runs = [run for run in runs if run.data.tags["itt.trial_key"] in found]
    stage1 = {run.data.tags.get("itt.stage_key.intermediate") for run in runs} - {None}
    stage2 = {run.data.tags.get("itt.stage_key.target") for run in runs} - {None}
    cells = {(m["intermediate_task"], m["seed"], m["source_language"] if m["intermediate_task"] == CONTROL else None)
             for t in found.values() if (m := t["metrics"])["intermediate_task"] != NONE}
    models = {t["model"] for t in found.values()}
    return {"stage1_keys": len(stage1), "expected_stage1": len(cells), "stage2_keys": len(stage2),
            "trials": len(found), "stage2_dirs": len(models),
            "ok": len(stage1) == len(cells) and len(stage2) == len(found) == len(models)}


def mlflow_runs(found: dict[str, dict[str, Any]], runs: list) -> dict[str, Any]:
    per_key: dict[str, int] = {}
    for run in runs:
        key = run.data.tags["itt.trial_key"]
        per_key[key] = per_key.get(key, 0) + 1
    missing = [key for key in found if per_key.get(key) != 1]
    return {"runs_per_trial": per_key, "not_exactly_one": missing, "ok": not missing}


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--out", required=True)
    parser.add_argument("--reuse", help="an earlier report: keep its agreement rows for the trials it covers")
    args = parser.parse_args(argv)
    earlier = json.loads(Path(args.reuse).read_text())["agreement"] if args.reuse else []
    sweep_dir = Path(args.sweep_dir)
    sweep = yaml.safe_load((sweep_dir / "sweep.resolved.yaml").read_text())
    found, runs = trials(sweep_dir), trial_runs(sweep)
    references = reference_dir(sweep_dir.resolve().parent)  # the sweep's storage root holds its references
    report = {"trials": len(found), "agreement": agreement(sweep, found, args.data_dir, references, earlier),
              "seeds_differ": seeds_differ(found), "stages": stage_counts(found, runs),
              "mlflow": mlflow_runs(found, runs)}
    report["ok"] = (all(row["agree"] for row in report["agreement"]) and report["seeds_differ"]["ok"]
                    and report["stages"]["ok"] and report["mlflow"]["ok"])
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"checks {'passed' if report['ok'] else 'FAILED'}: {args.out}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
