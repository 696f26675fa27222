"""`storage.checkpoints`: Ray Tune's experiment state and the stages' Ray Train checkpoints on object storage.

The schema accepts s3://, gs:// and local paths and names the field otherwise; the preflight writes and deletes a
probe object and fails in seconds on an unreachable endpoint; and a real sweep against an S3-protocol server on
loopback (moto) keeps its Tune state and checkpoints in the bucket, none in the sweep dir, and resumes from there.
Nothing here talks to any address but 127.0.0.1: AWS credentials are fake and the instance metadata lookup is off.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from itt_sweep.config import SweepFileError, parse_sweep, stable_hash
from itt_sweep.sweep.storage import join, probe_uri, ray_locations, tune_location
from tests.fake_cluster import free_port
from tests.procs import kill_tree

BUCKET = "itt-ckpt"
FAKE_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


def aws_env(endpoint: str) -> dict[str, str]:
    """What pyarrow (in the driver, the trials and the Ray Train workers) and boto3 both read."""
    return {**FAKE_AWS, "AWS_ENDPOINT_URL": endpoint}


def with_checkpoints(smoke_raw: dict, value) -> dict:
    return {**smoke_raw, "storage": {"path": "runs", "checkpoints": value}}


# ---- the schema ------------------------------------------------------------------------------------------

GOOD = ["s3://bucket/prefix", "s3://bucket", "gs://bucket/a/b", "file:///tmp/ckpt", "ckpt/relative", "/abs/ckpt",
        "s3://bucket/p?endpoint_override=http://127.0.0.1:9000"]
BAD = {"hdfs://nn/ckpt": "unsupported scheme hdfs://", "s3:bucket/x": "missing the '//'", "s3:///prefix": "no bucket",
       "file://host/x": "absolute path", "": "empty", "https://bucket.s3.amazonaws.com/x": "unsupported scheme"}


@pytest.mark.parametrize("uri", GOOD)
def test_checkpoint_uris_that_ray_can_store_to_validate(smoke_raw, uri):
    assert parse_sweep(with_checkpoints(smoke_raw, uri)).storage.checkpoints == uri


@pytest.mark.parametrize("uri", BAD, ids=[repr(u) for u in BAD])
def test_other_checkpoint_uris_fail_with_one_line_naming_the_field(smoke_raw, uri):
    with pytest.raises(SweepFileError) as err:
        parse_sweep(with_checkpoints(smoke_raw, uri), "bad.yaml")
    (line,) = err.value.problems
    assert line.startswith("storage.checkpoints: ") and BAD[uri] in line and "\n" not in line
    assert "s3://BUCKET/PREFIX" in line or "file:///DIR" in line


def test_an_unset_checkpoints_field_keeps_the_config_hash_of_older_sweeps(smoke_raw):
    sweep = parse_sweep(smoke_raw)
    before_the_field = sweep.model_dump(mode="json")
    before_the_field["storage"] = {"path": sweep.storage.path}
    assert sweep.config_hash() == stable_hash(before_the_field)
    assert parse_sweep(with_checkpoints(smoke_raw, "s3://b/x")).config_hash() != sweep.config_hash()


# ---- where Ray's state goes --------------------------------------------------------------------------------

def test_join_keeps_a_uri_query_at_the_end():
    assert join("s3://b", "sweep", "tune") == "s3://b/sweep/tune"
    assert join("s3://b/pre/", "sweep") == "s3://b/pre/sweep"
    assert join("s3://b/p?endpoint_override=http://127.0.0.1:9", "s", "train") == \
        "s3://b/p/s/train?endpoint_override=http://127.0.0.1:9"
    assert join("/runs/x", "tune") == "/runs/x/tune"


def test_tune_and_train_go_under_checkpoints_slash_sweep_name_or_stay_in_the_sweep_dir(smoke_raw, tmp_path,
                                                                                      monkeypatch):
    sweep_dir = tmp_path / "runs" / "smoke"
    default = ray_locations(parse_sweep(smoke_raw), sweep_dir)
    assert default == {"ray_storage": str(sweep_dir), "tune_location": str(sweep_dir / "tune"),
                       "train_storage": str(sweep_dir / "train")}
    on_s3 = ray_locations(parse_sweep(with_checkpoints(smoke_raw, "s3://b/ckpt")), sweep_dir)
    assert on_s3 == {"ray_storage": "s3://b/ckpt/smoke", "tune_location": "s3://b/ckpt/smoke/tune",
                     "train_storage": "s3://b/ckpt/smoke/train"}
    monkeypatch.chdir(tmp_path)  # a relative local path is made absolute: Ray workers run elsewhere
    local = ray_locations(parse_sweep(with_checkpoints(smoke_raw, "ckpt")), sweep_dir)
    assert local["tune_location"] == str(tmp_path / "ckpt" / "smoke" / "tune")
    file_uri = ray_locations(parse_sweep(with_checkpoints(smoke_raw, "file:///x/y")), sweep_dir)
    assert file_uri["ray_storage"] == "/x/y/smoke"


def test_resume_and_status_read_the_tune_location_that_sweep_resolved_yaml_records(smoke_raw, tmp_path):
    sweep = parse_sweep(with_checkpoints(smoke_raw, "s3://b/ckpt"))
    (tmp_path / "sweep.resolved.yaml").write_text("# resolved from x.yaml\n# tune state: s3://other/place/tune\n"
                                                  + yaml.safe_dump(sweep.model_dump(mode="json")))
    assert tune_location(tmp_path, sweep) == "s3://other/place/tune"
    (tmp_path / "sweep.resolved.yaml").write_text(yaml.safe_dump(sweep.model_dump(mode="json")))
    assert tune_location(tmp_path, sweep) == "s3://b/ckpt/smoke/tune"
    assert tune_location(tmp_path, parse_sweep(smoke_raw)) == str(tmp_path / "tune")


# ---- the preflight probe -----------------------------------------------------------------------------------

def test_probe_of_an_unreachable_endpoint_fails_in_seconds_with_the_reason(monkeypatch):
    for key, value in aws_env(f"http://127.0.0.1:{free_port()}").items():  # nothing listens there
        monkeypatch.setenv(key, value)
    start = time.monotonic()
    reason = probe_uri(f"s3://{BUCKET}/ckpt")
    assert reason is not None and "connect" in reason.lower() and "\n" not in reason
    assert time.monotonic() - start < 10


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """An S3-protocol server (moto) on loopback with an empty bucket, stopped through its handle."""
    pytest.importorskip("moto.server", reason="moto[server] is in the dev extra: pip install -e '.[dev]'")
    from moto.server import ThreadedMotoServer

    werkzeug = logging.getLogger("werkzeug")
    level = werkzeug.level
    werkzeug.setLevel(logging.WARNING)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        s3_client(endpoint).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        server.stop()
        werkzeug.setLevel(level)


def s3_client(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def bucket_keys(endpoint: str, prefix: str = "") -> list[str]:
    pages = s3_client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def test_probe_writes_and_deletes_its_object_and_names_a_missing_bucket(s3_endpoint, monkeypatch):
    for key, value in aws_env(s3_endpoint).items():
        monkeypatch.setenv(key, value)
    assert probe_uri(f"s3://{BUCKET}/probe-test") is None
    # no probe object is left; pyarrow may keep an empty marker for the prefix itself, where Ray writes anyway
    assert set(bucket_keys(s3_endpoint, "probe-test")) <= {"probe-test/"}
    missing = probe_uri("s3://no-such-itt-bucket/x")
    assert missing is not None and "bucket does not exist" in missing


def test_probe_honours_an_endpoint_in_the_uri(s3_endpoint, monkeypatch):
    for key, value in FAKE_AWS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    assert probe_uri(f"s3://{BUCKET}/q?endpoint_override={s3_endpoint}") is None


def test_run_with_unreachable_checkpoint_storage_fails_at_preflight_in_seconds(tmp_path, smoke_raw, data_dir):
    raw = {**smoke_raw, "data": {**smoke_raw["data"], "dir": str(data_dir)}, "eval_languages": ["python"],
           "storage": {"path": str(tmp_path / "runs"), "checkpoints": f"s3://{BUCKET}/ckpt"},
           "tracking": {"uri": f"sqlite:///{tmp_path}/m.db"}}
    sweep = tmp_path / "bad.yaml"
    sweep.write_text("# Run: itt-sweep run bad.yaml\n" + yaml.safe_dump(raw))
    before = set(tmp_path.rglob("*"))
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
           **aws_env(f"http://127.0.0.1:{free_port()}")}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "itt_sweep.cli", "run", str(sweep)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line.strip() for line in proc.stderr.splitlines() if line.strip().startswith("- ")]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith(f"- storage.checkpoints: cannot write s3://{BUCKET}/ckpt: "), errors[0]
    assert "Traceback" not in proc.stderr
    assert set(tmp_path.rglob("*")) == before
    assert time.monotonic() - start < 60  # imports included; the probe itself gives up within seconds


# ---- a real sweep with its Ray state on S3 -----------------------------------------------------------------

def write_sweep(tmp_path: Path, data_dir: Path) -> Path:
    stage = {"steps": 4, "learning_rate": 3e-3, "warmup_steps": 1, "batch_size": 2, "seq_len": 64,
             "eval_every": 2, "checkpoint_every": 2}
    raw = {"name": "s3sweep", "data": {"dir": str(data_dir), "target_train_problems": 16, "eval_problems": 2},
           "matrix": {"intermediate_tasks": ["none"], "seeds": [0]}, "eval_languages": ["python"],
           "stages": {"target": stage}, "training": {"num_workers": 1, "cpus_per_worker": 1},
           "evaluation": {"max_new_tokens": 16, "batch_size": 2},
           "storage": {"path": str(tmp_path / "runs"), "checkpoints": f"s3://{BUCKET}/ckpt"},
           "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db", "deliver_timeout_s": 5}}
    path = tmp_path / "s3sweep.yaml"
    path.write_text("# Run: itt-sweep run s3sweep.yaml\n" + yaml.safe_dump(raw))
    return path


def itt_sweep(tmp_path: Path, env: dict[str, str], *args: str, timeout_s: float = 600) -> None:
    """`itt-sweep ARGS` in a child process (its embedded Ray cluster inherits `env`); killed by PID on timeout."""
    log = tmp_path / f"{args[0]}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "itt_sweep.cli", *args], cwd=tmp_path, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
        try:
            code = proc.wait(timeout=timeout_s)
        finally:
            if proc.poll() is None:
                kill_tree(proc.pid)
    assert code == 0, log.read_text()[-6000:]


def ledger(sweep_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (sweep_dir / "train" / "ledger.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_sweep_keeps_tune_state_and_checkpoints_on_s3_and_resumes_from_there(tmp_path, data_dir, s3_endpoint,
                                                                            monkeypatch):
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, **aws_env(s3_endpoint),
           "RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    sweep_dir = tmp_path / "runs" / "s3sweep"
    itt_sweep(tmp_path, env, "run", str(write_sweep(tmp_path, data_dir)))
    trained = ledger(sweep_dir)
    assert len(trained) == 1

    tune_keys = [k.removeprefix("ckpt/s3sweep/tune/") for k in bucket_keys(s3_endpoint, "ckpt/s3sweep/tune/")]
    assert "tuner.pkl" in tune_keys and any(k.startswith("experiment_state-") for k in tune_keys), tune_keys
    train_files = [k.split("/")[3:] for k in bucket_keys(s3_endpoint, "ckpt/s3sweep/train/") if not k.endswith("/")]
    assert {parts[0] for parts in train_files} == {trained[0]["run"]}  # the one stage run, under train/
    checkpoints = {parts[1] for parts in train_files if len(parts) > 2}
    assert checkpoints == {"export"}, train_files  # the final model; its step checkpoints are not kept
    assert not (sweep_dir / "tune").exists()
    assert sorted(p.name for p in (sweep_dir / "train").iterdir()) == ["ledger.jsonl"]  # no Ray Train run here
    resolved = (sweep_dir / "sweep.resolved.yaml").read_text()
    assert f"# tune state: s3://{BUCKET}/ckpt/s3sweep/tune\n" in resolved
    assert json.loads((sweep_dir / "trials" / "none__python__s0__n0" / "metrics.json").read_text())["eval"]

    for key, value in aws_env(s3_endpoint).items():  # `itt-sweep status` reads the state from the bucket
        monkeypatch.setenv(key, value)
    from itt_sweep.sweep.status import cell_table

    assert [(row["cell"], row["done"]) for row in cell_table(sweep_dir)] == [("none__python__s0", 1)]

    itt_sweep(tmp_path, env, "resume", str(sweep_dir))
    resumed = (tmp_path / "resume.log").read_text()
    assert f"resuming sweep s3sweep from its Tune experiment at s3://{BUCKET}/ckpt/s3sweep/tune" in resumed
    # Ray's own INFO lines go to the driver log, not the console
    assert "Restoring the run from the latest experiment state file" in (sweep_dir / "logs" / "driver.log").read_text()
    assert "1 trial(s), 0 failed" in resumed
    assert ledger(sweep_dir) == trained  # restored from S3 with the trial done: nothing trained again
    assert not (sweep_dir / "tune").exists()
    assert [(row["cell"], row["done"]) for row in cell_table(sweep_dir)] == [("none__python__s0", 1)]
