"""API keys and the audit log of every write through the API (tuneforge.security)."""

from __future__ import annotations

import time

from sqlalchemy import func, select

from tuneforge.db import tables as t
from tuneforge.db.engine import Database, every, page
from tuneforge.db.records import ApiKey, AuditLogEntry, Row
from tuneforge.jobs.status import WAITING


class AccessStore(Database):
    """The `api_keys` and `audit_log` tables."""

    def insert_api_key(self, row: Row) -> None:
        with self._tx() as conn:
            conn.execute(t.api_keys.insert().values(**row))

    def list_api_keys(self) -> list[ApiKey]:
        """Every key, revoked ones included, oldest first; never with its hash."""
        columns = [c for c in t.api_keys.c if c.name != "secret_hash"]
        with self._tx() as conn:
            rows = conn.execute(select(*columns).order_by(t.api_keys.c.created_at)).all()
        return every(ApiKey, rows)

    def active_api_keys(self) -> dict[str, Row]:
        """The keys not revoked, by the hash of their secret: {hash: {"id", "scope"}}."""
        with self._tx() as conn:
            rows = conn.execute(
                select(t.api_keys.c.id, t.api_keys.c.scope, t.api_keys.c.secret_hash).where(
                    t.api_keys.c.revoked_at.is_(None)
                )
            ).all()
        return {r.secret_hash: {"id": r.id, "scope": r.scope} for r in rows}

    def revoke_api_key(self, key_id: str) -> bool:
        """Revoke a key; False when there is no such key or it was revoked already."""
        with self._tx() as conn:
            done = conn.execute(
                t.api_keys.update()
                .where(t.api_keys.c.id == key_id, t.api_keys.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
        return done.rowcount == 1

    def add_audit_entry(self, row: Row) -> None:
        with self._tx() as conn:
            conn.execute(t.audit_log.insert().values(**row))

    def list_audit_entries(
        self, *, after: int | None = None, limit: int = 100, actor: str | None = None
    ) -> tuple[list[AuditLogEntry], bool]:
        """Newest first; `after` is the id of the last entry of the previous page."""
        query = select(t.audit_log)
        if after is not None:
            query = query.where(t.audit_log.c.id < after)
        if actor:
            query = query.where(t.audit_log.c.actor == actor)
        with self._tx() as conn:
            rows = conn.execute(query.order_by(t.audit_log.c.id.desc()).limit(limit + 1)).all()
        return page(AuditLogEntry, rows, limit)

    def count_waiting_jobs_of(self, actor: str) -> int:
        """Jobs (of any kind) that `actor` created still waiting to run. A quick look for
        the API to refuse early; the bound itself holds in the insert (tuneforge.db.jobs
        QUEUE_BOUND)."""
        query = select(func.count()).where(
            t.jobs.c.created_by == actor, t.jobs.c.status.in_([s.value for s in WAITING])
        )
        with self._tx() as conn:
            return int(conn.execute(query).scalar() or 0)
