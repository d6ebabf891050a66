"""The answers of the seed-000 training API (`/training/...`, `/evaluation/...`): its task
and evaluation ids are the jobs' UUIDs, its statuses its own words for ours."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import Field

from tuneforge.api.schemas.base import Public
from tuneforge.db.records import uuid_form
from tuneforge.db.store import Row

SeedStatus = Literal["QUEUED", "RUNNING", "PAUSED", "DONE", "FAILED", "CANCELED"]
# Seed 000 names no paused state; PAUSED is the plain word for tuneforge's own.
STATUS: dict[str, SeedStatus] = {
    "validating_files": "QUEUED",
    "queued": "QUEUED",
    "running": "RUNNING",
    "paused": "PAUSED",
    "succeeded": "DONE",
    "failed": "FAILED",
    "cancelled": "CANCELED",
}


class TrainAccepted(Public):
    task_id: str
    status: SeedStatus
    message: str


class TrainStatus(Public):
    task_id: str
    status: SeedStatus
    created_at: str | None = Field(..., description="ISO 8601, UTC.")
    end_date: str | None
    error_msg: str | None
    error_code: str | None
    trained_model_id: str | None
    progress: dict[str, Any] | None
    warnings: list[dict[str, Any]] = Field(
        default_factory=list,
        description="What trains, but not as asked (tuneforge's addition; see the job object).",
    )
    train_dataset_ids: list[str] = Field(
        default_factory=list, description="tuneforge: the training files, as UUIDs."
    )
    val_dataset_id: str | None = Field(None, description="tuneforge: the validation file.")
    loss: str | None = Field(None, description="tuneforge: the loss the task trains with.")
    worse_than_base: bool | None = Field(
        None, description="tuneforge: the trained model scored below its base."
    )


class TrainCancelled(Public):
    status_code: int
    task_id: str
    status: SeedStatus


class EvaluationAccepted(Public):
    evaluation_id: str
    status: SeedStatus


class SeedEvaluationStatus(Public):
    evaluation_id: str
    status: SeedStatus
    created_at: str | None = Field(..., description="ISO 8601, UTC.")
    end_date: str | None
    error_msg: str | None
    primary_metric: str | None
    model_tag: str
    model_results: dict[str, Any] | None
    baseline_model_tag: str | None
    baseline_results: dict[str, Any] | None
    delta: dict[str, Any] | None
    rows: int | None


def iso_time(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def train_status(task_id: str, job: Row) -> TrainStatus:
    error = job.get("error")
    spec = job["spec"]
    return TrainStatus(
        task_id=task_id,
        status=STATUS[job["status"]],
        created_at=iso_time(job["created_at"]),
        end_date=iso_time(job.get("finished_at")),
        error_msg=error["message"] if error else None,
        error_code=error["code"] if error else None,
        trained_model_id=job.get("fine_tuned_model"),
        progress=job.get("progress"),
        warnings=job.get("warnings") or [],
        train_dataset_ids=[str(uuid_form(f)) for f in spec.get("training_files") or []],
        val_dataset_id=uuid_form(spec["validation_file"]) if spec.get("validation_file") else None,
        loss=(spec.get("method") or {}).get("embedding", {}).get("loss"),
        worse_than_base=(job.get("result") or {}).get("worse_than_base"),
    )


def evaluation_status(evaluation_id: str, job: Row) -> SeedEvaluationStatus:
    result = job.get("result") or {}
    error = job.get("error")
    return SeedEvaluationStatus(
        evaluation_id=evaluation_id,
        status=STATUS[job["status"]],
        created_at=iso_time(job["created_at"]),
        end_date=iso_time(job.get("finished_at")),
        error_msg=error["message"] if error else None,
        primary_metric=result.get("primary_metric"),
        model_tag=job["spec"]["model"],
        model_results=(result.get("model") or {}).get("metrics"),
        baseline_model_tag=job["spec"].get("baseline_model"),
        baseline_results=(result.get("baseline") or {}).get("metrics"),
        delta=result.get("delta"),
        rows=result.get("rows"),
    )
