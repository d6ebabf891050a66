"""The answers of `/v1/files`: OpenAI's file object, with tuneforge's validation summary."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from tuneforge.api.schemas.base import Public
from tuneforge.db.records import uuid_form
from tuneforge.db.store import Row


class FilePublic(Public):
    id: str
    uuid: str | None = Field(
        None,
        description="tuneforge: the id as a UUID (8-4-4-4-12, the same hex digits), as the "
        "seed-000 API's dataset ids take it.",
    )
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["processed", "error"] = Field(
        ..., description="`error` when validation found problems (see /v1/datasets/{id})."
    )
    status_details: str | None = Field(..., description="The problems counted by code.")
    sha256: str
    format: str = Field(..., description="jsonl, csv or parquet.")


class FilesPublic(Public):
    object: Literal["list"] = "list"
    data: list[FilePublic]
    has_more: bool
    first_id: str | None
    last_id: str | None


class FileDeleted(Public):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


def public_file(row: Row) -> FilePublic:
    """The OpenAI file object, with tuneforge's validation summary beside it."""
    report = row["report"]
    return FilePublic(
        id=row["id"],
        uuid=uuid_form(row["id"]),
        bytes=row["bytes"],
        created_at=int(row["created_at"]),
        filename=row["filename"],
        purpose=row["purpose"],
        status="processed" if report["valid"] else "error",
        status_details=None
        if report["valid"]
        else (
            f"{report['problem_count']} problem(s): "
            + ", ".join(f"{code} x{n}" for code, n in report["problems_by_code"].items())
        ),
        sha256=row["sha256"],
        format=row["format"],
    )


def files_page(rows: Sequence[Row], has_more: bool) -> FilesPublic:
    data = [public_file(r) for r in rows]
    return FilesPublic(
        data=data,
        has_more=has_more,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
    )
