"""The sweep's last lines and exit status: finished, failed, or stopped before every trial ran."""

from __future__ import annotations

from pathlib import Path

from itt_sweep.cli import report
from itt_sweep.sweep.driver import SweepOutcome


def outcome(trials: int, errors: int, planned: int, finished: int) -> SweepOutcome:
    out = Path("/s/runs/x/heatmaps")
    return SweepOutcome(out, [out / "heatmap_python_ref_nll.png"], trials, errors, n_planned=planned,
                        n_finished=finished, sweep_dir=Path("/s/runs/x"))


def test_a_finished_sweep_exits_0(capsys):
    assert report(outcome(18, 0, 18, 18)) == 0
    assert "18 trial(s), 0 failed. Transfer heatmaps:" in capsys.readouterr().out


def test_a_failed_trial_exits_1(capsys):
    assert report(outcome(18, 1, 18, 17)) == 1
    assert "18 trial(s), 1 failed." in capsys.readouterr().out


def test_a_stopped_sweep_says_how_far_it_got_and_how_to_go_on(capsys):
    # 10 finished, one interrupted while running, 7 never started: not "11 trial(s), 0 failed" and exit 0
    assert report(outcome(11, 0, 18, 10)) == 130
    printed = capsys.readouterr().out
    assert "stopped: 10 of 18 trial(s) finished, none failed; `itt-sweep resume /s/runs/x` continues it." in printed
    assert "/s/runs/x/heatmaps/heatmap_python_ref_nll.png" in printed
