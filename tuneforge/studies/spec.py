"""`POST /v1/studies`: a job spec to vary, the search space, the objective, the pruner.

A search-space key names a field of the job's method (`loss`, `lora.r`) or of its
hyperparameters (`learning_rate`, `batch_size`, `n_epochs`), or a full path from the job
(`method.supervised.lora.alpha`). A list is a categorical choice; `{low, high, log, step}` is a
range (integers when low and high are both integers).
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from tuneforge.training.hyperparameters import Strict
from tuneforge.training.spec import ALIAS_NAME, REGISTRY_NAME, JobCreate, Promotion

LOWER_IS_BETTER_HINTS = ("loss", "perplexity")


class Range(Strict):
    """Numbers from `low` to `high`; integers when both bounds are integers."""

    low: float | int
    high: float | int
    log: bool = Field(False, description="Sample on a log scale (e.g. learning rates).")
    step: float | int | None = Field(None, gt=0, description="Only multiples of step.")

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.low > self.high:
            raise ValueError("low must not be above high")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("give log or step, not both")
        return self

    @property
    def is_int(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int) and (
            self.step is None or isinstance(self.step, int)
        )


class Objective(Strict):
    metric: str = Field(
        ...,
        min_length=1,
        max_length=128,
        description="A metric of the trial jobs' evaluations, e.g. spearman_cosine, "
        "cosine_ndcg@10, f1_macro, loss (the per-evaluation value is eval_<metric>).",
    )
    direction: Literal["maximize", "minimize"] | None = Field(
        None, description="Default: minimize for losses and perplexity, else maximize."
    )

    @property
    def name(self) -> str:
        return self.metric.removeprefix("eval_")

    @property
    def resolved_direction(self) -> Literal["maximize", "minimize"]:
        if self.direction:
            return self.direction
        lower = any(h in self.name for h in LOWER_IS_BETTER_HINTS)
        return "minimize" if lower else "maximize"


class PrunerSpec(Strict):
    """Stops trials whose evaluations trail the others' (Optuna's pruners)."""

    type: Literal["median", "percentile", "successive_halving", "hyperband", "none"] = "median"
    n_startup_trials: int = Field(
        2, ge=0, le=1000, description="median/percentile: no pruning before this many trials "
        "completed."
    )
    n_warmup_steps: int = Field(
        0, ge=0, description="median/percentile: no pruning of a trial before this step."
    )
    percentile: float = Field(
        25.0, gt=0, lt=100, description="percentile: prune below this percentile."
    )


class SamplerSpec(Strict):
    type: Literal["tpe", "random"] = "tpe"
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="Seed of the sampler.")


class StudyCreate(Strict):
    """A hyperparameter search: `n_trials` jobs made from `job`, each with values drawn from
    `search_space`, ranked by `objective`."""

    name: str | None = Field(
        None, max_length=100, pattern=REGISTRY_NAME.pattern, description="A name to find it by."
    )
    job: JobCreate = Field(..., description="The job every trial runs, before the search's values.")
    search_space: dict[str, list[Any] | Range] = Field(
        ..., min_length=1, max_length=32, description="Field -> choices or range."
    )
    objective: Objective
    n_trials: int = Field(10, ge=1, le=1000, description="Trials (jobs) to run in all.")
    parallelism: int = Field(
        1, ge=1, le=64, description="Trial jobs queued or running at once (each needs a worker)."
    )
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    best_alias: str | None = Field(
        "best",
        description="Registry alias moved to the best trial's model version when the study "
        "ends (null: none).",
    )
    promote: Promotion | None = Field(
        None,
        description="A promotion gate for the best trial's version when the study ends, as "
        "for jobs (compared with the alias's version on the same validation data).",
    )
    metadata: dict[str, str] | None = Field(None, max_length=16)

    @field_validator("search_space")
    @classmethod
    def _choices(cls, value: dict[str, list[Any] | Range]) -> dict[str, list[Any] | Range]:
        for key, space in value.items():
            if isinstance(space, list) and not space:
                raise ValueError(f"{key}: give at least one choice")
            if isinstance(space, list) and not all(
                v is None or isinstance(v, str | int | float | bool) for v in space
            ):
                raise ValueError(f"{key}: choices must be strings, numbers, booleans or null")
        return value

    @field_validator("best_alias")
    @classmethod
    def _alias(cls, value: str | None) -> str | None:
        if value is not None and not ALIAS_NAME.match(value):
            raise ValueError("letters, digits, '_' and '-', starting with a letter")
        return value

    @model_validator(mode="after")
    def _parallelism(self) -> StudyCreate:
        self.parallelism = min(self.parallelism, self.n_trials)
        return self


def field_path(job: JobCreate, key: str) -> list[str]:
    """Where a search-space key lives in the job's JSON, e.g. `learning_rate` ->
    method.embedding.hyperparameters.learning_rate. Raises ValueError if it is no field."""
    parts = key.split(".")
    if parts[0] == "method":
        path = parts
    else:
        kind = job.method.type
        params = getattr(job.method, kind)
        hyper = getattr(params, "hyperparameters", None)
        if parts[0] in type(params).model_fields:
            path = ["method", kind, *parts]
        elif hyper is not None and parts[0] in type(hyper).model_fields:
            path = ["method", kind, "hyperparameters", *parts]
        elif parts[0] in JobCreate.model_fields and parts[0] not in ("method", "model"):
            path = parts
        else:
            raise ValueError(f"{key!r} is not a field of a {kind} job")
    return path


def apply_params(job: JobCreate, params: dict[str, Any]) -> JobCreate:
    """The job with each search-space key set to its value, validated as a new job would
    be (raises pydantic's ValidationError)."""
    body = copy.deepcopy(job.model_dump(mode="json", exclude_none=True))
    for key, value in params.items():
        path = field_path(job, key)
        node = body
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"{key!r} is not a field of this job")
        node[path[-1]] = value
    return JobCreate.model_validate(body)


def corners(space: dict[str, list[Any] | Range]) -> list[tuple[str, Any]]:
    """Every value a search can reach at its edges: each choice, each range's bounds."""
    found: list[tuple[str, Any]] = []
    for key, values in space.items():
        if isinstance(values, Range):
            found += [(key, values.low), (key, values.high)]
        else:
            found += [(key, v) for v in values]
    return found


def check_search_space(study: StudyCreate) -> list[dict[str, Any]]:
    """Every problem of the search space (unknown fields, values the job refuses), each as
    {param, message}."""
    problems: list[dict[str, Any]] = []
    for key in study.search_space:
        try:
            field_path(study.job, key)
        except ValueError as exc:
            problems.append({"param": f"search_space.{key}", "message": str(exc)})
    if problems:
        return problems
    for key, value in corners(study.search_space):
        try:
            apply_params(study.job, {key: value})
        except ValidationError as exc:
            first = exc.errors()[0]
            problems.append(
                {"param": f"search_space.{key}", "message": f"{value!r}: {first['msg']}"}
            )
    return problems


class StudyPromote(BaseModel):
    alias: str = Field("production", max_length=64)

    @field_validator("alias")
    @classmethod
    def _alias(cls, value: str) -> str:
        if not ALIAS_NAME.match(value):
            raise ValueError("letters, digits, '_' and '-', starting with a letter")
        return value
