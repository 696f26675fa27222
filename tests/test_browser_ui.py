"""The MLflow UI in a real browser: what a person opening the sweep's experiment would see.

The server is started by `tracking/server.sh` (what `make tracking-up` runs) on a sqlite store in tmp_path, a
small sweep is logged to it through our tracking module, its heatmaps are built by our analysis code from
the server and logged to the parent run as `finish_sweep` does, and headless Chromium (Debian `chromium`)
renders the pages. The UI is a JavaScript app, so the test reads the DOM after scripts ran (`--dump-dom`
with a virtual time budget) and saves screenshots of both pages under tmp_path.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_tracking_server import free_port, require, server, server_env

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1600,1000",
]


def chromium(url: str, profile: Path, output: list[str], budget_ms: int) -> str:
    """Run Chromium once on `url` with a new empty profile; returns stdout (the DOM with --dump-dom)."""
    shutil.rmtree(profile, ignore_errors=True)
    done = subprocess.run(
        [
            shutil.which("chromium"),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget_ms}",
            *output,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def page_text(dom: str) -> str:
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))


def rendered(url: str, profile: Path, expected: list[str]) -> str:
    """The DOM once every expected string shows (the app fetches data after load: retry with more time)."""
    for budget_ms in (20_000, 60_000):
        dom = chromium(url, profile, ["--dump-dom"], budget_ms)
        if all(text in dom for text in expected):
            break
    return dom


@pytest.fixture
def ui_server(tmp_path):
    require(shutil.which("chromium") is not None, "Chromium (Debian package chromium)")
    port = free_port()
    env = server_env(tmp_path, port, f"sqlite:///{tmp_path}/mlflow.db")
    env["MLFLOW_BIN"] = str(Path(sys.executable).parent / "mlflow")
    started = server("start", env)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield f"http://127.0.0.1:{port}"
    finally:
        server("stop", env, timeout=60)


@pytest.mark.slow
def test_experiment_page_shows_parent_every_child_and_the_heatmap_artifact(ui_server, tmp_path):
    from itt_sweep.analysis import load_records, to_frame, write_outputs
    from itt_sweep.analysis.synthetic import log_sweep, synthetic_records
    from itt_sweep.tracking.mlflow_runs import client_for

    records = synthetic_records(tasks=("none", "conala_nl2python", "all"), seeds=(0, 1, 2))
    logged = log_sweep(ui_server, records, tmp_path / "sweep", name="ui-sweep", history_steps=20)
    found, origin = load_records(tmp_path / "sweep")
    assert origin.startswith(f"MLflow {ui_server}")
    client = client_for(ui_server)
    for path in write_outputs(to_frame(found), tmp_path / "heatmaps"):
        client.log_artifact(logged.parent_run_id, str(path), artifact_path="heatmaps")
    client.set_terminated(logged.parent_run_id)
    experiment = f"{ui_server}/#/experiments/{logged.experiment_id}"

    # Sorted by name, the table lists children flat instead of folded under their parent.
    runs_url = f"{experiment}/runs?orderByKey=attributes.run_name&orderByAsc=true"
    trial_keys = [record["trial_key"] for record in records]
    text = page_text(rendered(runs_url, tmp_path / "profile", ["ui-sweep", *trial_keys]))
    assert "ui-sweep" in text
    assert [key for key in trial_keys if key not in text] == []
    assert f"{len(records) + 1} matching runs" in text
    chromium(runs_url, tmp_path / "profile", [f"--screenshot={tmp_path / 'runs.png'}"], 20_000)

    artifact = "heatmaps/heatmap_python_pass_at_1.png"
    artifact_url = f"{experiment}/runs/{logged.parent_run_id}/artifacts/{artifact}"
    shown = f'<img alt="{artifact}" src="blob:'  # the UI fetched the PNG's bytes and displays them
    dom = rendered(artifact_url, tmp_path / "profile", [shown])
    assert shown in dom
    assert all(f"transfer_python_{metric}.md" in page_text(dom) for metric in ("pass_at_1", "ref_nll"))
    chromium(artifact_url, tmp_path / "profile", [f"--screenshot={tmp_path / 'heatmap.png'}"], 20_000)
    for screenshot in ("runs.png", "heatmap.png"):
        assert (tmp_path / screenshot).read_bytes().startswith(b"\x89PNG")
        assert (tmp_path / screenshot).stat().st_size > 50_000
    if os.environ.get("ITT_KEEP_SCREENSHOTS"):
        for screenshot in ("runs.png", "heatmap.png"):
            shutil.copy(tmp_path / screenshot, Path(os.environ["ITT_KEEP_SCREENSHOTS"]) / screenshot)
