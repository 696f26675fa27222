"""Data for itt-sweep: MBXP problems and splits, the intermediate-task registry, and prompt formats.

Submodules: `paths` (where data lives), `mbxp` (problems, splits, sample completions), `tasks`
(intermediate tasks and the `all` mixture), `prompts` (what the model sees), `fetch` (`make data`).
"""

from itt_sweep.data.mbxp import (
    LANGUAGES,
    MBXP_VERSION,
    Problem,
    load_problems,
    load_sample_completions,
    split_of,
)
from itt_sweep.data.paths import DataNotFoundError, data_dir
from itt_sweep.data.prompts import PROMPT_FORMAT_VERSION, format_example, format_problem, training_pair
from itt_sweep.data.tasks import (
    ALL,
    INTERMEDIATE_TASKS,
    NONE,
    Example,
    IntermediateTask,
    load_task_examples,
    task_names,
    task_version,
)

__all__ = [
    "ALL",
    "INTERMEDIATE_TASKS",
    "LANGUAGES",
    "MBXP_VERSION",
    "NONE",
    "PROMPT_FORMAT_VERSION",
    "DataNotFoundError",
    "Example",
    "IntermediateTask",
    "Problem",
    "data_dir",
    "format_example",
    "format_problem",
    "load_problems",
    "load_sample_completions",
    "load_task_examples",
    "split_of",
    "task_names",
    "task_version",
    "training_pair",
]
