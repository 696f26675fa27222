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


def completion_from_reply(prompt: str, reply: str, entry_point: str) -> str:
    """The completion of `prompt` that the reply's code amounts to.

    A reply usually restates the signature: what follows the first line that names the entry point is the
    body, appended to the prompt as a completion would be. A reply without that line is taken as the body.
    """
    code = extract_code(reply)
    lines = code.splitlines(keepends=True)
    if entry_point:
        for i, line in enumerate(lines):
            if re.search(rf"\b{re.escape(entry_point)}\s*\(", line):
                body = "".join(lines[i + 1:])
                return body if body.endswith("\n") or not body else body + "\n"
    return code if prompt.endswith("\n") or code.startswith("\n") else "\n" + code
