"""Transfer matrices, intervals, tables and heatmaps from synthetic sweeps whose deltas are known by hand."""

from __future__ import annotations

import json
import math
import socket
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from itt_sweep.analysis import (
    absolute_matrix,
    draw_heatmap,
    load_records,
    read_matrix_csv,
    records_from_dirs,
    records_from_mlflow,
    render_heatmap,
    to_frame,
    transfer_matrix,
    transfer_table,
    write_outputs,
)
from itt_sweep.analysis.synthetic import log_sweep, synthetic_records
from itt_sweep.analysis.tables import write_latex, write_markdown

# pass_at_1 per (task, seed) for eval languages (python, java, ruby); compile_rate = 1 - pass_at_1 / 2,
# ref_nll = 2 - pass_at_1, so every metric's delta is known from these numbers.
PASS_AT_1 = {
    ("none", 0): {"python": 0.10, "java": 0.05, "ruby": 0.02},
    ("none", 1): {"python": 0.20, "java": 0.07, "ruby": 0.04},
    ("conala_nl2python", 0): {"python": 0.30, "java": 0.06, "ruby": 0.02},
    ("conala_nl2python", 1): {"python": 0.24, "java": 0.10, "ruby": 0.08},
    ("all", 0): {"python": 0.15, "java": 0.05, "ruby": 0.10},
    ("all", 1): {"python": 0.10, "java": 0.09, "ruby": 0.00},
}


def make_record(task: str, seed: int, pass_at_1: dict, val_loss: float | None = 1.0, key: str = "") -> dict:
    evals = {
        language: {"pass_at_1": value, "compile_rate": 1 - value / 2, "ref_nll": 2 - value}
        for language, value in pass_at_1.items()
    }
    return {
        "trial_key": key or f"{task}-python-s{seed}",
        "intermediate_task": task,
        "source_language": "python",
        "seed": seed,
        "val_loss": val_loss,
        "eval": evals,
    }


@pytest.fixture
def records() -> list[dict]:
    # ruby first: the column order must come from MBXP, not from the record.
    return [
        make_record(task, seed, dict(reversed(values.items()))) for (task, seed), values in PASS_AT_1.items()
    ]


def test_cell_is_mean_over_seeds_of_delta_against_same_seed_baseline(records):
    matrix = transfer_matrix(to_frame(records), "python", "pass_at_1")
    assert matrix.loc["conala_nl2python", "python"] == pytest.approx(((0.30 - 0.10) + (0.24 - 0.20)) / 2)
    assert matrix.loc["conala_nl2python", "java"] == pytest.approx(((0.06 - 0.05) + (0.10 - 0.07)) / 2)
    assert matrix.loc["all", "ruby"] == pytest.approx(((0.10 - 0.02) + (0.00 - 0.04)) / 2)
    assert matrix.loc["conala_nl2python", "avg"] == pytest.approx((0.12 + 0.02 + 0.02) / 3)


def test_lower_is_better_metric_keeps_trial_minus_baseline_sign(records):
    matrix = transfer_matrix(to_frame(records), "python", "ref_nll")
    assert matrix.loc["conala_nl2python", "python"] == pytest.approx(-0.12)


def test_rows_are_sorted_tasks_with_mixture_last_and_no_baseline_row(records):
    extra = make_record("apps", 0, {"python": 0.1}), make_record("apps", 1, {"python": 0.1})
    matrix = transfer_matrix(to_frame([*records, *extra]), "python", "pass_at_1")
    assert list(matrix.index) == ["apps", "conala_nl2python", "all"]
    assert list(matrix.columns) == ["python", "java", "ruby", "avg"]


def test_absolute_matrix_shows_raw_means_with_baseline_first(records):
    matrix = absolute_matrix(to_frame(records), "python", "pass_at_1")
    assert list(matrix.index) == ["none", "conala_nl2python", "all"]
    assert matrix.loc["none", "python"] == pytest.approx(0.15)


def test_trial_with_best_test_metric_but_worse_val_loss_is_not_chosen(records):
    cheat = make_record("conala_nl2python", 0, {"python": 0.99, "java": 0.99, "ruby": 0.99}, 0.9, "cheat")
    honest = make_record("conala_nl2python", 0, {"python": 0.11, "java": 0.05, "ruby": 0.02}, 0.5, "honest")
    frame = to_frame([cheat, *records, honest])
    chosen = frame.loc[(frame["intermediate_task"] == "conala_nl2python") & (frame["seed"] == 0), "trial_key"]
    assert set(chosen) == {"honest"}
    matrix = transfer_matrix(frame, "python", "pass_at_1")
    assert matrix.loc["conala_nl2python", "python"] == pytest.approx(((0.11 - 0.10) + (0.24 - 0.20)) / 2)


