"""Sweep files: the pydantic schema, YAML loading, validation errors for people, and matrix expansion.

Every run is fully described by its sweep file plus the code version, so this module is the one place that
decides what a sweep file may say. Errors name the field path and the allowed values, and are raised before
Ray starts (`itt-sweep validate`).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from itt_sweep.data.mbxp import LANGUAGES
from itt_sweep.data.tasks import task_names
from itt_sweep.modeling import SCRATCH_PRESETS, ModelRef, is_scratch


class SweepFileError(ValueError):
    """A sweep file that cannot run; `problems` holds one line per bad field."""

    def __init__(self, path: str | Path, problems: list[str]):
        self.path = str(path)
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{self.path}: invalid sweep file\n{lines}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Upper bounds catch typos (`steps: 99999999999999999999999`) that would start a sweep that never ends.
MAX_COUNT = 10**9
MAX_STEPS = 10**7
PositiveInt = Annotated[int, Field(gt=0, le=MAX_COUNT)]
NonNegInt = Annotated[int, Field(ge=0, le=MAX_COUNT)]
PromptFormat = Literal["completion", "chat"]
# Peak learning rates when a stage does not set one: a scratch model learns from nothing, a pretrained one is
# fine-tuned (the usual range for full fine-tuning of 100M-7B code models is 1e-5 to 5e-5).
SCRATCH_LEARNING_RATE = 3e-4
PRETRAINED_LEARNING_RATE = 2e-5


class ModelSpec(ModelRef):
    """Which base model: a hub id, a local directory (optionally a GGUF file in it, `gguf_file`), a hub
    `revision`, or `scratch:<preset>` (a tiny Llama built here)."""

    name: str = "scratch:tiny"

    @field_validator("name")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("empty; use a hub id (org/name), a local model directory or scratch:<preset>")
        if value.startswith("scratch:") and value.split(":", 1)[1] not in SCRATCH_PRESETS:
            raise ValueError(f"unknown scratch preset {value!r}; allowed: "
                             + ", ".join(f"scratch:{p}" for p in SCRATCH_PRESETS))
        return value


class DataSpec(_Strict):
    """Where the data lives and how much of it a trial uses (small numbers make smoke runs fast)."""

    dir: str | None = None
    intermediate_train_examples: PositiveInt | None = 2000
    intermediate_val_examples: PositiveInt = 200
    target_train_problems: PositiveInt | None = None
    target_val_problems: PositiveInt | None = None  # stage-2 validation problems (default: all 90)
    eval_problems: PositiveInt | None = None


class StageSpec(_Strict):
    """Optimisation settings of one training stage.

    `batch_size` is the number of sequences in one optimizer step across all workers; `micro_batch_size` is
    what one worker runs in one forward (default: batch_size / num_workers); gradient accumulation is derived,
    batch_size / (micro_batch_size x num_workers), and must come out whole. `learning_rate` defaults by model:
    3e-4 for scratch models, 2e-5 for pretrained ones.
    """

    steps: Annotated[int, Field(gt=0, le=MAX_STEPS)] = 100
    learning_rate: Annotated[float, Field(gt=0, lt=1)] = SCRATCH_LEARNING_RATE
    warmup_steps: NonNegInt = 10
    batch_size: Annotated[int, Field(gt=0, le=1 << 20)] = 8
    micro_batch_size: Annotated[int, Field(gt=0, le=1 << 20)] | None = None
    seq_len: Annotated[int, Field(ge=16, le=32768)] = 512
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    grad_clip: Annotated[float, Field(gt=0)] = 1.0
    eval_every: PositiveInt = 50
    checkpoint_every: PositiveInt = 50
    packing: bool = False  # concatenate short training pairs into full seq_len rows (validation stays unpacked)
    prompt_format: PromptFormat = "completion"  # chat: prompts as a user turn in the tokenizer's chat template

    @model_validator(mode="after")
    def _warmup_fits(self) -> StageSpec:
        if self.warmup_steps >= self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be smaller than steps ({self.steps})")
        return self

    def batch_split(self, num_workers: int) -> tuple[int, int]:
        """(micro batch per worker, accumulation steps) of one optimizer step; ValueError if they do not divide."""
        micro = self.micro_batch_size or self.batch_size // num_workers
        if micro < 1 or self.batch_size % (micro * num_workers):
            shown = self.micro_batch_size or f"batch_size / num_workers = {self.batch_size / num_workers:g}"
            raise ValueError(f"batch_size ({self.batch_size}, sequences per optimizer step across all workers) "
                             f"must be a multiple of micro_batch_size ({shown}) x num_workers ({num_workers})")
        return micro, self.batch_size // (micro * num_workers)


class StagesSpec(_Strict):
    intermediate: StageSpec = StageSpec()
    target: StageSpec = StageSpec()


class TrainingSpec(_Strict):
    """How a stage is distributed: Ray Train workers running DeepSpeed ZeRO."""

    zero_stage: Literal[0, 1, 2, 3] = 2
    offload_optimizer: bool = False
    offload_params: bool = False
    num_workers: PositiveInt = 1
    use_gpu: bool = False
    cpus_per_worker: Annotated[float, Field(gt=0)] = 1
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    gradient_checkpointing: bool = False
    compile: bool = False  # torch.compile of the module through DeepSpeed (GPU nodes)

    @model_validator(mode="after")
    def _offload_needs_zero(self) -> TrainingSpec:
        if self.offload_params and self.zero_stage != 3:
            raise ValueError("offload_params needs zero_stage: 3")
        if self.offload_optimizer and self.zero_stage == 0:
            raise ValueError("offload_optimizer needs zero_stage 1, 2 or 3")
        return self


class EvaluationSpec(_Strict):
    """Stage 3: generation and execution settings.

    `max_new_tokens` is one number or a mapping language -> number with an optional `default` (Java's
    boilerplate needs more than Python). A batch holds at most `batch_size` rows and `token_budget` tokens
    (rows x (longest prompt + max_new_tokens)), so long prompts never make a batch that does not fit in memory.
    `cpus` is what stage 3 holds and the threads its generation uses on CPU. Greedy (`temperature: 0`, one
    sample) is the default; pass@k draws `num_samples` completions per problem at `temperature` / `top_p`,
    seeded per (problem, sample) from `seed`, and reports `pass_at_<k>` for every k of `pass_k`.
    `typescript_type_errors`: a TypeScript program with type errors only (tsc still emits JavaScript) is a
    compile error ("fail", the default), or runs as the JavaScript tsc wrote ("ignore": how mxeval, and so the
    MBXP paper's TypeScript numbers, count it); syntax errors fail either way.
    """

    max_new_tokens: PositiveInt | dict[str, PositiveInt] = 256
    batch_size: PositiveInt = 16
    token_budget: Annotated[int, Field(ge=64, le=1 << 30)] = 32768
    prompt_format: PromptFormat = "completion"
    decoder: Literal["fast", "hf"] = "fast"  # fast: static cache (+ CUDA graph); hf: transformers' generate
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 10.0
    allow_unsandboxed: bool = False
    workers: PositiveInt | None = None
    cpus: Annotated[int, Field(gt=0, le=1024)] = 1
    num_samples: Annotated[int, Field(gt=0, le=1000)] = 1
    temperature: Annotated[float, Field(ge=0, le=10)] = 0.0
    top_p: Annotated[float, Field(gt=0, le=1)] = 0.95
    pass_k: list[Annotated[int, Field(gt=0, le=1000)]] = [1]
    seed: NonNegInt = 0
    typescript_type_errors: Literal["fail", "ignore"] = "fail"

    @model_validator(mode="after")
    def _sampling(self) -> EvaluationSpec:
        if self.num_samples > 1 and self.temperature == 0:
            raise ValueError("evaluation.num_samples > 1 needs evaluation.temperature > 0 (temperature 0 is "
                             "greedy: every sample would be the same)")
        too_big = [k for k in self.pass_k if k > self.num_samples]
        if too_big:
            raise ValueError(f"evaluation.pass_k: k={too_big[0]} needs evaluation.num_samples >= {too_big[0]} "
                             f"(got {self.num_samples})")
        return self

    @property
    def ks(self) -> list[int]:
        """The k of every pass@k reported: pass@1 always, then `pass_k`."""
        return sorted({1, *self.pass_k})

    @field_validator("max_new_tokens")
    @classmethod
    def _per_language(cls, value: int | dict[str, int]) -> int | dict[str, int]:
        if isinstance(value, dict):
            _check_members(list(value), [*LANGUAGES, "default"], "language")
        return value

    def new_tokens(self, language: str) -> int:
        if isinstance(self.max_new_tokens, int):
            return self.max_new_tokens
        return self.max_new_tokens.get(language, self.max_new_tokens.get("default", 256))


class Distribution(_Strict):
    """One searched hyperparameter (sampled per trial inside a cell)."""

    type: Literal["loguniform", "uniform", "choice", "randint"]
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> Distribution:
        if self.type == "choice":
            if not self.values:
                raise ValueError("a choice needs a non-empty 'values' list")
            return self
        if self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"{self.type} needs low < high (got low={self.low}, high={self.high})")
        if self.type == "loguniform" and self.low <= 0:
            raise ValueError("loguniform needs low > 0")
        return self


SEARCHABLE = tuple(
    f"{stage}.{field}" for stage in ("intermediate", "target")
    for field in ("learning_rate", "warmup_steps", "steps", "batch_size", "weight_decay")
) + ("training.zero_stage",)


class SearchSpec(_Strict):
    """Per-cell hyperparameter search; an empty space means the fixed values of `stages`."""

    num_samples: PositiveInt = 1
    space: dict[str, Distribution] = {}
    scheduler: Literal["none", "asha"] = "none"
    scheduler_scope: Literal["cell", "sweep"] = "cell"
    grace_period: PositiveInt = 1
    reduction_factor: Annotated[int, Field(ge=2)] = 3

    @field_validator("space")
    @classmethod
    def _searchable(cls, space: dict[str, Distribution]) -> dict[str, Distribution]:
        unknown = sorted(set(space) - set(SEARCHABLE))
        if unknown:
            raise ValueError(f"cannot search {unknown}; allowed: {', '.join(SEARCHABLE)}")
        return space

    @model_validator(mode="after")
    def _samples_need_a_space(self) -> SearchSpec:
        if self.num_samples > 1 and not self.space:
            raise ValueError(f"num_samples: {self.num_samples} samples of an empty search space would be "
                             "identical trials; add search.space or use more seeds in matrix.seeds")
        return self


class MatrixSpec(_Strict):
    """The grid: every intermediate task × source language × seed is a cell."""

    intermediate_tasks: list[str] = Field(min_length=1)
    source_languages: list[str] = Field(default_factory=lambda: ["python"], min_length=1)
    seeds: list[NonNegInt] = Field(default_factory=lambda: [0], min_length=1)

    @field_validator("intermediate_tasks")
    @classmethod
    def _tasks(cls, tasks: list[str]) -> list[str]:
        return _check_members(tasks, task_names(), "intermediate task")

    @field_validator("source_languages")
    @classmethod
    def _sources(cls, langs: list[str]) -> list[str]:
        return _check_members(langs, list(LANGUAGES), "language")

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be unique, got {seeds}")
        return seeds


class ResourcesSpec(_Strict):
    max_concurrent_trials: PositiveInt = 1
    max_failures: NonNegInt = 1


CHECKPOINT_SCHEMES = ("s3", "gs", "gcs", "file")
CHECKPOINT_FORMS = "s3://BUCKET/PREFIX, gs://BUCKET/PREFIX or a local path"


class StorageSpec(_Strict):
    """Where a sweep keeps its files.

    `path`: a POSIX directory shared by every node (EFS on a cluster): the stage cache, references and trial
    dirs need its file locks and atomic renames. `checkpoints` (optional): a URI for Ray Tune's experiment state
    and every stage's Ray Train checkpoints, which Ray writes through pyarrow: s3://BUCKET/PREFIX (S3 or an
    S3-protocol server: AWS_ENDPOINT_URL or ?endpoint_override=), gs://BUCKET/PREFIX or a local path. On a
    cluster that is what survives losing spot nodes. Unset: they live under `path`, as `<path>/<name>/tune`
    and `<path>/<name>/train`; set: as `<checkpoints>/<name>/tune` and `<checkpoints>/<name>/train`.
    """

    path: str = "runs"
    checkpoints: str | None = None

    @field_validator("checkpoints")
    @classmethod
    def _checkpoint_uri(cls, uri: str | None) -> str | None:
        return None if uri is None else check_checkpoint_uri(uri)


class TrackingSpec(_Strict):
    uri: str = "sqlite:///mlflow.db"
    experiment: str | None = None
    deliver_timeout_s: Annotated[float, Field(ge=0)] = 30.0

    @field_validator("uri")
    @classmethod
    def _scheme(cls, uri: str) -> str:
        if not uri.startswith(("sqlite:///", "http://", "https://", "postgresql://", "databricks")):
            raise ValueError(f"unsupported tracking uri {uri!r}; use sqlite:///PATH, http(s)://HOST:PORT "
                             "(an MLflow server) or postgresql://...")
        return uri


class SweepConfig(_Strict):
    """A whole sweep file."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    model: ModelSpec = ModelSpec()
    data: DataSpec = DataSpec()
    matrix: MatrixSpec
    eval_languages: list[str] = Field(min_length=1)
    stages: StagesSpec = StagesSpec()
    training: TrainingSpec = TrainingSpec()
    evaluation: EvaluationSpec = EvaluationSpec()
    search: SearchSpec = SearchSpec()
    resources: ResourcesSpec = ResourcesSpec()
    storage: StorageSpec = StorageSpec()
    tracking: TrackingSpec = TrackingSpec()

    @field_validator("eval_languages")
    @classmethod
    def _eval_langs(cls, langs: list[str]) -> list[str]:
        return _check_members(langs, list(LANGUAGES), "language")

    @model_validator(mode="before")
    @classmethod
    def _default_learning_rates(cls, raw: Any) -> Any:
        """A stage without a learning rate gets the default of its kind of model (scratch or pretrained)."""
        if not isinstance(raw, dict):
            return raw
        model = raw.get("model") if isinstance(raw.get("model"), dict) else {}
        name = model.get("name", ModelSpec.model_fields["name"].default)
        if not isinstance(name, str) or is_scratch(name):
            return raw
        stages = raw.get("stages") if isinstance(raw.get("stages"), dict) else {}
        filled = dict(stages)
        for stage in ("intermediate", "target"):
            spec = stages.get(stage) or {}
            if isinstance(spec, dict) and "learning_rate" not in spec:
                filled[stage] = {**spec, "learning_rate": PRETRAINED_LEARNING_RATE}
        return {**raw, "stages": filled}

    @model_validator(mode="after")
    def _batches_divide(self) -> SweepConfig:
        for stage in ("intermediate", "target"):
            try:
                getattr(self.stages, stage).batch_split(self.training.num_workers)
            except ValueError as exc:
                raise ValueError(f"stages.{stage}.batch_size: {exc}") from None
        return self

    def prompt_formats(self) -> set[str]:
        return {self.stages.intermediate.prompt_format, self.stages.target.prompt_format,
                self.evaluation.prompt_format}

    def cells(self) -> list[Cell]:
        return [Cell(t, s, seed) for t in self.matrix.intermediate_tasks
                for s in self.matrix.source_languages for seed in self.matrix.seeds]

    def config_hash(self) -> str:
        raw = self.model_dump(mode="json")
        if raw["storage"]["checkpoints"] is None:  # sweeps from before the field keep their hash (MLflow parent)
            del raw["storage"]["checkpoints"]
        return stable_hash(raw)


