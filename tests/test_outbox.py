"""A trial's MLflow calls are queued while the store is unreachable and delivered, once, when it returns."""

from __future__ import annotations

from itt_sweep.tracking.mlflow_runs import client_for, experiment_id
from itt_sweep.tracking.trial_run import TrialRun, deliver_pending


def test_calls_queue_while_the_store_is_down_and_arrive_once_when_it_is_back(tmp_path):
    store = tmp_path / "mlflow.db"
    uri = f"sqlite:///{store}"
    client = client_for(uri)
    exp = experiment_id(client, "itt-sweep/outbox")
    parent = client.create_run(exp).info.run_id
    store.rename(tmp_path / "away.db")
    store.mkdir()  # the store is "down": a directory where the database should be cannot be opened

    trial_dir = tmp_path / "sweep" / "trials" / "none__python__s0__n0"
    run = TrialRun(uri, exp, parent, "none__python__s0__n0", {"itt.seed": "0"}, trial_dir / ".tracking")
    history = [{"step": s, "train_loss": 1.0 / s, "lr": 0.1} for s in range(1, 6)]
    run.log_stage("target", history, "key", trained_now=True)
    run.log_stage("target", history, "key", trained_now=True)  # a restarted trial logging again: ignored
    run.log_eval({"python": {"pass_at_1": 0.5}}, val_loss=1.5)
    run.finish()
    assert not run.flush()
    assert [op["op"] for op in run.outbox.pending()] == ["metrics", "tags", "metrics", "status"]

    store.rmdir()
    (tmp_path / "away.db").rename(store)  # the store is back
    assert deliver_pending(tmp_path / "sweep") == 0
    assert deliver_pending(tmp_path / "sweep") == 0  # nothing is sent twice
    client = client_for(uri)
    runs = client.search_runs([exp], filter_string="tags.`itt.trial_key` = 'none__python__s0__n0'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.tags["mlflow.parentRunId"] == parent
    steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "target/train_loss")]
    assert sorted(steps) == [1, 2, 3, 4, 5]
    assert runs[0].data.metrics["eval/python/pass_at_1"] == 0.5
