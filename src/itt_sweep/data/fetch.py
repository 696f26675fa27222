"""`make data`: fill the data directory from a mirror, or from the Hugging Face hub.

With a mirror (`--mirror` or `$ITT_DATA_MIRROR`, e.g. a shared read-only copy) the MBXP folder and the
task folders are copied file by file, skipping files whose size already matches, so a rerun is cheap.
Without one, MBXP and the tasks that have a hub copy are downloaded with `datasets` (the `hub` extra)
and written in the same JSONL layout the loaders read; two tasks (CODE-NN, TransCoder-GfG) exist only
as local copies and need a mirror. Usage: `python -m itt_sweep.data.fetch [--mirror DIR] [--dest DIR]`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from itt_sweep.data.mbxp import EXAMPLES_METADATA_FILE, LANGUAGES, MBXP_FOLDER, METADATA_FILE
from itt_sweep.data.paths import DEFAULT_DIR, ENV_VAR, DataNotFoundError
from itt_sweep.data.tasks import INTERMEDIATE_TASKS, IntermediateTask

MIRROR_ENV_VAR = "ITT_DATA_MIRROR"
MBXP_HUB_ID = "mxeval/mbxp"
# mxeval's sample completions are not on the hub; they live in its GitHub repository.
MBXP_EXAMPLES_URL = "https://raw.githubusercontent.com/amazon-science/mxeval/main/data/mbxp/examples/{name}"
MBXP_EXAMPLE_FILES = {
    "python": "mbpp", "java": "mbjp", "javascript": "mbjsp", "typescript": "mbtsp", "kotlin": "mbkp",
    "ruby": "mbrbp", "php": "mbphp", "cpp": "mbcpp", "csharp": "mbcsp", "go": "mbgp", "perl": "mbplp",
    "scala": "mbscp", "swift": "mbswp",
}  # fmt: skip
LANGUAGE_ALIASES = {"c#": "csharp", "c++": "cpp", "golang": "go"}


def folders() -> list[str]:
    """Every folder `make data` fills: MBXP, then the tasks."""
    return [MBXP_FOLDER, *(task.folder for task in INTERMEDIATE_TASKS.values())]


def sync_tree(source: Path, destination: Path) -> tuple[int, int]:
    """Copy the files of `source` into `destination`; returns (copied, already present with equal size).

    Only file contents are copied, not permissions, so a read-only mirror gives a writable copy.
    """
    copied = skipped = 0
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        target = destination / path.relative_to(source)
        if target.is_file() and target.stat().st_size == path.stat().st_size:
            skipped += 1
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        copied += 1
    return copied, skipped


def fetch_from_mirror(mirror: Path, dest: Path) -> Iterator[str]:
    """Copy every folder from `mirror` into `dest`, yielding one summary line per folder as it goes."""
    if not mirror.is_dir():
        raise DataNotFoundError(f"mirror {mirror} does not exist")
    missing = [name for name in folders() if not (mirror / name).is_dir()]
    if missing:
        raise DataNotFoundError(f"mirror {mirror} lacks the folder(s) {', '.join(missing)}")
    for name in folders():
        if mirror.resolve() == dest.resolve():
            yield f"{name}: already in place in {dest}"
            continue
        copied, skipped = sync_tree(mirror / name, dest / name)
        total = copied + skipped
        state = "up to date" if copied == 0 else f"copied {copied} of {total} file(s)"
        yield f"{name}: {state} (mirror {mirror / name}, {total} file(s))"


def _require_datasets():
    try:
        import datasets
    except ImportError:
        raise SystemExit(
            "downloading from the hub needs the `datasets` package: pip install 'itt-sweep[hub]' "
            f"(or give a mirror with --mirror / ${MIRROR_ENV_VAR})"
        ) from None
    return datasets


def _write_jsonl(path: Path, records: Iterable[Mapping]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(dict(record), ensure_ascii=False) + "\n")
            count += 1
    return count


def fetch_mbxp_from_hub(dest: Path) -> str:
    """Every MBXP language from `mxeval/mbxp` (a script dataset: needs `datasets` < 4), plus samples."""
    datasets = _require_datasets()
    folder = dest / MBXP_FOLDER
    (folder / "examples").mkdir(parents=True, exist_ok=True)
    files, samples, total = {}, {}, 0
    for language in LANGUAGES:
        rows = datasets.load_dataset(MBXP_HUB_ID, language, split="test", trust_remote_code=True)
        files[language] = f"{language}.jsonl"
        total += _write_jsonl(folder / files[language], rows)
        samples[language] = f"examples/{MBXP_EXAMPLE_FILES[language]}_samples.jsonl"
        url = MBXP_EXAMPLES_URL.format(name=Path(samples[language]).name)
        urllib.request.urlretrieve(url, folder / samples[language])
    (folder / METADATA_FILE).write_text(json.dumps(files, indent=2) + "\n")
    (folder / EXAMPLES_METADATA_FILE).write_text(json.dumps(samples, indent=2) + "\n")
    return f"{MBXP_FOLDER}: {total} problems in {len(files)} languages from {MBXP_HUB_ID}"


def pick(row: Mapping, spec: str):
    """The value of the first non-empty hub field in `spec` (`"a|b"`)."""
    for name in spec.split("|"):
        value = row.get(name)
        if value not in (None, ""):
            return value
    return None


def normalize_language(name: str) -> str:
    """Hub language names (`C#`, `C++`, `Python`) as our lower-case codes."""
    lowered = name.strip().lower()
    return LANGUAGE_ALIASES.get(lowered, lowered)


def hub_record(task: IntermediateTask, row: Mapping, record_id: str) -> dict | None:
    """One hub row in the local record schema, or None when it is empty or outside the task's languages."""
    source, target = pick(row, task.field_map["source"]), pick(row, task.field_map["target"])
    if not source or not target:
        return None
    target_lang = task.target_lang
    if "target_lang" in task.field_map:
        target_lang = normalize_language(str(pick(row, task.field_map["target_lang"]) or ""))
    if target_lang is None or (task.target_langs is not None and target_lang not in task.target_langs):
        return None
    return {
        "id": record_id, "source": str(source), "target": str(target),
        "source_lang": task.source_lang, "target_lang": target_lang, "kind": task.kind,
    }  # fmt: skip


