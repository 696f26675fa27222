"""Where the project finds its data, and the one error it raises when the data is not there.

Every loader resolves its directory through `data_dir` so that a missing download fails the same way
everywhere: with a `DataNotFoundError` that tells the user to run `make data`, instead of a bare
`FileNotFoundError` deep inside a trial.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

ENV_VAR = "ITT_DATA_DIR"
DEFAULT_DIR = "data"
FETCH_HINT = "run `make data` (python -m itt_sweep.data.fetch) to fetch it, or point $ITT_DATA_DIR at a copy"


class DataNotFoundError(FileNotFoundError):
    """The data directory, or a file the loaders need inside it, does not exist."""


def data_dir(override: str | Path | None = None) -> Path:
    """Resolve the data directory: `override`, else `$ITT_DATA_DIR`, else `./data`.

    Resolved to an absolute path so that caches keyed on paths see one name per directory.
    """
    raw = override if override is not None else os.environ.get(ENV_VAR) or DEFAULT_DIR
    path = Path(raw).expanduser().resolve()
    if not path.is_dir():
        origin = "given" if override is not None else f"${ENV_VAR}" if os.environ.get(ENV_VAR) else "default"
        raise DataNotFoundError(f"data directory {path} ({origin}) does not exist; {FETCH_HINT}")
    return path


def require_file(path: Path, what: str) -> Path:
    """Return `path` if it is a file, else raise `DataNotFoundError` naming `what` was being looked for."""
    if not path.is_file():
        raise DataNotFoundError(f"{what} not found at {path}; {FETCH_HINT}")
    return path


class DataFileError(ValueError):
    """A data file that exists but cannot be read as what it should hold: one message, no traceback."""


def read_jsonl(path: str | Path) -> list[dict]:
    """Every data folder stores one JSON object per line; blank lines are skipped. A line that does not parse
    (a copy cut short, an edited file) is named by file and line, since json's own message names neither."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataFileError(f"{path}:{number}: not a JSON line ({exc.msg}); the data file is damaged: "
                                 f"delete the data directory's .complete stamp and run `make data` to "
                                 f"write it again") from None
    return rows


def fingerprint(paths: list[Path]) -> str:
    """A digest of the files' contents: stage-cache keys include it, so a stage trained on one copy of the
    data (a local mirror, say) is never reused after other files land under the same data directory."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        stat = path.stat()
        digest.update(f"{path.name}\0{_file_digest(str(path), stat.st_size, stat.st_mtime_ns)}\0".encode())
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
