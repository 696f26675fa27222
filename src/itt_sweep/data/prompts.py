"""What the model sees: the text formats of intermediate examples and of MBXP problems.

Intermediate examples are written as source files of their languages (natural language goes into
comments with that language's comment syntax), so that stage 1 teaches in the same surface form that
MBXP prompts use: a commented task followed by code. Completions carry no end-of-sequence marker; the
trainer appends the tokenizer's EOS. Bump `PROMPT_FORMAT_VERSION` whenever any format here changes:
it goes into stage-cache keys.
"""

from __future__ import annotations

from collections.abc import Callable

from itt_sweep.data.mbxp import Problem
from itt_sweep.data.tasks import Example

PROMPT_FORMAT_VERSION = "prompts-1"

# Line-comment prefix per language code; `en` (natural language) has none.
LINE_COMMENT: dict[str, str | None] = {
    "python": "#", "ruby": "#", "perl": "#",
    "sql": "--",
    "java": "//", "javascript": "//", "typescript": "//", "kotlin": "//", "php": "//", "cpp": "//",
    "csharp": "//", "go": "//", "scala": "//", "swift": "//", "c": "//", "rust": "//",
    "en": None,
}  # fmt: skip
DEFAULT_LINE_COMMENT = "//"

DISPLAY_NAME: dict[str, str] = {
    "python": "Python", "java": "Java", "javascript": "JavaScript", "typescript": "TypeScript",
    "kotlin": "Kotlin", "ruby": "Ruby", "php": "PHP", "cpp": "C++", "csharp": "C#", "go": "Go",
    "perl": "Perl", "scala": "Scala", "swift": "Swift", "c": "C", "rust": "Rust", "sql": "SQL",
    "en": "English",
}  # fmt: skip


def line_comment(language: str) -> str | None:
    """The line-comment prefix of a language code (`//` for codes the table does not know)."""
    return LINE_COMMENT.get(language, DEFAULT_LINE_COMMENT)


def display_name(language: str) -> str:
    return DISPLAY_NAME.get(language, language)


def comment_block(text: str, language: str) -> str:
    """`text` as consecutive line comments of `language`, one per line, ending with a newline."""
    prefix = line_comment(language) or DEFAULT_LINE_COMMENT
    lines = text.strip("\n").splitlines() or [""]
    return "".join(f"{prefix} {line}".rstrip() + "\n" for line in lines)


def _nl_to_code(example: Example) -> tuple[str, str]:
    language = example.target_lang
    header = comment_block(f"Write {display_name(language)} code for this task:", language)
    return header + comment_block(example.source, language), example.target


def _code_to_nl(example: Example) -> tuple[str, str]:
    # The summary is generated as a comment of the source language; the completion starts with the
    # space after the comment prefix so that tokenizers attach it to the first word.
    language = example.source_lang
    prefix = line_comment(language) or DEFAULT_LINE_COMMENT
    question = f"{prefix} Summary of the {display_name(language)} code above:\n"
    prompt = example.source.rstrip("\n") + "\n" + question
    lines = example.target.strip("\n").splitlines() or [""]
    completion = " " + f"\n{prefix} ".join(lines)
    return prompt + prefix, completion


def _code_translation(example: Example) -> tuple[str, str]:
    source_header = comment_block(f"{display_name(example.source_lang)}:", example.source_lang)
    target_header = comment_block(f"{display_name(example.target_lang)}:", example.target_lang)
    return source_header + example.source.rstrip("\n") + "\n" + target_header, example.target


def _code_repair(example: Example) -> tuple[str, str]:
    language = display_name(example.source_lang)
    buggy = comment_block(f"Buggy {language}:", example.source_lang)
    fixed = comment_block(f"Fixed {language}:", example.target_lang)
    return buggy + example.source.rstrip("\n") + "\n" + fixed, example.target


FORMATS: dict[str, Callable[[Example], tuple[str, str]]] = {
    "nl_to_code": _nl_to_code,
    "code_to_nl": _code_to_nl,
    "code_translation": _code_translation,
    "code_repair": _code_repair,
}


def format_example(example: Example) -> tuple[str, str]:
    """(prompt, completion) for training on an intermediate example; the trainer appends EOS."""
    try:
        formatter = FORMATS[example.kind]
    except KeyError:
        allowed = ", ".join(FORMATS)
        raise ValueError(f"example {example.id}: unknown kind {example.kind!r}; allowed: {allowed}") from None
    return formatter(example)


def format_problem(problem: Problem) -> str:
    """The generation prompt of an MBXP problem: the dataset prompt as is (signature + docstring)."""
    return problem.prompt


def training_pair(problem: Problem) -> tuple[str, str] | None:
    """(prompt, canonical solution) for stage-2 training, or None when the problem has no solution."""
    if problem.canonical_solution is None:
        return None
    return format_problem(problem), problem.canonical_solution