def holdout_split(task: IntermediateTask, row: Mapping) -> str:
    """The local split of a row of the hub split the holdout carves from (salted hash of its group)."""
    assert task.holdout is not None
    key = f"{task.holdout.salt}:{row.get(task.holdout.group_field)}".encode()
    bucket = int(hashlib.sha256(key).hexdigest()[:8], 16) / 16**8
    edge = 0.0
    for split, fraction in task.holdout.fractions:
        edge += fraction
        if bucket < edge:
            return split
    return task.holdout.from_split


def convert_task(task: IntermediateTask, hub_rows: Mapping[str, Iterable[Mapping]]) -> dict[str, list[dict]]:
    """Local splits of a task from its hub splits (hub split name -> rows)."""
    local: dict[str, list[dict]] = {split: [] for split in task.splits}
    for split, hub_split in task.hub_splits.items():
        for index, row in enumerate(hub_rows[hub_split]):
            record = hub_record(task, row, f"{task.name}-{hub_split}-{index}")
            if record is None:
                continue
            carved = task.holdout is not None and split == task.holdout.from_split
            local[holdout_split(task, row) if carved else split].append(record)
    return local


def fetch_task_from_hub(task: IntermediateTask, dest: Path) -> str:
    """Download one task's hub splits and write its local splits; a summary line."""
    if task.hub_id is None:
        return f"{task.folder}: SKIPPED, no hub copy exists; fetch it from a mirror (--mirror)"
    datasets = _require_datasets()
    hub_rows = {
        hub_split: datasets.load_dataset(task.hub_id, task.hub_config, split=hub_split)
        for hub_split in set(task.hub_splits.values())
    }
    local = convert_task(task, hub_rows)
    folder = dest / task.folder
    counts = {split: _write_jsonl(folder / f"{split}.jsonl", rows) for split, rows in local.items()}
    config = f" ({task.hub_config})" if task.hub_config else ""
    return f"{task.folder}: {counts} from {task.hub_id}{config}"


def fetch_from_hub(dest: Path) -> Iterator[str]:
    """Download every folder that has a hub copy, yielding one summary line per folder as it goes."""
    yield fetch_mbxp_from_hub(dest)
    for task in INTERMEDIATE_TASKS.values():
        yield fetch_task_from_hub(task, dest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m itt_sweep.data.fetch", description="Fill the data dir.")
    parser.add_argument("--mirror", help=f"copy from this dir (default ${MIRROR_ENV_VAR}); else the hub")
    parser.add_argument("--dest", help=f"data directory to fill (default ${ENV_VAR}, else ./{DEFAULT_DIR})")
    args = parser.parse_args(argv)
    mirror = args.mirror or os.environ.get(MIRROR_ENV_VAR)
    dest = Path(args.dest or os.environ.get(ENV_VAR) or DEFAULT_DIR).expanduser().resolve()
    dest.mkdir(parents=True, exist_ok=True)
    lines = fetch_from_mirror(Path(mirror).expanduser().resolve(), dest) if mirror else fetch_from_hub(dest)
    try:
        for line in lines:
            print(line, flush=True)
    except DataNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
