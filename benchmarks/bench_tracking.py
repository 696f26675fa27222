"""Does our tracking layer scale to a real study, and does the heatmap come back quickly from one?

One run, one MLflow server (`tracking/server.sh`: loopback, one worker, sqlite in a temp dir), three figures:

1. **Batch**: 1,000 trials logged the way trials log (`TrialRun` through its outbox: find-or-create the child
   run, a stage history of `--steps` steps × 2 metrics (`target/train_loss`, `target/lr`) in `log_batch`
   calls, 13 languages × 3 eval metrics + `val_loss`, status).
2. **Naive**: the same content per trial with one `MlflowClient.log_metric` call per value. It makes one HTTP
   request per value (~440 per trial), so it runs on `--naive-trials` trials (default 20) and is extrapolated
   linearly to the batch side's trial count; the JSON says so (`naive.extrapolated`).
3. **Heatmap from 1,000 runs**: `load_records` (MLflow search of the parent's child runs, plus the trial dirs
   check) → `to_frame` → bootstrap CIs → PNG, CSV, Markdown, LaTeX. `one_heatmap_total_s` is one (source,
   metric) table from the 1,000 runs (goal: under 5 s); `all_total_s` writes all 15 (5 sources × 3 metrics).

The figures are wall times on a 2-core machine shared with other work: the load average is in the JSON.

Run:  .venv/bin/python benchmarks/bench_tracking.py            (about 10 min on 2 quiet cores)
      .venv/bin/python benchmarks/bench_tracking.py --trials 40 --naive-trials 4 --steps 20   (a smoke run)
Writes benchmarks/results/tracking.json.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import REPO, machine_info, result_path, table, write_json

from itt_sweep.analysis import load_records, to_frame, transfer_table, write_outputs
from itt_sweep.analysis.report import result_pairs, write_table
from itt_sweep.analysis.synthetic import log_sweep, synthetic_records
from itt_sweep.data.mbxp import LANGUAGES

TASKS = (
    "none",
    "conala_nl2python",
    "codexglue_java_cs_translation",
    "concode_nl2java",
    "codenn_code2title",
    "rosetta_code_nl2code",
    "transcoder_gfg_translation",
    "all",
)
SOURCES = ("python", "java", "javascript", "cpp", "go")


def study_records(n_trials: int) -> list[dict]:
    """8 tasks × 5 source languages × seeds, 13 eval languages: `n_trials` = 1,000 gives 25 seeds."""
    seeds = range(max(1, n_trials // (len(TASKS) * len(SOURCES))))
    return synthetic_records(tasks=TASKS, source_languages=SOURCES, seeds=seeds, eval_languages=LANGUAGES)


def start_server(state: Path) -> tuple[str, dict[str, str]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "MLFLOW_PORT": str(port),
        "MLFLOW_STATE_DIR": str(state),
        "MLFLOW_BACKEND_URI": f"sqlite:///{state}/mlflow.db",
        "MLFLOW_ARTIFACTS_DESTINATION": str(state / "art"),
        "MLFLOW_BIN": str(Path(sys.executable).parent / "mlflow"),
    }
    subprocess.run(["bash", str(REPO / "tracking" / "server.sh"), "start"], env=env, check=True, timeout=300)
    return f"http://127.0.0.1:{port}", env


def log_naive(uri: str, records: list[dict], steps: int) -> float:
    """One `log_metric` request per value: what a trial would do without our batching. Returns seconds."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("bench-naive")
    parent = client.create_run(exp, run_name="naive").info.run_id
    start = time.perf_counter()
    for record in records:
        tags = {"mlflow.parentRunId": parent, "itt.trial_key": record["trial_key"]}
        run = client.create_run(exp, tags=tags, run_name=record["trial_key"]).info.run_id
        for step in range(1, steps + 1):
            client.log_metric(run, "target/train_loss", 3.0 / step, step=step)
            client.log_metric(run, "target/lr", 1e-3 * min(1.0, step / 10), step=step)
        for language, metrics in record["eval"].items():
            for name, value in metrics.items():
                client.log_metric(run, f"eval/{language}/{name}", value)
        client.log_metric(run, "val_loss", record["val_loss"])
        client.set_terminated(run)
    return time.perf_counter() - start


