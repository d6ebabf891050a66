"""`/v1/files`: OpenAI's Files API for training data."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from tuneforge.api.deps import SettingsDep, StoreDep
from tuneforge.datasets.ingest import (
    delete_file,
    file_path,
    ingest_file,
    public_file,
    require_file,
)

router = APIRouter(prefix="/v1/files", tags=["files"])


@router.post("")
async def upload_file(
    store: StoreDep,
    settings: SettingsDep,
    file: UploadFile,
    purpose: Annotated[str, Form()] = "fine-tune",
) -> dict[str, Any]:
    """Upload a JSONL, CSV or Parquet file; it is validated at once (see /v1/datasets/{id})."""
    row = await run_in_threadpool(
        ingest_file, store, settings, file.filename or "upload", file.file, purpose=purpose
    )
    return public_file(row)


@router.get("")
def list_files(
    store: StoreDep,
    purpose: str | None = None,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
) -> dict[str, Any]:
    rows, has_more = store.list_files(purpose=purpose, after=after, limit=limit)
    data = [public_file(r) for r in rows]
    return {
        "object": "list",
        "data": data,
        "has_more": has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


@router.get("/{file_id}")
def get_file(store: StoreDep, file_id: str) -> dict[str, Any]:
    return public_file(require_file(store, file_id))


@router.get("/{file_id}/content")
def get_file_content(store: StoreDep, settings: SettingsDep, file_id: str) -> FileResponse:
    row = require_file(store, file_id)
    return FileResponse(
        file_path(settings, file_id),
        filename=row["filename"],
        media_type="application/octet-stream",
    )


@router.delete("/{file_id}")
def remove_file(store: StoreDep, settings: SettingsDep, file_id: str) -> dict[str, Any]:
    delete_file(store, settings, file_id)
    return {"id": file_id, "object": "file", "deleted": True}
