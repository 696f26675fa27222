"""Where a sweep's Ray state lives (Tune's experiment, the stages' Ray Train runs) and the preflight probe of it.

With `storage.checkpoints` set, Ray writes that state to `<checkpoints>/<sweep name>/{tune,train}` through its own
pyarrow storage support (s3://, gs:// or a local path); otherwise it stays in the sweep dir on `storage.path`.
On a cluster the split matters: object storage survives losing any node, while the stage cache, references and
trial dirs stay on the shared POSIX file system because they need its file locks and atomic renames.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from itt_sweep.config import SweepConfig

TUNE_DIR = "tune"
TRAIN_DIR = "train"
# The header line of sweep.resolved.yaml that records where the Tune experiment went (read by resume, status).
TUNE_STATE_LINE = "# tune state: "
# The preflight probe must fail in seconds: the SDKs' defaults retry an unreachable endpoint for minutes.
PROBE_CONNECT_S = 5.0
PROBE_REQUEST_S = 20.0
PROBE_ATTEMPTS = 2


def is_uri(location: str) -> bool:
    return "://" in location


def local_path(location: str) -> Path | None:
    """The directory a local path or file:// URI names (absolute), or None for object storage."""
    if location.startswith("file://"):
        return Path(urlsplit(location).path)
    if is_uri(location):
        return None
    return Path(location).expanduser().resolve()


def join(base: str, *parts: str) -> str:
    """`base/parts...` for a local path or a URI; a URI keeps its query (`?endpoint_override=...`) at the end,
    where pyarrow reads it."""
    if not is_uri(base):
        return str(Path(base).joinpath(*parts))
    split = urlsplit(base)
    return urlunsplit(split._replace(path="/".join([split.path.rstrip("/"), *parts])))


def ray_storage(sweep: SweepConfig, sweep_dir: Path) -> str:
    """Root of the sweep's Ray state: `<checkpoints>/<sweep name>` when the sweep sets one, else the sweep dir.

    A local checkpoints path becomes absolute here, because Ray workers run in other working directories."""
    base = sweep.storage.checkpoints
    if base is None:
        return str(sweep_dir)
    local = local_path(base)
    return join(str(local) if local is not None else base, sweep.name)


def ray_locations(sweep: SweepConfig, sweep_dir: Path) -> dict[str, str]:
    """The context entries naming the Ray state: the Tune storage path, the Tune experiment, the stages' runs."""
    root = ray_storage(sweep, sweep_dir)
    return {"ray_storage": root, "tune_location": join(root, TUNE_DIR), "train_storage": join(root, TRAIN_DIR)}


def tune_state_header(sweep: SweepConfig, ctx: dict[str, Any]) -> str:
    """The sweep.resolved.yaml line recording a Tune experiment outside the sweep dir ("" when it is inside)."""
    return f"{TUNE_STATE_LINE}{ctx['tune_location']}\n" if sweep.storage.checkpoints else ""


def tune_location(sweep_dir: Path, sweep: SweepConfig) -> str:
    """Where the Tune experiment of a sweep dir lives: the location its sweep.resolved.yaml recorded when the
    sweep had `storage.checkpoints`, else `<sweep_dir>/tune` (wherever the sweep dir has been moved to)."""
    if sweep.storage.checkpoints is None:
        return str(Path(sweep_dir).resolve() / TUNE_DIR)
    resolved = Path(sweep_dir) / "sweep.resolved.yaml"
    for line in resolved.read_text().splitlines() if resolved.is_file() else []:
        if not line.startswith("#"):
            break
        if line.startswith(TUNE_STATE_LINE):
            return line.removeprefix(TUNE_STATE_LINE).strip()
    return join(ray_storage(sweep, Path(sweep_dir)), TUNE_DIR)


def has_experiment(location: str) -> bool:
    """True when `location` holds a saved Tune experiment (its experiment_state-*.json), local or remote."""
    import pyarrow.fs as pafs

    local = local_path(location)
    fs, path = (pafs.LocalFileSystem(), str(local)) if local is not None else pafs.FileSystem.from_uri(location)
    found = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return any(f.base_name.startswith("experiment_state") and f.base_name.endswith(".json") for f in found)


def probe_uri(uri: str) -> str | None:
    """Why Ray could not write to `uri` (one line), or None: writes and deletes a small object through the
    filesystem pyarrow resolves for the URI, which is the one Ray uses, so credentials, endpoint, bucket and
    permissions are all checked before any trial starts. (pyarrow may leave an empty marker object for the prefix
    itself, the directory Ray writes into anyway.)"""
    import pyarrow as pa
    import pyarrow.fs as pafs

    try:
        fs, path = pafs.FileSystem.from_uri(uri)
        fs = impatient(fs)
        probe = f"{path.rstrip('/')}/.itt-sweep-probe-{uuid.uuid4().hex[:12]}"
        with fs.open_output_stream(probe) as out:
            out.write(b"itt-sweep preflight probe; safe to delete\n")
        fs.delete_file(probe)
    except (OSError, ValueError, pa.ArrowException) as exc:
        return one_line(exc)
    return None


def impatient(fs: Any) -> Any:
    """The same object-storage filesystem with short timeouts and few retries (others unchanged).

    pyarrow rebuilds a filesystem from the options its pickling exposes; that keeps everything `from_uri`
    resolved (endpoint, region, credentials) and changes only how long a dead endpoint is waited for."""
    import pyarrow.fs as pafs

    kind = type(fs).__name__
    if kind not in ("S3FileSystem", "GcsFileSystem"):
        return fs
    try:
        _, (options,) = fs.__reduce__()
        if kind == "S3FileSystem":
            retry = pafs.AwsStandardS3RetryStrategy(max_attempts=PROBE_ATTEMPTS)
            return pafs.S3FileSystem(**{**options, "connect_timeout": PROBE_CONNECT_S,
                                        "request_timeout": PROBE_REQUEST_S, "retry_strategy": retry})
        return pafs.GcsFileSystem(**{**options, "retry_time_limit": timedelta(seconds=PROBE_REQUEST_S)})
    except (TypeError, ValueError):  # another pyarrow's pickling: probe with its defaults (slower, still right)
        return fs


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:400] or type(exc).__name__