def time_heatmap(sweep_dir: Path, out: Path) -> dict[str, Any]:
    """`itt-sweep heatmap` on the logged study, phase by phase: the goal is for one heatmap (fetch the
    1,000 runs, aggregate, bootstrap, draw one PNG with its tables); all 15 are timed as well."""
    cpu, start = time.process_time(), time.perf_counter()
    records, origin = load_records(sweep_dir)
    fetched = time.perf_counter()
    frame = to_frame(records)
    framed = time.perf_counter()
    tables = [transfer_table(frame, source, metric) for source, metric in result_pairs(frame)]
    tabled = time.perf_counter()
    write_table(tables[0], out)
    one_written = time.perf_counter()
    paths = write_outputs(frame, out)
    done = time.perf_counter()
    one_table_s = (tabled - framed) / len(tables)
    return {
        "runs": len(records),
        "origin": origin,
        "pairs": len(tables),
        "fetch_s": fetched - start,
        "frame_s": framed - fetched,
        "tables_with_ci_s": tabled - framed,
        "one_table_with_ci_s": one_table_s,
        "one_heatmap_files_s": one_written - tabled,
        "one_heatmap_total_s": (framed - start) + one_table_s + (one_written - tabled),
        "all_outputs_s": done - one_written,
        "all_total_s": (framed - start) + (done - one_written),
        "client_cpu_s": time.process_time() - cpu,
        "files": len(paths),
        "goal_s": 5.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--naive-trials", type=int, default=20)
    parser.add_argument("--out", help="result file (default benchmarks/results/tracking.json)")
    args = parser.parse_args()
    records = study_records(args.trials)
    with tempfile.TemporaryDirectory(prefix="itt-bench-tracking-") as tmp:
        uri, env = start_server(Path(tmp) / "server")
        try:
            start = time.perf_counter()
            log_sweep(uri, records, Path(tmp) / "sweep", name="bench", history_steps=args.steps)
            batch_s = time.perf_counter() - start
            print(f"batch: {len(records)} trials in {batch_s:.1f} s", flush=True)
            naive_s = log_naive(uri, records[: args.naive_trials], args.steps)
            print(f"naive: {args.naive_trials} trials in {naive_s:.1f} s", flush=True)
            heatmap = time_heatmap(Path(tmp) / "sweep", Path(tmp) / "heatmaps")
        finally:
            subprocess.run(["bash", str(REPO / "tracking" / "server.sh"), "stop"], env=env, timeout=120)
    write_result(args, len(records), batch_s, naive_s, heatmap)


def write_result(
    args: argparse.Namespace, n_trials: int, batch_s: float, naive_s: float, heatmap: dict[str, Any]
) -> None:
    values_per_trial = 2 * args.steps + 3 * len(LANGUAGES) + 1
    naive_per_trial = naive_s / args.naive_trials
    batch = {
        "trials": n_trials,
        "seconds": batch_s,
        "per_trial_s": batch_s / n_trials,
        "values_per_trial": values_per_trial,
        "values_per_s": n_trials * values_per_trial / batch_s,
    }
    naive = {
        "trials_measured": args.naive_trials,
        "seconds_measured": naive_s,
        "per_trial_s": naive_per_trial,
        "extrapolated": args.naive_trials != n_trials,
        "seconds_for_all_trials": naive_per_trial * n_trials,
        "values_per_s": values_per_trial / naive_per_trial,
    }
    payload = {
        "machine": {**machine_info(), "load_average_at_end": os.getloadavg()},  # a shared machine skews all
        "server": "mlflow server, 1 worker, sqlite, 127.0.0.1 (tracking/server.sh)",
        "steps": args.steps,
        "batch": batch,
        "naive": naive,
        "speedup_batch_vs_naive": naive_per_trial / batch["per_trial_s"],
        "heatmap": heatmap,
    }
    write_json(result_path("tracking.json", args.out), payload)
    rows = [
        {"what": "batch (ours)", "trials": n_trials, "s": batch_s, "s/trial": batch["per_trial_s"]},
        {"what": "naive log_metric", "trials": args.naive_trials, "s": naive_s, "s/trial": naive_per_trial},
        {
            "what": f"naive, {n_trials} (extrapolated)",
            "trials": n_trials,
            "s": naive["seconds_for_all_trials"],
            "s/trial": naive_per_trial,
        },
    ]
    print(table(rows, ["what", "trials", "s", "s/trial"]))
    print(
        f"speedup: {payload['speedup_batch_vs_naive']:.1f}x; from {heatmap['runs']} runs: one heatmap "
        f"{heatmap['one_heatmap_total_s']:.2f} s (fetch {heatmap['fetch_s']:.2f}), all {heatmap['pairs']} "
        f"{heatmap['all_total_s']:.2f} s; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
