"""`POST /v1/evaluations`: checked at once, then run as a job (kind `evaluation`) by a worker.

The data is a file, or a training job's own validation split: the same rows that job held
out (its validation file, or the 90/10 split its seed chose).

With `grader` (OpenAI's grader JSON) a chat model is measured by its graded answers to the
data's prompts (`evaluation.graded`): `reward_mean` is then the primary metric, and without a
`baseline_model` the fine-tuned model's base is the baseline.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tuneforge.config import Settings
from tuneforge.datasets.ingest import require_dataset
from tuneforge.db.files import files_of
from tuneforge.db.store import Row, Store, new_id
from tuneforge.errors import InvalidDatasetError, InvalidRequestError
from tuneforge.evaluation.graded import DEFAULT_MAX_NEW_TOKENS, check_grader
from tuneforge.jobs.data import READS_UPLOADS_OF
from tuneforge.jobs.status import JobStatus
from tuneforge.registry.models import resolve_model
from tuneforge.training.spec import MODEL_NAME

KIND = "evaluation"


class EvaluationCreate(BaseModel):
    """A model to measure, an optional baseline, and the data: a file or a training job."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(
        ..., max_length=255, description="Model id (ft:…, a base model, name@alias)."
    )
    baseline_model: str | None = Field(
        None, max_length=255, description="A model to measure on the same rows, for deltas."
    )
    file_id: str | None = Field(None, description="A data file of the model's kind.")
    training_job: str | None = Field(
        None, description="A fine-tuning job: its validation split (the rows it held out)."
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    metadata: dict[str, str] | None = None
    grader: dict[str, Any] | None = Field(
        None,
        description="OpenAI's grader (string_check, text_similarity, score_model, "
        "label_model, python, multi): the metric is the mean reward of the model's greedy "
        "answers to the data's prompts. Chat or reinforcement data only.",
    )
    max_new_tokens: int = Field(
        DEFAULT_MAX_NEW_TOKENS, ge=1, le=4096, description="The longest answer, with a grader."
    )

    @model_validator(mode="after")
    def _one_source(self) -> EvaluationCreate:
        if (self.file_id is None) == (self.training_job is None):
            raise ValueError("give exactly one of file_id and training_job")
        for name in (self.model, self.baseline_model):
            if name is not None and not MODEL_NAME.match(name):
                raise ValueError(f"{name!r} is not a model id")
        return self


def kind_of(store: Store, request: EvaluationCreate) -> str:
    """The training kind the evaluation measures, from its data (and the model's job)."""
    if request.training_job:
        job = store.require_job(request.training_job)
        if job["kind"] == KIND:
            raise InvalidRequestError(
                "training_job must be a fine-tuning job.", param="training_job"
            )
        return str(job["kind"])
    assert request.file_id is not None
    report = require_dataset(store, request.file_id, "file_id")["report"]
    if not report["valid"]:
        raise InvalidDatasetError(
            f"File {request.file_id} has {report['problem_count']} problem(s); see "
            f"GET /v1/datasets/{request.file_id}.",
            param="file_id",
        )
    return str(report.get("kind") or "embedding")


def create_evaluation(store: Store, settings: Settings, request: EvaluationCreate) -> Row:
    """Check the models and the data, then queue the evaluation; nothing is written unless
    every check passes."""
    kind = kind_of(store, request)
    version = store.version_of_model(request.model)
    reranker = version is not None and version["kind"] == "reranker"
    if reranker and kind in READS_UPLOADS_OF["reranker"]:
        kind = "reranker"  # measured on triplets or scored pairs
    if request.grader is not None:
        check_grader(store, settings, request.grader, kind, "grader")
        if request.baseline_model is None:
            row = store.get_model(request.model)
            if row is not None and row.get("base_model"):
                request = request.model_copy(update={"baseline_model": row["base_model"]})
    for param in ("model", "baseline_model"):
        name = getattr(request, param)
        if name is None:
            continue
        resolve_model(store, settings, name)
        version = store.version_of_model(name)
        if version is not None and version["kind"] != kind:
            raise InvalidRequestError(
                f"{name} is a {version['kind']} model; the data is for {kind} models.",
                param=param,
            )
    job_id = new_id("evaljob")
    spec = dict(request.model_dump(mode="json"), kind=kind)
    store.insert_job(
        {
            "id": job_id,
            "kind": KIND,
            "model": request.model,
            "status": JobStatus.VALIDATING_FILES.value,
            "spec": spec,
            "created_at": time.time(),
            "device": request.device,
            "max_attempts": 3,
        },
        "Evaluation accepted.",
        files=files_of(spec),
    )
    return store.transition(
        job_id, JobStatus.QUEUED, f"Evaluation of {request.model} queued ({kind} data)."
    )
