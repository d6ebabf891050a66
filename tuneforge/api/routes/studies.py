"""`/v1/studies`: hyperparameter searches whose trials are fine-tuning jobs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from tuneforge.api.deps import SettingsDep, StoreDep
from tuneforge.studies.service import create_study, promote_study, public_study
from tuneforge.studies.spec import StudyCreate, StudyPromote

router = APIRouter(prefix="/v1/studies", tags=["studies"])


@router.post("")
async def create(store: StoreDep, settings: SettingsDep, request: StudyCreate) -> dict[str, Any]:
    """Check the job and the search space, then start the study: a driver beside the workers
    queues its trial jobs."""
    study = await run_in_threadpool(create_study, store, settings, request)
    return public_study(store, study)


@router.get("")
def list_studies(
    store: StoreDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    status: Literal["running", "succeeded", "failed", "cancelled"] | None = None,
) -> dict[str, Any]:
    rows, has_more = store.list_studies(after=after, limit=limit, status=status)
    return {"object": "list", "data": [public_study(store, r) for r in rows], "has_more": has_more}


@router.get("/{study_id}")
def get_study(store: StoreDep, study_id: str) -> dict[str, Any]:
    """The study with every trial (parameters, state, value, intermediate values, job)."""
    return public_study(store, store.require_study(study_id))


@router.post("/{study_id}/cancel")
def cancel_study(store: StoreDep, study_id: str) -> dict[str, Any]:
    """The driver cancels the study's unfinished trial jobs and ends it (`cancelled`)."""
    return public_study(store, store.request_study_cancel(study_id))


@router.post("/{study_id}/promote")
def promote(store: StoreDep, study_id: str, request: StudyPromote) -> dict[str, Any]:
    """Point a registry alias at the best trial's model version."""
    return promote_study(store, study_id, request.alias)
