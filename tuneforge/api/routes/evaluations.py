"""`/v1/evaluations`: a model and an optional baseline measured on the same rows."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from tuneforge.api.deps import PageCursorDep, SettingsDep, StoreDep
from tuneforge.api.errors import error_responses
from tuneforge.api.schemas.evaluations import (
    EvaluationPublic,
    EvaluationsPublic,
    public_evaluation,
)
from tuneforge.db.store import Row
from tuneforge.errors import JobNotFoundError
from tuneforge.evaluation.service import KIND, EvaluationCreate, create_evaluation

router = APIRouter(prefix="/v1/evaluations", tags=["evaluations"])


def _require(store: StoreDep, evaluation_id: str) -> Row:
    job = store.get_job(evaluation_id)
    if job is None or job["kind"] != KIND:
        raise JobNotFoundError(f"No evaluation with id {evaluation_id!r}.", param="id")
    return job


@router.post("", responses=error_responses(400, 404))
async def create(
    store: StoreDep, settings: SettingsDep, request: EvaluationCreate
) -> EvaluationPublic:
    """Queue an evaluation; a worker runs it. Its events are at
    `/v1/fine_tuning/jobs/{id}/events` like a job's."""
    return public_evaluation(await run_in_threadpool(create_evaluation, store, settings, request))


@router.get("")
def list_evaluations(
    store: StoreDep,
    after: PageCursorDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> EvaluationsPublic:
    rows, has_more = store.list_jobs(after=after, limit=limit, kind=KIND)
    return EvaluationsPublic(data=[public_evaluation(r) for r in rows], has_more=has_more)


@router.get("/{evaluation_id}", responses=error_responses(404))
def get_evaluation(store: StoreDep, evaluation_id: str) -> EvaluationPublic:
    return public_evaluation(_require(store, evaluation_id))


@router.post("/{evaluation_id}/cancel", responses=error_responses(404, 409))
def cancel_evaluation(store: StoreDep, evaluation_id: str) -> EvaluationPublic:
    _require(store, evaluation_id)
    return public_evaluation(store.request_cancel(evaluation_id))
