"""A multi-node Ray cluster on this machine: a head with no CPUs and worker nodes the autoscaler starts on
demand (Ray's `fake_multinode` provider). Started with `ray start --head --block` as our own child, so every
process of the cluster is a descendant we can stop by PID (never `ray stop`, which kills by name)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import yaml

from tests.procs import cmdline, descendants, kill_tree


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_config(port: int, worker_types: dict) -> dict:
    return {
        "cluster_name": "itt-fake",
        "max_workers": 8,
        "upscaling_speed": 10.0,
        "idle_timeout_minutes": 10,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": f"127.0.0.1:{port}"},
        "auth": {"ssh_user": "ray"},
        "available_node_types": {"ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
                                 **worker_types},
        "head_node_type": "ray.head.default",
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }


@contextmanager
def fake_cluster(tmp_path: Path, worker_types: dict, dashboard: bool = False):
    """Yields (address, env, head process); the env is what a driver needs to join the cluster. With
    `dashboard`, the head also serves Ray's dashboard (the Jobs API) on loopback, and the address is its URL."""
    port = free_port()
    config = tmp_path / "fake_cluster.yaml"
    config.write_text(yaml.safe_dump(cluster_config(port, worker_types)))
    env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_AUTH_MODE": "disabled",
           # a job's entrypoint (`python ...`) runs on the head: this venv's python, as the cluster image's
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    log = (tmp_path / "ray_head.log").open("wb")
    ray_tmp = tempfile.mkdtemp(prefix="itt-ray-")  # short: Ray's socket paths must fit in 107 bytes
    ray_cli = str(Path(sys.executable).with_name("ray"))
    dashboard_port = free_port()
    dashboard_args = [f"--include-dashboard={str(dashboard).lower()}"]
    if dashboard:
        dashboard_args += ["--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}"]
    head = subprocess.Popen([ray_cli, "start", "--head", "--block", f"--port={port}", "--num-cpus=0",
                             *dashboard_args, f"--autoscaling-config={config}", f"--temp-dir={ray_tmp}"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    address = f"127.0.0.1:{port}"
    try:
        _wait_for_gcs(port, head, tmp_path)
        if dashboard:
            address = f"http://127.0.0.1:{dashboard_port}"
            _wait_for_port(dashboard_port, head, tmp_path)
        yield address, {**env, "RAY_ADDRESS": address}, head
    finally:
        kill_tree(head.pid)
        head.wait()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _wait_for_port(port: int, head: subprocess.Popen, tmp_path: Path, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert head.poll() is None, (tmp_path / "ray_head.log").read_text()[-3000:]
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def _wait_for_gcs(port: int, head: subprocess.Popen, tmp_path: Path) -> None:
    _wait_for_port(port, head, tmp_path)
    time.sleep(2)  # the GCS listens a moment before it serves


def worker_raylets(head: subprocess.Popen) -> list[int]:
    """Raylet PIDs of the worker nodes: those the autoscaler's monitor process started (the head's own raylet
    is a child of `ray start`)."""
    monitors = [p for p in descendants(head.pid) if "autoscaler/_private/monitor.py" in cmdline(p)]
    return [p for m in monitors for p in descendants(m) if cmdline(p).split(" ")[0].endswith("/raylet")]
