"""`/v1/feedback`: ratings of a model's answers, exported into datasets and retrained on."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from tuneforge.api.deps import SettingsDep, StoreDep
from tuneforge.api.routes.datasets import public_dataset
from tuneforge.feedback.export import FeedbackExport, export_feedback
from tuneforge.feedback.retrain import RetrainRequest, retrain_on_feedback
from tuneforge.feedback.service import (
    FeedbackCreate,
    add_feedback,
    public_feedback,
    require_feedback,
)
from tuneforge.jobs.service import public_job

router = APIRouter(prefix="/v1/feedback", tags=["feedback"])


def _export_view(exported: dict[str, Any]) -> dict[str, Any]:
    return {
        "object": "feedback.export",
        "dataset": public_dataset(exported["dataset"]),
        "rows": exported["rows"],
        "feedback": exported["feedback"],
        "by_source": exported["by_source"],
    }


@router.post("")
def create(store: StoreDep, request: FeedbackCreate) -> dict[str, Any]:
    """Record a rating (`up`, `down`, `edited` with `corrected_output`) of a model's answer."""
    return public_feedback(add_feedback(store, request))


@router.get("")
def list_feedback(
    store: StoreDep,
    model: str | None = None,
    registered_model: str | None = None,
    rating: Literal["up", "down", "edited"] | None = None,
    since: float | None = None,
    until: float | None = None,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
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
    return {"object": "list", "data": [public_feedback(r) for r in rows], "has_more": has_more}


@router.post("/export")
async def export(store: StoreDep, settings: SettingsDep, request: FeedbackExport) -> dict[str, Any]:
    """A new dataset from the feedback: SFT examples or DPO preference pairs."""
    return _export_view(await run_in_threadpool(export_feedback, store, settings, request))


@router.post("/retrain")
async def retrain(
    store: StoreDep, settings: SettingsDep, request: RetrainRequest
) -> dict[str, Any]:
    """Export a registered model's feedback and queue a job that fine-tunes its `alias`
    version on it, promoted through the registry's gate."""
    job, exported = await run_in_threadpool(retrain_on_feedback, store, settings, request)
    return {"object": "feedback.retrain", "job": public_job(job), "export": _export_view(exported)}


@router.get("/{feedback_id}")
def get_feedback(store: StoreDep, feedback_id: str) -> dict[str, Any]:
    return public_feedback(require_feedback(store, feedback_id))