class Cell(tuple):
    """(intermediate task, source language, seed): one cell of the transfer matrix."""

    __slots__ = ()

    def __new__(cls, intermediate_task: str, source_language: str, seed: int) -> Cell:
        return super().__new__(cls, (intermediate_task, source_language, seed))

    intermediate_task = property(lambda self: self[0])
    source_language = property(lambda self: self[1])
    seed = property(lambda self: self[2])

    @property
    def key(self) -> str:
        return f"{self.intermediate_task}__{self.source_language}__s{self.seed}"


def _check_members(values: list[str], allowed: list[str], what: str) -> list[str]:
    bad = [v for v in values if v not in allowed]
    if bad:
        raise ValueError(f"unknown {what} {bad}; allowed: {', '.join(allowed)}")
    if len(set(values)) != len(values):
        raise ValueError(f"duplicate {what} in {values}")
    return values


def check_checkpoint_uri(uri: str) -> str:
    """`uri` if Ray can store checkpoints there (a scheme pyarrow resolves), else a ValueError saying what works.

    Only the form is checked here; whether the bucket is reachable and writable is the preflight's job."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        if not uri.strip():
            raise ValueError(f"empty; use {CHECKPOINT_FORMS}")
        if re.match(r"^(s3|gs|gcs|file):", uri):
            raise ValueError(f"{uri!r} is missing the '//' after the scheme; use {CHECKPOINT_FORMS}")
        return uri  # a local path
    if scheme not in CHECKPOINT_SCHEMES:
        raise ValueError(f"unsupported scheme {scheme}:// in {uri!r}; use {CHECKPOINT_FORMS}")
    bucket = rest.split("/", 1)[0].split("?", 1)[0]
    if scheme == "file" and not rest.startswith("/"):
        raise ValueError(f"{uri!r}: a file:// URI needs an absolute path (file:///DIR)")
    if scheme != "file" and not bucket:
        raise ValueError(f"{uri!r} names no bucket; use {CHECKPOINT_FORMS}")
    return uri


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hash of a JSON-able object that is the same across processes and machines (names cache entries)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def _format_error(err: dict[str, Any]) -> str:
    where = ".".join(str(p) for p in err["loc"]) or "<top level>"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field (check the spelling against sweeps/smoke.yaml)"
    return f"{where}: {msg}" if err["loc"] else msg  # a whole-file check names its own field


def parse_sweep(raw: Any, source: str | Path = "<sweep>") -> SweepConfig:
    """Validate already-loaded YAML data, turning pydantic's errors into one line per bad field."""
    if not isinstance(raw, dict):
        raise SweepFileError(source, ["<top level>: a sweep file is a YAML mapping (name:, matrix:, ...)"])
    try:
        return SweepConfig.model_validate(raw)
    except ValidationError as exc:
        raise SweepFileError(source, [_format_error(e) for e in exc.errors()]) from None


