"""Jobs as rows, the lease that fences what a job's process writes, and each job's log:
events and checkpoints. How jobs change state is tuneforge.db.queue.

Every event of a job is written with the job's row locked (in a state change's transaction,
or after `check_lease`), so that a job's event ids grow in commit order.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, select, text

from tuneforge.db import tables as t
from tuneforge.db.engine import Database, after_cursor, one, page
from tuneforge.db.files import lock_files
from tuneforge.db.records import Checkpoint, Event, Job, JobControls, Row
from tuneforge.errors import (
    FileNotFoundInStoreError,
    InvalidStateError,
    JobNotFoundError,
    LeaseLostError,
    QueueFullError,
)
from tuneforge.jobs.status import TERMINAL, WAITING, JobStatus


@dataclass(frozen=True)
class QueueBound:
    """Who creates jobs in this context, and how many of theirs may wait to run at once."""

    actor: str
    limit: int


# Set by the API for a request that creates a job (tuneforge.api.security); a job inserted in
# that context is the actor's, and is refused when the actor has `limit` jobs waiting. The
# workers' own jobs (a study's trials) have none.
QUEUE_BOUND: ContextVar[QueueBound | None] = ContextVar("tuneforge_queue_bound", default=None)
# The first key of PostgreSQL's advisory lock on one actor's queue (the second: the actor).
QUEUE_LOCK = 0x7175_6575


def no_such_job(job_id: str) -> JobNotFoundError:
    return JobNotFoundError(f"No fine-tuning job with id {job_id!r}.", param="id")


def write_event(
    conn: Connection,
    job_id: str,
    message: str,
    *,
    level: str = "info",
    type: str = "message",
    data: dict[str, Any] | None = None,
) -> None:
    """Add an event row inside the caller's transaction."""
    conn.execute(
        t.events.insert().values(
            job_id=job_id,
            created_at=time.time(),
            level=level,
            type=type,
            message=message,
            data=data,
        )
    )


def lock_job(conn: Connection, job_id: str) -> Job:
    """Read a job inside a transaction, holding its row until commit (PostgreSQL; SQLite's
    BEGIN IMMEDIATE already holds the whole database)."""
    query = select(t.jobs).where(t.jobs.c.id == job_id)
    if conn.dialect.name != "sqlite":
        query = query.with_for_update()
    job = one(Job, conn.execute(query).first())
    if job is None:
        raise no_such_job(job_id)
    return job


def check_lease(conn: Connection, job_id: str, lease: int | None) -> Job:
    """Lock the job (see `lock_job`); given a `lease`, it must still run under it (else
    LeaseLostError)."""
    job = lock_job(conn, job_id)
    if lease is not None and (job.lease != lease or job.status != JobStatus.RUNNING.value):
        raise LeaseLostError(
            f"Job {job_id} is no longer held by lease {lease} (now lease {job.lease}, "
            f"{job.status})."
        )
    return job


def check_queue_bound(conn: Connection, bound: QueueBound) -> None:
    """QueueFullError if `bound.actor` has `bound.limit` jobs waiting. The count holds until
    commit: SQLite's BEGIN IMMEDIATE holds the database, PostgreSQL an advisory lock on the
    actor, so concurrent creations by one actor are counted one after another."""
    if conn.dialect.name != "sqlite":
        key = zlib.crc32(bound.actor.encode()) - 2**31  # into PostgreSQL's int4
        conn.execute(text("SELECT pg_advisory_xact_lock(:a, :b)"), {"a": QUEUE_LOCK, "b": key})
    waiting = conn.execute(
        select(func.count()).where(
            t.jobs.c.created_by == bound.actor,
            t.jobs.c.status.in_([s.value for s in WAITING]),
        )
    ).scalar_one()
    if waiting >= bound.limit:
        raise QueueFullError(
            f"{waiting} jobs of yours are waiting to run (at most {bound.limit}); wait for some "
            "to start, or cancel some."
        )


