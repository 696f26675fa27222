"""Synthetic sweeps whose transfer effects are known exactly: for tests, the tracking benchmark and UI demos.

A real trial takes minutes; these take milliseconds and have the exact shape of real ones. `synthetic_records`
builds trial records in which, for every cell, the per-seed deltas against `none` are `effect + offset_s`
with offsets symmetric around 0, so the mean over seeds is exactly `effect` and lies inside any sensible
interval. A per-seed shift shared by the trial and its baseline checks that deltas are paired by seed.
`log_sweep` then writes them where a real sweep would: a parent run and one child run per trial through the
project's tracking module (the same calls the driver and `TrialRun` make), a `sweep.resolved.yaml`, and
each trial's `metrics.json` in `<sweep_dir>/trials/<trial_key>/`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from itt_sweep.analysis.transfer import BASELINE_TASK

DEFAULT_TASKS = ("none", "conala_nl2python", "codexglue_java_cs_translation", "all")
Effect = Callable[[str, str, str], float]


def default_effect(task: str, source_language: str, eval_language: str) -> float:
    """A varied but fixed pattern: the mixture helps, translation hurts a little, nothing for `none`."""
    base = {"all": 0.04, "conala_nl2python": 0.015, "codexglue_java_cs_translation": -0.01}.get(task, 0.005)
    tilt = 0.01 if eval_language == source_language else 0.002 * (len(eval_language) % 3 - 1)
    return 0.0 if task == BASELINE_TASK else round(base + tilt, 6)


def synthetic_records(
    tasks: Sequence[str] = DEFAULT_TASKS,
    source_languages: Sequence[str] = ("python",),
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    eval_languages: Sequence[str] = ("python", "java", "javascript", "cpp"),
    effect: Effect = default_effect,
    spread: float = 0.02,
) -> list[dict]:
    """Trial records: per cell, pass_at_1 delta = effect + offset, compile_rate delta = half that,
    ref_nll delta = minus that; the offsets over seeds are evenly spaced in [-spread, spread] (mean 0)."""
    records = []
    for task in tasks:
        for source in source_languages:
            for index, seed in enumerate(seeds):
                offset = (
                    0.0
                    if task == BASELINE_TASK or len(seeds) < 2
                    else spread * (2 * index / (len(seeds) - 1) - 1)
                )
                deltas = {language: effect(task, source, language) + offset for language in eval_languages}
                records.append(_record(task, source, seed, 0.01 * index, deltas))
    return records


def _record(task: str, source: str, seed: int, shift: float, deltas: dict[str, float]) -> dict:
    """`shift` moves the trial and its same-seed baseline alike: pairing by seed must cancel it."""
    evals = {
        language: {
            "pass_at_1": 0.2 + shift + delta,
            "compile_rate": 0.6 + shift + delta / 2,
            "ref_nll": 1.5 - shift - delta,
        }
        for language, delta in deltas.items()
    }
    return {
        "trial_key": f"{task}__{source}__s{seed}__fixed",
        "intermediate_task": task,
        "source_language": source,
        "seed": seed,
        "val_loss": 1.0 + shift,
        "eval": evals,
    }


@dataclass(frozen=True)
class LoggedSweep:
    experiment_id: str
    parent_run_id: str
    child_run_ids: dict[str, str]  # trial key -> run id
    sweep_dir: Path


def log_sweep(
    tracking_uri: str, records: list[dict], sweep_dir: Path, name: str = "synthetic", history_steps: int = 0
) -> LoggedSweep:
    """Log `records` as a finished sweep named `name` (see the module docstring); returns the run ids.

    With `history_steps`, each trial also logs a `target/train_loss` and `target/lr` curve of that many steps.
    """
    from itt_sweep.tracking.mlflow_runs import client_for, experiment_id, find_or_create_run
    from itt_sweep.tracking.summary import NOTE_TAG, cell_params, set_runs_view, sweep_description
    from itt_sweep.tracking.trial_run import TrialRun

    sweep_dir = Path(sweep_dir)
    sweep = _sweep_config(records, name, tracking_uri)
    (sweep_dir / "trials").mkdir(parents=True, exist_ok=True)
    (sweep_dir / "sweep.resolved.yaml").write_text(
        yaml.safe_dump(sweep.model_dump(mode="json"), sort_keys=False)
    )
    client = client_for(tracking_uri)
    exp = experiment_id(client, f"itt-sweep/{name}")
    parent_tags = {"itt.sweep": name, "itt.sweep_hash": sweep.config_hash(), "itt.role": "sweep"}
    parent = find_or_create_run(
        client, exp, parent_tags, run_name=name, key_tags=("itt.sweep", "itt.sweep_hash")
    )
    client.set_tag(parent, NOTE_TAG, sweep_description(sweep, str(sweep_dir)))
    set_runs_view(client, exp, sweep.eval_languages)
    children = {}
    for record in records:
        trial_dir = sweep_dir / "trials" / record["trial_key"]
        tags = _trial_tags(record, name)
        run = TrialRun(tracking_uri, exp, parent, record["trial_key"], tags, trial_dir / ".tracking")
        run.start()
        run.log_params(cell_params(record["intermediate_task"], record["source_language"], record["seed"],
                                   record.get("hp", {})))
        if history_steps:
            run.log_stage("target", _history(history_steps), cache_key="synthetic", trained_now=True)
        run.log_eval(record["eval"], record["val_loss"])
        run.finish()
        (trial_dir / "metrics.json").write_text(json.dumps(record, indent=1))
        children[record["trial_key"]] = run.outbox.state()["run_id"]
    return LoggedSweep(exp, parent, children, sweep_dir)


def _sweep_config(records: list[dict], name: str, tracking_uri: str):
    from itt_sweep.config import parse_sweep

    def present(field: str) -> list:
        return list(dict.fromkeys(record[field] for record in records))

    languages = list(dict.fromkeys(language for record in records for language in record["eval"]))
    raw = {
        "name": name,
        "eval_languages": languages,
        "tracking": {"uri": tracking_uri},
        "matrix": {
            "intermediate_tasks": present("intermediate_task"),
            "source_languages": present("source_language"),
            "seeds": present("seed"),
        },
    }
    return parse_sweep(raw, f"<synthetic sweep {name}>")


def _trial_tags(record: dict, sweep_name: str) -> dict[str, str]:
    cell = f"{record['intermediate_task']}__{record['source_language']}__s{record['seed']}"
    return {
        "itt.intermediate_task": record["intermediate_task"],
        "itt.source_language": record["source_language"],
        "itt.seed": str(record["seed"]),
        "itt.cell": cell,
        "itt.sweep": sweep_name,
    }


def _history(steps: int) -> Iterable[dict]:
    return [
        {"step": step, "train_loss": 3.0 / step, "lr": 1e-3 * min(1.0, step / 10)}
        for step in range(1, steps + 1)
    ]
