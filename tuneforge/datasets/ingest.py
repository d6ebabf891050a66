"""Taking in uploaded files: stored under the data folder by id, checked, and recorded."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any, BinaryIO

from tuneforge.config import Settings
from tuneforge.datasets.kinds import FileData, read_upload
from tuneforge.datasets.readers import detect_format
from tuneforge.datasets.row_index import RowIndexBuilder
from tuneforge.datasets.statistics import load_tokenizer
from tuneforge.datasets.sweep import hold
from tuneforge.db.store import Row, Store, new_id
from tuneforge.errors import (
    FileNotFoundInStoreError,
    FileTooLargeError,
    InvalidRequestError,
    UnsupportedFileError,
)
from tuneforge.security.paths import inside
from tuneforge.security.uploads import file_label, refuse_archive

# `model`: a GGUF file to import as a base model (tuneforge.imports); stored, never parsed
# as data.
MODEL_PURPOSE = "model"
PURPOSES = ("fine-tune", MODEL_PURPOSE)
GGUF_MAGIC = b"GGUF"
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
    is_model = purpose == MODEL_PURPOSE
    limit = settings.max_model_upload_bytes if is_model else settings.max_upload_bytes
    file_id = file_id or new_id("file")
    settings.ensure_dirs()
    dest = file_path(settings, file_id)
    partial = dest.with_suffix(".part")
    digest = hashlib.sha256()
    size = 0
    try:
        with partial.open("wb") as out:
            # Held until the row is committed: the start-up sweep of another process sharing
            # the data folder leaves this upload alone (tuneforge.datasets.sweep).
            hold(out)
            while chunk := source.read(CHUNK):
                if size == 0 and is_model:
                    refuse_model(chunk)
                elif size == 0:
                    refuse_archive(chunk)
                size += len(chunk)
                if size > limit:
                    raise FileTooLargeError(
                        f"The file is larger than the limit of {limit} bytes.", param="file"
                    )
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())  # whole on disk before it has a name and a row
            partial.rename(dest)
            row = _record(store, settings, dest, filename, purpose, size, digest, annotations)
    except BaseException:
        # Nothing of a failed upload stays: no part, no file, nothing kept beside it.
        for path in [partial, *stored_paths(dest)]:
            path.unlink(missing_ok=True)
        raise
    return row


def _record(
    store: Store,
    settings: Settings,
    dest: Path,
    filename: str,
    purpose: str,
    size: int,
    digest: Any,
    annotations: dict[str, Any] | None,
) -> Row:
    """Check a stored upload and write its row."""
    safe_name = file_label(filename)
    if purpose == MODEL_PURPOSE:
        fmt, report = "gguf", {"valid": True, "kind": MODEL_PURPOSE}
    else:
        fmt = detect_format(safe_name, dest)
        report = check_upload(settings, dest, fmt)
    report.update(annotations or {})
    row = {
        "id": dest.name,
        "filename": safe_name,
        "purpose": purpose,
        "bytes": size,
        "sha256": digest.hexdigest(),
        "format": fmt,
        "created_at": time.time(),
        "report": report,
    }
    return store.insert_file(row)


def refuse_model(head: bytes) -> None:
    """UnsupportedFileError unless `head` starts a GGUF file (the one model upload taken)."""
    if not head.startswith(GGUF_MAGIC):
        raise UnsupportedFileError(
            "A file of purpose model must be a GGUF file (it starts with the bytes 'GGUF'); "
            "import a Hugging Face folder by its path instead.",
            param="file",
        )


def check_file(settings: Settings, path: Path, fmt: str) -> FileData:
    """Read and validate a stored file for the training kind its columns name."""
    return read_upload(
        path, fmt, min_rows=settings.min_rows, tokenizer=load_tokenizer(settings.stats_tokenizer)
    )


def check_upload(settings: Settings, path: Path, fmt: str) -> dict[str, Any]:
    """The report of a stored upload, read as a stream (no row kept: memory grows with the
    longest line, not the file), and its row index written beside it (`row_index`)."""
    index = RowIndexBuilder()
    tokenizer = load_tokenizer(settings.stats_tokenizer)
    data = read_upload(
        path, fmt, min_rows=settings.min_rows, tokenizer=tokenizer, keep_rows=False, index=index
    )
    if fmt != "parquet":
        index.save(path)
    return data.report


def require_file(store: Store, file_id: str, param: str = "file_id") -> Row:
    row = store.get_file(file_id)
    if row is None:
        raise FileNotFoundInStoreError(f"No file with id {file_id!r}.", param=param)
    return row


def require_dataset(store: Store, file_id: str, param: str = "file_id") -> Row:
    """A file of data: a model file (purpose model) is no dataset to read or train on."""
    row = require_file(store, file_id, param)
    if row["purpose"] == MODEL_PURPOSE:
        raise FileNotFoundInStoreError(
            f"File {file_id} is a model to import (purpose model), not a dataset.", param=param
        )
    return row


def delete_file(store: Store, settings: Settings, file_id: str) -> None:
    """Delete a file no unfinished job names: its row first, in one transaction with the
    check (tuneforge.db.files), then what it has on disk, so that a job created at the same
    moment either holds the file or is refused."""
    path = file_path(settings, file_id)
    store.delete_unused_file(file_id)
    for stored in stored_paths(path):
        stored.unlink(missing_ok=True)


def stored_paths(path: Path) -> list[Path]:
    """A stored file and what is kept beside it under its name (`file-….<suffix>`)."""
    return [path, *path.parent.glob(f"{path.name}.*")]
