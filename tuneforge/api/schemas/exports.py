"""The answers of `/v1/exports`: a model written as a sentence-transformers folder, merged
safetensors or GGUF, and its files."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tuneforge.api.schemas.base import Public
from tuneforge.db.store import Row
from tuneforge.jobs.status import JobStatus


class ExportPublic(Public):
    id: str
    object: Literal["export"] = "export"
    status: JobStatus
    model: str
    format: str
    quantization: str | None
    metadata: dict[str, str] | None
    created_at: int
    finished_at: int | None
    error: dict[str, Any] | None
    files: list[dict[str, Any]] = Field(
        ..., description="The export's files (name, bytes, sha256), once it has succeeded."
    )
    primary_file: str | None = Field(..., description="The file `/content` sends by default.")
    verification: dict[str, Any] | None = Field(
        ..., description="How the written model was checked (GGUF: answers compared)."
    )
    details: dict[str, Any] = Field(..., description="Everything else the export reported.")


class ExportsPublic(Public):
    object: Literal["list"] = "list"
    data: list[ExportPublic]
    has_more: bool


def public_export(job: Row) -> ExportPublic:
    spec = job["spec"]
    result = job.get("result") or {}
    return ExportPublic(
        id=job["id"],
        status=job["status"],
        model=spec["model"],
        format=spec["format"],
        quantization=spec.get("quantization"),
        metadata=spec.get("metadata"),
        created_at=int(job["created_at"]),
        finished_at=int(job["finished_at"]) if job.get("finished_at") else None,
        error=job.get("error"),
        files=result.get("files", []),
        primary_file=result.get("primary_file"),
        verification=result.get("verification"),
        details={k: v for k, v in result.items() if k not in ("files", "verification")},
    )
