"""What the service's monitoring reads and writes (tuneforge.monitoring): served requests per
minute (`model_usage`), and the jobs' times for the training statistics and /metrics."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, case, func, or_, select
from sqlalchemy.exc import IntegrityError

from tuneforge.db import tables as t
from tuneforge.db.engine import Database

# The columns a flush adds to a stored minute; the histogram is added bucket by bucket.
SUMMED = ("requests", "errors", "prompt_tokens", "completion_tokens", "latency_ms_sum")


class MonitoringStore(Database):
    """The `model_usage` table, and aggregate reads of `jobs` and `workers`."""

    def add_usage(self, minutes: Iterable[dict[str, Any]]) -> None:
        """Add counted minutes (each a `model_usage` row's columns) to the stored ones:
        another API process may have stored the same minute, model and endpoint."""
        rows = list(minutes)
        if not rows:
            return
        try:
            with self._tx() as conn:
                for row in rows:
                    _merge_minute(conn, row)
        except IntegrityError:
            # Another process inserted one of these minutes between our read and our insert
            # (PostgreSQL; SQLite's write lock rules it out): now it is there to add to.
            with self._tx() as conn:
                for row in rows:
                    _merge_minute(conn, row)

    def prune_usage(self, before: float) -> int:
        """Delete the stored minutes that start before `before`; how many there were."""
        with self._tx() as conn:
            deleted = conn.execute(t.model_usage.delete().where(t.model_usage.c.minute < before))
        return int(deleted.rowcount or 0)

    def usage_rows(
        self, *, models: Sequence[str], registered: str | None, since: float, until: float
    ) -> list[dict[str, Any]]:
        """Stored minutes in [since, until) of `models`, or of any version of `registered`."""
        u = t.model_usage
        which: list[ColumnElement[bool]] = [u.c.model.in_(list(models))] if models else []
        if registered is not None:
            which.append(u.c.registered_model == registered)
        if not which:
            return []
        query = (
            select(u)
            .where(or_(*which), u.c.minute >= since, u.c.minute < until)
            .order_by(u.c.minute)
        )
        with self._tx() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def job_times(self, since: float | None = None) -> list[dict[str, Any]]:
        """kind, status, created_at, started_at, finished_at and run_seconds of every job
        created since `since` (all with None)."""
        j = t.jobs
        query = select(
            j.c.kind, j.c.status, j.c.created_at, j.c.started_at, j.c.finished_at, j.c.run_seconds
        )
        if since is not None:
            query = query.where(j.c.created_at >= since)
        with self._tx() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def job_counts(self) -> list[tuple[str, str, int]]:
        """(kind, status, jobs) for every kind and status that has jobs."""
        j = t.jobs
        query = select(j.c.kind, j.c.status, func.count()).group_by(j.c.kind, j.c.status)
        with self._tx() as conn:
            return [(kind, status, int(n)) for kind, status, n in conn.execute(query)]

    def duration_histogram(
        self, bounds: Sequence[float]
    ) -> dict[str, tuple[list[int], int, float]]:
        """Per kind, over the jobs that ended (succeeded or failed): the jobs whose running
        seconds are at most each bound (cumulative, as Prometheus counts), all of them, and
        their seconds summed. Counted in SQL: one pass over the table, no rows fetched."""
        j = t.jobs
        ended = j.c.status.in_(("succeeded", "failed"))
        columns = [func.sum(case((j.c.run_seconds <= bound, 1), else_=0)) for bound in bounds]
        query = (
            select(j.c.kind, func.count(), func.sum(j.c.run_seconds), *columns)
            .where(ended)
            .group_by(j.c.kind)
        )
        with self._tx() as conn:
            return {
                kind: ([int(c or 0) for c in counts], int(n), float(total or 0.0))
                for kind, n, total, *counts in conn.execute(query)
            }


def _merge_minute(conn: Connection, row: dict[str, Any]) -> None:
    u = t.model_usage
    key = and_(
        u.c.minute == row["minute"], u.c.model == row["model"], u.c.endpoint == row["endpoint"]
    )
    query = select(u).where(key)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    found = conn.execute(query).first()
    if found is None:
        conn.execute(u.insert().values(**row))
        return
    old = found._mapping
    buckets = [a + b for a, b in zip(old["latency_buckets"], row["latency_buckets"], strict=True)]
    changes: dict[str, Any] = {name: old[name] + row[name] for name in SUMMED}
    changes.update(
        latency_ms_max=max(old["latency_ms_max"], row["latency_ms_max"]),
        latency_buckets=buckets,
        registered_model=row["registered_model"],
        version=row["version"],
    )
    conn.execute(u.update().where(key).values(**changes))
