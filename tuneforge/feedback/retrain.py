"""Retraining on feedback in one call: export a registered model's feedback into a dataset
and queue a job that fine-tunes the version an alias (`production`) points at on it. The
result becomes the next version of the same registered model, and the promotion gate moves
the alias to it only if it is better on the job's validation data."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tuneforge.config import Settings
from tuneforge.datasets.ingest import delete_file
from tuneforge.db.store import Row, Store
from tuneforge.errors import InvalidRequestError
from tuneforge.feedback.export import FeedbackExport, export_feedback
from tuneforge.jobs.service import create_job
from tuneforge.registry.service import require_registered, resolve_reference
from tuneforge.training.spec import JobCreate


class RetrainRequest(BaseModel):
    """`POST /v1/feedback/retrain`."""

    model_config = ConfigDict(extra="forbid")
    registered_model: str = Field(..., min_length=1, max_length=100)
    alias: str = Field(
        "production", max_length=64, description="The version to start from, and to promote."
    )
    kind: Literal["supervised", "dpo"] = "supervised"
    since: float | None = Field(None, description="Only feedback given at or after this time.")
    until: float | None = Field(None, description="Only feedback given before this time.")
    method: dict[str, Any] | None = Field(
        None,
        description="The kind's method settings (hyperparameters, lora, generation_checks), "
        "as in a job's method.supervised / method.dpo.",
    )
    metric: str | None = Field(None, description="Promotion metric (default: the kind's).")
    min_delta: float = Field(0.0, description="How much better the new version must be.")
    validation_file: str | None = None
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    suffix: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")
    device: Literal["auto", "cpu", "cuda"] = "auto"


def job_spec(request: RetrainRequest, training_file: str) -> JobCreate:
    """The fine-tuning job; InvalidRequestError when the method settings do not validate."""
    body: dict[str, Any] = {
        "model": f"{request.registered_model}@{request.alias}",
        "training_file": training_file,
        "validation_file": request.validation_file,
        "seed": request.seed,
        "suffix": request.suffix or "feedback",
        "device": request.device,
        "registered_model": request.registered_model,
        "promote": {
            "alias": request.alias,
            "metric": request.metric,
            "min_delta": request.min_delta,
        },
        "method": {"type": request.kind, request.kind: request.method or {}},
        "metadata": {"source": "feedback"},
    }
    try:
        return JobCreate.model_validate(body)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidRequestError(
            f"The job would be invalid: {where}: {first['msg']}.",
            param=where,
            details={"errors": [{"loc": e["loc"], "msg": e["msg"]} for e in error.errors()]},
        ) from error


def retrain_on_feedback(
    store: Store, settings: Settings, request: RetrainRequest
) -> tuple[Row, dict[str, Any]]:
    """(the queued job, the export) — or an error, and then nothing is left behind."""
    require_registered(store, request.registered_model)
    resolve_reference(store, f"{request.registered_model}@{request.alias}")
    job_spec(request, "file-check")  # refuse bad method settings before writing anything
    exported = export_feedback(
        store,
        settings,
        FeedbackExport(
            registered_model=request.registered_model,
            since=request.since,
            until=request.until,
            kind=request.kind,
        ),
    )
    file_id = exported["dataset"]["id"]
    try:
        job = create_job(store, settings, job_spec(request, file_id))
    except Exception:
        delete_file(store, settings, file_id)
        raise
    return job, exported
