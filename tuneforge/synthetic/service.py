"""`POST /v1/synthetic-data` (seed 004's shape): checked at once, then run as a job (kind
`synthetic`) by a worker; the result is a new supervised dataset with its validation report.

Prompts are the templates with their `{placeholders}` filled from `values`, sample i taking
template i mod n and, for every placeholder, a value drawn by `seed`. The answers come from a
model of tuneforge's (`model`: generated in the job's process, as /v1/chat/completions does)
or from any OpenAI-compatible server (`endpoint`: Ollama, vLLM, tuneforge itself).
"""

from __future__ import annotations

import random
import string
import time
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tuneforge.config import Settings
from tuneforge.db.store import Row, Store, new_id
from tuneforge.errors import InvalidRequestError, ModelNotFoundError
from tuneforge.jobs.status import JobStatus
from tuneforge.registry.models import resolve_model
from tuneforge.serving.loading import require_kind
from tuneforge.synthetic.endpoint_keys import (
    REDACTED,
    forget_finished_keys,
    keep_key,
    key_path,
)
from tuneforge.synthetic.quality import check_schema
from tuneforge.training.spec import MODEL_NAME

KIND = "synthetic"
MAX_SAMPLES = 100_000


class GenerationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    num_samples: int = Field(100, ge=1, le=MAX_SAMPLES, description="Prompts to answer.")
    temperature: float = Field(0.7, ge=0, le=2, description="0: greedy.")
    max_tokens: int = Field(512, ge=1, le=32768, description="Longest answer, in tokens.")
    quality_filter: bool = Field(True, description="Apply `quality` to the answers.")


class QualitySettings(BaseModel):
    """What an answer must be to be kept (with `quality_filter`)."""

    model_config = ConfigDict(extra="forbid")
    min_chars: int = Field(1, ge=1, description="Fewest characters of an answer.")
    max_chars: int | None = Field(None, ge=1, description="Most characters of an answer.")
    languages: list[str] | None = Field(
        None, min_length=1, description="Languages an answer may be in (ISO 639-1)."
    )
    near_duplicate_threshold: float | None = Field(
        0.9, gt=0, le=1, description="Answers this similar to a kept one are removed."
    )
    json_schema: dict[str, Any] | None = Field(
        None, description="Answers must be JSON valid against this schema (see `quality`)."
    )


class Endpoint(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(..., max_length=2000, description="Base URL, e.g. http://localhost:11434")
    model: str = Field(..., min_length=1, max_length=255, description="The server's model name.")
    api_key: str | None = Field(
        None,
        max_length=4096,
        description="Sent as a Bearer token. Kept in a file of the data folder only while the "
        "job runs, never in the database (see tuneforge.synthetic.endpoint_keys).",
    )
    api_key_env: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$",
        description="Or the name of the worker's environment variable that holds the key.",
    )
    timeout_seconds: float = Field(300, gt=0, le=3600, description="Per answer.")


class SyntheticCreate(BaseModel):
    """Template prompts, their values, and who answers them."""

    model_config = ConfigDict(extra="forbid")
    template_prompts: list[str] = Field(..., min_length=1, max_length=1000)
    values: dict[str, list[str]] = Field(
        default_factory=dict, description="Values of each {placeholder}."
    )
    system_prompt: str | None = Field(None, max_length=100_000)
    generation_config: GenerationConfig = Field(default_factory=GenerationConfig)
    quality: QualitySettings = Field(default_factory=QualitySettings)
    output_format: Literal["jsonl"] = "jsonl"
    model: str | None = Field(None, max_length=255, description="A causal LM of tuneforge's.")
    endpoint: Endpoint | None = Field(None, description="Or an OpenAI-compatible server.")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    metadata: dict[str, str] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> SyntheticCreate:
        if (self.model is None) == (self.endpoint is None):
            raise ValueError("give exactly one of model and endpoint")
        if self.model is not None and not MODEL_NAME.match(self.model):
            raise ValueError(f"{self.model!r} is not a model id")
        if self.endpoint is not None:
            url = urlparse(self.endpoint.url)
            if url.scheme not in ("http", "https") or not url.netloc:
                raise ValueError("endpoint.url must be an http:// or https:// URL")
            if self.endpoint.api_key and self.endpoint.api_key_env:
                raise ValueError("give at most one of endpoint.api_key and endpoint.api_key_env")
        q = self.quality
        if q.max_chars is not None and q.max_chars < q.min_chars:
            raise ValueError("quality.max_chars must not be below quality.min_chars")
        return self


def placeholders(template: str) -> list[str]:
    """The {names} of a template (format syntax: `{{` is a literal brace). ValueError for a
    template that is not valid format syntax."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


def check_templates(request: SyntheticCreate) -> None:
    """Every template parses, and every placeholder has values; all problems at once."""
    problems = []
    for i, template in enumerate(request.template_prompts):
        try:
            names = placeholders(template)
        except ValueError as error:
            problems.append(f"template_prompts[{i}]: {error}")
            continue
        for name in names:
            if not name.isidentifier():
                problems.append(f"template_prompts[{i}]: {{{name}}} is not a placeholder name")
            elif not request.values.get(name):
                problems.append(f"template_prompts[{i}]: no values for {{{name}}}")
    if problems:
        raise InvalidRequestError(
            "; ".join(problems), param="template_prompts", details={"problems": problems}
        )


def fill_prompts(request: SyntheticCreate) -> list[str]:
    """The num_samples prompts (see the module's docstring)."""
    rng = random.Random(request.seed)
    prompts = []
    for i in range(request.generation_config.num_samples):
        template = request.template_prompts[i % len(request.template_prompts)]
        chosen = {name: rng.choice(request.values[name]) for name in placeholders(template)}
        prompts.append(template.format(**chosen))
    return prompts


def create_synthetic(store: Store, settings: Settings, request: SyntheticCreate) -> Row:
    """Check the templates and the model, then queue the job; nothing is written unless every
    check passes."""
    check_templates(request)
    if request.quality.json_schema is not None:
        check_schema(request.quality.json_schema)
    if request.model is not None:
        source = resolve_model(store, settings, request.model)
        if not source.is_local:
            raise ModelNotFoundError(
                f"Model {request.model!r} is not available locally.", param="model"
            )
        require_kind(request.model, Path(source.location), "causal_lm")
    forget_finished_keys(store, settings)
    job_id = new_id("synth")
    spec = request.model_dump(mode="json")
    key = request.endpoint.api_key if request.endpoint else None
    if key:
        # The database only learns that there is a key; the job process reads it from the file.
        spec["endpoint"]["api_key"] = REDACTED
        keep_key(settings, job_id, key)
    try:
        store.insert_job(
            {
                "id": job_id,
                "kind": KIND,
                "model": request.model or request.endpoint.model,  # type: ignore[union-attr]
                "status": JobStatus.VALIDATING_FILES.value,
                "spec": spec,
                "created_at": time.time(),
                "device": request.device if request.model else "cpu",
                "max_attempts": 3,
            },
            "Synthetic data generation accepted.",
        )
        n = request.generation_config.num_samples
        return store.transition(job_id, JobStatus.QUEUED, f"Generation of {n} samples queued.")
    except BaseException:
        key_path(settings, job_id).unlink(missing_ok=True)
        raise
