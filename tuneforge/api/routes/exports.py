"""`/v1/exports`: models written as sentence-transformers folders, merged safetensors or GGUF
(+ Ollama Modelfile), made by a worker and downloaded from here."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, StreamingResponse

from tuneforge.api.deps import PageCursorDep, SettingsDep, StoreDep
from tuneforge.api.errors import error_responses
from tuneforge.api.schemas.exports import ExportPublic, ExportsPublic, public_export
from tuneforge.errors import InvalidRequestError
from tuneforge.export.service import (
    KIND,
    ExportCreate,
    create_export,
    export_folder,
    require_export,
)
from tuneforge.security.paths import inside

router = APIRouter(prefix="/v1/exports", tags=["exports"])

# A single file, or a folder export as one tar stream.
DOWNLOAD = {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    "application/x-tar": {"schema": {"type": "string", "format": "binary"}},
}


@router.post("", responses=error_responses(400, 404))
async def create(store: StoreDep, settings: SettingsDep, request: ExportCreate) -> ExportPublic:
    """Queue an export. Its events are at `/v1/fine_tuning/jobs/{id}/events` like a job's."""
    return public_export(await run_in_threadpool(create_export, store, settings, request))


@router.get("")
def list_exports(
    store: StoreDep,
    after: PageCursorDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> ExportsPublic:
    rows, has_more = store.list_jobs(after=after, limit=limit, kind=KIND)
    return ExportsPublic(data=[public_export(r) for r in rows], has_more=has_more)


@router.get("/{export_id}", responses=error_responses(404))
def get_export(store: StoreDep, export_id: str) -> ExportPublic:
    return public_export(require_export(store, export_id))


@router.post("/{export_id}/cancel", responses=error_responses(404, 409))
def cancel_export(store: StoreDep, export_id: str) -> ExportPublic:
    require_export(store, export_id)
    return public_export(store.request_cancel(export_id))


@router.get(
    "/{export_id}/content",
    response_model=None,
    response_class=FileResponse,
    responses={200: {"content": DOWNLOAD}, **error_responses(400, 404)},
)
def download(
    store: StoreDep,
    settings: SettingsDep,
    export_id: str,
    file: Annotated[str | None, Query(description="One of the export's files by name.")] = None,
) -> FileResponse | StreamingResponse:
    """The export's main file (the GGUF file), or the file named by `file`; a folder export
    without `file` comes as a tar stream. Single files carry their SHA-256 in `X-SHA256`."""
    job = require_export(store, export_id)
    if job["status"] != "succeeded":
        raise InvalidRequestError(
            f"Export {export_id} is {job['status']}; its files exist once it has succeeded.",
            param="id",
        )
    result = job["result"]
    folder = export_folder(settings, export_id)
    files = {f["name"]: f for f in result["files"]}
    name = file or (result["primary_file"] if result["primary_file"] in files else None)
    if name is not None:
        if name not in files:
            raise InvalidRequestError(
                f"Export {export_id} has no file {name!r}; its files are listed in `files`.",
                param="file",
            )
        entry = files[name]
        return FileResponse(
            inside(folder, name),
            filename=Path(name).name,
            media_type="application/octet-stream",
            headers={"X-SHA256": entry["sha256"]},
        )
    archive = f"{result['primary_file']}.tar"
    return StreamingResponse(
        _tar_stream(folder, sorted(files)),
        media_type="application/x-tar",
        headers={"Content-Disposition": f'attachment; filename="{archive}"'},
    )


def _tar_stream(folder: Path, names: list[str]) -> Iterator[bytes]:
    """A tar archive of the export's files, written as it is read: each file's header, its
    bytes in blocks, padding to 512 bytes; two empty blocks at the end."""
    for name in names:
        path = inside(folder, name)
        info = tarfile.TarInfo(name)
        info.size = path.stat().st_size
        info.mtime = int(path.stat().st_mtime)
        info.mode = 0o644
        yield info.tobuf(format=tarfile.PAX_FORMAT)
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                yield block
        yield b"\0" * (-info.size % tarfile.BLOCKSIZE)
    yield b"\0" * (2 * tarfile.BLOCKSIZE)
