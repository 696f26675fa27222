"""What a user lands on with `make ui`: the sweep's trials, their summary metrics, and MLflow's compare page.

The fast tests check the names trials log (`avg/pass_at_1`, `python/ref_nll`, params `task`/`source`/`seed`)
and the URL helper on a sqlite store. The browser test logs a small sweep through the project's tracking code
to a real `mlflow server` (tracking/server.sh), asks `python -m itt_sweep.tracking.ui_url` for the URL
`make ui` prints, and reads in headless Chromium what a person sees there: the trial runs by trial key with
the summary columns and values (not MLflow 3's GenAI overview), the parent run's description, and the
compare page of two trials. Screenshots are kept under tmp_path and copied to the directory the test prints
(`$ITT_KEEP_SCREENSHOTS`, default `<tmp>/itt-sweep-screenshots`).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.test_browser_ui import chromium, page_text, rendered, ui_server  # noqa: F401  (ui_server: fixture)

LANGUAGES = ("python", "java", "javascript", "cpp")


def test_summary_metrics_average_only_complete_rows_and_copy_per_language_values():
    from itt_sweep.tracking.summary import summary_metrics

    metrics = {"python": {"pass_at_1": 0.5, "compile_rate": 1.0, "ref_nll": 1.0, "pass_at_2": 0.6},
               "java": {"pass_at_1": 0.25, "compile_rate": math.nan, "ref_nll": 2.0}}
    assert summary_metrics(metrics) == {
        "avg/pass_at_1": 0.375, "avg/ref_nll": 1.5,  # no avg/compile_rate: java's is not measured
        "python/pass_at_1": 0.5, "python/ref_nll": 1.0, "java/pass_at_1": 0.25, "java/ref_nll": 2.0}


def test_cell_params_are_flat_with_short_searched_names():
    from itt_sweep.tracking.summary import cell_params

    hp = {"target.learning_rate": 1e-3, "intermediate.batch_size": 8, "training.zero_stage": 3}
    assert cell_params("all", "python", 2, hp) == {"task": "all", "source": "python", "seed": 2, "target_lr": 1e-3,
                                                   "intermediate_batch_size": 8, "zero_stage": 3}


def test_trial_run_logs_summaries_and_flat_params_once_across_a_resume(tmp_path):
    from itt_sweep.tracking.mlflow_runs import EXPERIMENT_KIND, client_for, experiment_id
    from itt_sweep.tracking.summary import cell_params
    from itt_sweep.tracking.trial_run import TrialRun

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = client_for(uri)
    legacy = client.create_experiment("itt-sweep/old")  # made before the kind tag existed
    assert experiment_id(client, "itt-sweep/old") == legacy
    assert client.get_experiment(legacy).tags[EXPERIMENT_KIND[0]] == EXPERIMENT_KIND[1]
    parent = client.create_run(legacy).info.run_id
    hp = {"target.learning_rate": 0.001}
    params = {**cell_params("none", "python", 0, hp), "hp": hp}
    for _ in range(2):  # the second time is a resumed trial: same params again, never a second value
        run = TrialRun(uri, legacy, parent, "none__python__s0__n0", {}, tmp_path / "trial" / ".tracking")
        run.log_params(params)
        run.log_eval({"python": {"pass_at_1": 0.5, "compile_rate": 1.0, "ref_nll": 1.25}}, val_loss=2.0)
    [child] = client.search_runs([legacy], "tags.`itt.trial_key` = 'none__python__s0__n0'")
    assert child.info.run_name == "none__python__s0__n0"
    assert {k: child.data.params[k] for k in ("task", "source", "seed", "target_lr", "hp.target.learning_rate")} == {
        "task": "none", "source": "python", "seed": "0", "target_lr": "0.001", "hp.target.learning_rate": "0.001"}
    assert {k: child.data.metrics[k] for k in ("avg/pass_at_1", "python/ref_nll", "eval/python/pass_at_1")} == {
        "avg/pass_at_1": 0.5, "python/ref_nll": 1.25, "eval/python/pass_at_1": 0.5}
    assert len(client.get_metric_history(child.info.run_id, "avg/pass_at_1")) == 1


def test_ui_url_picks_the_named_or_latest_sweep_and_opens_no_browser_without_a_display(tmp_path):
    from itt_sweep.analysis.synthetic import log_sweep, synthetic_records
    from itt_sweep.tracking import ui_url

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert ui_url.find_experiment(uri, None) is None
    first = log_sweep(uri, synthetic_records(tasks=("none",), seeds=(0,)), tmp_path / "a", name="first")
    second = log_sweep(uri, synthetic_records(tasks=("none",), seeds=(0,)), tmp_path / "b", name="second")
    assert ui_url.find_experiment(uri, None) == (second.experiment_id, True)
    assert ui_url.find_experiment(uri, "first") == (first.experiment_id, True)
    sweep_file = tmp_path / "first.yaml"
    sweep_file.write_text("name: first\nmatrix: {intermediate_tasks: [none]}\neval_languages: [python]\n")
    assert ui_url.find_experiment(uri, str(sweep_file)) == (first.experiment_id, True)
    assert ui_url.runs_url("http://127.0.0.1:5000", "7") == \
        "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning&viewStateShareKey=itt-trials"
    assert not ui_url.can_open_browser({"CI": "true", "DISPLAY": ":0"})
    assert not ui_url.can_open_browser({}) or sys.platform == "darwin"
    assert ui_url.can_open_browser({"DISPLAY": ":0"})


def keep(screenshots: list[Path]) -> Path:
    """Copy the screenshots where a person can look at them after the test; returns (and prints) where."""
    target = Path(os.environ.get("ITT_KEEP_SCREENSHOTS") or Path(tempfile.gettempdir()) / "itt-sweep-screenshots")
    target.mkdir(parents=True, exist_ok=True)
    for shot in screenshots:
        assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 30_000, shot
        shutil.copy(shot, target / shot.name)
    print(f"screenshots: {', '.join(str(target / shot.name) for shot in screenshots)}")
    return target


@pytest.mark.slow
def test_make_ui_url_lands_on_the_trials_with_summary_metrics_and_compares_two(ui_server, tmp_path):  # noqa: F811
    from itt_sweep.analysis.synthetic import log_sweep, synthetic_records
    from itt_sweep.tracking.summary import summary_metrics
    from itt_sweep.tracking.ui_url import compare_url

    records = synthetic_records(tasks=("none", "conala_nl2python", "all"), seeds=(0, 1), eval_languages=LANGUAGES)
    for record in records:
        record["hp"] = {"target.learning_rate": 0.001 * (record["seed"] + 1)}
    logged = log_sweep(ui_server, records, tmp_path / "sweep", name="landing", history_steps=5)
    port = ui_server.rsplit(":", 1)[1]
    printed = subprocess.run([sys.executable, "-m", "itt_sweep.tracking.ui_url", "--uri", ui_server, "--port", port],
                             capture_output=True, text=True, timeout=120, check=True).stdout.strip()
    assert printed == (f"{ui_server}/#/experiments/{logged.experiment_id}/runs"
                       "?workflowType=machine_learning&viewStateShareKey=itt-trials")

    summaries = {r["trial_key"]: summary_metrics(r["eval"]) for r in records}
    ranked = sorted(summaries, key=lambda key: -summaries[key]["avg/pass_at_1"])
    best, worst = ranked[0], ranked[-1]
    columns = ["avg/pass_at_1", "avg/compile_rate", "avg/ref_nll", "python/pass_at_1"]
    text = page_text(rendered(printed, tmp_path / "profile", [*summaries, *columns]))
    # the trial runs, flat, by trial key, best avg/pass_at_1 first, with the summary columns and their values
    assert [key for key in summaries if key not in text] == [], text[:3000]
    assert f"{len(records) + 1} matching runs" in text
    assert text.index(best) < text.index(worst)
    assert all(column in text for column in columns), text[:3000]
    best_values = [f"{summaries[best][name]:.12g}" for name in ("avg/pass_at_1", "avg/ref_nll")]
    assert all(value in text for value in best_values), (best_values, text[:3000])
    # not MLflow 3's GenAI landing page
    assert "Overview" not in text and "Token usage" not in text and "Latency" not in text
    chromium(printed, tmp_path / "profile", [f"--screenshot={tmp_path / 'landing_runs.png'}"], 20_000)

    parent_url = f"{ui_server}/#/experiments/{logged.experiment_id}/runs/{logged.parent_run_id}"
    description = "Intermediate-task transfer sweep"
    text = page_text(rendered(parent_url, tmp_path / "profile", [description, "heatmaps/"]))
    assert f"{description} landing" in text, text[:3000]
    assert "heatmaps/" in text and "none, conala_nl2python, all" in text

    pair = [logged.child_run_ids[best], logged.child_run_ids[worst]]
    compare = compare_url(ui_server, logged.experiment_id, pair)
    text = page_text(rendered(compare, tmp_path / "profile", ["Comparing 2 Runs", best, worst, "avg/pass_at_1"]))
    assert "Comparing 2 Runs" in text and best in text and worst in text, text[:3000]
    assert all(name in text for name in ("avg/pass_at_1", "python/ref_nll", "target_lr", "task", "source"))
    assert "Parallel Coordinates Plot" in text
    chromium(compare, tmp_path / "profile", [f"--screenshot={tmp_path / 'landing_compare.png'}"], 20_000)
    keep([tmp_path / "landing_runs.png", tmp_path / "landing_compare.png"])
