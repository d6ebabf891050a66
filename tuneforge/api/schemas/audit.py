"""The answer of `/v1/audit`: the log of every write through the API."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tuneforge.api.schemas.base import Public


class AuditEntryPublic(Public):
    id: int
    object: Literal["audit.entry"] = "audit.entry"
    created_at: float
    actor: str = Field(..., description='An API key\'s id, or "local" on the open loopback API.')
    method: str
    path: str
    status: int
    resource_id: str | None = Field(..., description="The id the write created or named.")
    client: str | None = Field(..., description="The client's address.")


class AuditEntriesPublic(Public):
    object: Literal["list"] = "list"
    data: list[AuditEntryPublic]
    has_more: bool
    last_id: int | None
