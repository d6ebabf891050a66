"""The seed-000 training API (`POST /training/train` and friends), as a thin adapter over the
same job engine: its request becomes a JobCreate, its task id is the job's UUID.

Its dataset ids are UUIDs: `0b30b284-f7fe-...` is the file `file-0b30b284f7fe...` (either form
is accepted; its answers and errors name files in the UUID form, as `/v1/files` shows it under
`uuid`). Its `loss` is the embedding loss (default: the data's, as for `/v1/fine_tuning/jobs`).
"""

from __future__ import annotations

import re
import uuid
from typing import Any, Literal

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tuneforge.api.deps import SettingsDep, StoreDep
from tuneforge.api.errors import error_responses
from tuneforge.api.schemas.training_seed import (
    STATUS,
    EvaluationAccepted,
    SeedEvaluationStatus,
    TrainAccepted,
    TrainCancelled,
    TrainStatus,
    evaluation_status,
    train_status,
)
from tuneforge.db.records import uuid_form
from tuneforge.errors import InvalidRequestError, JobNotFoundError, TuneforgeError
from tuneforge.evaluation.service import EvaluationCreate, create_evaluation
from tuneforge.jobs.service import create_job
from tuneforge.training.spec import JobCreate

router = APIRouter(tags=["seed-000 training"])

# sentence-transformers' old `fit` scheduler names -> transformers' schedule names.
SCHEDULERS = {
    "constantlr": "constant",
    "warmupconstant": "constant_with_warmup",
    "warmuplinear": "linear",
    "warmupcosine": "cosine",
}


