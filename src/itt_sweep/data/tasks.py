"""The registry of intermediate tasks (stage 1), and the multi-task mixture `all`.

Each task is a declarative entry (folder, kind, hub id and field mapping, version), in the manner of
lm-evaluation-harness task files, so adding a task is adding an entry, not a branch. The version of
an entry goes into stage-cache keys and MLflow tags: bump it whenever the data or its mapping changes.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from itt_sweep.data.mbxp import LANGUAGES, problems_file
from itt_sweep.data.paths import data_dir as resolve_data_dir
from itt_sweep.data.paths import read_jsonl, require_file

NONE = "none"
ALL = "all"
# The compute-matched control: stage 1 trains, for as many steps as any intermediate task, on the target
# task's own training data (the source language's MBPP train problems, the stage-2 pairs). It separates
# "more training" from "intermediate-task data": a task that only beats `none` but not this row has shown
# no more than extra steps can give.
CONTROL = "target_control"
CONTROL_VERSION = "target_control-1"
KINDS = ("nl_to_code", "code_to_nl", "code_translation", "code_repair")
MIXTURE_VERSION = "mix-1"


@dataclass(frozen=True)
class Example:
    """One intermediate-task pair; languages are codes such as `en`, `python`, `csharp`."""

    id: str
    source: str
    target: str
    source_lang: str
    target_lang: str
    kind: str


@dataclass(frozen=True)
class Holdout:
    """Local splits carved out of a hub split that has no counterpart, by a salted hash of a group field.

    Grouping keeps every record of one question/task on the same side of the split.
    """

    group_field: str
    fractions: tuple[tuple[str, float], ...]
    salt: str
    from_split: str = "train"


@dataclass(frozen=True)
class IntermediateTask:
    """A registry entry: where the local copy lives and how the hub version maps onto it.

    `field_map` maps our record fields to hub fields; `"a|b"` means the first non-empty of `a`, `b`.
    `hub_splits` maps local split -> hub split; `holdout` builds the local splits the hub lacks.
    """

    name: str
    folder: str
    kind: str
    hub_id: str | None
    hub_config: str | None
    field_map: Mapping[str, str] = field(hash=False)
    version: str
    description: str
    splits: tuple[str, ...] = ("train", "validation")
    hub_splits: Mapping[str, str] = field(default_factory=dict, hash=False)
    holdout: Holdout | None = None
    source_lang: str | None = None
    target_lang: str | None = None
    target_langs: tuple[str, ...] | None = None  # keep only these target languages from the hub

    def load(self, split: str, data_dir: Path | None = None, limit: int | None = None) -> list[Example]:
        """A local split, in file order; with a `limit`, a fixed sample of that many spread over the file.

        Files are often grouped (CODE-NN's holds all its C# first, then SQL, then Python), so the first
        `limit` lines would be a biased slice. The sample depends on the task and split alone, not on the
        trial's seed: every seed of a cell trains on the same data and shares its stage-1 cache entry.
        """
        if split not in self.splits:
            raise ValueError(f"task {self.name!r} has no split {split!r}; it has {', '.join(self.splits)}")
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        path = resolve_data_dir(data_dir) / self.folder / f"{split}.jsonl"
        require_file(path, f"split {split!r} of task {self.name!r}")
        examples = _parse_examples(str(path), path.stat().st_mtime_ns)
        if limit is None or limit >= len(examples):
            return list(examples)
        chosen = sorted(random.Random(f"{self.name}/{split}").sample(range(len(examples)), limit))
        return [examples[index] for index in chosen]

    def files(self, data_dir: Path | None = None) -> list[Path]:
        """Every split file of the local copy (their fingerprint goes into stage-cache keys)."""
        folder = resolve_data_dir(data_dir) / self.folder
        return [require_file(folder / f"{split}.jsonl", f"split {split!r} of task {self.name!r}")
                for split in self.splits]


def _task(**kwargs) -> tuple[str, IntermediateTask]:
    task = IntermediateTask(folder=kwargs["name"], **kwargs)
    return task.name, task


INTERMEDIATE_TASKS: dict[str, IntermediateTask] = dict(
    [
        _task(
            name="codenn_code2title",
            kind="code_to_nl",
            hub_id=None,
            hub_config=None,
            field_map={},
            version="codenn_code2title-1",
            description="CODE-NN: Stack Overflow title from answer code (C#, SQL, Python -> en); local only",
        ),
        _task(
            name="codexglue_java_cs_translation",
            kind="code_translation",
            hub_id="google/code_x_glue_cc_code_to_code_trans",
            hub_config=None,
            field_map={"source": "java", "target": "cs"},
            version="codexglue_java_cs_translation-1",
            description="CodeXGLUE code-to-code translation, Java -> C#",
            splits=("train", "validation", "test"),
            hub_splits={"train": "train", "validation": "validation", "test": "test"},
            source_lang="java",
            target_lang="csharp",
        ),
        _task(
            name="codexglue_refinement_small_java",
            kind="code_repair",
            hub_id="google/code_x_glue_cc_code_refinement",
            hub_config="small",
            field_map={"source": "buggy", "target": "fixed"},
            version="codexglue_refinement_small_java-1",
            description="CodeXGLUE code refinement (Bugs2Fix small): buggy Java -> fixed Java",
            hub_splits={"train": "train", "validation": "validation"},
            source_lang="java",
            target_lang="java",
        ),
        _task(
            name="conala_nl2python",
            kind="nl_to_code",
            hub_id="neulab/conala",
            hub_config="curated",
            field_map={"source": "rewritten_intent|intent", "target": "snippet"},
            version="conala_nl2python-1",
            description="CoNaLa curated: English intent -> Python snippet",
            splits=("train", "validation", "test"),
            hub_splits={"train": "train", "test": "test"},
            holdout=Holdout("question_id", (("validation", 0.1),), salt="conala"),
            source_lang="en",
            target_lang="python",
        ),
        _task(
            name="concode_nl2java",
            kind="nl_to_code",
            hub_id="google/code_x_glue_tc_text_to_code",
            hub_config=None,
            field_map={"source": "nl", "target": "code"},
            version="concode_nl2java-1",
            description="CONCODE: English + class context -> Java method",
            hub_splits={"train": "train", "validation": "validation"},
            source_lang="en",
            target_lang="java",
        ),
        _task(
            name="rosetta_code_nl2code",
            kind="nl_to_code",
            hub_id="christopher/rosetta-code",
            hub_config=None,
            field_map={"source": "task_description", "target": "code", "target_lang": "language_name"},
            version="rosetta_code_nl2code-1",
            description="Rosetta Code: task description -> program in the 13 MBXP languages",
            splits=("train", "validation", "test"),
            hub_splits={"train": "train"},
            holdout=Holdout("task_name", (("validation", 0.05), ("test", 0.05)), salt="rosetta"),
            source_lang="en",
            target_langs=LANGUAGES,
        ),
        _task(
            name="transcoder_gfg_translation",
            kind="code_translation",
            hub_id=None,
            hub_config=None,
            field_map={},
            version="transcoder_gfg_translation-1",
            description="TransCoder GeeksforGeeks functions, pairs of C++/Java/Python/C/Go/Rust; local only",
            splits=("train", "validation", "test"),
        ),
    ]
)


def task_names() -> list[str]:
    """Every name a sweep may use for the intermediate task, `none` first, then the registry, the control
    and `all` last."""
    return [NONE, *sorted(INTERMEDIATE_TASKS), CONTROL, ALL]


def check_task(name: str) -> str:
    """Return `name` if it is a known task name, else raise a ValueError listing the allowed names."""
    if name not in task_names():
        raise ValueError(f"unknown intermediate task {name!r}; allowed: {', '.join(task_names())}")
    return name


def load_task_examples(
    name: str,
    split: str,
    data_dir: Path | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> list[Example]:
    """Examples of one task (a fixed sample of `limit`), of the mixture `all`, or none for `none`.

    `all` mixes every task that has `split`, examples-proportionally with T5's artificial size cap
    chosen so the mixture holds `limit` examples (each task gives min(size, cap); every example when
    `limit` is None); each task gives its fixed sample (`IntermediateTask.load`), and `random.Random(seed)`
    interleaves them.
    """
    check_task(name)
    if name == NONE:
        return []
    if name == CONTROL:
        raise ValueError(f"{CONTROL} has no examples of its own: stage 1 takes the source language's MBPP train "
                         "problems (train.stage_data)")
    if name != ALL:
        return INTERMEDIATE_TASKS[name].load(split, data_dir, limit)
    parts = [task for task in INTERMEDIATE_TASKS.values() if split in task.splits]
    if not parts:
        raise ValueError(f"no intermediate task has a split {split!r}")
    sizes = {task.name: len(task.load(split, data_dir)) for task in parts}
    quotas = mixture_quotas(sizes, limit)
    examples = [ex for task in parts for ex in task.load(split, data_dir, quotas[task.name])]
    random.Random(seed).shuffle(examples)
    return examples


def mixture_quotas(sizes: Mapping[str, int], limit: int | None) -> dict[str, int]:
    """How many examples each task gives to a mixture of at most `limit` examples.

    The cap is the largest equal share the small tasks leave room for: tasks smaller than the share
    give everything, the rest split what remains evenly (the odd ones go to the first names).
    """
    if limit is None:
        return dict(sizes)
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    quotas: dict[str, int] = {}
    remaining = min(limit, sum(sizes.values()))
    pending = sorted(sizes, key=lambda name: (sizes[name], name))
    while pending:
        share, extra = divmod(remaining, len(pending))
        smallest = pending[0]
        if sizes[smallest] <= share:
            quotas[smallest] = sizes[smallest]
            remaining -= sizes[smallest]
            pending.pop(0)
            continue
        for index, name in enumerate(sorted(pending)):
            quotas[name] = share + (1 if index < extra else 0)
        break
    return {name: quotas[name] for name in sizes}


def task_version(name: str) -> str:
    """The version string of a task for cache keys; `all` names its mixing rule and every part."""
    check_task(name)
    if name in (NONE, CONTROL):
        return CONTROL_VERSION if name == CONTROL else NONE
    if name == ALL:
        parts = ",".join(INTERMEDIATE_TASKS[part].version for part in sorted(INTERMEDIATE_TASKS))
        return f"{ALL}:{MIXTURE_VERSION}[{parts}]"
    return INTERMEDIATE_TASKS[name].version


def task_files(name: str, data_dir: Path | None = None, source_language: str | None = None) -> list[Path]:
    """The data files a task (or every part of `all`) reads; none for `none`; the source language's MBXP
    file for the control."""
    check_task(name)
    if name == NONE:
        return []
    if name == CONTROL:
        if source_language is None:
            raise ValueError(f"{CONTROL} reads the source language's problems: name the source language")
        return [problems_file(source_language, data_dir)]
    tasks = INTERMEDIATE_TASKS.values() if name == ALL else [INTERMEDIATE_TASKS[name]]
    return [path for task in tasks for path in task.files(data_dir)]


@functools.lru_cache(maxsize=32)
def _parse_examples(path: str, mtime_ns: int) -> tuple[Example, ...]:
    try:
        return tuple(
            Example(
                id=str(record["id"]),
                source=record["source"],
                target=record["target"],
                source_lang=record["source_lang"],
                target_lang=record["target_lang"],
                kind=record["kind"],
            )
            for record in read_jsonl(path)
        )
    except KeyError as missing:
        raise ValueError(f"{path}: a record lacks field {missing}; see INTERMEDIATE_TASKS.md") from None
