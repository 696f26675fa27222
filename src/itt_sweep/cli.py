"""`itt-sweep`: validate | run | resume | status | heatmap | eval | sync | doctor."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from itt_sweep.config import EvaluationSpec, SweepFileError, describe, load_sweep
from itt_sweep.data import paths as data_paths


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
    """The sweep's last lines; exit status 1 when a trial failed, 130 (as for Ctrl-C) when it was stopped."""
    if outcome.stopped:
        print(f"\nstopped: {outcome.n_finished} of {outcome.n_planned} trial(s) finished, none failed; "
              f"`itt-sweep resume {outcome.sweep_dir}` continues it. Heatmaps of the finished ones:")
    else:
        print(f"\n{outcome.n_trials} trial(s), {outcome.n_errors} failed. Transfer heatmaps:")
    for path in outcome.outputs:
        if path.suffix == ".png":
            print(f"  {path}")
    print(f"All outputs (CSV too): {outcome.heatmap_dir}\nMLflow UI: make ui")
    return 1 if outcome.n_errors else 130 if outcome.stopped else 0


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
    for path in write_outputs(to_frame(records), out, n_bootstrap=args.bootstrap, min_seeds=args.min_seeds,
                              baseline=args.baseline):
        print(path)
    return 0


def _per_language(value: str | None) -> int | dict[str, int] | str | None:
    """`128`, or `default=128,java=160` (what `evaluation.max_new_tokens` takes as a mapping)."""
    if value is None or "=" not in value:
        return int(value) if value and value.isdigit() else value
    pairs = [part.split("=", 1) for part in value.split(",")]
    return {name.strip(): int(n) if n.strip().isdigit() else n for name, n in pairs}


def _eval_spec(args: argparse.Namespace, ks: list[int] | None) -> EvaluationSpec:
    """The flags given, over EvaluationSpec's defaults (the same validation as a sweep file's)."""
    given = {"num_samples": args.num_samples, "temperature": args.temperature, "top_p": args.top_p,
             "pass_k": ks if args.model else None, "prompt_format": args.prompt_format,
             "max_new_tokens": _per_language(args.max_new_tokens), "batch_size": args.batch_size,
             "timeout_s": args.timeout_s,
             "seed": args.seed, "cpus": args.cpus, "decoder": args.decoder,
             "allow_unsandboxed": args.allow_unsandboxed or None,
             "typescript_type_errors": args.typescript_type_errors}
    return EvaluationSpec(**{name: value for name, value in given.items() if value is not None})


def cmd_eval(args: argparse.Namespace) -> int:
    """Score a model (`--model`) or a samples file (`--completions`); see `evaluate/standalone.py`."""
    from pydantic import ValidationError

    from itt_sweep.evaluate import standalone
    from itt_sweep.evaluate.samples_file import SamplesFileError

    say = lambda line: print(line, file=sys.stderr)  # noqa: E731
    out, data_dir = Path(args.out), Path(args.data_dir).resolve() if args.data_dir else None
    languages = args.languages.split(",") if args.languages else None
    ks = [int(k) for k in args.k.split(",")] if args.k else None
    try:
        spec = _eval_spec(args, ks)
        if args.completions:
            problems = (standalone.problems_for(args.problems, languages, data_dir) if args.problems
                        else standalone.every_problem(data_dir))
            summary = standalone.score_samples(Path(args.completions), problems, spec, ks or [1, 10, 100], out, say)
        else:
            ref = standalone.resolve_model(args.model, args.gguf_file, args.revision)
            problems = standalone.problems_for(args.problems, languages, data_dir)
            out.mkdir(parents=True, exist_ok=True)
            summary = standalone.eval_model(ref, problems, spec, data_paths.data_dir(data_dir), out,
                                            Path(args.reference_cache), say)
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "evaluation"
            say(f"error: {where}: {error['msg']}")
        return 2
    except (SamplesFileError, standalone.EvalInputError, ValueError, OSError) as exc:
        say(f"error: {exc}")
        return 2
    for language, metrics in summary["languages"].items():
        shown = ", ".join(f"{name} {value:.3f}" for name, value in metrics.items()
                          if (name.startswith("pass_at_") or name in ("compile_rate", "ref_nll"))
                          and value is not None)
        print(f"{language:<11} {shown}")
    print(f"results: {out}")
    if args.tracking_uri:
        from itt_sweep.tracking.mlflow_runs import log_eval_run

        files = sorted(p for p in out.glob("*.json*") if p.is_file())
        run_id = log_eval_run(args.tracking_uri, args.experiment, out.name, summary.get("settings", {}),
                              summary["languages"], files)
        print(f"MLflow run {run_id} in experiment {args.experiment} ({args.tracking_uri})")
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
    verbose = "also show what trials, workers and Ray print (= ITT_VERBOSE=1; default: their log files)"
    p = sub.add_parser("run", help="run a sweep")
    p.add_argument("sweep")
    p.add_argument("--verbose", action="store_true", help=verbose)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("resume", help="resume an interrupted sweep (sweep dir or sweep file)")
    p.add_argument("sweep")
    p.add_argument("--verbose", action="store_true", help=verbose)
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
    p.add_argument("--baseline", default="none", help="the row deltas are against: none (default) or "
                                                      "target_control, the compute-matched control")
    p.set_defaults(func=cmd_heatmap)
    p = sub.add_parser("sync", help="deliver MLflow calls queued while the tracking server was down")
    p.add_argument("sweep_dir")
    p.set_defaults(func=cmd_sync)
    add_eval_parser(sub)
    p = sub.add_parser("doctor", help="which MBXP languages can be executed here")
    p.set_defaults(func=cmd_doctor)
    return parser


