"""A trial's output goes to its log files, its failures are told with their log, and both undo cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from itt_sweep.sweep.progress import SweepView, failure_report
from itt_sweep.sweep.trial_logs import log_tail

SCRIPT = """
import os, subprocess, sys
from pathlib import Path
from itt_sweep.sweep.trial_logs import output_to
with output_to(Path(sys.argv[1])) as where:
    print("from python", flush=True)
    os.write(2, b"from a raw fd\\n")
    subprocess.run([sys.executable, "-c", "print('from a child')"], check=True)
print("after the block", where is None)
"""


def run_script(log: Path, **env: str) -> subprocess.CompletedProcess:
    """In a process of its own, as in a Ray worker: file descriptors 1 and 2 are the process's own."""
    return subprocess.run([sys.executable, "-c", SCRIPT, str(log)], capture_output=True, text=True, check=True,
                          env={**os.environ, **env})


def test_output_of_python_c_code_and_children_lands_in_the_log_and_the_console_comes_back(tmp_path):
    log = tmp_path / "logs" / "t" / "trial.log"
    proc = run_script(log, ITT_VERBOSE="0")
    text = log.read_text()
    assert all(line in text for line in ("from python", "from a raw fd", "from a child"))
    assert "after the block" not in text
    assert proc.stdout == "after the block False\n" and proc.stderr == ""


def test_verbose_mode_leaves_the_output_on_the_console(tmp_path):
    log = tmp_path / "trial.log"
    proc = run_script(log, ITT_VERBOSE="1")
    assert not log.exists() and "from python" in proc.stdout and "from a raw fd" in proc.stderr
    assert "after the block True" in proc.stdout


def test_a_failed_trial_is_reported_with_key_stage_error_tail_and_log_path(tmp_path):
    error = tmp_path / "error.txt"
    error.write_text("Traceback (most recent call last):\n" + "".join(f"  frame {i}\n" for i in range(30))
                     + "RuntimeError: stage 2 exploded\n")
    printed = []
    table = SweepView(total=1, concurrency=1, sweep_dir=tmp_path / "runs" / "s",
                      console=SimpleNamespace(print=lambda text, **_: printed.append(text), is_terminal=False))
    trial = SimpleNamespace(trial_id="abc", config={"trial_key": "none__python__s0__n0", "cell": ["none"]},
                            error_file=str(error))
    table.on_trial_result(0, [], trial, {"stage": "target", "target_step": 3})
    table.on_trial_error(0, [], trial)
    report = next(text for text in printed if "FAILED" in text)
    assert report.startswith("trial none__python__s0__n0 FAILED in stage target")
    assert "RuntimeError: stage 2 exploded" in report and "frame 0" not in report
    assert str(tmp_path / "runs" / "s" / "logs" / "none__python__s0__n0" / "trial.log") in report
    assert failure_report("k", "eval", "", Path("x.log")).count("no error text") == 1


def test_log_tail_reads_the_end_of_a_large_log(tmp_path):
    log = tmp_path / "big.log"
    log.write_text("".join(f"line {i}\n" for i in range(100_000)))
    assert log_tail(log, 2) == "line 99998\nline 99999" and log_tail(tmp_path / "missing.log") == ""



def test_tunes_own_report_of_a_failed_trial_goes_to_the_driver_log_only(tmp_path):
    """The view reports a failed trial; Tune's ERROR records of it (a whole Ray traceback) stay in driver.log,
    while Ray's other warnings and errors still reach the console."""
    import logging

    from itt_sweep.sweep.trial_logs import QUIET_LOGGERS, _drop_info_of, quiet_driver

    def record(level: int, message: str) -> logging.LogRecord:
        return logging.LogRecord("ray.tune.execution.tune_controller", level, __file__, 1, message, None, None)

    console = _drop_info_of(QUIET_LOGGERS)
    assert not console.filter(record(logging.ERROR, "Trial task failed for trial run_trial_1234\nTraceback"))
    assert not console.filter(record(logging.ERROR, "Trials did not complete: [run_trial_1234]"))
    assert not console.filter(record(logging.INFO, "Wrote the latest version of all result files"))
    assert console.filter(record(logging.ERROR, "the head node is gone"))
    path = quiet_driver(tmp_path)
    try:
        logging.getLogger("ray.tune.execution.tune_controller").error("Trial task failed for trial run_trial_1234")
        assert "Trial task failed for trial run_trial_1234" in path.read_text()
    finally:
        for owner in (logging.getLogger(), logging.getLogger("ray")):
            for handler in [h for h in owner.handlers if getattr(h, "baseFilename", None) == str(path)]:
                owner.removeHandler(handler)
