"""`/v1/fine_tuning/jobs`: OpenAI's fine-tuning jobs, their events and checkpoints."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from tuneforge.api.deps import (
    EventWatcherDep,
    PageCursorDep,
    SettingsDep,
    StoreDep,
    event_number,
)
from tuneforge.api.errors import error_responses
from tuneforge.api.event_watch import EventWatcher
from tuneforge.api.schemas.fine_tuning import (
    CheckpointsPublic,
    FineTuningJobDeleted,
    FineTuningJobPublic,
    FineTuningJobsPublic,
    JobEventsPublic,
    public_checkpoint,
    public_event,
    public_job,
)
from tuneforge.db.store import Store
from tuneforge.jobs.service import create_job, delete_job, require_fine_tuning_job
from tuneforge.jobs.status import SERVICE_KINDS, TERMINAL, JobStatus
from tuneforge.training.spec import JobCreate

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"])

SSE = {"text/event-stream": {"schema": {"type": "string"}}}


@router.post("", responses=error_responses(400, 404))
async def create_fine_tuning_job(
    store: StoreDep, settings: SettingsDep, request: JobCreate
) -> FineTuningJobPublic:
    job = await run_in_threadpool(create_job, store, settings, request)
    return public_job(job)


@router.get(
    "",
    openapi_extra={
        "parameters": [
            {
                "name": "metadata",
                "in": "query",
                "style": "deepObject",
                "explode": True,
                "schema": {"type": "object", "additionalProperties": {"type": "string"}},
                "description": "Jobs whose metadata has these values: metadata[key]=value "
                "(as OpenAI's client sends it); metadata=null: jobs without metadata.",
            }
        ]
    },
)
def list_fine_tuning_jobs(
    store: StoreDep,
    request: Request,
    after: PageCursorDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    status: JobStatus | None = None,
) -> FineTuningJobsPublic:
    """Newest first; `metadata[key]=value` keeps the jobs whose metadata has that value."""
    rows, has_more = store.list_jobs(
        after=after,
        limit=limit,
        status=status.value if status else None,
        not_kinds=SERVICE_KINDS,
        metadata=metadata_filter(request),
    )
    return FineTuningJobsPublic(data=[public_job(r) for r in rows], has_more=has_more)


def metadata_filter(request: Request) -> dict[str, str] | None:
    """The `metadata[key]=value` pairs of the query ({} for `metadata=null`: no metadata);
    None when the query filters on none."""
    pairs = {
        key[len("metadata[") : -1]: value
        for key, value in request.query_params.multi_items()
        if key.startswith("metadata[") and key.endswith("]")
    }
    if not pairs and request.query_params.get("metadata") == "null":
        return {}
    return pairs or None


@router.get("/{job_id}", responses=error_responses(404))
def get_fine_tuning_job(store: StoreDep, job_id: str) -> FineTuningJobPublic:
    return public_job(require_fine_tuning_job(store, job_id))


@router.delete("/{job_id}", responses=error_responses(404, 409))
def delete_fine_tuning_job(
    store: StoreDep, settings: SettingsDep, job_id: str
) -> FineTuningJobDeleted:
    """Delete a finished job (succeeded, failed or cancelled; 409 otherwise) with its events,
    checkpoints and logs. The model it made and its registry version stay."""
    done = delete_job(store, settings, job_id)
    return FineTuningJobDeleted(id=job_id, **done)


@router.post("/{job_id}/cancel", responses=error_responses(404, 409))
def cancel_fine_tuning_job(store: StoreDep, job_id: str) -> FineTuningJobPublic:
    require_fine_tuning_job(store, job_id)
    return public_job(store.request_cancel(job_id))


@router.post("/{job_id}/pause", responses=error_responses(404, 409))
def pause_fine_tuning_job(store: StoreDep, job_id: str) -> FineTuningJobPublic:
    """A queued job pauses at once; a running one writes a checkpoint at its next step and
    stops (status `paused`), freeing its device."""
    require_fine_tuning_job(store, job_id)
    return public_job(store.request_pause(job_id))


@router.post("/{job_id}/resume", responses=error_responses(404, 409))
def resume_fine_tuning_job(store: StoreDep, job_id: str) -> FineTuningJobPublic:
    """Queue a paused job again; it continues from its checkpoint with model, optimizer,
    scheduler, random state and data position restored."""
    require_fine_tuning_job(store, job_id)
    return public_job(store.resume(job_id))


@router.get(
    "/{job_id}/events/stream",
    response_class=StreamingResponse,
    responses={200: {"content": SSE}, **error_responses(404)},
)
def stream_events(
    store: StoreDep,
    watcher: EventWatcherDep,
    job_id: str,
    level: Literal["info", "warn", "error"] | None = None,
    type: Literal["message", "metrics"] | None = None,
    after: str | None = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Server-Sent Events, oldest first, from after `Last-Event-ID` (or `after`); each has
    the event's id, so a client that reconnects misses none and sees none twice. The stream
    ends with an `end` event when the job has ended."""
    start = event_number(last_event_id, "Last-Event-ID") or event_number(after, "after") or 0
    store.require_job(job_id)
    return StreamingResponse(
        _sse(store, watcher, job_id, start, level, type),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/{job_id}/events",
    response_model=JobEventsPublic,
    responses={200: {"content": SSE}, **error_responses(404)},
)
def list_events(
    store: StoreDep,
    watcher: EventWatcherDep,
    job_id: str,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    level: Literal["info", "warn", "error"] | None = None,
    type: Literal["message", "metrics"] | None = None,
    stream: bool = False,
    last_event_id: Annotated[str | None, Header()] = None,
) -> JobEventsPublic | StreamingResponse:
    """Newest first, as OpenAI lists them; `stream=true` is the same as `/events/stream`."""
    if stream:
        return stream_events(store, watcher, job_id, level, type, after, last_event_id)
    cursor = event_number(after, "after")
    store.require_job(job_id)
    rows, has_more = store.list_events(job_id, after=cursor, limit=limit, level=level, type=type)
    return JobEventsPublic(data=[public_event(r) for r in rows], has_more=has_more)


