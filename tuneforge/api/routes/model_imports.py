"""`/v1/model_imports`: base models imported from a GGUF file (uploaded with purpose `model`)
or from a file or folder inside the server's import roots, each made by a worker as a job.

GGUF files are large (a 7B model is 4 to 15 GB): `/v1/model_imports/files` takes them up to
`max_model_upload_bytes`, while `/v1/files` keeps its smaller limit for data. Both make the
same file object; the body limit is enforced per path while the body streams in, before the
purpose inside the form can be read.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from tuneforge.api.deps import PageCursorDep, SettingsDep, StoreDep, UploadDep
from tuneforge.api.errors import error_responses
from tuneforge.api.schemas.files import FilePublic, public_file
from tuneforge.api.schemas.model_imports import (
    ModelImportPublic,
    ModelImportsPublic,
    public_import,
)
from tuneforge.datasets.ingest import MODEL_PURPOSE, ingest_file
from tuneforge.db.store import Row, Store
from tuneforge.imports.service import KIND, ModelImportCreate, create_import, require_import
from tuneforge.jobs.status import JobStatus

router = APIRouter(prefix="/v1/model_imports", tags=["models"])
MODEL_UPLOAD_PATH = "/v1/model_imports/files"


def _public(store: Store, job: Row) -> ModelImportPublic:
    model = None
    if job["status"] == JobStatus.SUCCEEDED:
        row = store.get_model(job["spec"]["name"])
        model = row if row is not None and row["job_id"] == job["id"] else None
    return public_import(job, model)


@router.post("", responses=error_responses(400, 404, 409))
async def create(
    store: StoreDep, settings: SettingsDep, request: ModelImportCreate
) -> ModelImportPublic:
    """Queue an import: `file` (a GGUF uploaded with purpose `model`) or `path` (a GGUF file or
    Hugging Face folder inside the import roots). The source is checked at once (a complete
    GGUF of an architecture transformers reads; safetensors and no code in a folder; a free
    name). Its events are at `/v1/fine_tuning/jobs/{id}/events` like a job's."""
    job = await run_in_threadpool(create_import, store, settings, request)
    return _public(store, job)


@router.post("/files", responses=error_responses(400, 413, 507))
async def upload_model_file(store: StoreDep, settings: SettingsDep, file: UploadDep) -> FilePublic:
    """Upload a GGUF file to import (a file of purpose `model`, up to
    `max_model_upload_bytes`); then `POST /v1/model_imports` with its id as `file`."""
    row = await run_in_threadpool(
        ingest_file,
        store,
        settings,
        file.filename or "model.gguf",
        file.file,
        purpose=MODEL_PURPOSE,
    )
    return public_file(row)


@router.get("")
def list_imports(
    store: StoreDep,
    after: PageCursorDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> ModelImportsPublic:
    rows, has_more = store.list_jobs(after=after, limit=limit, kind=KIND)
    return ModelImportsPublic(data=[_public(store, r) for r in rows], has_more=has_more)


@router.get("/{import_id}", responses=error_responses(404))
def get_import(store: StoreDep, import_id: str) -> ModelImportPublic:
    return _public(store, require_import(store, import_id))


@router.post("/{import_id}/cancel", responses=error_responses(404, 409))
def cancel_import(store: StoreDep, import_id: str) -> ModelImportPublic:
    require_import(store, import_id)
    return _public(store, store.request_cancel(import_id))