class TrainRequest(BaseModel):
    """Seed 000's TrainRequest, field for field."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_tag: str = Field(..., min_length=1)
    train_dataset_ids: list[str] = Field(..., min_length=1)
    val_dataset_id: str | None = None
    epochs: int = Field(1, gt=0)
    per_device_train_batch_size: int = Field(8, gt=0)
    learning_rate: float = Field(5e-5, gt=0)
    warmup_steps: int = Field(0, ge=0)
    optimizer_name: Literal["AdamW", "adamw"] = "AdamW"
    scheduler: Literal["constantlr", "warmupconstant", "warmuplinear", "warmupcosine"] = (
        "warmuplinear"
    )
    weight_decay: float = Field(0.01, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    use_amp: bool = False
    show_progress_bar: bool = True
    evaluation_steps: int = Field(0, ge=0)
    save_best_model: bool = False
    save_each_epoch: bool = False
    save_optimizer_state: bool = False
    dataloader_num_workers: int = Field(0, ge=0, le=64)
    device: Literal["cpu", "cuda", "auto"] = "auto"
    timeout_seconds: int | None = Field(None, gt=0)
    loss: Literal["mnrl", "cached_mnrl", "triplet", "cosine", "cosent"] | None = Field(
        None,
        description="tuneforge: the embedding loss (default: cosent for scored pairs, mnrl "
        "for pairs and triplets).",
    )


def file_id_of(dataset_id: str, param: str) -> str:
    if dataset_id.startswith("file-"):
        return dataset_id
    try:
        return f"file-{uuid.UUID(dataset_id).hex}"
    except ValueError:
        raise InvalidRequestError(
            f"{dataset_id!r} is not a valid dataset id (a UUID).", param=param
        ) from None


FILE_ID = re.compile(r"\bfile-([0-9a-f]{32})\b")
# The job's parameters that are the seed request's under other names.
SEED_PARAMS = {"training_file": "train_dataset_ids[0]", "validation_file": "val_dataset_id"}


def in_seed_terms(exc: TuneforgeError) -> TuneforgeError:
    """`exc` as a seed-000 client reads it: files named by their UUIDs, and the request's
    own field names (`training_files[1]` is `train_dataset_ids[1]`)."""
    exc.message = FILE_ID.sub(lambda m: str(uuid_form(m.group(0))), exc.message)
    if exc.param:
        param = SEED_PARAMS.get(exc.param, exc.param)
        exc.param = re.sub(r"^training_files\[", "train_dataset_ids[", param)
    exc.args = (exc.message,)
    return exc


def job_id_of(task_id: str) -> str:
    try:
        return f"ftjob-{uuid.UUID(task_id).hex}"
    except ValueError:
        raise JobNotFoundError(f"No training task with id {task_id!r}.", param="task_id") from None


def to_job(request: TrainRequest) -> JobCreate:
    hyperparameters: dict[str, Any] = {
        "n_epochs": request.epochs,
        "batch_size": request.per_device_train_batch_size,
        "learning_rate": request.learning_rate,
        "warmup_steps": request.warmup_steps,
        "lr_scheduler": SCHEDULERS[request.scheduler],
        "weight_decay": request.weight_decay,
        "max_grad_norm": request.max_grad_norm,
        "use_amp": request.use_amp,
        "save_best_model": request.save_best_model,
        "dataloader_num_workers": request.dataloader_num_workers,
    }
    if request.evaluation_steps:
        hyperparameters["eval_steps"] = request.evaluation_steps
    return JobCreate(
        model=request.model_tag,
        training_files=[
            file_id_of(d, f"train_dataset_ids[{i}]")
            for i, d in enumerate(request.train_dataset_ids)
        ],
        validation_file=(
            file_id_of(request.val_dataset_id, "val_dataset_id") if request.val_dataset_id else None
        ),
        method={
            "type": "embedding",  # type: ignore[arg-type]
            "embedding": {"loss": request.loss, "hyperparameters": hyperparameters},
        },
        timeout_seconds=request.timeout_seconds,
        device=request.device,
    )


async def _train(
    store: StoreDep, settings: SettingsDep, request: TrainRequest, response: Response
) -> TrainAccepted:
    try:
        job = await run_in_threadpool(create_job, store, settings, to_job(request))
    except TuneforgeError as exc:
        raise in_seed_terms(exc) from None
    task_id = str(uuid.UUID(job["id"].removeprefix("ftjob-")))
    response.status_code = 202
    response.headers["Location"] = f"/training/{task_id}/status"
    return TrainAccepted(task_id=task_id, status=STATUS[job["status"]], message="Training queued")


def _status(store: StoreDep, task_id: str) -> TrainStatus:
    return train_status(task_id, store.require_job(job_id_of(task_id)))


def _cancel(store: StoreDep, task_id: str) -> TrainCancelled:
    job = store.request_cancel(job_id_of(task_id))
    return TrainCancelled(status_code=200, task_id=task_id, status=STATUS[job["status"]])


class EvaluateRequest(BaseModel):
    """Seed 000's `POST /evaluation/evaluate`: a trained model against a baseline, on the
    validation data of the training task that made it."""

    model_tag: str = Field(..., max_length=255)
    training_task_id: str | None = None
    baseline_model_tag: str | None = Field(None, max_length=255)
    val_dataset_id: str | None = None


async def _evaluate(
    store: StoreDep, settings: SettingsDep, request: EvaluateRequest, response: Response
) -> EvaluationAccepted:
    try:
        evaluation = EvaluationCreate(
            model=request.model_tag,
            baseline_model=request.baseline_model_tag,
            training_job=job_id_of(request.training_task_id) if request.training_task_id else None,
            file_id=(
                file_id_of(request.val_dataset_id, "val_dataset_id")
                if request.val_dataset_id
                else None
            ),
        )
    except ValidationError as exc:
        # The seed's fields map onto EvaluationCreate's: its checks are the request's.
        raise InvalidRequestError(
            "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors()),
            param="training_task_id",
        ) from None
    job = await run_in_threadpool(create_evaluation, store, settings, evaluation)
    evaluation_id = str(uuid.UUID(job["id"].removeprefix("evaljob-")))
    response.status_code = 202
    response.headers["Location"] = f"/evaluation/{evaluation_id}"
    return EvaluationAccepted(evaluation_id=evaluation_id, status=STATUS[job["status"]])


def _evaluation_status(store: StoreDep, evaluation_id: str) -> SeedEvaluationStatus:
    try:
        job_id = f"evaljob-{uuid.UUID(evaluation_id).hex}"
    except ValueError:
        raise JobNotFoundError(
            f"No evaluation with id {evaluation_id!r}.", param="evaluation_id"
        ) from None
    job = store.get_job(job_id)
    if job is None or job["kind"] != "evaluation":
        raise JobNotFoundError(f"No evaluation with id {evaluation_id!r}.", param="evaluation_id")
    return evaluation_status(evaluation_id, job)


router.add_api_route(
    "/evaluation/evaluate",
    _evaluate,
    methods=["POST"],
    status_code=202,
    responses=error_responses(400, 404),
)
router.add_api_route(
    "/evaluation/{evaluation_id}",
    _evaluation_status,
    methods=["GET"],
    responses=error_responses(404),
)
for prefix in ("/training/train", "/train"):
    router.add_api_route(
        prefix, _train, methods=["POST"], status_code=202, responses=error_responses(400, 404)
    )
for path in ("/training/{task_id}/status", "/train/status/{task_id}"):
    router.add_api_route(path, _status, methods=["GET"], responses=error_responses(404))
for path in ("/training/{task_id}/cancel", "/train/cancel/{task_id}"):
    router.add_api_route(path, _cancel, methods=["POST"], responses=error_responses(404, 409))
