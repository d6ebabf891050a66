"""`/v1/synthetic-data`: template prompts answered by a model, filtered, stored as a dataset."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from tuneforge.api.deps import PageCursorDep, SettingsDep, StoreDep
from tuneforge.api.errors import error_responses
from tuneforge.api.schemas.synthetic_data import (
    SyntheticDataListPublic,
    SyntheticDataPublic,
    public_synthetic,
)
from tuneforge.db.store import Row
from tuneforge.errors import JobNotFoundError
from tuneforge.synthetic.endpoint_keys import forget_finished_keys
from tuneforge.synthetic.service import KIND, SyntheticCreate, create_synthetic

router = APIRouter(prefix="/v1/synthetic-data", tags=["synthetic data"])


def _require(store: StoreDep, synthetic_id: str) -> Row:
    job = store.get_job(synthetic_id)
    if job is None or job["kind"] != KIND:
        raise JobNotFoundError(f"No synthetic data job with id {synthetic_id!r}.", param="id")
    return job


@router.post("", responses=error_responses(400, 404))
async def create(
    store: StoreDep, settings: SettingsDep, request: SyntheticCreate
) -> SyntheticDataPublic:
    """Queue the generation; a worker runs it. Its events are at
    `/v1/fine_tuning/jobs/{id}/events`; when it succeeds, `dataset_id` names the dataset."""
    return public_synthetic(await run_in_threadpool(create_synthetic, store, settings, request))


@router.get("")
def list_synthetic(
    store: StoreDep,
    after: PageCursorDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> SyntheticDataListPublic:
    rows, has_more = store.list_jobs(after=after, limit=limit, kind=KIND)
    return SyntheticDataListPublic(data=[public_synthetic(r) for r in rows], has_more=has_more)


@router.get("/{synthetic_id}", responses=error_responses(404))
def get_synthetic(store: StoreDep, synthetic_id: str) -> SyntheticDataPublic:
    return public_synthetic(_require(store, synthetic_id))


@router.post("/{synthetic_id}/cancel", responses=error_responses(404, 409))
def cancel_synthetic(
    store: StoreDep, settings: SettingsDep, synthetic_id: str
) -> SyntheticDataPublic:
    _require(store, synthetic_id)
    job = store.request_cancel(synthetic_id)
    forget_finished_keys(store, settings)  # a job cancelled before it ran keeps no key
    return public_synthetic(job)