def add_eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="score a model or a samples file (mxeval format): pass@k, compile rate",
                       description="Zero-shot generation + sandboxed execution + pass@k of a model, or the "
                                   "verdicts and pass@k of an existing samples file. Rerun with the same --out "
                                   "to continue an interrupted run.")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", help="hub id, model dir, stage-cache entry or a sweep's trial dir")
    what.add_argument("--completions", help="a samples file: JSONL with task_id, completion[, language]")
    p.add_argument("--out", required=True, help="output dir (rerun with the same one to resume)")
    p.add_argument("--gguf-file", help="the GGUF file inside --model (a dir or hub repo)")
    p.add_argument("--revision", help="hub revision (branch, tag or commit) of --model")
    p.add_argument("--languages", help="comma-separated MBXP languages (default: python; with a problems "
                                       "file: all of its languages)")
    p.add_argument("--problems", help="N (MBXP's first N test problems per language) or FILE.jsonl in MBXP's "
                                      "format (task_id, prompt, test, entry_point, language)")
    p.add_argument("--num-samples", type=int, help="samples per problem (default 1: greedy)")
    p.add_argument("--temperature", type=float, help="0 = greedy (default); > 0 samples")
    p.add_argument("--top-p", type=float)
    p.add_argument("--k", help="pass@k for these k, comma-separated (default 1; for --completions 1,10,100 "
                               "where every task has that many samples)")
    p.add_argument("--prompt-format", choices=("completion", "chat"))
    p.add_argument("--max-new-tokens", help="N, or per language: default=128,java=160")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--timeout-s", type=float, help="per program (default 10)")
    p.add_argument("--seed", type=int, help="sampling seed (default 0)")
    p.add_argument("--cpus", type=int, help="generation threads on CPU")
    p.add_argument("--decoder", choices=("fast", "hf"))
    p.add_argument("--allow-unsandboxed", action="store_true", help="run programs without bubblewrap")
    p.add_argument("--typescript-type-errors", choices=("fail", "ignore"),
                   help="TypeScript with type errors only: compile_error (fail, default) or run tsc's JavaScript "
                        "(ignore, as mxeval / the MBXP paper)")
    p.add_argument("--data-dir", help="MBXP data dir (default: $ITT_DATA_DIR or ./data)")
    p.add_argument("--reference-cache", default=str(Path.home() / ".cache" / "itt-sweep" / "references"),
                   help="where verified reference solutions (for ref_nll) are cached")
    p.add_argument("--tracking-uri", help="also log the result as one MLflow run")
    p.add_argument("--experiment", default="itt-sweep/eval", help="MLflow experiment (default itt-sweep/eval)")
    p.set_defaults(func=cmd_eval)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if getattr(args, "verbose", False):
        os.environ["ITT_VERBOSE"] = "1"  # read by `trial_logs` here and, through Ray's runtime env, in trials
    try:
        return args.func(args)
    except (SweepFileError, data_paths.DataFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
