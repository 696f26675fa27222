"""Transfer matrices and heatmaps from synthetic sweeps whose deltas are known by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from itt_sweep.analysis import (
    absolute_matrix,
    draw_heatmap,
    read_matrix_csv,
    records_from_dirs,
    records_from_mlflow,
    render_heatmap,
    to_frame,
    transfer_matrix,
    write_outputs,
)

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


def test_write_outputs_writes_png_and_csv_per_source_and_metric(records, tmp_path):
    frame = to_frame(records)
    paths = write_outputs(frame, tmp_path / "out")
    names = {path.name for path in paths}
    for metric in ("pass_at_1", "compile_rate", "ref_nll"):
        assert {f"heatmap_python_{metric}.png", f"heatmap_python_{metric}.csv"} <= names
        assert f"absolute_python_{metric}.csv" in names
    png = (tmp_path / "out" / "heatmap_python_pass_at_1.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 10_000


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
    assert names == {f"absolute_python_{metric}.csv" for metric in ("pass_at_1", "compile_rate", "ref_nll")}
