"""The answer of `/v1/workers`: the workers sharing this database."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tuneforge.api.schemas.base import Public
from tuneforge.db.store import Row


class WorkerPublic(Public):
    id: str
    object: Literal["worker"] = "worker"
    hostname: str
    pid: int
    kinds: list[str] | None = Field(..., description="The job kinds it takes; null: all.")
    devices: list[str] | None = Field(..., description="The devices it takes jobs for; null: all.")
    started_at: int
    heartbeat_at: int
    job_id: str | None = Field(..., description="The job it runs now.")
    alive: bool = Field(..., description="Not stopped, and its heartbeat is fresh.")


class WorkersPublic(Public):
    object: Literal["list"] = "list"
    data: list[WorkerPublic]
    queued: int = Field(..., description="Jobs waiting for a worker.")


def public_worker(row: Row, *, now: float, stalled_after: float) -> WorkerPublic:
    """The worker, `alive` while it has not stopped and beat within `stalled_after` seconds."""
    return WorkerPublic(
        id=row["id"],
        hostname=row["hostname"],
        pid=row["pid"],
        kinds=row["kinds"],
        devices=row["devices"],
        started_at=int(row["started_at"]),
        heartbeat_at=int(row["heartbeat_at"]),
        job_id=row["job_id"],
        alive=row["stopped_at"] is None and now - row["heartbeat_at"] < stalled_after,
    )
