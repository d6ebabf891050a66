"""Taking in uploaded files: stored under the data folder by id, checked, and recorded."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any, BinaryIO

from tuneforge.config import Settings
from tuneforge.datasets.kinds import FileData, read_upload
from tuneforge.datasets.readers import detect_format
from tuneforge.datasets.statistics import load_tokenizer
from tuneforge.db.store import Row, Store, new_id
from tuneforge.errors import FileNotFoundInStoreError, FileTooLargeError, InvalidRequestError
from tuneforge.security.paths import inside
from tuneforge.security.uploads import refuse_archive

PURPOSES = ("fine-tune",)
CHUNK = 1024 * 1024


def file_path(settings: Settings, file_id: str) -> Path:
    """Where a stored file lives. Ids are generated here, never taken as paths."""
    if not file_id.startswith("file-") or not (file_id[5:].isascii() and file_id[5:].isalnum()):
        raise FileNotFoundInStoreError(f"No file with id {file_id!r}.", param="file_id")
    return inside(settings.files_dir, file_id)


def ingest_file(
    store: Store,
    settings: Settings,
    filename: str,
    source: BinaryIO,
    *,
    purpose: str = "fine-tune",
    file_id: str | None = None,
    annotations: dict[str, Any] | None = None,
) -> Row:
    """Copy `source` into the data folder, validate it and record it. The file is kept even
    when it has problems, so that its report can be read; jobs refuse it. `annotations` are
    added to the report (how a dataset made by tuneforge was made)."""
    if purpose not in PURPOSES:
        raise InvalidRequestError(
            f"purpose must be one of {', '.join(PURPOSES)}; got {purpose!r}.", param="purpose"
        )
    file_id = file_id or new_id("file")
    settings.ensure_dirs()
    dest = file_path(settings, file_id)
    partial = dest.with_suffix(".part")
    digest = hashlib.sha256()
    size = 0
    try:
        with partial.open("wb") as out:
            while chunk := source.read(CHUNK):
                if size == 0:
                    refuse_archive(chunk)
                size += len(chunk)
                if size > settings.max_upload_bytes:
                    raise FileTooLargeError(
                        f"The file is larger than the limit of {settings.max_upload_bytes} bytes.",
                        param="file",
                    )
                digest.update(chunk)
                out.write(chunk)
        partial.rename(dest)
    finally:
        partial.unlink(missing_ok=True)
    safe_name = Path(filename or "upload").name[:255] or "upload"
    fmt = detect_format(safe_name, dest)
    data = check_file(settings, dest, fmt)
    data.report.update(annotations or {})
    row = {
        "id": file_id,
        "filename": safe_name,
        "purpose": purpose,
        "bytes": size,
        "sha256": digest.hexdigest(),
        "format": fmt,
        "created_at": time.time(),
        "report": data.report,
    }
    try:
        return store.insert_file(row)
    except Exception:
        dest.unlink(missing_ok=True)
        raise


def check_file(settings: Settings, path: Path, fmt: str) -> FileData:
    """Read and validate a stored file for the training kind its columns name."""
    return read_upload(
        path, fmt, min_rows=settings.min_rows, tokenizer=load_tokenizer(settings.stats_tokenizer)
    )


def require_file(store: Store, file_id: str, param: str = "file_id") -> Row:
    row = store.get_file(file_id)
    if row is None:
        raise FileNotFoundInStoreError(f"No file with id {file_id!r}.", param=param)
    return row


def delete_file(store: Store, settings: Settings, file_id: str) -> None:
    require_file(store, file_id)
    users = store.files_in_use(file_id)
    if users:
        raise InvalidRequestError(
            f"File {file_id} is used by unfinished jobs: {', '.join(users)}.", param="file_id"
        )
    store.delete_file(file_id)
    file_path(settings, file_id).unlink(missing_ok=True)
