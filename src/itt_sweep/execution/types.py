"""The executor's boundary: what a caller asks to run (`Program`) and what comes back (`Verdict`).

These are pydantic models so that a malformed request fails where it is built, naming the field, instead of
deep inside a worker thread; everything behind this boundary may assume a well-formed program.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Language = Literal[
    "python", "java", "javascript", "typescript", "kotlin", "ruby", "php",
    "cpp", "csharp", "go", "perl", "scala", "swift",
]
LANGUAGES: tuple[str, ...] = Language.__args__  # type: ignore[attr-defined]

Status = Literal[
    "passed", "failed", "compile_error", "runtime_error", "timeout", "memory_exceeded", "sandbox_error",
]

_ALIASES = {"py": "python", "js": "javascript", "ts": "typescript", "c++": "cpp", "cs": "csharp",
            "c#": "csharp", "rb": "ruby", "kt": "kotlin", "golang": "go", "pl": "perl"}


class Limits(BaseModel):
    """Resource ceilings for one program; compile and run steps each get their own time budget."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timeout_s: float = Field(10.0, gt=0, le=3600)
    compile_timeout_s: float = Field(60.0, gt=0, le=3600)
    memory_mb: int = Field(2048, ge=64, le=1 << 20)
    max_output_bytes: int = Field(65536, ge=256)
    max_processes: int = Field(64, ge=4)
    max_file_mb: int = Field(64, ge=1)


class Program(BaseModel):
    """One complete program (prompt + completion in `source`) and the tests appended after it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    language: Language
    source: str
    tests: str
    entry_point: str = ""
    task_id: str = ""
    limits: Limits = Limits()
    # A compile that reports type errors only, in a language whose compiler still emits runnable code
    # (TypeScript): "fail" = compile_error (ours), "ignore" = run it anyway, as mxeval and the MBXP paper do.
    # Syntax errors fail in both modes.
    type_errors: Literal["fail", "ignore"] = "fail"

    @field_validator("language", mode="before")
    @classmethod
    def _normalise_language(cls, value: object) -> object:
        if isinstance(value, str):
            key = value.strip().lower()
            return _ALIASES.get(key, key)
        return value

    @property
    def text(self) -> str:
        """The file that is compiled and run: source, then tests."""
        return self.source + "\n" + self.tests


class Verdict(BaseModel):
    """What happened to one program. `exit_code` is None when the program never ran or was killed by us;
    a negative value -N means it died of signal N."""

    model_config = ConfigDict(frozen=True)

    status: Status
    compile_s: float = 0.0
    run_s: float = 0.0
    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = None

    @property
    def compiled(self) -> bool:
        return self.status != "compile_error"

    @property
    def passed(self) -> bool:
        return self.status == "passed"
