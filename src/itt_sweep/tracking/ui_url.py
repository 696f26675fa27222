"""The URL `make ui` prints: the sweep's runs in the MLflow UI's model-training view, trials flat and best first.

    python -m itt_sweep.tracking.ui_url --uri sqlite:///mlflow.db --port 5000 [--sweep sweeps/smoke.yaml]
    python -m itt_sweep.tracking.ui_url --open URL     # wait for the server, then open URL in a browser

The experiment is the one of `--sweep` (a sweep file, or a sweep name) when given, else the one holding the
most recently started sweep parent run (`itt.role` = sweep). The MLflow 3.17 UI opens every experiment in its
GenAI view (Overview, Traces) unless the URL says `workflowType=machine_learning`; sorting by a metric lists
the trial runs flat instead of folded under their parent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from itt_sweep.tracking.summary import RUNS_VIEW_KEY, VIEW_TAG_PREFIX

MODEL_TRAINING = {"workflowType": "machine_learning"}
SORTED = {"orderByKey": "metrics.`avg/pass_at_1`", "orderByAsc": "false"}


def runs_url(base: str, experiment_id: str, shared_view: bool = True) -> str:
    """The runs tab of `experiment_id` in the model-training view, best `avg/pass_at_1` first: with
    `shared_view`, the experiment's stored table (`summary.set_runs_view`: the summary columns), else only
    sorted (the UI ignores a shared view when the URL also sorts)."""
    query = {**MODEL_TRAINING, **({"viewStateShareKey": RUNS_VIEW_KEY} if shared_view else SORTED)}
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{urllib.parse.urlencode(query)}"


def compare_url(base: str, experiment_id: str, run_ids: Sequence[str]) -> str:
    """MLflow's compare page of `run_ids` (params and metrics side by side, parallel coordinates)."""
    runs, experiments = json.dumps(list(run_ids)), json.dumps([experiment_id])
    query = urllib.parse.urlencode({"runs": runs, "experiments": experiments, **MODEL_TRAINING})
    return f"{base.rstrip('/')}/#/compare-runs?{query}"


def experiment_name(sweep: str) -> str:
    """The experiment a sweep logs to: from a sweep file (tracking.experiment or itt-sweep/<name>), or a name."""
    if Path(sweep).is_file():
        from itt_sweep.config import load_sweep

        config = load_sweep(sweep)
        return config.tracking.experiment or f"itt-sweep/{config.name}"
    return sweep if "/" in sweep else f"itt-sweep/{sweep}"


def find_experiment(uri: str, sweep: str | None) -> tuple[str, bool] | None:
    """The id of the sweep's experiment (or of the latest sweep's) and whether it has the shared trials view;
    None when the store holds neither."""
    from itt_sweep.tracking.mlflow_runs import absolute_uri, client_for

    client = client_for(absolute_uri(uri))
    if sweep:
        found = client.get_experiment_by_name(experiment_name(sweep))
    else:
        ids = [e.experiment_id for e in client.search_experiments(max_results=1000)]
        latest = client.search_runs(ids, filter_string="tags.`itt.role` = 'sweep'",
                                    order_by=["attributes.start_time DESC"], max_results=1) if ids else []
        found = client.get_experiment(latest[0].info.experiment_id) if latest else None
    return (found.experiment_id, VIEW_TAG_PREFIX + RUNS_VIEW_KEY in found.tags) if found else None


def can_open_browser(env: Mapping[str, str]) -> bool:
    """Only on a desktop: never under CI, never without a display."""
    if env.get("CI", "").lower() not in ("", "0", "false"):
        return False
    return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY")) or sys.platform == "darwin"


def open_when_up(url: str, timeout_s: float = 120.0) -> bool:
    """Wait until the server at `url` answers /health, then open `url` in the default browser."""
    import webbrowser

    health = url.split("#", 1)[0].rstrip("/") + "/health"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(health, timeout=2).read()
            return webbrowser.open(url)
        except OSError:
            time.sleep(1)
    return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m itt_sweep.tracking.ui_url", description=__doc__.split("\n")[0])
    parser.add_argument("--uri", default="sqlite:///mlflow.db", help="the tracking store")
    parser.add_argument("--port", type=int, default=5000, help="the port `mlflow ui` listens on")
    parser.add_argument("--sweep", help="a sweep file or sweep name (default: the latest sweep in the store)")
    parser.add_argument("--open", metavar="URL", help="open URL once its server answers, if a display exists")
    args = parser.parse_args(argv)
    if args.open:
        return 0 if not can_open_browser(os.environ) or open_when_up(args.open) else 1
    base = f"http://127.0.0.1:{args.port}"
    found = find_experiment(args.uri, args.sweep)
    if found is None:
        print(f"no sweep {'of ' + args.sweep + ' ' if args.sweep else ''}in {args.uri} yet", file=sys.stderr)
        print(f"{base}/#/experiments?{urllib.parse.urlencode(MODEL_TRAINING)}")
    else:
        print(runs_url(base, *found))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