# A comment line this often keeps proxies from closing an idle stream.
KEEP_ALIVE_SECONDS = 15.0


async def _sse(
    store: Store,
    watcher: EventWatcher,
    job_id: str,
    after: int,
    level: str | None,
    type: str | None,
) -> AsyncIterator[bytes]:
    """The job's events after `after` as they are written, then an `end` event once the job
    has ended. Between reads it waits on the job's shared watch (tuneforge.api.event_watch).

    A job's last event commits with its final status: once a read that began after the watch
    saw a final status has found nothing more, the stream has every event."""
    watch = watcher.open(job_id)
    try:
        while True:
            seen = watch.head
            rows, more = await run_in_threadpool(
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
                    f"data: {json.dumps(public_event(row).model_dump(mode='json'))}\n\n"
                ).encode()
            if more:
                continue
            if seen[1] in TERMINAL:
                yield f"event: end\ndata: {json.dumps({'status': seen[1]})}\n\n".encode()
                return
            if await watch.wait_past(seen, KEEP_ALIVE_SECONDS) == seen:
                yield b": keep-alive\n\n"
    finally:
        watcher.close(watch)


@router.get("/{job_id}/checkpoints", responses=error_responses(404))
def list_checkpoints(
    store: StoreDep,
    job_id: str,
    after: PageCursorDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> CheckpointsPublic:
    store.require_job(job_id)
    rows, has_more = store.list_checkpoints(job_id, after=after, limit=limit)
    data = [public_checkpoint(r, job_id) for r in rows]
    return CheckpointsPublic(
        data=data,
        has_more=has_more,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
    )