class JobStore(Database):
    """The `jobs`, `events` and `checkpoints` tables."""

    def insert_job(self, row: Row, message: str, *, files: Collection[str] = ()) -> Job:
        """Add a job with its first event. In the same transaction: the uploaded `files` it
        names must still exist (their rows locked against deletion until commit, else
        FileNotFoundInStoreError), and under a QUEUE_BOUND the actor must have fewer than its
        limit of jobs waiting (counted under a lock, else QueueFullError)."""
        bound = QUEUE_BOUND.get()
        with self._tx() as conn:
            missing = set(files) - lock_files(conn, files, shared=True)
            if missing:
                raise FileNotFoundInStoreError(
                    f"No file with id {sorted(missing)[0]!r} (it was deleted).",
                    param="training_file",
                )
            if bound is not None:
                check_queue_bound(conn, bound)
                row = {**row, "created_by": bound.actor}
            conn.execute(
                t.jobs.insert().values(
                    cancel_requested=False,
                    pause_requested=False,
                    attempts=0,
                    lease=0,
                    failures=0,
                    run_seconds=0.0,
                    **row,
                )
            )
            pairs = (row["spec"] or {}).get("metadata") or {}
            if pairs:
                conn.execute(
                    t.job_metadata.insert(),
                    [{"job_id": row["id"], "key": k, "value": v} for k, v in pairs.items()],
                )
            write_event(conn, row["id"], message)
        return self.require_job(row["id"])

    def get_job(self, job_id: str) -> Job | None:
        with self._tx() as conn:
            found = conn.execute(select(t.jobs).where(t.jobs.c.id == job_id)).first()
        return one(Job, found)

    def require_job(self, job_id: str) -> Job:
        job = self.get_job(job_id)
        if job is None:
            raise no_such_job(job_id)
        return job

    def list_jobs(
        self,
        *,
        after: str | None = None,
        limit: int = 20,
        status: str | None = None,
        kind: str | None = None,
        not_kinds: tuple[str, ...] = (),
        metadata: dict[str, str] | None = None,
    ) -> tuple[list[Job], bool]:
        """A page of jobs, newest first; `metadata`: only those whose metadata has every
        pair ({}: those without metadata), filtered in SQL."""
        query = select(t.jobs)
        pairs = t.job_metadata
        if metadata == {}:
            query = query.where(
                ~select(pairs.c.job_id).where(pairs.c.job_id == t.jobs.c.id).exists()
            )
        for key, value in (metadata or {}).items():
            query = query.where(
                select(pairs.c.job_id)
                .where(pairs.c.job_id == t.jobs.c.id, pairs.c.key == key, pairs.c.value == value)
                .exists()
            )
        if status:
            query = query.where(t.jobs.c.status == status)
        if kind:
            query = query.where(t.jobs.c.kind == kind)
        if not_kinds:
            query = query.where(t.jobs.c.kind.not_in(not_kinds))
        with self._tx() as conn:
            query = after_cursor(conn, query, t.jobs, after)
            rows = conn.execute(
                query.order_by(t.jobs.c.created_at.desc(), t.jobs.c.id.desc()).limit(limit + 1)
            ).all()
        return page(Job, rows, limit)

    def count_jobs(self) -> dict[str, int]:
        with self._tx() as conn:
            rows = conn.execute(
                select(t.jobs.c.status, func.count()).group_by(t.jobs.c.status)
            ).all()
        return {status: n for status, n in rows}

    def delete_finished_job(self, job_id: str) -> Job:
        """Remove a finished job's row with its events, checkpoint rows and nodes, in one
        transaction with the row locked; InvalidStateError (409) for a job that has not
        finished, or one that is a study's trial (the study ranks it). Returns the removed row
        (its files are the caller's to remove)."""
        with self._tx() as conn:
            job = lock_job(conn, job_id)
            if JobStatus(job.status) not in TERMINAL:
                raise InvalidStateError(
                    f"Job {job_id} is {job.status}: only a finished job (succeeded, failed or "
                    "cancelled) can be deleted. Cancel it first.",
                    param="job_id",
                )
            study = conn.execute(
                select(t.study_trials.c.study_id).where(t.study_trials.c.job_id == job_id)
            ).scalar()
            if study is not None:
                raise InvalidStateError(
                    f"Job {job_id} is a trial of study {study}, which ranks it; it cannot be "
                    "deleted on its own.",
                    param="job_id",
                )
            for table in (t.events, t.checkpoints, t.job_nodes):
                conn.execute(table.delete().where(table.c.job_id == job_id))
            conn.execute(t.jobs.delete().where(t.jobs.c.id == job_id))
        return job

    @contextmanager
    def fenced(self, job_id: str, lease: int) -> Iterator[Connection]:
        """A transaction in which the job is still held by `lease`, and stays so until commit:
        what happens inside (publishing a model) cannot race a takeover."""
        with self._tx() as conn:
            check_lease(conn, job_id, lease)
            yield conn

    def update_job_fields(self, job_id: str, *, lease: int | None = None, **fields: Any) -> None:
        """Set progress/metrics/result fields of a job without changing its status; given a
        `lease`, only while the job is still held by it (else LeaseLostError)."""
        query = t.jobs.update().where(t.jobs.c.id == job_id)
        if lease is not None:
            query = query.where(t.jobs.c.lease == lease, t.jobs.c.status == JobStatus.RUNNING.value)
        with self._tx() as conn:
            if conn.execute(query.values(**fields)).rowcount != 1 and lease is not None:
                raise LeaseLostError(f"Job {job_id} is no longer held by lease {lease}.")

    def add_warning(
        self, job_id: str, warning: dict[str, Any], *, lease: int | None = None
    ) -> None:
        """Add one warning to the job's list (one with the same code replaces it) and log it
        as a warning event, in one transaction; given a `lease`, only while it holds."""
        with self._tx() as conn:
            job = check_lease(conn, job_id, lease)
            kept = [w for w in job.get("warnings") or [] if w.get("code") != warning["code"]]
            conn.execute(
                t.jobs.update().where(t.jobs.c.id == job_id).values(warnings=[*kept, warning])
            )
            write_event(
                conn, job_id, warning["message"], level="warn",
                data={"warning": warning["code"], **warning.get("data", {})},
            )

    def add_metrics(
        self, job_id: str, message: str, data: dict[str, Any], latest: dict[str, Any], lease: int
    ) -> None:
        """A metrics event and the job's latest metrics, in one transaction under `lease`
        (one commit per logging step instead of two)."""
        with self._tx() as conn:
            check_lease(conn, job_id, lease)
            write_event(conn, job_id, message, level="info", type="metrics", data=data)
            conn.execute(t.jobs.update().where(t.jobs.c.id == job_id).values(metrics=latest))

    def job_controls(self, job_id: str) -> JobControls:
        """What a running job's process polls: its requests, status and lease."""
        with self._tx() as conn:
            found = conn.execute(
                select(
                    t.jobs.c.status,
                    t.jobs.c.lease,
                    t.jobs.c.cancel_requested,
                    t.jobs.c.pause_requested,
                ).where(t.jobs.c.id == job_id)
            ).first()
        controls = one(JobControls, found)
        if controls is None:
            raise no_such_job(job_id)
        return controls

    # -- events ------------------------------------------------------------------------------

    def add_event(
        self,
        job_id: str,
        message: str,
        *,
        level: str = "info",
        type: str = "message",
        data: dict[str, Any] | None = None,
        lease: int | None = None,
        conn: Connection | None = None,
    ) -> None:
        """Log an event; given a `lease`, only while the job is still held by it.

        The job's row is locked first, so that a job's event ids grow in commit order and a
        reader that follows ids (SSE) never skips an event committed late."""
        if conn is not None:  # the caller's transaction holds the row already
            write_event(conn, job_id, message, level=level, type=type, data=data)
            return
        with self._tx() as own:
            check_lease(own, job_id, lease)
            write_event(own, job_id, message, level=level, type=type, data=data)

    def list_events(
        self,
        job_id: str,
        *,
        after: int | None = None,
        limit: int = 20,
        level: str | None = None,
        type: str | None = None,
        newest_first: bool = True,
    ) -> tuple[list[Event], bool]:
        """Events of a job. `after` is an event id: older events than it when newest_first,
        newer ones otherwise (the order used for replay)."""
        query = select(t.events).where(t.events.c.job_id == job_id)
        if level:
            query = query.where(t.events.c.level == level)
        if type:
            query = query.where(t.events.c.type == type)
        if after is not None:
            query = query.where(t.events.c.id < after if newest_first else t.events.c.id > after)
        order = t.events.c.id.desc() if newest_first else t.events.c.id.asc()
        with self._tx() as conn:
            rows = conn.execute(query.order_by(order).limit(limit + 1)).all()
        return page(Event, rows, limit)

    def event_head(self, job_id: str) -> tuple[int, str | None]:
        """(the id of the job's newest event or 0, the job's status or None): what an event
        stream watches for, in one cheap round trip."""
        with self._tx() as conn:
            newest = conn.execute(
                select(func.max(t.events.c.id)).where(t.events.c.job_id == job_id)
            ).scalar()
            status = conn.execute(select(t.jobs.c.status).where(t.jobs.c.id == job_id)).scalar()
        return int(newest or 0), status

    # -- checkpoints -------------------------------------------------------------------------

    def add_checkpoint(self, row: Row, message: str, *, lease: int | None = None) -> None:
        """Record a written checkpoint and its event; given a `lease`, only while held."""
        with self._tx() as conn:
            check_lease(conn, row["job_id"], lease)
            conn.execute(t.checkpoints.insert().values(**row))
            write_event(
                conn,
                row["job_id"],
                message,
                data={"step": row["step"], "checkpoint": row["id"], "path": row["path"]},
            )

    def list_checkpoints(
        self, job_id: str, *, after: str | None = None, limit: int = 10
    ) -> tuple[list[Checkpoint], bool]:
        query = select(t.checkpoints).where(t.checkpoints.c.job_id == job_id)
        with self._tx() as conn:
            if after:
                step = conn.execute(
                    select(t.checkpoints.c.step).where(t.checkpoints.c.id == after)
                ).scalar()
                if step is not None:
                    query = query.where(t.checkpoints.c.step < step)
            rows = conn.execute(query.order_by(t.checkpoints.c.step.desc()).limit(limit + 1)).all()
        return page(Checkpoint, rows, limit)
