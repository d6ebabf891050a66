"""The answers of `/v1/model_imports`: a base model being imported, and the model once made."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tuneforge.api.schemas.base import Public
from tuneforge.api.schemas.models import ModelPublic, public_model
from tuneforge.db.store import Row
from tuneforge.jobs.status import JobStatus


class ModelImportPublic(Public):
    id: str
    object: Literal["model.import"] = "model.import"
    status: JobStatus
    name: str = Field(..., description="The model's name once imported.")
    source: Literal["gguf", "folder"] = Field(..., description="A GGUF file, or a model folder.")
    file: str | None = Field(..., description="The uploaded GGUF file (purpose model), if one.")
    source_name: str = Field(..., description="The GGUF file's or folder's own name.")
    created_at: int
    finished_at: int | None
    error: dict[str, Any] | None
    model: ModelPublic | None = Field(..., description="The imported model, once it succeeded.")


class ModelImportsPublic(Public):
    object: Literal["list"] = "list"
    data: list[ModelImportPublic]
    has_more: bool


def public_import(job: Row, model: Row | None) -> ModelImportPublic:
    """`job` (of kind model_import), with the `model` row it made if it has succeeded."""
    spec = job["spec"]
    return ModelImportPublic(
        id=job["id"],
        status=job["status"],
        name=spec["name"],
        source=spec["source"],
        file=spec["file"],
        source_name=spec["label"],
        created_at=int(job["created_at"]),
        finished_at=int(job["finished_at"]) if job.get("finished_at") else None,
        error=job.get("error"),
        model=public_model(model) if model is not None else None,
    )
