"""`/v1/files`: OpenAI's Files API for training data."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from tuneforge.api.deps import PageCursorDep, SettingsDep, StoreDep, UploadDep
from tuneforge.api.errors import error_responses
from tuneforge.api.schemas.files import (
    FileDeleted,
    FilePublic,
    FilesPublic,
    files_page,
    public_file,
)
from tuneforge.datasets.ingest import delete_file, file_path, ingest_file, require_file

router = APIRouter(prefix="/v1/files", tags=["files"])

BINARY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}


@router.post("", responses=error_responses(400, 413, 507))
async def upload_file(
    store: StoreDep,
    settings: SettingsDep,
    file: UploadDep,
    purpose: Annotated[str, Form()] = "fine-tune",
) -> FilePublic:
    """Upload a JSONL, CSV or Parquet file; it is validated at once (see /v1/datasets/{id})."""
    row = await run_in_threadpool(
        ingest_file, store, settings, file.filename or "upload", file.file, purpose=purpose
    )
    return public_file(row)


@router.get("")
def list_files(
    store: StoreDep,
    after: PageCursorDep,
    purpose: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
) -> FilesPublic:
    rows, has_more = store.list_files(purpose=purpose, after=after, limit=limit)
    return files_page(rows, has_more)


@router.get("/{file_id}", responses=error_responses(404))
def get_file(store: StoreDep, file_id: str) -> FilePublic:
    return public_file(require_file(store, file_id))


@router.get(
    "/{file_id}/content",
    response_class=FileResponse,
    responses={200: {"content": BINARY}, **error_responses(404)},
)
def get_file_content(store: StoreDep, settings: SettingsDep, file_id: str) -> FileResponse:
    row = require_file(store, file_id)
    return FileResponse(
        file_path(settings, file_id),
        filename=row["filename"],
        media_type="application/octet-stream",
    )


@router.delete("/{file_id}", responses=error_responses(400, 404))
def remove_file(store: StoreDep, settings: SettingsDep, file_id: str) -> FileDeleted:
    """Refused (400) while unfinished jobs use the file."""
    delete_file(store, settings, file_id)
    return FileDeleted(id=file_id, deleted=True)
