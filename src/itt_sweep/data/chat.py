"""The chat prompt format, for instruct models: a task as a user turn, code back from the assistant's reply.

`prompt_format: completion` feeds the MBXP prompt as is and the model continues it. `chat` wraps the prompt in
the tokenizer's chat template as a user turn that asks for the completed code, and the reply (a fenced block,
or raw code) is turned back into a completion of the original prompt, so the program is assembled exactly as
in completion format: prompt + completion + tests. Training in chat format teaches the same shape: the
assistant answers with one fenced block holding the whole completed code.
"""

from __future__ import annotations

import re
from typing import Any

from itt_sweep.data.prompts import display_name

FENCE = re.compile(r"```[^\n`]*\n(.*?)(?:\n```|$)", re.DOTALL)


def instruction(prompt: str, language: str) -> str:
    """The user turn for an MBXP prompt."""
    lang = display_name(language)
    return (f"Complete the following {lang} code. Reply with the whole completed code in one ```{language} "
            f"block, keeping the given signature.\n\n```{language}\n{prompt.rstrip()}\n```")


def chat_prompt(tokenizer: Any, user: str) -> str:
    """The text the model generates after: the user turn and the opening of the assistant's turn."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("prompt_format: chat needs a tokenizer with a chat template")
    return tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                         add_generation_prompt=True)


def training_reply(prompt: str, solution: str, language: str) -> str:
    """The assistant turn that stage 2 teaches in chat format: the whole completed code, fenced."""
    return f"```{language}\n{(prompt + solution).strip(chr(10))}\n```"


def extract_code(reply: str) -> str:
    """The code of a reply: its first fenced block (an unclosed one runs to the end), else the reply itself."""
    match = FENCE.search(reply)
    return match.group(1) if match else reply


def signature_line(prompt: str, entry_point: str, language: str) -> str | None:
    """The prompt's line that opens the function: Python's `def` line (its docstring follows it), elsewhere the
    prompt's last line (MBXP prompts end with the open signature; their doc comments, which also name the
    function in example calls, come before it)."""
    lines = [line for line in prompt.splitlines() if line.strip()]
    if not lines:
        return None
    if language == "python":
        return next((line for line in lines if re.match(rf"\s*def\s+{re.escape(entry_point)}\s*\(", line)), None)
    return lines[-1]


def completion_from_reply(prompt: str, reply: str, entry_point: str, language: str = "") -> str:
    """The completion of `prompt` that the reply's code amounts to.

    A reply usually restates the prompt: what follows its copy of the prompt's last lines is the body,
    appended to the prompt as a completion would be. Failing that, what follows the prompt's signature line,
    then what follows the first line that defines the entry point (not a comment naming it); a reply with
    none of these is taken as the body itself.
    """
    lines = extract_code(reply).splitlines(keepends=True)
    prompt_lines = [line for line in prompt.splitlines() if line.strip()]
    found = _after_block(lines, prompt_lines[-3:])
    signature = signature_line(prompt, entry_point, language)
    if found is None and signature is not None:
        found = _after_block(lines, [signature])
    if found is None and entry_point:
        found = next(((i + 1, "") for i, line in enumerate(lines)
                      if re.search(rf"\b{re.escape(entry_point)}\s*[(=]", line) and not COMMENT.match(line)), None)
    cut, rest_of_line = found if found is not None else (0, "")
    body = rest_of_line + "".join(lines[cut:])
    if body and not body.endswith("\n"):
        body += "\n"
    if body and not rest_of_line and not prompt.endswith("\n") and not body.startswith("\n"):
        body = "\n" + body  # the prompt stops mid-line (Ruby's `def f(x)`): the body starts on the next one
    return body


def _after_block(lines: list[str], block: list[str]) -> tuple[int, str] | None:
    """Where `block` (the prompt's last lines) ends in `lines`: the index of the next line, and what follows
    the block on its own last line (a prompt may stop mid-line, its completion going on in that line)."""
    want = [line.strip() for line in block]
    if not want:
        return None
    have = [line.strip() for line in lines]
    for i in range(len(have) - len(want) + 1):
        last = i + len(want) - 1
        if have[i:last] == want[:-1] and have[last].startswith(want[-1]):
            line = lines[last]
            tail = line[line.index(want[-1]) + len(want[-1]):]
            return last + 1, "" if tail.strip() == "" else tail
    return None


COMMENT = re.compile(r"\s*(#|//|/\*|\*|--|\"\"\"|>>>)")
