"""Run generated code safely enough to score it: sandbox, per-language recipes, batching, verdicts, pools.

    from itt_sweep.execution import assemble, execute
    verdicts = execute([assemble(prompt, completion, test, "java", entry_point)])

Read `sandbox`'s docstring for what the isolation does and does not guarantee, `batching`'s for how many
programs share one compiler call, `distributed`'s for execution as Ray tasks.
"""

from itt_sweep.execution.executor import classify, execute, execute_one
from itt_sweep.execution.known_bad import KnownBad, known_bad_canonical
from itt_sweep.execution.programs import assemble, trim_completion
from itt_sweep.execution.recipes import RECIPES, Recipe, available, doctor, get_recipe
from itt_sweep.execution.sandbox import SandboxUnavailableError, bwrap_status
from itt_sweep.execution.types import LANGUAGES, Limits, Program, Status, Verdict

__all__ = [
    "LANGUAGES", "RECIPES", "KnownBad", "Limits", "Program", "Recipe", "SandboxUnavailableError", "Status",
    "Verdict", "assemble", "available", "bwrap_status", "classify", "doctor", "execute", "execute_one",
    "get_recipe", "known_bad_canonical", "trim_completion",
]
