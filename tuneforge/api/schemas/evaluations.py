"""The answers of `/v1/evaluations`: a model and an optional baseline measured on the same
rows."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tuneforge.api.schemas.base import Public
from tuneforge.db.store import Row
from tuneforge.jobs.status import JobStatus


class EvaluationPublic(Public):
    id: str
    object: Literal["evaluation"] = "evaluation"
    status: JobStatus
    kind: str | None = Field(..., description="The kind of model and data measured.")
    model: str
    baseline_model: str | None
    file_id: str | None
    training_job: str | None
    metadata: dict[str, str] | None
    grader: dict[str, Any] | None = Field(None, description="The grader, when one measures.")
    created_at: int
    finished_at: int | None
    error: dict[str, Any] | None
    result: dict[str, Any] | None = Field(
        ..., description="Both models' metrics, the delta and the rows measured."
    )


class EvaluationsPublic(Public):
    object: Literal["list"] = "list"
    data: list[EvaluationPublic]
    has_more: bool


def public_evaluation(job: Row) -> EvaluationPublic:
    spec = job["spec"]
    return EvaluationPublic(
        id=job["id"],
        status=job["status"],
        kind=spec.get("kind"),
        model=spec["model"],
        baseline_model=spec.get("baseline_model"),
        file_id=spec.get("file_id"),
        training_job=spec.get("training_job"),
        metadata=spec.get("metadata"),
        grader=spec.get("grader"),
        created_at=int(job["created_at"]),
        finished_at=int(job["finished_at"]) if job.get("finished_at") else None,
        error=job.get("error"),
        result=job.get("result"),
    )