def load_sweep(path: str | Path) -> SweepConfig:
    """Read and validate a sweep file."""
    path = Path(path)
    if not path.is_file():
        raise SweepFileError(path, ["file not found"])
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise SweepFileError(path, [f"not UTF-8 text (byte {exc.start}: {exc.object[exc.start:exc.start + 1]!r}); "
                                    "a sweep file is YAML in UTF-8"]) from None
    except yaml.YAMLError as exc:
        raise SweepFileError(path, [f"not valid YAML: {exc}"]) from None
    return parse_sweep(raw, path)


def trial_count(config: SweepConfig) -> int:
    return len(config.cells()) * config.search.num_samples


def describe(config: SweepConfig) -> str:
    """The expanded matrix as text, for `itt-sweep validate`."""
    cells = config.cells()
    lines = [
        f"sweep {config.name!r} ({config.config_hash()}): {len(cells)} cells x {config.search.num_samples} "
        f"sample(s) = {trial_count(config)} trials",
        f"  model: {config.model.name}   ZeRO-{config.training.zero_stage} x {config.training.num_workers} "
        f"worker(s), gpu={config.training.use_gpu}",
        f"  eval languages: {', '.join(config.eval_languages)}",
    ]
    if config.search.space:
        lines.append(f"  search: {', '.join(config.search.space)} (scheduler: {config.search.scheduler})")
    lines += [f"  cell {c.key}" for c in cells]
    return "\n".join(lines)
