"""`/v1/studies`: hyperparameter searches whose trials are fine-tuning jobs."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from tuneforge.api.deps import PageCursorDep, SettingsDep, StoreDep
from tuneforge.api.errors import error_responses
from tuneforge.api.schemas.studies import (
    StudiesPublic,
    StudyPromotionPublic,
    StudyPublic,
    public_study,
)
from tuneforge.studies.service import create_study, promote_study
from tuneforge.studies.spec import StudyCreate, StudyPromote

router = APIRouter(prefix="/v1/studies", tags=["studies"])


@router.post("", responses=error_responses(400, 404))
async def create(store: StoreDep, settings: SettingsDep, request: StudyCreate) -> StudyPublic:
    """Check the job and the search space, then start the study: a driver beside the workers
    queues its trial jobs."""
    study = await run_in_threadpool(create_study, store, settings, request)
    return public_study(store, study)


@router.get("")
def list_studies(
    store: StoreDep,
    after: PageCursorDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    status: Literal["running", "succeeded", "failed", "cancelled"] | None = None,
) -> StudiesPublic:
    rows, has_more = store.list_studies(after=after, limit=limit, status=status)
    return StudiesPublic(data=[public_study(store, r) for r in rows], has_more=has_more)


@router.get("/{study_id}", responses=error_responses(404))
def get_study(store: StoreDep, study_id: str) -> StudyPublic:
    """The study with every trial (parameters, state, value, intermediate values, job)."""
    return public_study(store, store.require_study(study_id))


@router.post("/{study_id}/cancel", responses=error_responses(404, 409))
def cancel_study(store: StoreDep, study_id: str) -> StudyPublic:
    """The driver cancels the study's unfinished trial jobs and ends it (`cancelled`)."""
    return public_study(store, store.request_study_cancel(study_id))


@router.post("/{study_id}/promote", responses=error_responses(404, 409))
def promote(store: StoreDep, study_id: str, request: StudyPromote) -> StudyPromotionPublic:
    """Point a registry alias at the best trial's model version."""
    name, version = promote_study(store, study_id, request.alias)
    return StudyPromotionPublic(name=name, version=version, alias=request.alias)
