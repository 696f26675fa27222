"""The sweep's live view, driven by the Tune events a sweep produces, on a terminal and without one."""

from __future__ import annotations

import io
import math
from types import SimpleNamespace

from rich.console import Console

from itt_sweep.sweep import progress
from itt_sweep.sweep.progress import SweepView


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def trial(key: str, task: str) -> SimpleNamespace:
    return SimpleNamespace(trial_id=key, config={"trial_key": key, "cell": [task, "python", 0]}, last_result={},
                           error_file=None)


def plain_view(total: int = 3, every_s: float = 30.0) -> tuple[SweepView, io.StringIO]:
    out = io.StringIO()
    return SweepView(total=total, concurrency=1, every_s=every_s, console=Console(file=out, width=400)), out


def test_without_a_terminal_one_plain_line_per_change_at_most_every_n_seconds(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    view, out = plain_view(every_s=30)
    a = trial("conala__python__s0", "conala_nl2python")
    view.on_trial_start(0, [], a)
    for step in range(1, 5):  # four results within a few seconds: one line, not four
        clock.now += 1
        view.on_trial_result(0, [], a, {"stage": "intermediate", "intermediate_step": step,
                                        "intermediate_steps": 8, "intermediate_tokens_per_s": 150.0})
    clock.now += 31
    view.on_trial_result(0, [], a, {"stage": "intermediate", "intermediate_step": 6, "intermediate_steps": 8,
                                    "intermediate_val_loss": 1.25, "intermediate_tokens_per_s": 151.0})
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("itt-sweep: 0/3 done, 1 running, 2 pending, 0 errored; ETA after the first stage")
    assert "conala__python__s0 intermediate step 6/8 val 1.2500 tok/s 151 0m35s" in lines[1]


def test_eta_uses_stage_times_measured_here_and_counts_cache_hits_apart(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    view, out = plain_view(total=3)
    first, second = trial("a__python__s0", "conala_nl2python"), trial("b__python__s1", "conala_nl2python")
    view.on_trial_start(0, [], first)
    for stage, seconds in (("intermediate", 100), ("target", 200), ("eval", 300)):
        view.on_trial_result(0, [], first, {"stage": stage})
        clock.now += seconds
    first.last_result = {"eval/python/pass_at_1": 0.25, "eval/java/pass_at_1": 0.0, "eval/python/ref_nll": 1.5}
    view.on_trial_complete(0, [], first)
    assert "trial a__python__s0 done in 10m00s; pass@1 mean 0.125 over 2 languages; ref_nll mean 1.500" \
        in out.getvalue()
    view.on_trial_start(0, [], second)
    view.on_trial_result(0, [], second, {"stage": "intermediate", "cached": True})
    view.on_trial_result(0, [], second, {"stage": "target"})
    clock.now += 50
    # second: 150 s left of target + 300 s eval; the unseen third trial: 100 + 200 + 300
    assert math.isclose(view.eta_s(), 150 + 300 + 600)
    assert view.cache_hits == 1 and view.stage_times["intermediate"] == [100]


def test_stage_three_shows_its_language_and_samples_generated(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    view, out = plain_view(total=1, every_s=0)
    a = trial("none__python__s0", "none")
    view.on_trial_start(0, [], a)
    view.on_trial_result(0, [], a, {"stage": "target", "target_step": 8, "target_steps": 8,
                                    "target_val_loss": 0.5})
    clock.now += 5
    view.on_trial_result(0, [], a, {"stage": "eval", "eval_language": "java", "eval_step": 14, "eval_steps": 40})
    assert "none__python__s0 eval java step 14/40 val - tok/s -" in out.getvalue().splitlines()[-1]
    view.on_trial_result(0, [], a, {"stage": "eval", "eval_language": "ruby", "eval_step": 25, "eval_steps": 40})
    assert "eval ruby step 25/40" in out.getvalue().splitlines()[-1]


def test_eval_progress_reports_to_tune_at_most_every_n_seconds_and_always_at_the_end(monkeypatch):
    from ray import tune

    from itt_sweep.sweep.trial import EvalProgress

    sent: list[dict] = []
    clock = Clock()
    monkeypatch.setattr(tune, "report", sent.append)
    monkeypatch.setattr("itt_sweep.sweep.trial.time.monotonic", clock)
    report = EvalProgress({"python": 3, "java": 2}, samples=2, every_s=10)
    for language, rows in (("python", 2), ("python", 2), ("python", 2), ("java", 2)):
        clock.now += 1
        report(language, rows)
    assert [r["eval_step"] for r in sent] == [2]  # the first at once, the next three within 10 s
    clock.now += 10
    report("java", 1)
    report("java", 1)  # the last sample: reported however soon
    assert [(r["eval_language"], r["eval_step"], r["eval_steps"]) for r in sent] == \
        [("python", 2, 10), ("java", 9, 10), ("java", 10, 10)]


def test_on_a_terminal_the_view_is_redrawn_in_place_and_ends_with_the_experiment():
    out = io.StringIO()
    view = SweepView(total=1, concurrency=1, console=Console(file=out, force_terminal=True, width=200))
    a = trial("none__python__s0", "none")
    view.on_trial_start(0, [], a)
    view.on_trial_result(0, [], a, {"stage": "target", "target_step": 2, "target_steps": 8})
    assert view._live is not None
    view.on_trial_complete(0, [], a)
    view.on_experiment_end([])
    text = out.getvalue()
    assert view._live is None and "none__python__s0" in text and "trial none__python__s0 done" in text
    assert "\x1b[" in text  # cursor movement: redrawn, not appended


def test_time_table_sums_phases_over_trials_and_keeps_cache_hits_and_overlap_apart(tmp_path):
    import json

    from itt_sweep.sweep.status import time_table
    from itt_sweep.sweep.trial import stage_phases

    loop = {"engine_init_s": 10.0, "data_s": 1.0, "steps_s": 60.0, "validation_s": 4.0, "checkpoint_s": 3.0,
            "export_s": 2.0, "tokens_per_s": 900.0}
    trained = stage_phases(100.0, True, loop)
    assert trained["workers_and_handover_s"] == 20.0 and trained["tokens_per_s"] == 900.0
    for key, first in (("a", trained), ("b", stage_phases(0.5, False, {}))):
        phases = {"intermediate": first, "target": trained, "tracking_s": 1.0, "trial_s": 400.0,
                  "eval": {"wall_s": 150.0, "load_s": 10.0, "generate_s": 100.0, "ref_nll_s": 20.0,
                           "execute_s": 70.0, "references_s": 5.0}}
        (tmp_path / "trials" / key).mkdir(parents=True)
        (tmp_path / "trials" / key / "metrics.json").write_text(json.dumps({"phases": phases}))
    totals, trial_s, overlapped = time_table(tmp_path)
    assert trial_s == 800.0
    assert totals["stage 1-2: training steps"] == 3 * 60.0 and totals["stage 1-2: stage-cache hits"] == 0.5
    assert totals["stage 3: generation"] == 200.0 and totals["stage 3: rest (waiting on execution, saving)"] == 40.0
    assert overlapped["stage 3: execution (beside generation)"] == 140.0


def test_a_resumed_sweep_counts_the_trials_it_restored_as_finished():
    view, out = plain_view(total=4)
    finished, failed, left = trial("a__python__s0", "none"), trial("b__python__s1", "none"), trial("c", "none")
    finished.status, failed.status, left.status = "TERMINATED", "ERROR", "PENDING"
    view.on_step_end(0, [finished, failed, left])
    assert view.counts() == {"done": 1, "running": 0, "errored": 1, "pending": 2}
    view.on_trial_start(1, [finished, failed, left], left)
    view.on_step_end(1, [finished, failed, left])
    assert view.counts() == {"done": 1, "running": 1, "errored": 1, "pending": 1}
    assert out.getvalue().startswith("itt-sweep: 1/4 done, 0 running, 2 pending, 1 errored")
    assert view.headline().startswith("itt-sweep: 1/4 done, 1 running, 1 pending, 1 errored")
