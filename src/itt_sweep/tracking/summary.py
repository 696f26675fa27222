"""What a person comparing trials in the MLflow UI reads first: summary metrics, the cell as flat params, and
the parent run's description.

The full record stays where other code reads it (`eval/<language>/<metric>`, `hp.*`, `stages.*`, ...); these
are extra, short, self-explaining names that MLflow's runs table, compare page and parallel-coordinates chart
line up across trials:

- metrics `avg/<metric>` (mean over the eval languages, only when every language has a value, like the
  heatmaps' `avg` column) and `<language>/<metric>` for `pass_at_1` and `ref_nll`;
- params `task`, `source`, `seed` and each searched hyperparameter under a short name (`target_lr`, ...).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

AVERAGED = ("pass_at_1", "compile_rate", "ref_nll")
PER_LANGUAGE = ("pass_at_1", "ref_nll")
SHORT_FIELDS = {"learning_rate": "lr"}
NOTE_TAG = "mlflow.note.content"  # what the UI shows (and edits) as a run's description


def summary_metrics(metrics: Mapping[str, Mapping[str, float | None]]) -> dict[str, float]:
    """`avg/<metric>` over the eval languages and `<language>/<metric>` from per-language eval metrics."""
    def finite(value: float | None) -> bool:
        return value is not None and math.isfinite(value)

    out: dict[str, float] = {}
    for name in AVERAGED:
        values = [per.get(name) for per in metrics.values()]
        if values and all(finite(v) for v in values):
            out[f"avg/{name}"] = sum(float(v) for v in values) / len(values)
    for language, per in metrics.items():
        out.update({f"{language}/{name}": float(per[name]) for name in PER_LANGUAGE if finite(per.get(name))})
    return out


def short_hp_name(dotted: str) -> str:
    """`target.learning_rate` -> `target_lr`, `training.zero_stage` -> `zero_stage`."""
    section, field = dotted.split(".", 1)
    field = SHORT_FIELDS.get(field, field)
    return field if section == "training" else f"{section}_{field}"


def cell_params(intermediate_task: str, source_language: str, seed: int, hp: Mapping[str, Any]) -> dict[str, Any]:
    """The trial's cell and searched values as flat top-level params (logged next to the nested ones)."""
    return {"task": intermediate_task, "source": source_language, "seed": seed,
            **{short_hp_name(key): value for key, value in hp.items()}}


def sweep_description(sweep, sweep_dir: str | None = None) -> str:
    """Markdown for the parent run's description: what the sweep is and where its heatmaps are."""
    from itt_sweep.config import trial_count

    matrix = sweep.matrix
    trials = trial_count(sweep)
    searched = ", ".join(f"`{short_hp_name(k)}`" for k in sweep.search.space) or "none (fixed hyperparameters)"
    local = f" and locally in `{sweep_dir}/heatmaps/`" if sweep_dir else ""
    return "\n".join([
        f"**Intermediate-task transfer sweep `{sweep.name}`**: the model `{sweep.model.name}` is fine-tuned on "
        "an intermediate task, then on the source language's MBPP problems, and evaluated on MBXP in every "
        "eval language.",
        "",
        f"- intermediate tasks ({len(matrix.intermediate_tasks)}): {', '.join(matrix.intermediate_tasks)}",
        f"- source languages ({len(matrix.source_languages)}): {', '.join(matrix.source_languages)}",
        f"- seeds ({len(matrix.seeds)}): {', '.join(map(str, matrix.seeds))}",
        f"- eval languages: {', '.join(sweep.eval_languages)}",
        f"- searched: {searched}",
        f"- {trials} trial(s), one child run each, named by trial key `<task>__<source>__s<seed>__n<sample>`; "
        "compare them on `avg/pass_at_1`, `avg/compile_rate`, `avg/ref_nll` (lower is better) and "
        "`<language>/pass_at_1`, `<language>/ref_nll`; params `task`, `source`, `seed`",
        f"- transfer heatmaps (trial minus the `none` baseline of the same seed): artifacts `heatmaps/` of this "
        f"run, written when the sweep ends{local}",
        "- the resolved config: artifact `sweep.resolved.yaml`",
    ])


RUNS_VIEW_KEY = "itt-trials"
VIEW_TAG_PREFIX = "mlflow.sharedViewState."  # what the UI's "Share" button writes; `?viewStateShareKey=` reads it


def runs_view_state(eval_languages: list[str]) -> dict[str, Any]:
    """The runs table a person comparing trials wants: best `avg/pass_at_1` first (which also lists the trials
    flat instead of folded under their parent), the cell's params, the averages and each language's pass@1 as
    columns (few enough to fit a screen; the compare page shows every metric)."""
    metrics = [f"avg/{name}" for name in AVERAGED] + [f"{language}/pass_at_1" for language in eval_languages]
    return {"orderByKey": "metrics.`avg/pass_at_1`", "orderByAsc": False,
            "selectedColumns": [f"params.`{p}`" for p in ("task", "source", "seed")] +
                               [f"metrics.`{m}`" for m in metrics]}


def set_runs_view(client, experiment_id: str, eval_languages: list[str]) -> None:
    """Store that table as the experiment's shared view `itt-trials` (`ui_url.runs_url` opens it)."""
    import json

    client.set_experiment_tag(experiment_id, VIEW_TAG_PREFIX + RUNS_VIEW_KEY,
                              json.dumps(runs_view_state(list(eval_languages))))
