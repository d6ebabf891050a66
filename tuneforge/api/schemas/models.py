"""The answers of `/v1/models`: OpenAI's model object, with what tuneforge knows beside it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tuneforge.api.schemas.base import Public
from tuneforge.db.store import Row


class ModelPublic(Public):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    kind: str = Field(..., description="`base`, or the kind of a fine-tuned model.")
    base_model: str | None
    job_id: str | None = Field(..., description="The job that made it.")


class ModelsPublic(Public):
    object: Literal["list"] = "list"
    data: list[ModelPublic]


def public_model(row: Row) -> ModelPublic:
    return ModelPublic(
        id=row["id"],
        created=int(row["created_at"]),
        owned_by=row["owned_by"],
        kind=row["kind"],
        base_model=row.get("base_model"),
        job_id=row.get("job_id"),
    )
