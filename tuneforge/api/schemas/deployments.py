"""The answers of `/v1/deployments`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tuneforge.api.schemas.base import Public
from tuneforge.db.store import Row
from tuneforge.jobs.status import JobStatus


class DeploymentPublic(Public):
    id: str
    object: Literal["deployment"] = "deployment"
    status: JobStatus
    model: str = Field(..., description="The version's fine-tuned model id.")
    name: str = Field(..., description="The registered model's name.")
    version: int
    target: dict[str, Any]
    target_key: str = Field(..., description="Deployments with the same key replace each other.")
    rollback_of: str | None = Field(
        ..., description="For a rollback: the deployment that was live before it."
    )
    health_check: dict[str, Any] | None = Field(
        ..., description="What was asked and answered, and whether it passed (once run)."
    )
    metadata: dict[str, str] | None
    created_at: int
    finished_at: int | None
    error: dict[str, Any] | None
    details: dict[str, Any] = Field(..., description="Everything else the deployment reported.")


class DeploymentsPublic(Public):
    object: Literal["list"] = "list"
    data: list[DeploymentPublic]
    has_more: bool


def public_deployment(job: Row) -> DeploymentPublic:
    spec = job["spec"]
    result = job.get("result") or {}
    return DeploymentPublic(
        id=job["id"],
        status=job["status"],
        model=spec["model_id"],
        name=spec["name"],
        version=spec["version"],
        target=spec["target"],
        target_key=spec["target_key"],
        rollback_of=spec.get("rollback_of"),
        health_check=result.get("health_check"),
        metadata=spec.get("metadata"),
        created_at=int(job["created_at"]),
        finished_at=int(job["finished_at"]) if job.get("finished_at") else None,
        error=job.get("error"),
        details={k: v for k, v in result.items() if k != "health_check"},
    )
