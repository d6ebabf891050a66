"""The answers of `/v1/fine_tuning/jobs`: OpenAI's fine-tuning job, event and checkpoint
objects, with tuneforge's progress, metrics and results beside OpenAI's fields."""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import ConfigDict, Field

from tuneforge.api.schemas.base import Public
from tuneforge.db.store import Row
from tuneforge.jobs.status import JobStatus


class FineTuningJobPublic(Public):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    model: str
    created_at: int
    finished_at: int | None
    status: JobStatus
    worse_than_base: bool | None = Field(
        None,
        description="tuneforge: the fine-tuned model scored below its base on the validation "
        "split's primary metric (null: not measured); no alias moves to it without force.",
    )
    warning: str | None = Field(
        None,
        description="tuneforge: what a user must know first (a model worse than its base, "
        "the base's weights kept by best-model selection).",
    )
    kept_model: dict[str, Any] | None = Field(
        None,
        description="tuneforge: which weights the job kept: model (base, best_checkpoint or "
        "last_step) and step.",
    )
    fine_tuned_model: str | None
    organization_id: str
    training_file: str
    training_files: list[str] = Field(..., description="Every training file, in order.")
    validation_file: str | None
    hyperparameters: dict[str, Any]
    method: dict[str, Any] = Field(..., description="The method as stored, with its defaults.")
    seed: int
    suffix: str | None
    metadata: dict[str, str] | None
    timeout_seconds: int | None
    error: dict[str, Any] | None = Field(..., description="code, message and param.")
    result_files: list[str]
    trained_tokens: int | None
    estimated_finish: int | None
    integrations: list[dict[str, Any]]
    user_provided_suffix: str | None
    progress: dict[str, Any] | None = Field(
        ..., description="Steps, epochs, percent and ETA while it trains."
    )
    metrics: dict[str, Any] | None = Field(..., description="The newest training metrics.")
    evaluation: dict[str, Any] | None = Field(
        ..., description="The base and the fine-tuned model on the validation data."
    )
    registered_model: dict[str, Any] | None = Field(
        ..., description="The registry version it made (name, version)."
    )
    promotion: dict[str, Any] | None = Field(..., description="The promotion gate's verdict.")
    result: dict[str, Any] | None = Field(
        ..., description="Everything the run reported: losses, steps, and what its kind adds."
    )
    attempts: int = Field(
        ...,
        description="Which attempt this is (0 before the first run): a run that failed and is "
        "retried starts the next one; a pause and resume, or a worker shutting down, does not.",
    )
    runs: int = Field(
        ..., description="Times a worker started the job: resumes and retries included."
    )
    failures: int
    max_attempts: int | None
    pause_requested: bool
    worker_id: str | None = Field(..., description="The worker running it, while it runs.")
    warnings: list[dict[str, Any]] = Field(
        ...,
        description="What trains, but not as asked, each with its code, a sentence and its "
        "numbers (`data`): texts longer than the model's maximum length, validation rows "
        "that are also training rows, a warm-up longer than the training, a device the "
        "worker does not have.",
    )
    estimate: dict[str, Any] | None = Field(
        None,
        description="tuneforge: what the job was estimated to need when it was created: "
        "`memory` (peak bytes per device by part: weights, adapters, gradients, optimizer, "
        "activations, logits, runtime; `total`), `seconds`, `disk` (checkpoints, model, "
        "merged; `total`), on `assumptions.device`; null where none could be made.",
    )


class FineTuningJobDeleted(Public):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    deleted: bool = True
    removed: list[str] = Field(
        ..., description="Folders removed from the data folder (checkpoints, logs, staging)."
    )
    kept_models: list[str] = Field(
        ..., description="Fine-tuned models the job made, kept with their registry versions."
    )


class FineTuningJobsPublic(Public):
    object: Literal["list"] = "list"
    data: list[FineTuningJobPublic]
    has_more: bool


class JobEventPublic(Public):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"]
    data: dict[str, Any] | None


class JobEventsPublic(Public):
    object: Literal["list"] = "list"
    data: list[JobEventPublic]
    has_more: bool


