"""`/v1/fine_tuning/jobs`: OpenAI's fine-tuning jobs, their events and checkpoints."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from tuneforge.api.deps import SettingsDep, StoreDep
from tuneforge.db.store import Store
from tuneforge.jobs.service import create_job, public_event, public_job
from tuneforge.jobs.status import TERMINAL, JobStatus
from tuneforge.training.spec import JobCreate

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"])


def _event_number(event_id: str | None) -> int | None:
    if not event_id:
        return None
    digits = event_id.removeprefix("ftevent-")
    return int(digits) if digits.isdigit() else None


@router.post("")
async def create_fine_tuning_job(
    store: StoreDep, settings: SettingsDep, request: JobCreate
) -> dict[str, Any]:
    job = await run_in_threadpool(create_job, store, settings, request)
    return public_job(job)


@router.get("")
def list_fine_tuning_jobs(
    store: StoreDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    status: JobStatus | None = None,
) -> dict[str, Any]:
    rows, has_more = store.list_jobs(
        after=after, limit=limit, status=status.value if status else None
    )
    return {"object": "list", "data": [public_job(r) for r in rows], "has_more": has_more}


@router.get("/{job_id}")
def get_fine_tuning_job(store: StoreDep, job_id: str) -> dict[str, Any]:
    return public_job(store.require_job(job_id))


@router.post("/{job_id}/cancel")
def cancel_fine_tuning_job(store: StoreDep, job_id: str) -> dict[str, Any]:
    return public_job(store.request_cancel(job_id))


@router.get("/{job_id}/events", response_model=None)
def list_events(
    store: StoreDep,
    job_id: str,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    level: Literal["info", "warning", "error"] | None = None,
    type: Literal["message", "metrics"] | None = None,
    stream: bool = False,
    last_event_id: Annotated[str | None, Header()] = None,
) -> dict[str, Any] | StreamingResponse:
    """Newest first, as OpenAI lists them; `stream=true` gives Server-Sent Events from the
    oldest on (or after `Last-Event-ID`), ending when the job has ended."""
    store.require_job(job_id)
    if stream:
        start = _event_number(last_event_id) or _event_number(after) or 0
        return StreamingResponse(
            _sse(store, job_id, start, level, type),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )
    rows, has_more = store.list_events(
        job_id, after=_event_number(after), limit=limit, level=level, type=type
    )
    return {"object": "list", "data": [public_event(r) for r in rows], "has_more": has_more}


async def _sse(
    store: Store, job_id: str, after: int, level: str | None, type: str | None
) -> AsyncIterator[bytes]:
    idle = 0
    while True:
        rows, _ = await run_in_threadpool(
            store.list_events,
            job_id,
            after=after,
            limit=500,
            level=level,
            type=type,
            newest_first=False,
        )
        for row in rows:
            after = row["id"]
            yield (
                f"id: ftevent-{row['id']}\nevent: {row['type']}\n"
                f"data: {json.dumps(public_event(row))}\n\n"
            ).encode()
        if rows:
            idle = 0
            continue
        job = await run_in_threadpool(store.require_job, job_id)
        if job["status"] in TERMINAL:
            yield f"event: end\ndata: {json.dumps({'status': job['status']})}\n\n".encode()
            return
        idle += 1
        if idle % 30 == 0:
            yield b": keep-alive\n\n"
        await asyncio.sleep(0.5)


@router.get("/{job_id}/checkpoints")
def list_checkpoints(
    store: StoreDep,
    job_id: str,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> dict[str, Any]:
    job = store.require_job(job_id)
    model = job.get("fine_tuned_model") or job_id
    rows, has_more = store.list_checkpoints(job_id, after=after, limit=limit)
    data = [
        {
            "id": r["id"],
            "object": "fine_tuning.job.checkpoint",
            "created_at": int(r["created_at"]),
            "fine_tuning_job_id": job_id,
            "fine_tuned_model_checkpoint": f"{model}:ckpt-step-{r['step']}",
            "step_number": r["step"],
            "epoch": r["epoch"],
            "metrics": r["metrics"] or {},
        }
        for r in rows
    ]
    return {
        "object": "list",
        "data": data,
        "has_more": has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
