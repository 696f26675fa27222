"""The chat prompt format: replies turned back into completions of the MBXP prompt, in every language."""

from __future__ import annotations

import pytest

from itt_sweep.data.chat import completion_from_reply, extract_code, instruction, training_reply
from itt_sweep.data.mbxp import LANGUAGES, load_problems


def _squash(text: str) -> str:
    return "".join(text.split())


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_reply_that_restates_the_prompt_gives_back_the_completion(language, data_dir):
    """What stage 2 teaches in chat format (the fenced prompt + solution) must score as that solution."""
    problems = [p for p in load_problems(language, "train", data_dir=data_dir) if p.canonical_solution][:40]
    if not problems:
        pytest.skip(f"MBXP {language} has no canonical solutions")
    for p in problems:
        reply = "Here you go:\n" + training_reply(p.prompt, p.canonical_solution, language) + "\nIt works by ..."
        completion = completion_from_reply(p.prompt, reply, p.entry_point, language)
        assert _squash(p.prompt + completion) == _squash(p.prompt + p.canonical_solution), p.task_id


def test_code_is_the_first_fenced_block_or_the_raw_reply():
    assert extract_code("Sure!\n```python\nx = 1\n```\nand\n```python\ny = 2\n```") == "x = 1"
    assert extract_code("```java\nreturn 1;\n").strip() == "return 1;"  # cut off before its closing fence
    assert extract_code("    return a + b\n") == "    return a + b\n"


def test_a_reply_with_only_a_new_signature_or_only_a_body():
    prompt = 'def add(a, b):\n    """Add two numbers.\n    >>> add(1, 2)\n    3\n    """\n'
    # restates the signature but not the docstring: the body follows the def line
    assert completion_from_reply(prompt, "```python\ndef add(a, b):\n    return a + b\n```", "add", "python") == \
        "    return a + b\n"
    # a doc example naming the function is not its definition
    java = "class P {\n    /** > add(1, 2) */\n    public static int add(int a, int b) {\n"
    reply = "```java\n// add(1, 2) is 3\npublic static int add(int a, int b) {\n    return a + b;\n}\n}\n```"
    assert completion_from_reply(java, reply, "add", "java") == "    return a + b;\n}\n}\n"
    assert completion_from_reply(prompt, "    return a + b", "add", "python") == "    return a + b\n"


def test_instruction_carries_the_prompt_in_a_fence():
    text = instruction("def f(x):\n", "python")
    assert "```python\ndef f(x):\n```" in text and "Python" in text
