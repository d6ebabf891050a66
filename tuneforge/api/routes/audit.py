"""`/v1/audit`: the audit log of every write through the API (admin keys only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from tuneforge.api.deps import MAX_ROW_ID, StoreDep
from tuneforge.api.schemas.audit import AuditEntriesPublic, AuditEntryPublic

router = APIRouter(prefix="/v1/audit", tags=["audit"])

MAX_PAGE = 1000


@router.get("")
def list_audit_entries(
    store: StoreDep,
    after: Annotated[
        int | None,
        Query(ge=1, le=MAX_ROW_ID, description="The last id of the previous page (newest first)."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    actor: Annotated[str | None, Query(max_length=64)] = None,
) -> AuditEntriesPublic:
    """Writes, newest first: who (key id or `local`), method, path, status, when, and the id
    of what was created or changed when known."""
    rows, has_more = store.list_audit_entries(after=after, limit=limit, actor=actor)
    data = [AuditEntryPublic(**row) for row in rows]
    return AuditEntriesPublic(data=data, has_more=has_more, last_id=data[-1].id if data else None)
