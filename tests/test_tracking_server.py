"""The MLflow tracking server of `make tracking-up`: a real PostgreSQL backend, a sweep logged to it over
HTTP, the heatmap built from it and logged back, and a stop that ends exactly the processes it started.

Needs PostgreSQL's server binaries (`scripts/install_test_services.sh`) and the psycopg driver (pip package
`psycopg[binary]`, SQLAlchemy 2.1's default for postgresql:// URIs); without them the test is skipped
locally and fails under CI.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SERVER = REPO / "tracking" / "server.sh"


def require(condition: bool, what: str) -> None:
    """Skip on a developer machine without the service; under CI a missing service is a failure."""
    if not condition:
        message = f"{what} missing: run scripts/install_test_services.sh"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def postgres_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


def server_env(tmp_path: Path, port: int, backend: str) -> dict[str, str]:
    return {
        **os.environ,
        "MLFLOW_PORT": str(port),
        "MLFLOW_BACKEND_URI": backend,
        "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts"),
        "MLFLOW_STATE_DIR": str(tmp_path / "state"),
        "MLFLOW_BIN": str(Path(sys.executable).parent / "mlflow"),
        "MLFLOW_START_TIMEOUT": "240",
    }


def server(action: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SERVER), action], env=env, capture_output=True, text=True, timeout=timeout
    )


def answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url + "/health", timeout=2).read()
        return True
    except OSError:
        return False


def group_members(pgid: int) -> list[int]:
    members = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(Path(stat).parent.name))
    return members


@pytest.fixture
def postgres() -> Iterator[tuple[str, Path]]:
    """A throw-away PostgreSQL cluster on a loopback port, as an unprivileged user (it refuses root).

    Its data dir is a fresh temp dir rather than tmp_path: pytest's base dir is private to root, and the
    `nobody` user that runs the cluster when the tests run as root could not enter it.
    """
    bindir = postgres_bin()
    require(bindir is not None, "PostgreSQL server binaries (Debian package postgresql)")
    require(importlib.util.find_spec("psycopg") is not None, "the psycopg driver (pip: psycopg[binary])")
    root = Path(tempfile.mkdtemp(prefix="itt-pg-"))
    user = {"user": "nobody", "group": "nogroup", "extra_groups": []} if os.geteuid() == 0 else {}
    if user:
        shutil.chown(root, "nobody", "nogroup")
    port, data = free_port(), root / "data"
    as_owner = {"check": True, "capture_output": True, "text": True, "timeout": 120, "cwd": root, **user}
    subprocess.run(
        [bindir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
        **as_owner,
    )
    options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='' -c fsync=off"
    subprocess.run(
        [bindir / "pg_ctl", "-D", data, "-l", root / "log", "-o", options, "-w", "-t", "60", "start"],
        **as_owner,
    )
    try:
        psql(bindir, port, "CREATE DATABASE mlflow")
        yield f"postgresql://postgres@127.0.0.1:{port}/mlflow", bindir
    finally:
        subprocess.run(
            [bindir / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop"], **{**as_owner, "check": False}
        )
        shutil.rmtree(root, ignore_errors=True)


def psql(bindir: Path, port: int, sql: str, database: str = "postgres") -> str:
    done = subprocess.run(
        [bindir / "psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", database, "-Atc", sql],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout.strip()


@pytest.fixture
def stop_server_afterwards():
    """Whatever happens in the test, the server it started is stopped (by its pid file) at the end."""
    started: list[dict[str, str]] = []
    yield started.append
    for env in started:
        server("stop", env, timeout=60)


@pytest.mark.slow
def test_server_on_postgres_serves_a_sweep_and_its_heatmap_then_stops_every_process(
    postgres, tmp_path, stop_server_afterwards
):
    from itt_sweep.analysis import load_records, to_frame, transfer_table, write_outputs
    from itt_sweep.analysis.synthetic import log_sweep, synthetic_records
    from itt_sweep.tracking.mlflow_runs import client_for

    backend, bindir = postgres
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = server_env(tmp_path, port, backend)
    stop_server_afterwards(env)
    started = server("start", env)
    assert started.returncode == 0, started.stdout + started.stderr
    pid = int((tmp_path / "state" / "server.pid").read_text())
    assert os.getpgid(pid) == pid  # its own process group: `stop` reaches its workers through this PID
    assert answers(url)
    assert "already running" in server("start", env).stdout

    records = synthetic_records(tasks=("none", "conala_nl2python", "all"), seeds=(0, 1, 2))
    logged = log_sweep(url, records, tmp_path / "sweep", name="pg", history_steps=50)
    for path in (tmp_path / "sweep" / "trials").glob("*/metrics.json"):
        path.unlink()  # the heatmap must come from the server
    found, origin = load_records(tmp_path / "sweep")
    assert origin == f"MLflow {url} (parent run {logged.parent_run_id})"
    table = transfer_table(to_frame(found), "python", "pass_at_1")
    assert table.mean.loc["all", "javascript"] == pytest.approx(0.04 + 0.002 * (len("javascript") % 3 - 1))
    client = client_for(url)
    for path in write_outputs(to_frame(found), tmp_path / "heatmaps"):  # as `finish_sweep` logs them
        client.log_artifact(logged.parent_run_id, str(path), artifact_path="heatmaps")
    listed = {a.path for a in client.list_artifacts(logged.parent_run_id, "heatmaps")}
    assert "heatmaps/heatmap_python_ref_nll.png" in listed
    assert list((tmp_path / "artifacts").rglob("heatmap_python_ref_nll.png"))  # the local artifact root

    db_port = int(backend.rsplit(":", 1)[1].split("/")[0])
    assert psql(bindir, db_port, "SELECT count(*) FROM runs", "mlflow") == str(len(records) + 1)
    history = "SELECT count(*) FROM metrics WHERE key = 'target/train_loss'"
    assert psql(bindir, db_port, history, "mlflow") == str(len(records) * 50)

    members = group_members(pid)
    assert len(members) >= 2  # mlflow and its uvicorn worker
    stopped = server("stop", env, timeout=60)
    assert stopped.returncode == 0 and f"stopped (pid {pid})" in stopped.stdout
    assert not (tmp_path / "state" / "server.pid").exists()
    assert group_members(pid) == [] and not answers(url)


def test_stop_leaves_alone_a_process_that_is_not_our_server(tmp_path):
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        (tmp_path / "state").mkdir()
        (tmp_path / "state" / "server.pid").write_text(str(bystander.pid))
        stopped = server("stop", server_env(tmp_path, free_port(), "sqlite:///x.db"), timeout=30)
        assert stopped.returncode == 0 and "no MLflow server running" in stopped.stdout
        time.sleep(0.2)
        assert bystander.poll() is None
    finally:
        bystander.send_signal(signal.SIGTERM)
        bystander.wait(timeout=10)


def test_start_reports_a_server_that_dies_and_leaves_no_pid_file(tmp_path):
    env = {**server_env(tmp_path, free_port(), "sqlite:///x.db"), "MLFLOW_BIN": "/bin/false"}
    started = server("start", env, timeout=60)
    assert started.returncode == 1
    assert "exited during start-up" in started.stderr
    assert not (tmp_path / "state" / "server.pid").exists()
