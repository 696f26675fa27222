"""How the MBXP pieces (prompt, completion, test) become one runnable program, per language.

MBXP is written so that plain concatenation works almost everywhere: the prompt opens the function (and, in
Java and C#, its class), the completion closes it, and the test follows with its own entry (`class Main`,
`main()`, top-level statements). Python is the exception: its test only defines `check(candidate)`, so the
call is added here, and the test's `check` is renamed so that a solution named `check` (MBPP/56, 349, 899,
967), or one with a helper of that name, is not overwritten by it.
"""

from __future__ import annotations

import re

from itt_sweep.execution.recipes import get_recipe
from itt_sweep.execution.types import Program

PYTHON_CHECK = "_mbxp_check"
_PYTHON_CHECK_DEF = re.compile(r"^def check\(", re.MULTILINE)


def assemble(problem_prompt: str, completion: str, test: str, language: str, entry_point: str = "",
             task_id: str = "") -> Program:
    """The program that checks `completion` against the problem's tests."""
    source = problem_prompt + completion
    is_python = language.strip().lower() in ("python", "py")
    tests = _python_tests(test, entry_point, task_id) if is_python else test
    return Program(language=language, source=source, tests=tests, entry_point=entry_point, task_id=task_id)


def _python_tests(test: str, entry_point: str, task_id: str) -> str:
    if not entry_point.isidentifier():
        raise ValueError(f"{task_id or 'python problem'}: entry point {entry_point!r} is not a Python name; "
                         "the test's check(candidate) needs the function to call")
    if not _PYTHON_CHECK_DEF.search(test):
        raise ValueError(f"{task_id or 'python problem'}: the test defines no top-level `def check(`")
    renamed = _PYTHON_CHECK_DEF.sub(f"def {PYTHON_CHECK}(", test)
    return f"{renamed}\n\n{PYTHON_CHECK}({entry_point})\n"


def trim_completion(language: str, generated: str) -> str:
    """Cut generated text where the function ends: at the first stop sequence of the language's recipe.

    In brace languages the stop ("\\n}") is the closing brace itself and stays in the completion; elsewhere
    the stop begins the next top-level statement and is dropped.
    """
    recipe = get_recipe(language)
    cuts = [(index, stop) for stop in recipe.stop_sequences if (index := generated.find(stop)) >= 0]
    if not cuts:
        return generated
    index, stop = min(cuts)
    return generated[: index + len(stop)] if recipe.keep_stop else generated[:index]
