"""A pass needs the tests to have run to their end, and TypeScript's type errors can be judged as MBXP does.

Problem 11 of every language, completed with code that exits the process with status 0 as soon as the
tests call the function: every assertion is skipped, so it must not pass (`execution.tests_ran`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from itt_sweep.data.mbxp import load_problems, load_sample_completions
from itt_sweep.execution import Program, assemble, available, execute
from itt_sweep.execution.tests_ran import MARKER, RULES, marked_tests
from itt_sweep.execution.types import LANGUAGES

EXIT_EARLY = {
    "python": "    import sys\n    sys.exit(0)\n",
    "javascript": "  process.exit(0);\n}",
    "typescript": "  process.exit(0);\n  return s;\n}",
    "java": "        System.exit(0);\n        return s;\n    }\n}",
    "kotlin": "    kotlin.system.exitProcess(0)\n}",
    "scala": "        sys.exit(0)\n    }",
    "csharp": "            System.Environment.Exit(0);\n            return s;\n        }",
    "cpp": "    std::exit(0);\n}",
    "go": "\tos.Exit(0)\n\treturn s\n}",  # the prompt gets `os` among its imports below
    "ruby": "  exit 0\nend\n",
    "php": "    exit(0);\n}",
    "perl": "  exit 0;\n}",
    "swift": "    exit(0)\n}",
}


def problem_11(language: str, data_dir: Path):
    return next(p for p in load_problems(language, split="test", data_dir=data_dir) if p.number == 11)


def exits_early(language: str, data_dir: Path) -> Program:
    p = problem_11(language, data_dir)
    prompt = p.prompt.replace("import (\n", "import (\n\t\"os\"\n", 1) if language == "go" else p.prompt
    return assemble(prompt, EXIT_EARLY[language], p.test, language, p.entry_point, p.task_id)


def test_every_language_has_a_marker_rule_that_applies_to_every_mbxp_test(data_dir: Path) -> None:
    """A rule that missed a test shape would silently fall back to exit-code-only verdicts."""
    assert set(RULES) == set(LANGUAGES)
    for language in LANGUAGES:
        problems = load_problems(language, data_dir=data_dir)
        unmarked = [p.task_id for p in problems
                    if marked_tests(language, assemble(p.prompt, "", p.test, language, p.entry_point,
                                                       p.task_id).tests) is None]
        assert unmarked == [], (language, unmarked[:5])


@pytest.mark.slow
def test_a_program_that_exits_0_before_its_tests_end_never_passes_in_any_language(data_dir: Path) -> None:
    languages = [language for language in EXIT_EARLY if available(language)]
    early = [exits_early(language, data_dir) for language in languages]
    verdicts = execute(early)
    for language, verdict in zip(languages, verdicts, strict=True):
        assert verdict.status == "failed", (language, verdict.status, verdict.stderr[-800:])
        assert verdict.exit_code == 0 and "before its tests ran to the end" in verdict.stderr, language
    # the same problems, right: pass, and the marker line is not part of what the verdict shows
    right = [assemble(p.prompt, p.canonical_solution, p.test, lang, p.entry_point, p.task_id)
             for lang in languages if (p := problem_11(lang, data_dir)).canonical_solution]
    for program, verdict in zip(right, execute(right), strict=True):
        assert verdict.passed, (program.language, verdict.stderr[-800:])
        assert MARKER not in verdict.stdout + verdict.stderr


def test_a_program_without_tests_passes_on_exit_0_and_keeps_its_output() -> None:
    [verdict] = execute([Program(language="python", source="print(42)", tests="")])
    assert (verdict.status, verdict.stdout) == ("passed", "42\n")


def test_printing_the_marker_early_does_not_rescue_a_failing_test(data_dir: Path) -> None:
    """The marker only counts with exit 0: a program that prints it and then fails its asserts has failed."""
    p = problem_11("python", data_dir)
    program = assemble(p.prompt, f"    print({MARKER!r})\n    return s\n", p.test, "python", p.entry_point)
    [verdict] = execute([program])
    assert verdict.status == "failed"


def typescript_problem(data_dir: Path, number: int, mode: str, sample: bool = False) -> Program:
    p = next(p for p in load_problems("typescript", split="test", data_dir=data_dir) if p.number == number)
    body = load_sample_completions("typescript", data_dir=data_dir)[p.task_id][0] if sample else p.canonical_solution
    program = assemble(p.prompt, body, p.test, "typescript", p.entry_point, p.task_id)
    return program.model_copy(update={"type_errors": mode})


# The 21 TypeScript verdicts of the benchmark set (40 canonical solutions + 40 samples) where mxeval differs
# from `typescript_type_errors: fail` (issue 17): syntactically broken canonical solutions, whose tests
# never run (mxeval passes them), and programs with type errors only (mxeval passes them: they run as JS).
TS_BROKEN_CANONICAL = (13, 15, 16, 17, 18, 21, 29, 30, 31, 33, 39, 40, 44, 48, 50)
TS_TYPE_ERRORS_ONLY = {"canonical": (23, 25, 32), "sample": (24, 33, 50)}


@pytest.mark.slow
@pytest.mark.skipif(not available("typescript"), reason="typescript toolchain missing")
def test_the_21_mbtsp_verdicts_that_differ_from_mxeval_are_the_ones_the_option_governs(data_dir: Path) -> None:
    """`ignore` reproduces mxeval's verdicts on the 6 type-error-only programs and no other; the 15 broken
    canonical solutions fail in both modes, because their tests never run."""
    cases = [(n, False) for n in TS_BROKEN_CANONICAL + TS_TYPE_ERRORS_ONLY["canonical"]]
    cases += [(n, True) for n in TS_TYPE_ERRORS_ONLY["sample"]]
    programs = [typescript_problem(data_dir, n, mode, sample) for mode in ("fail", "ignore") for n, sample in cases]
    statuses = [v.status for v in execute(programs)]
    fail, ignore = statuses[:len(cases)], statuses[len(cases):]
    assert fail == ["compile_error"] * len(cases), list(zip(cases, fail, strict=True))
    broken = len(TS_BROKEN_CANONICAL)
    assert ignore == ["compile_error"] * broken + ["passed"] * (len(cases) - broken), \
        list(zip(cases, ignore, strict=True))


@pytest.mark.skipif(not available("typescript"), reason="typescript toolchain missing")
def test_typescript_type_errors_fail_by_default_and_run_when_ignored(data_dir: Path) -> None:
    """MBTSP/25 and 32 have type errors only (mxeval passes them); MBTSP/13 and 15 are syntax errors: those
    fail in both modes. Both modes in one call, so neither batch leaks into the other."""
    numbers = (25, 32, 13, 15)
    programs = [typescript_problem(data_dir, n, mode) for mode in ("fail", "ignore") for n in numbers]
    verdicts = dict(zip([(p.type_errors, p.task_id) for p in programs], execute(programs), strict=True))
    for n in numbers:
        assert verdicts["fail", f"MBTSP/{n}"].status == "compile_error", n
    assert [verdicts["ignore", f"MBTSP/{n}"].status for n in numbers] == ["passed", "passed", "compile_error",
                                                                          "compile_error"]
    assert "TS1" in verdicts["ignore", "MBTSP/13"].stderr


def test_the_typescript_mode_reaches_typescript_programs_only_and_is_a_trial_param(data_dir: Path) -> None:
    """What stage 3 hands the executor, and what a trial's MLflow params and config.json carry."""
    from itt_sweep.config import EvaluationSpec
    from itt_sweep.evaluate.stage3 import programs_of
    from itt_sweep.tracking.mlflow_runs import flatten

    spec = EvaluationSpec(typescript_type_errors="ignore")
    modes = {language: {p.type_errors for p in programs_of(language, [problem_11(language, data_dir)], [["x"]],
                                                            spec)} for language in ("typescript", "javascript")}
    assert modes == {"typescript": {"ignore"}, "javascript": {"fail"}}
    assert flatten("", {"evaluation": spec.model_dump()})["evaluation.typescript_type_errors"] == "ignore"
