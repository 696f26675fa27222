"""Set-up steps say one line each and keep their output in a log (scripts/step.sh, the Makefile's set-up targets).

Real processes throughout: the wrapper runs real commands, and `make` runs the real Makefile's `data` and `models`
targets with a stand-in python, stamps and logs under tmp_path.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STEP = REPO / "scripts" / "step.sh"
OK_LINE = re.compile(r"^(\w+) \.\.\. ok \((\d+) s\)(: .*)?$")
FAILED_LINE = re.compile(r"^(\w+) \.\.\. FAILED after (\d+) s \(exit (\d+)\)$")


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if key not in {"ITT_VERBOSE", "V", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "ITT_LOG_TAIL"}}
    env["ITT_LOG_DIR"] = str(tmp_path / "logs")
    env.update(extra)
    return env


def step(tmp_path: Path, name: str, script: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(STEP), name, "--", "bash", "-c", script], cwd=tmp_path,
                          env=clean_env(tmp_path, **env), capture_output=True, text=True, timeout=30)


def test_success_prints_one_line_and_logs_everything(tmp_path):
    result = step(tmp_path, "demo", "for i in $(seq 40); do echo out $i; done; echo to-stderr >&2")
    assert result.returncode == 0
    assert result.stderr == ""
    assert len(result.stdout.splitlines()) == 1
    match = OK_LINE.match(result.stdout.rstrip("\n"))
    assert match and match[1] == "demo" and match[3] is None, result.stdout
    log = (tmp_path / "logs" / "demo.log").read_text()
    header = log.splitlines()[0]
    assert header.startswith("==== ") and "bash -c" in header and "seq\\ 40" in header
    assert "out 1\n" in log and "out 40\n" in log and "to-stderr\n" in log


def test_summary_line_and_log_appends(tmp_path):
    first = step(tmp_path, "demo", "echo working; echo 'summary: 3 of 4 ready'; echo done")
    assert first.returncode == 0
    assert OK_LINE.match(first.stdout.rstrip("\n"))[3] == ": 3 of 4 ready"
    # A later run's line says only what that run printed, and the log keeps both runs.
    second = step(tmp_path, "demo", "echo again")
    assert OK_LINE.match(second.stdout.rstrip("\n"))[3] is None
    log = (tmp_path / "logs" / "demo.log").read_text()
    assert log.count("==== ") == 2 and "working" in log and "again" in log


def test_failure_prints_tail_and_log_path_and_exits_with_status(tmp_path):
    step(tmp_path, "demo", "echo from-an-earlier-run")
    result = step(tmp_path, "demo", "for i in $(seq 50); do echo line $i; done; echo 'E: no such package' >&2; exit 7")
    assert result.returncode == 7
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    match = FAILED_LINE.match(lines[0])
    assert match and match[1] == "demo" and match[3] == "7", lines[0]
    assert lines[-1] == f"full log: {tmp_path / 'logs' / 'demo.log'}"
    tail = lines[1:-1]
    assert len(tail) == 30
    assert tail[-1].endswith("E: no such package") and tail[-2].endswith("line 50") and tail[0].endswith("line 22")
    assert "from-an-earlier-run" not in result.stderr


def test_failure_tail_is_only_this_run(tmp_path):
    step(tmp_path, "demo", "echo from-an-earlier-run")
    result = step(tmp_path, "demo", "echo short; exit 1")
    assert result.returncode == 1
    assert "short" in result.stderr and "from-an-earlier-run" not in result.stderr


def test_verbose_streams_the_output(tmp_path):
    result = step(tmp_path, "demo", "echo streamed-out; echo streamed-err >&2", ITT_VERBOSE="1")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[:2] == ["streamed-out", "streamed-err"]
    assert len(lines) == 3 and OK_LINE.match(lines[2])
    log = (tmp_path / "logs" / "demo.log").read_text()
    assert "streamed-out" in log and "streamed-err" in log

    failed = step(tmp_path, "demo", "echo shown-once; exit 4", ITT_VERBOSE="1")
    assert failed.returncode == 4
    assert failed.stdout.splitlines() == ["shown-once"]
    assert FAILED_LINE.match(failed.stderr.splitlines()[0])
    assert "shown-once" not in failed.stderr and "full log: " in failed.stderr


def test_usage_error(tmp_path):
    result = subprocess.run(["bash", str(STEP), "demo", "echo", "hi"], env=clean_env(tmp_path),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "usage:" in result.stderr


# The real Makefile's `data` and `models` targets, with a stand-in python that prints its arguments, makes the
# directory its last argument names (as the real commands do), and fails when they contain $FAIL_ON.
# `-o .install.stamp` keeps make from installing the venv.
FAKE_PYTHON = """#!/usr/bin/env bash
echo "fake python $*"
echo "a warning on stderr" >&2
if [[ -n ${FAIL_ON:-} && "$*" == *"$FAIL_ON"* ]]; then echo "boom: cannot fetch" >&2; exit 3; fi
mkdir -p "${@: -1}"
"""


def run_make(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    python = bin_dir / "python"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    variables = [f"BIN={bin_dir}", f"ITT_DATA_DIR={tmp_path / 'data'}", "ITT_DATA_MIRROR=",
                 f"SMOLLM2_DIR={tmp_path / 'models' / 'm'}", f"ITT_LOG_DIR={tmp_path / 'logs'}"]
    return subprocess.run(["make", "--no-print-directory", "-o", ".install.stamp", *variables, *args],
                          cwd=REPO, env=clean_env(tmp_path, **env), capture_output=True, text=True, timeout=60)


def test_make_prints_one_line_per_step(tmp_path):
    result = run_make(tmp_path, "data", "models")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [OK_LINE.match(line)[1] for line in lines] == ["data", "models"], lines
    assert result.stderr == ""
    assert (tmp_path / "data" / ".complete").is_file() and (tmp_path / "models" / "m" / ".complete").is_file()
    data_log = (tmp_path / "logs" / "data.log").read_text()
    assert f"fake python -m itt_sweep.data.fetch --dest {tmp_path / 'data'}" in data_log
    assert "a warning on stderr" in data_log
    assert "scripts/link_smollm2.py" in (tmp_path / "logs" / "models.log").read_text()

    # Stamps in place: no step runs again, and none says anything.
    again = run_make(tmp_path, "data", "models")
    assert again.returncode == 0
    assert " ... " not in again.stdout + again.stderr


def test_make_stops_at_a_failing_step(tmp_path):
    result = run_make(tmp_path, "data", "models", FAIL_ON="itt_sweep.data.fetch")
    assert result.returncode != 0
    assert result.stdout == ""
    errors = result.stderr.splitlines()
    assert FAILED_LINE.match(errors[0]) and FAILED_LINE.match(errors[0])[3] == "3", errors
    assert any(line.endswith("boom: cannot fetch") for line in errors)
    assert f"full log: {tmp_path / 'logs' / 'data.log'}" in errors
    assert not (tmp_path / "data" / ".complete").exists()
    assert not (tmp_path / "logs" / "models.log").exists()  # make stopped before `models`


def test_make_verbose_shows_commands_and_output(tmp_path):
    result = run_make(tmp_path, "models", "V=1")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "bash scripts/step.sh models -- " in out  # make echoes the command
    assert "fake python scripts/link_smollm2.py" in out and "a warning on stderr" in out
    assert OK_LINE.match(out.splitlines()[-2])  # then `touch ...`
    assert out.splitlines()[-1].startswith("touch ")


def test_install_without_the_disk_it_needs_says_so_before_pip_runs(tmp_path):
    venv = tmp_path / "venv"
    result = subprocess.run(["bash", str(REPO / "scripts" / "install_venv.sh")], cwd=REPO, capture_output=True,
                            text=True, timeout=30,
                            env=clean_env(tmp_path, VENV=str(venv), TORCH="torch==2.13.0", SMOLLM2="x==1",
                                          ITT_INSTALL_NEED_MB=str(10**12)))
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {venv} needs about {10**12} MB of free disk, ")
    assert not venv.exists()  # nothing half-installed