def test_trial_without_eval_results_never_fills_a_cell(records):
    stopped_early = {**make_record("all", 0, {}, 0.01, "stopped"), "eval": {}}
    frame = to_frame([*records, stopped_early])
    assert "stopped" not in set(frame["trial_key"])


def test_cell_missing_on_either_side_is_nan_not_zero(records):
    for record in records:
        if record["intermediate_task"] == "all":
            del record["eval"]["java"]  # trial side missing in every seed
        if record["intermediate_task"] == "none" and record["seed"] == 1:
            del record["eval"]["ruby"]  # baseline side missing in one seed
        if record["intermediate_task"] == "conala_nl2python":
            record["eval"]["php"] = {"pass_at_1": 0.5}  # baseline side missing in every seed
    matrix, counts = transfer_matrix(to_frame(records), "python", "pass_at_1", return_counts=True)
    assert math.isnan(matrix.loc["conala_nl2python", "php"])
    assert counts.loc["conala_nl2python", "php"] == 0
    assert math.isnan(matrix.loc["all", "java"])
    assert math.isnan(matrix.loc["all", "avg"])
    assert counts.loc["all", "java"] == 0
    assert counts.loc["conala_nl2python", "ruby"] == 1
    assert matrix.loc["conala_nl2python", "ruby"] == pytest.approx(0.02 - 0.02)


def test_unknown_source_language_error_names_what_exists(records):
    with pytest.raises(ValueError, match="python/pass_at_1"):
        transfer_matrix(to_frame(records), "kotlin", "pass_at_1")


def test_missing_cell_is_drawn_as_na_on_grey(records):
    for record in records:
        if record["intermediate_task"] == "all":
            del record["eval"]["java"]
    matrix = transfer_matrix(to_frame(records), "python", "pass_at_1")
    axes = draw_heatmap(matrix, "t").axes[0]
    labels = {
        (round(t.get_position()[0], 1), round(t.get_position()[1], 1)): t.get_text() for t in axes.texts
    }
    row, column = list(matrix.index).index("all"), list(matrix.columns).index("java")
    assert labels[(column + 0.5, row + 0.5)] == "n/a"
    assert labels[(0.5, 0.5)] == f"{matrix.iloc[0, 0]:.3f}"
    assert "0.000" not in {labels[(column + 0.5, row + 0.5)], labels[(len(matrix.columns) - 0.5, row + 0.5)]}


@pytest.mark.parametrize("lower_is_better", [False, True])
def test_improvement_is_blue_whichever_way_the_metric_points(lower_is_better):
    improvement = -0.1 if lower_is_better else 0.1
    matrix = pd.DataFrame({"python": [improvement, -improvement]}, index=["better", "worse"])
    mesh = draw_heatmap(matrix, "t", lower_is_better=lower_is_better).axes[0].collections[0]
    red, _, blue, _ = mesh.cmap(mesh.norm(improvement))
    assert blue > red
    assert mesh.norm(0.0) == pytest.approx(0.5)


