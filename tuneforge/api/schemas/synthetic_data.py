"""The answers of `/v1/synthetic-data`: a generation job and the dataset it made."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tuneforge.api.schemas.base import Public
from tuneforge.db.store import Row
from tuneforge.jobs.status import JobStatus
from tuneforge.synthetic.endpoint_keys import REDACTED


class SyntheticDataPublic(Public):
    id: str
    object: Literal["synthetic_data"] = "synthetic_data"
    status: JobStatus
    created_at: int
    finished_at: int | None
    request: dict[str, Any] = Field(
        ..., description="The request as stored; an endpoint's api_key shows as ***."
    )
    progress: dict[str, Any] | None
    error: dict[str, Any] | None
    result: dict[str, Any] | None
    dataset_id: str | None = Field(..., description="The dataset made, once it has succeeded.")


class SyntheticDataListPublic(Public):
    object: Literal["list"] = "list"
    data: list[SyntheticDataPublic]
    has_more: bool


def public_synthetic(job: Row) -> SyntheticDataPublic:
    spec = dict(job["spec"])
    if spec.get("endpoint"):
        # The stored request holds REDACTED, never the key; shown the same way.
        spec["endpoint"] = dict(
            spec["endpoint"], api_key=REDACTED if spec["endpoint"].get("api_key") else None
        )
    return SyntheticDataPublic(
        id=job["id"],
        status=job["status"],
        created_at=int(job["created_at"]),
        finished_at=int(job["finished_at"]) if job.get("finished_at") else None,
        request=spec,
        progress=job.get("progress"),
        error=job.get("error"),
        result=job.get("result"),
        dataset_id=(job.get("result") or {}).get("dataset_id"),
    )
