"""Prompt formats: what the model sees for each intermediate-task kind and for MBXP problems."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from itt_sweep.data.mbxp import LANGUAGES, load_problems
from itt_sweep.data.prompts import (
    FORMATS,
    LINE_COMMENT,
    format_example,
    format_problem,
    line_comment,
    training_pair,
)
from itt_sweep.data.tasks import INTERMEDIATE_TASKS, Example

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = Path(os.environ.get("ITT_DATA_DIR") or REPO_ROOT.parent / "shared" / "data")
    if not (path / "mbxp" / "metadata.json").is_file():
        pytest.skip(f"no data at {path}: run `make data` or set ITT_DATA_DIR")
    return path.resolve()


def first(shared_data: Path, task: str, **languages: str) -> Example:
    """The first validation example of `task` whose languages match."""
    for example in INTERMEDIATE_TASKS[task].load("validation", shared_data):
        if all(getattr(example, key) == value for key, value in languages.items()):
            return example
    raise AssertionError(f"no {task} example with {languages}")


def test_nl_to_code_comments_the_task_in_python_then_expects_the_code(shared_data):
    example = first(shared_data, "conala_nl2python")
    prompt, completion = format_example(example)
    assert prompt == f"# Write Python code for this task:\n# {example.source}\n"
    assert completion == example.target


@pytest.mark.parametrize(
    ("language", "prefix"), [("ruby", "# "), ("perl", "# "), ("kotlin", "// "), ("go", "// ")]
)
def test_nl_to_code_uses_the_comment_syntax_of_the_target_language(shared_data, language, prefix):
    example = first(shared_data, "rosetta_code_nl2code", target_lang=language)
    prompt, completion = format_example(example)
    assert "\n" in example.source.strip()  # a multi-paragraph description
    assert all(line == prefix.strip() or line.startswith(prefix) for line in prompt.splitlines())
    assert example.source.splitlines()[0] in prompt
    assert completion == example.target


def test_concode_keeps_the_class_context_in_the_java_comment(shared_data):
    example = first(shared_data, "concode_nl2java")
    prompt, completion = format_example(example)
    assert prompt == f"// Write Java code for this task:\n// {example.source}\n"
    assert "concode_field_sep" in prompt and completion == example.target


@pytest.mark.parametrize(
    ("language", "prefix", "name"), [("csharp", "//", "C#"), ("sql", "--", "SQL"), ("python", "#", "Python")]
)
def test_code_to_nl_asks_for_a_summary_comment_after_the_code(shared_data, language, prefix, name):
    example = first(shared_data, "codenn_code2title", source_lang=language)
    prompt, completion = format_example(example)
    assert prompt.startswith(example.source.rstrip("\n"))
    assert prompt.endswith(f"\n{prefix} Summary of the {name} code above:\n{prefix}")
    assert completion == " " + example.target


def test_multi_line_summaries_stay_inside_comments():
    example = Example("x", "SELECT 1", "first line\nsecond line", "sql", "en", "code_to_nl")
    prompt, completion = format_example(example)
    assert (prompt + completion).splitlines()[-2:] == ["-- first line", "-- second line"]


def test_java_to_csharp_translation_has_a_header_per_language(shared_data):
    example = first(shared_data, "codexglue_java_cs_translation")
    prompt, completion = format_example(example)
    assert prompt == f"// Java:\n{example.source}\n// C#:\n"
    assert completion == example.target


def test_translation_headers_use_each_sides_comment_syntax(shared_data):
    example = first(shared_data, "transcoder_gfg_translation", source_lang="python", target_lang="java")
    prompt, completion = format_example(example)
    assert prompt == f"# Python:\n{example.source.rstrip()}\n// Java:\n"
    assert completion == example.target
    reverse = first(shared_data, "transcoder_gfg_translation", source_lang="cpp", target_lang="python")
    assert format_example(reverse)[0].startswith("// C++:\n") and format_example(reverse)[0].endswith(
        "\n# Python:\n"
    )


def test_code_repair_shows_the_buggy_code_then_asks_for_the_fix(shared_data):
    example = first(shared_data, "codexglue_refinement_small_java")
    prompt, completion = format_example(example)
    assert prompt == f"// Buggy Java:\n{example.source}\n// Fixed Java:\n"
    assert completion == example.target


def test_every_example_of_every_task_formats(shared_data):
    for task in INTERMEDIATE_TASKS.values():
        for example in task.load("validation", shared_data):
            prompt, completion = format_example(example)
            assert prompt.strip() and completion.strip(), example.id


def test_unknown_kind_names_the_allowed_kinds():
    example = Example("x", "a", "b", "en", "python", "qa")
    with pytest.raises(ValueError, match="allowed: " + ", ".join(FORMATS)):
        format_example(example)


def test_every_language_in_the_data_has_a_known_comment_syntax(shared_data):
    languages = {lang for task in INTERMEDIATE_TASKS.values() for ex in task.load("validation", shared_data)
                 for lang in (ex.source_lang, ex.target_lang)}  # fmt: skip
    assert languages | set(LANGUAGES) <= set(LINE_COMMENT)
    assert line_comment("en") is None


@pytest.mark.parametrize("language", LANGUAGES)
def test_mbxp_prompt_is_the_dataset_prompt(shared_data, language):
    problem = load_problems(language, "test", shared_data, limit=1)[0]
    assert format_problem(problem) == problem.prompt
    assert problem.entry_point in format_problem(problem)


def test_training_pair_is_prompt_and_canonical_solution_or_none(shared_data):
    python = load_problems("python", "train", shared_data, limit=1)[0]
    assert training_pair(python) == (python.prompt, python.canonical_solution)
    go = load_problems("go", "train", shared_data, limit=1)[0]
    assert training_pair(go) is None
    assert training_pair(dataclasses.replace(python, canonical_solution=None)) is None
