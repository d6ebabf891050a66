"""`/v1/feedback`: ratings of a model's answers, exported into datasets and retrained on."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from tuneforge.api.deps import PageCursorDep, SettingsDep, StoreDep
from tuneforge.api.errors import error_responses
from tuneforge.api.schemas.feedback import (
    FeedbackExportPublic,
    FeedbackListPublic,
    FeedbackPublic,
    FeedbackRetrainPublic,
    public_feedback,
    public_feedback_export,
)
from tuneforge.api.schemas.fine_tuning import public_job
from tuneforge.feedback.export import FeedbackExport, export_feedback
from tuneforge.feedback.retrain import RetrainRequest, retrain_on_feedback
from tuneforge.feedback.service import FeedbackCreate, add_feedback, require_feedback

router = APIRouter(prefix="/v1/feedback", tags=["feedback"])


@router.post("", responses=error_responses(400, 404))
def create(store: StoreDep, request: FeedbackCreate) -> FeedbackPublic:
    """Record a rating (`up`, `down`, `edited` with `corrected_output`) of a model's answer."""
    return public_feedback(add_feedback(store, request))


@router.get("")
def list_feedback(
    store: StoreDep,
    after: PageCursorDep,
    model: str | None = None,
    registered_model: str | None = None,
    rating: Literal["up", "down", "edited"] | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> FeedbackListPublic:
    """Newest first, filtered by model, registered model, rating and time (UNIX seconds)."""
    rows, has_more = store.list_feedback(
        model=model,
        registered_model=registered_model,
        rating=rating,
        since=since,
        until=until,
        after=after,
        limit=limit,
    )
    return FeedbackListPublic(data=[public_feedback(r) for r in rows], has_more=has_more)


@router.post("/export", responses=error_responses(400, 404))
async def export(
    store: StoreDep, settings: SettingsDep, request: FeedbackExport
) -> FeedbackExportPublic:
    """A new dataset from the feedback: SFT examples or DPO preference pairs."""
    exported = await run_in_threadpool(export_feedback, store, settings, request)
    return public_feedback_export(exported)


@router.post("/retrain", responses=error_responses(400, 404))
async def retrain(
    store: StoreDep, settings: SettingsDep, request: RetrainRequest
) -> FeedbackRetrainPublic:
    """Export a registered model's feedback and queue a job that fine-tunes its `alias`
    version on it, promoted through the registry's gate."""
    job, exported = await run_in_threadpool(retrain_on_feedback, store, settings, request)
    return FeedbackRetrainPublic(job=public_job(job), export=public_feedback_export(exported))


@router.get("/{feedback_id}", responses=error_responses(404))
def get_feedback(store: StoreDep, feedback_id: str) -> FeedbackPublic:
    return public_feedback(require_feedback(store, feedback_id))
