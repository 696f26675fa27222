"""Where the output of a trial and of its workers goes: files under `<sweep dir>/logs/<trial key>/`.

A sweep's console is for the researcher: the live view, one line per finished or failed trial, warnings
that matter. Everything the trial's processes print (weight-loading progress bars, DeepSpeed's and torch's
banners and FutureWarnings, `TrainingReport` reprs, compiler output of stage 3) goes to files instead:
`trial.log` (the Tune trial process: stages 1-2 driver code and stage 3) and `<stage>-rank<k>.log` (each Ray
Train worker). The redirect is at the file-descriptor level, so C libraries and child processes land there
too, and it is undone when the block ends (Ray reuses worker processes). `ITT_VERBOSE=1` (or
`itt-sweep run --verbose`) turns it off: the output then goes to Ray's worker logs and the console as Ray
prints them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

LOGS_DIR = "logs"


def verbose() -> bool:
    return os.environ.get("ITT_VERBOSE", "").lower() in ("1", "true", "yes")


def trial_log_dir(sweep_dir: str | Path, trial_key: str) -> Path:
    return Path(sweep_dir) / LOGS_DIR / trial_key


@contextlib.contextmanager
def output_to(path: Path | None) -> Iterator[Path | None]:
    """stdout and stderr of this process (file descriptors 1 and 2) appended to `path` while the block runs;
    nothing changes when `path` is None or in verbose mode."""
    if path is None or verbose():
        yield None
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = [os.dup(1), os.dup(2)]
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(target, 1)
        os.dup2(target, 2)
        yield path
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, target):
            os.close(fd)


def log_tail(path: Path, lines: int = 20) -> str:
    """The last `lines` lines of a log, or "" when it does not exist."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# Driver-side loggers whose INFO lines a researcher cannot act on ("Started a local Ray instance", Tune's "View
# detailed results here" / TensorBoard hints, MLflow's "Creating initial MLflow database tables"): to the
# driver log only. Their warnings still reach the console.
QUIET_LOGGERS = ("ray", "ray.tune", "ray.train", "mlflow", "alembic", "filelock", "matplotlib")
# Tune's own ERROR records of a failed trial (the whole traceback of the Ray task, then "Trials did not
# complete"): the live view already says which trial failed, where and why, with its log (progress.SweepView),
# so they go to the driver log only.
REPORTED_BY_THE_VIEW = ("Trial task failed for trial", "Trials did not complete")


def quiet_driver(sweep_dir: str | Path) -> Path:
    """The driver's log file `<sweep dir>/logs/driver.log` gets every record (INFO and up) of every logger;
    the console keeps our own INFO lines and everyone's warnings. Progress bars of model downloads and writes
    (huggingface_hub, transformers) are turned off. Verbose mode changes nothing."""
    path = Path(sweep_dir) / LOGS_DIR / "driver.log"
    if verbose():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    to_file = logging.FileHandler(path)
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for owner in (root, logging.getLogger("ray")):  # Ray's logger does not propagate to root
        if not any(getattr(h, "baseFilename", None) == str(path) for h in owner.handlers):
            owner.addHandler(to_file)
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        for handler in [*logger.handlers, *(root.handlers if logger.propagate else [])]:
            if not isinstance(handler, logging.FileHandler):
                handler.addFilter(_drop_info_of(QUIET_LOGGERS))
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    with contextlib.suppress(ImportError):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    return path


class _drop_info_of(logging.Filter):  # noqa: N801 (used as a function)
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        quiet = any(record.name == p or record.name.startswith(p + ".") for p in self.prefixes)
        if quiet and record.name.startswith("ray.tune") and record.getMessage().startswith(REPORTED_BY_THE_VIEW):
            return False
        return record.levelno >= logging.WARNING or not quiet