def test_write_outputs_writes_png_csv_markdown_and_latex_per_source_and_metric(records, tmp_path):
    frame = to_frame(records)
    paths = write_outputs(frame, tmp_path / "out")
    names = {path.name for path in paths}
    for metric in ("pass_at_1", "compile_rate", "ref_nll"):
        assert {f"heatmap_python_{metric}.png", f"heatmap_python_{metric}.csv"} <= names
        assert {f"transfer_python_{metric}.{ext}" for ext in ("csv", "md", "tex")} <= names
        assert f"absolute_python_{metric}.csv" in names
    png = (tmp_path / "out" / "heatmap_python_pass_at_1.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 10_000


def test_sampled_sweeps_get_a_heatmap_per_pass_at_k(records, tmp_path):
    for record in records:
        for metrics in record["eval"].values():
            metrics["pass_at_10"] = min(1.0, 2 * metrics["pass_at_1"])
    names = {path.name for path in write_outputs(to_frame(records), tmp_path / "out")}
    assert {"heatmap_python_pass_at_10.png", "transfer_python_pass_at_10.md"} <= names
    assert not any("n_problems" in name for name in names)


def test_deltas_against_the_compute_matched_control_when_asked(records, tmp_path):
    """`--baseline target_control`: the control row is the baseline, `none` becomes a row (none - control)."""
    control = {0: {"python": 0.25, "java": 0.06, "ruby": 0.03}, 1: {"python": 0.20, "java": 0.08, "ruby": 0.06}}
    records += [make_record("target_control", seed, values) for seed, values in control.items()]
    default = transfer_matrix(to_frame(records), "python", "pass_at_1")
    assert list(default.index) == ["target_control", "conala_nl2python", "all"]  # control first after none
    matrix = transfer_matrix(to_frame(records), "python", "pass_at_1", baseline="target_control")
    assert list(matrix.index) == ["none", "conala_nl2python", "all"]
    conala = [PASS_AT_1[("conala_nl2python", s)]["python"] - control[s]["python"] for s in (0, 1)]
    assert matrix.loc["conala_nl2python", "python"] == pytest.approx(sum(conala) / 2)
    assert matrix.loc["none", "java"] == pytest.approx((0.05 - 0.06 + 0.07 - 0.08) / 2)
    paths = write_outputs(to_frame(records), tmp_path, baseline="target_control")
    assert "vs target_control" in (tmp_path / "transfer_python_pass_at_1.md").read_text()
    assert {p.name for p in paths} >= {"heatmap_python_pass_at_1.png", "absolute_python_pass_at_1.csv"}
    absolute = (tmp_path / "absolute_python_pass_at_1.csv").read_text().splitlines()
    assert absolute[1].startswith("target_control,")  # the baseline row first


def test_transfer_csv_round_trips_with_missing_cells(records, tmp_path):
    del records[-1]["eval"]["java"], records[-2]["eval"]["java"]
    frame = to_frame(records)
    write_outputs(frame, tmp_path)
    matrix = transfer_matrix(frame, "python", "ref_nll")
    read_back = read_matrix_csv(tmp_path / "heatmap_python_ref_nll.csv")
    pd.testing.assert_frame_equal(read_back, matrix, check_exact=True)
    assert read_back.isna().to_numpy().sum() == 2


def test_render_heatmap_refuses_empty_matrix(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        render_heatmap(pd.DataFrame(), "t", tmp_path / "x.png")


def test_records_from_dirs_reads_trials_and_skips_broken_files(records, tmp_path):
    for record in records:
        trial_dir = tmp_path / "trials" / record["trial_key"]
        trial_dir.mkdir(parents=True)
        (trial_dir / "metrics.json").write_text(json.dumps(record))
    (tmp_path / "trials" / "killed").mkdir()
    (tmp_path / "trials" / "killed" / "metrics.json").write_text('{"trial_key": "kil')
    (tmp_path / "trials" / "odd").mkdir()
    (tmp_path / "trials" / "odd" / "metrics.json").write_text('{"loss": 1}')
    with pytest.warns(UserWarning) as caught:
        found = records_from_dirs(tmp_path)
    assert len(caught) == 2
    assert sorted(found, key=lambda r: r["trial_key"]) == sorted(records, key=lambda r: r["trial_key"])


@pytest.fixture
def mlflow():
    """MLflow with the process-wide tracking URI put back afterwards, so other tests see no sqlite of ours."""
    import mlflow

    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    yield mlflow
    mlflow.set_tracking_uri(previous)


def test_records_from_mlflow_rebuilds_records_of_one_sweep(records, tmp_path, mlflow):
    uri = f"sqlite:///{tmp_path}/m.db"
    parent_id = _log_sweep(mlflow, uri, records)
    _log_sweep(mlflow, uri, records[:1])  # another sweep in the same store must not leak in
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/callers_own.db")
    with pytest.warns(UserWarning, match="lacks the itt"):
        found = records_from_mlflow(uri, parent_id)
    assert mlflow.get_tracking_uri() == f"sqlite:///{tmp_path}/callers_own.db"
    assert sorted(found, key=lambda r: r["trial_key"]) == sorted(records, key=lambda r: r["trial_key"])
    frame_from_mlflow = transfer_matrix(to_frame(found), "python", "pass_at_1")
    np.testing.assert_allclose(frame_from_mlflow, transfer_matrix(to_frame(records), "python", "pass_at_1"))


def _log_sweep(mlflow, uri: str, records: list[dict]) -> str:
    """Log records the way the tracking module does: one child run per trial under a parent run."""
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("itt")
    with mlflow.start_run(run_name="sweep") as parent:
        for record in records:
            with mlflow.start_run(run_name=record["trial_key"], nested=True):
                mlflow.set_tags(
                    {
                        "itt.trial_key": record["trial_key"],
                        "itt.intermediate_task": record["intermediate_task"],
                        "itt.source_language": record["source_language"],
                        "itt.seed": str(record["seed"]),
                        "itt.cell": f"{record['intermediate_task']}/{record['source_language']}",
                    }
                )
                metrics = {
                    f"eval/{language}/{name}": value
                    for language, values in record["eval"].items()
                    for name, value in values.items()
                }
                mlflow.log_metrics({**metrics, "val_loss": record["val_loss"]})
        with mlflow.start_run(run_name="not-a-trial", nested=True):
            mlflow.log_metric("val_loss", 0.0)
    return parent.info.run_id


def test_source_with_only_baseline_trials_gets_absolute_csv_and_no_heatmap(records, tmp_path):
    baseline_only = [record for record in records if record["intermediate_task"] == "none"]
    names = {path.name for path in write_outputs(to_frame(baseline_only), tmp_path)}
    absolute = {f"absolute_python_{metric}.csv" for metric in ("pass_at_1", "compile_rate", "ref_nll")}
    assert names == {"trials.csv"} | absolute


# -- intervals ----------------------------------------------------------------------------------------------

SYNTHETIC_LANGUAGES = ("python", "java", "ruby")


def effect_by_task(task: str, source: str, language: str) -> float:
    """The true mean delta of each cell: conala +0.05, the mixture 0, and +0.01 on top for java."""
    if task == "none":
        return 0.0
    return {"conala_nl2python": 0.05, "all": 0.0}[task] + (0.01 if language == "java" else 0.0)


def synthetic_frame(seeds=(0, 1, 2, 3, 4), spread=0.02) -> pd.DataFrame:
    records = synthetic_records(
        tasks=("none", "conala_nl2python", "all"),
        seeds=seeds,
        eval_languages=SYNTHETIC_LANGUAGES,
        effect=effect_by_task,
        spread=spread,
    )
    return to_frame(records)


def test_cell_mean_is_the_exact_effect_and_its_interval_contains_it():
    table = transfer_table(synthetic_frame(), "python", "pass_at_1")
    for task in ("conala_nl2python", "all"):
        for language in SYNTHETIC_LANGUAGES:
            true_mean = effect_by_task(task, "python", language)
            assert table.mean.loc[task, language] == pytest.approx(true_mean, abs=1e-12)
            assert table.low.loc[task, language] <= true_mean <= table.high.loc[task, language]
            assert table.n_seeds.loc[task, language] == 5
    assert table.mean.loc["conala_nl2python", "avg"] == pytest.approx(0.05 + 0.01 / 3, abs=1e-12)


def test_mark_only_where_the_interval_excludes_zero():
    table = transfer_table(synthetic_frame(), "python", "pass_at_1")
    assert table.significant.loc["conala_nl2python", "python"]  # +0.05 ± 0.02
    assert not table.significant.loc["all", "python"]  # 0 ± 0.02: the interval straddles 0
    assert table.low.loc["all", "python"] < 0 < table.high.loc["all", "python"]
    lower_is_better = transfer_table(synthetic_frame(), "python", "ref_nll")
    assert lower_is_better.significant.loc["conala_nl2python", "python"]
    assert lower_is_better.high.loc["conala_nl2python", "python"] < 0


@pytest.mark.parametrize("seeds", [(0,), (0, 1)])
def test_too_few_seeds_give_no_interval_and_no_mark_never_a_fake_one(seeds):
    table = transfer_table(synthetic_frame(seeds=seeds, spread=0.0), "python", "pass_at_1")
    assert table.mean.loc["conala_nl2python", "python"] == pytest.approx(0.05)
    assert table.low.isna().all().all() and table.high.isna().all().all()
    assert not table.significant.any().any()
    markdown = write_markdown(table, Path(tempfile.mkdtemp()) / "t.md").read_text()
    assert f"0.050 n={len(seeds)}: no CI" in markdown
    assert "*" not in markdown.split("\n", 1)[1]  # the caption explains the mark; no cell has one


def test_average_column_resamples_seeds_jointly():
    # Same per-seed deltas in every language: the row average of each replicate equals each language's
    # statistic, so the "avg" interval must equal the cells' intervals exactly.
    frame = synthetic_frame()
    frame = frame[frame["eval_language"] != "java"]
    table = transfer_table(frame, "python", "pass_at_1")
    for column in ("ruby", "avg"):
        assert table.low.loc["conala_nl2python", column] == pytest.approx(
            table.low.loc["conala_nl2python", "python"]
        )
        assert table.high.loc["conala_nl2python", column] == pytest.approx(
            table.high.loc["conala_nl2python", "python"]
        )


def test_interval_of_a_cell_does_not_depend_on_other_tasks_in_the_sweep():
    frame = synthetic_frame()
    alone = transfer_table(frame[frame["intermediate_task"] != "all"], "python", "pass_at_1")
    together = transfer_table(frame, "python", "pass_at_1")
    pd.testing.assert_series_equal(alone.low.loc["conala_nl2python"], together.low.loc["conala_nl2python"])


# -- tables: missing cells, marks, intervals in every format ------------------------------------------------


def test_missing_cell_reads_na_in_csv_markdown_and_latex_never_zero(tmp_path):
    frame = synthetic_frame()
    frame = frame[~((frame["intermediate_task"] == "all") & (frame["eval_language"] == "ruby"))]
    paths = {path.name: path for path in write_outputs(frame, tmp_path)}
    tidy = pd.read_csv(paths["transfer_python_pass_at_1.csv"])
    missing = tidy[(tidy["intermediate_task"] == "all") & (tidy["eval_language"].isin(["ruby", "avg"]))]
    assert missing["mean"].isna().all() and missing["ci_low"].isna().all()
    assert (missing["n_seeds"] == 0).all() and not missing["significant"].any()
    markdown_row = next(
        line for line in paths["transfer_python_pass_at_1.md"].read_text().splitlines() if "`all`" in line
    )
    assert markdown_row.rstrip(" |").endswith("n/a | n/a")
    latex_row = next(
        line for line in paths["transfer_python_pass_at_1.tex"].read_text().splitlines() if "all &" in line
    )
    assert latex_row.endswith("& n/a & n/a \\\\")
    matrix = read_matrix_csv(paths["heatmap_python_pass_at_1.csv"])
    assert math.isnan(matrix.loc["all", "ruby"])


def test_markdown_and_latex_show_mean_mark_and_interval(tmp_path):
    table = transfer_table(synthetic_frame(), "python", "pass_at_1")
    low, high = table.low.loc["conala_nl2python", "python"], table.high.loc["conala_nl2python", "python"]
    markdown = write_markdown(table, tmp_path / "t.md").read_text()
    assert f"| `conala_nl2python` | 0.050* [{low:.3f}, {high:.3f}] |" in markdown
    latex = write_latex(table, tmp_path / "t.tex").read_text()
    assert "conala\\_nl2python & \\shortstack{0.050$^{*}$\\\\{\\scriptsize [" in latex
    assert latex.count("\\\\\n") == 1 + len(table.mean.index)  # header + one row per task
    assert "\\begin{tabular}{l" + "r" * len(table.mean.columns) + "}" in latex


def test_heatmap_cell_shows_mean_with_mark_over_its_interval():
    table = transfer_table(synthetic_frame(), "python", "pass_at_1")
    axes = draw_heatmap(table, "t").axes[0]
    texts = {(round(t.get_position()[0], 2), round(t.get_position()[1], 2)): t.get_text() for t in axes.texts}
    row = list(table.mean.index).index("conala_nl2python")
    assert texts[(0.5, row + 0.4)] == "0.050*"
    low, high = table.low.loc["conala_nl2python", "python"], table.high.loc["conala_nl2python", "python"]
    assert texts[(0.5, row + 0.7)] == f"[{low:.3f}, {high:.3f}]"


# -- where the records come from: MLflow first, run directories as fallback ----------------------------------


def test_heatmap_numbers_from_a_synthetic_mlflow_store_are_exact(tmp_path, mlflow):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    records = synthetic_records(
        tasks=("none", "conala_nl2python", "all"),
        seeds=(0, 1, 2),
        eval_languages=SYNTHETIC_LANGUAGES,
        effect=effect_by_task,
    )
    logged = log_sweep(uri, records, tmp_path / "sweep", name="exact")
    for path in (tmp_path / "sweep" / "trials").glob("*/metrics.json"):
        path.unlink()  # only MLflow can supply the numbers now
    found, origin = load_records(tmp_path / "sweep")
    assert origin == f"MLflow {uri} (parent run {logged.parent_run_id})"
    table = transfer_table(to_frame(found), "python", "pass_at_1")
    for language in SYNTHETIC_LANGUAGES:
        true_mean = effect_by_task("conala_nl2python", "python", language)
        assert table.mean.loc["conala_nl2python", language] == pytest.approx(true_mean, abs=1e-12)
        assert (
            table.low.loc["conala_nl2python", language]
            <= true_mean
            <= table.high.loc["conala_nl2python", language]
        )


def test_heatmap_falls_back_to_run_directories_when_the_server_is_unreachable(tmp_path, mlflow):
    records = synthetic_records(tasks=("none", "all"), seeds=(0, 1, 2), eval_languages=SYNTHETIC_LANGUAGES)
    for record in records:
        trial_dir = tmp_path / "trials" / record["trial_key"]
        trial_dir.mkdir(parents=True)
        (trial_dir / "metrics.json").write_text(json.dumps(record))
    with pytest.warns(UserWarning, match="MLflow not used .*unreachable"):
        found, origin = load_records(
            tmp_path, tracking_uri=f"http://127.0.0.1:{free_port()}", parent_run_id="x"
        )
    assert origin == f"run directories {tmp_path / 'trials'}"
    assert sorted(r["trial_key"] for r in found) == sorted(r["trial_key"] for r in records)


def test_reading_results_never_creates_an_empty_sqlite_store(tmp_path, mlflow):
    (tmp_path / "trials").mkdir()
    with pytest.warns(UserWarning, match="no MLflow store"):
        found, _ = load_records(tmp_path, tracking_uri=f"sqlite:///{tmp_path}/absent.db", parent_run_id="x")
    assert found == [] and not (tmp_path / "absent.db").exists()


def test_trials_missing_from_mlflow_are_taken_from_their_directories(tmp_path, mlflow):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    records = synthetic_records(tasks=("none", "all"), seeds=(0, 1), eval_languages=("python",))
    logged = log_sweep(uri, records[:-1], tmp_path / "sweep", name="partial")
    late = records[-1]  # its MLflow calls are still queued in the trial's outbox
    (tmp_path / "sweep" / "trials" / late["trial_key"]).mkdir()
    (tmp_path / "sweep" / "trials" / late["trial_key"] / "metrics.json").write_text(json.dumps(late))
    with pytest.warns(UserWarning, match="1 trial"):
        found, origin = load_records(tmp_path / "sweep", uri, logged.parent_run_id)
    assert origin.endswith("+ 1 trial(s) from run directories")
    assert sorted(r["trial_key"] for r in found) == sorted(r["trial_key"] for r in records)


def test_cli_heatmap_finds_the_parent_run_by_sweep_tags_and_writes_every_format(tmp_path, mlflow, capsys):
    from itt_sweep.cli import main

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    records = synthetic_records(tasks=("none", "all"), seeds=(0, 1, 2), eval_languages=("python", "java"))
    log_sweep(uri, records[:1], tmp_path / "other", name="cli-other")  # another sweep in the same store
    log_sweep(uri, records, tmp_path / "sweep", name="cli")
    assert main(["heatmap", str(tmp_path / "sweep"), "--from", "mlflow", "--bootstrap", "500"]) == 0
    printed = capsys.readouterr()
    assert "6 trial record(s) from MLflow" in printed.err
    written = {Path(line).name for line in printed.out.split()}
    assert {
        "heatmap_python_pass_at_1.png",
        "transfer_python_ref_nll.tex",
        "transfer_python_ref_nll.md",
    } <= written
    assert main(["heatmap", str(tmp_path / "other"), "--from", "dirs", "--out", str(tmp_path / "o")]) == 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow  # validating the sweep file for its hash imports the model stack
def test_parent_run_with_the_sweep_files_config_hash_wins_over_a_newer_namesake(tmp_path, mlflow):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    first = synthetic_records(tasks=("none", "all"), seeds=(0, 1), eval_languages=("python",))
    changed = synthetic_records(tasks=("none", "all"), seeds=(0, 1, 2), eval_languages=("python",))
    old = log_sweep(uri, first, tmp_path / "old", name="same-name")
    log_sweep(uri, changed, tmp_path / "new", name="same-name")  # newer parent, other config hash
    found, origin = load_records(tmp_path / "old", use_dirs=False)
    assert origin == f"MLflow {uri} (parent run {old.parent_run_id})"
    assert len(found) == len(first)
