"""`itt-sweep`: validate | run | resume | status | heatmap | doctor."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from itt_sweep.config import SweepFileError, describe, load_sweep


def cmd_validate(args: argparse.Namespace) -> int:
    sweep = load_sweep(args.sweep)
    if args.preflight:
        from itt_sweep.sweep.prepare import preflight

        preflight(sweep, args.sweep)
    print(describe(sweep))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from itt_sweep.sweep.driver import run_sweep

    return report(run_sweep(args.sweep))


def cmd_resume(args: argparse.Namespace) -> int:
    from itt_sweep.sweep.driver import resume_sweep

    target = Path(args.sweep)
    if target.is_file():  # a sweep file: its directory under the storage path
        sweep = load_sweep(target)
        target = Path(sweep.storage.path) / sweep.name
    return report(resume_sweep(target, resume_errored=not args.skip_errored))


def report(outcome) -> int:
    print(f"\n{outcome.n_trials} trial(s), {outcome.n_errors} failed. Transfer heatmaps:")
    for path in outcome.outputs:
        if path.suffix == ".png":
            print(f"  {path}")
    print(f"All outputs (CSV too): {outcome.heatmap_dir}\nMLflow UI: make ui")
    return 1 if outcome.n_errors else 0


def cmd_status(args: argparse.Namespace) -> int:
    from itt_sweep.sweep.status import print_status

    target = Path(args.sweep)
    if target.is_file():
        sweep = load_sweep(target)
        target = Path(sweep.storage.path) / sweep.name
    return print_status(target)


def cmd_heatmap(args: argparse.Namespace) -> int:
    from itt_sweep.analysis.report import write_outputs
    from itt_sweep.analysis.results import load_records, records_from_dirs, to_frame

    sweep_dir = Path(args.sweep_dir)
    if args.source == "dirs":
        records, origin = records_from_dirs(sweep_dir), f"run directories {sweep_dir / 'trials'}"
    else:
        try:
            records, origin = load_records(sweep_dir, args.tracking_uri, args.parent_run_id,
                                           use_dirs=args.source == "auto")
        except Exception as exc:  # noqa: BLE001  (--from mlflow: say why in one line, no traceback)
            print(f"error: cannot read the sweep from MLflow: {str(exc).splitlines()[0]}", file=sys.stderr)
            return 1
    if not records:
        print(f"no finished trials in {origin}", file=sys.stderr)
        return 1
    print(f"{len(records)} trial record(s) from {origin}", file=sys.stderr)
    out = Path(args.out) if args.out else sweep_dir / "heatmaps"
    for path in write_outputs(to_frame(records), out, n_bootstrap=args.bootstrap, min_seeds=args.min_seeds):
        print(path)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from itt_sweep.execution.recipes import doctor

    for language, (ready, hint) in doctor().items():
        print(f"  {language:<11} {'ready' if ready else 'unavailable':<12} {'' if ready else hint}")
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from itt_sweep.tracking.trial_run import deliver_pending

    left = deliver_pending(Path(args.sweep_dir))
    print("all MLflow calls delivered" if not left else f"{left} trial(s) still queued: is the server up?")
    return 1 if left else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="itt-sweep", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="check a sweep file and print its matrix")
    p.add_argument("sweep")
    p.add_argument("--preflight", action="store_true",
                   help="also check data, toolchains, storage (path and checkpoints), tracking")
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("run", help="run a sweep")
    p.add_argument("sweep")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("resume", help="resume an interrupted sweep (sweep dir or sweep file)")
    p.add_argument("sweep")
    p.add_argument("--skip-errored", action="store_true", help="do not retry trials that errored")
    p.set_defaults(func=cmd_resume)
    p = sub.add_parser("status", help="done / running / pending / errored trials per cell")
    p.add_argument("sweep", help="a sweep dir, or a sweep file")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("heatmap", help="transfer heatmaps and tables (PNG, CSV, Markdown, LaTeX)")
    p.add_argument("sweep_dir")
    p.add_argument("--out", help="output dir (default: <sweep_dir>/heatmaps)")
    p.add_argument("--from", dest="source", choices=("auto", "mlflow", "dirs"), default="auto",
                   help="auto: MLflow, falling back to the trial dirs when it is unreachable (default)")
    p.add_argument("--tracking-uri", help="default: tracking.uri of <sweep_dir>/sweep.resolved.yaml")
    p.add_argument("--parent-run-id", help="default: the run tagged itt.role=sweep, itt.sweep=<sweep name>")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples per cell (default 2000)")
    p.add_argument("--min-seeds", type=int, default=3, help="fewest seeds for a CI (default 3)")
    p.set_defaults(func=cmd_heatmap)
    p = sub.add_parser("sync", help="deliver MLflow calls queued while the tracking server was down")
    p.add_argument("sweep_dir")
    p.set_defaults(func=cmd_sync)
    p = sub.add_parser("doctor", help="which MBXP languages can be executed here")
    p.set_defaults(func=cmd_doctor)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SweepFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