class CheckpointMetrics(Public):
    """OpenAI's checkpoint metrics (null where a job has none: `valid_` and `full_valid_`
    need validation rows), and whatever else the kind measures: DPO's `train_reward_accuracy`,
    `train_reward_margin` and their `full_valid_` counterparts, a classifier's
    `full_valid_f1_macro` and so on (see `tuneforge.training.checkpoint_metrics`)."""

    model_config = ConfigDict(extra="allow")

    step: float | None = Field(None, description="The step of the checkpoint.")
    train_loss: float | None = Field(
        None, description="Mean training loss since the previous checkpoint."
    )
    train_mean_token_accuracy: float | None = Field(
        None, description="Mean share of answer tokens predicted right, since the previous one."
    )
    valid_loss: float | None = Field(
        None, description="Loss on a fixed small batch of validation rows."
    )
    valid_mean_token_accuracy: float | None = Field(
        None, description="Token accuracy on that batch."
    )
    full_valid_loss: float | None = Field(None, description="Loss on the validation split.")
    full_valid_mean_token_accuracy: float | None = Field(
        None, description="Token accuracy on the validation split."
    )


class CheckpointPublic(Public):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuning_job_id: str
    fine_tuned_model_checkpoint: str
    step_number: int
    epoch: float | None
    metrics: CheckpointMetrics


class CheckpointsPublic(Public):
    object: Literal["list"] = "list"
    data: list[CheckpointPublic]
    has_more: bool
    first_id: str | None
    last_id: str | None


def public_job(job: Row) -> FineTuningJobPublic:
    """The OpenAI fine-tuning job object, with tuneforge's progress and metrics."""
    spec = job["spec"]
    method = spec["method"]
    params = method.get(method["type"], {})
    progress = job.get("progress") or None
    estimated_finish = None
    if progress and progress.get("eta_seconds") is not None and job["status"] == "running":
        estimated_finish = int(time.time() + progress["eta_seconds"])
    result = job.get("result") or {}
    return FineTuningJobPublic(
        id=job["id"],
        model=job["model"],
        created_at=int(job["created_at"]),
        finished_at=int(job["finished_at"]) if job.get("finished_at") else None,
        status=job["status"],
        worse_than_base=result.get("worse_than_base"),
        warning=(result.get("base_comparison") or {}).get("warning"),
        kept_model=result.get("kept"),
        fine_tuned_model=job.get("fine_tuned_model"),
        organization_id="org-tuneforge",
        training_file=spec["training_file"],
        training_files=spec["training_files"],
        validation_file=spec.get("validation_file"),
        hyperparameters=params.get("hyperparameters", {}),
        method=method,
        seed=spec["seed"],
        suffix=spec.get("suffix"),
        metadata=spec.get("metadata"),
        timeout_seconds=spec.get("timeout_seconds"),
        error=job.get("error"),
        result_files=[],
        trained_tokens=None,
        estimated_finish=estimated_finish,
        integrations=spec.get("integrations") or [],
        user_provided_suffix=spec.get("suffix"),
        progress=progress,
        metrics=job.get("metrics"),
        evaluation=result.get("evaluation"),
        registered_model=result.get("registered_model"),
        promotion=result.get("promotion"),
        result=result or None,
        attempts=attempt_number(job),
        runs=job.get("attempts", 0),
        failures=job.get("failures", 0),
        max_attempts=job.get("max_attempts"),
        pause_requested=bool(job.get("pause_requested")),
        worker_id=job.get("worker_id") if job["status"] == "running" else None,
        warnings=job.get("warnings") or [],
        estimate=job.get("estimate"),
    )


def attempt_number(job: Row) -> int:
    """The attempt a job is on: failures are what count (each retry is a new attempt), not
    runs (a user's pause and resume, or a worker shut down, runs the same attempt on).
    The database's `attempts` column counts runs."""
    if not job.get("attempts"):
        return 0
    failures = job.get("failures") or 0
    if job["status"] == "failed" and failures:
        return int(failures)  # the attempt that failed last
    limit = job.get("max_attempts") or failures + 1
    return int(min(failures + 1, limit))


def public_event(row: Row) -> JobEventPublic:
    return JobEventPublic(
        id=f"ftevent-{row['id']}",
        created_at=int(row["created_at"]),
        level=row["level"],
        message=row["message"],
        type=row["type"],
        data=row["data"],
    )


def checkpoint_name(job_id: str, step: int) -> str:
    """A checkpoint's one name, `<job id>:ckpt-step-<step>`: valid from the moment it is
    written, whatever becomes of its job (paused, cancelled, failed or succeeded)."""
    return f"{job_id}:ckpt-step-{step}"


def public_checkpoint(row: Row, job_id: str) -> CheckpointPublic:
    """A checkpoint of `job_id`, named by `checkpoint_name`."""
    return CheckpointPublic(
        id=row["id"],
        created_at=int(row["created_at"]),
        fine_tuning_job_id=job_id,
        fine_tuned_model_checkpoint=checkpoint_name(job_id, row["step"]),
        step_number=row["step"],
        epoch=row["epoch"],
        metrics=CheckpointMetrics.model_validate(row["metrics"] or {}),
    )
