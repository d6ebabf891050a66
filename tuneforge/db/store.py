"""All of tuneforge's SQL: one `Store` over an SQLAlchemy engine (SQLite or PostgreSQL).

Every job state change is one conditional UPDATE (`WHERE status IN (:expected)`) and writes
its event row in the same transaction, so the event table is a faithful log of the job.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, func, select
from sqlalchemy.pool import NullPool

from tuneforge.db import tables as t
from tuneforge.errors import InvalidStateError, JobNotFoundError
from tuneforge.jobs.status import TERMINAL, JobStatus, sources_of

Row = dict[str, Any]


def new_id(prefix: str) -> str:
    """A fresh id in OpenAI's style: `prefix-` and 32 hex digits."""
    return f"{prefix}-{uuid.uuid4().hex}"


def _sqlite_engine(url: str) -> Engine:
    engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": 60})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" below decide when transactions start.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # IMMEDIATE takes the write lock up front: API, worker and job processes write the
        # same file, and a deferred transaction that upgrades to a write can fail at once.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class Store:
    """The database: files, jobs, events, checkpoints and models."""

    def __init__(self, url: str):
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.engine = _sqlite_engine(url)
        else:
            self.engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)

    def create_schema(self) -> None:
        t.metadata.create_all(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    # -- files -------------------------------------------------------------------------------

    def insert_file(self, row: Row) -> Row:
        with self._tx() as conn:
            conn.execute(t.files.insert().values(**row))
        return row

    def get_file(self, file_id: str) -> Row | None:
        with self._tx() as conn:
            found = conn.execute(select(t.files).where(t.files.c.id == file_id)).first()
        return dict(found._mapping) if found else None

    def list_files(
        self, *, purpose: str | None = None, after: str | None = None, limit: int = 100
    ) -> tuple[list[Row], bool]:
        query = select(t.files)
        if purpose:
            query = query.where(t.files.c.purpose == purpose)
        with self._tx() as conn:
            query = _after_cursor(conn, query, t.files, after)
            rows = conn.execute(
                query.order_by(t.files.c.created_at.desc(), t.files.c.id.desc()).limit(limit + 1)
            ).all()
        return [dict(r._mapping) for r in rows[:limit]], len(rows) > limit

    def delete_file(self, file_id: str) -> bool:
        with self._tx() as conn:
            return conn.execute(t.files.delete().where(t.files.c.id == file_id)).rowcount == 1

    def files_in_use(self, file_id: str) -> list[str]:
        """Ids of unfinished jobs that train or validate on this file."""
        with self._tx() as conn:
            rows = conn.execute(
                select(t.jobs.c.id, t.jobs.c.spec).where(
                    t.jobs.c.status.not_in([s.value for s in TERMINAL])
                )
            ).all()
        return [
            r.id
            for r in rows
            if file_id in r.spec.get("training_files", [])
            or file_id == r.spec.get("validation_file")
        ]

    # -- jobs --------------------------------------------------------------------------------

    def insert_job(self, row: Row, message: str) -> Row:
        with self._tx() as conn:
            conn.execute(t.jobs.insert().values(cancel_requested=False, attempts=0, **row))
            _add_event(conn, row["id"], message)
        return self.get_job(row["id"])  # type: ignore[return-value]

    def get_job(self, job_id: str) -> Row | None:
        with self._tx() as conn:
            found = conn.execute(select(t.jobs).where(t.jobs.c.id == job_id)).first()
        return dict(found._mapping) if found else None

    def require_job(self, job_id: str) -> Row:
        job = self.get_job(job_id)
        if job is None:
            raise JobNotFoundError(f"No fine-tuning job with id {job_id!r}.", param="id")
        return job

    def list_jobs(
        self, *, after: str | None = None, limit: int = 20, status: str | None = None
    ) -> tuple[list[Row], bool]:
        query = select(t.jobs)
        if status:
            query = query.where(t.jobs.c.status == status)
        with self._tx() as conn:
            query = _after_cursor(conn, query, t.jobs, after)
            rows = conn.execute(
                query.order_by(t.jobs.c.created_at.desc(), t.jobs.c.id.desc()).limit(limit + 1)
            ).all()
        return [dict(r._mapping) for r in rows[:limit]], len(rows) > limit

    def transition(
        self,
        job_id: str,
        target: JobStatus,
        message: str,
        *,
        expected: set[JobStatus] | frozenset[JobStatus] | None = None,
        level: str = "info",
        data: dict[str, Any] | None = None,
        **fields: Any,
    ) -> Row:
        """Move a job to `target` if its status is one of `expected` (default: any status
        that may lead there), set `fields`, and log `message`. Raises InvalidStateError."""
        allowed = sources_of(target) if expected is None else expected & sources_of(target)
        values = dict(fields, status=target.value)
        if target in TERMINAL:
            values.setdefault("finished_at", time.time())
        with self._tx() as conn:
            updated = conn.execute(
                t.jobs.update()
                .where(t.jobs.c.id == job_id, t.jobs.c.status.in_([s.value for s in allowed]))
                .values(**values)
            ).rowcount
            if updated != 1:
                current = conn.execute(select(t.jobs.c.status).where(t.jobs.c.id == job_id))
                status = current.scalar()
                if status is None:
                    raise JobNotFoundError(f"No fine-tuning job with id {job_id!r}.", param="id")
                raise InvalidStateError(
                    f"Job {job_id} is {status}; it cannot become {target.value}."
                )
            _add_event(conn, job_id, message, level=level, data=data)
        return self.require_job(job_id)

    def request_cancel(self, job_id: str) -> Row:
        """Cancel a job: at once if no worker has it, else flag it for its process to stop."""
        job = self.require_job(job_id)
        status = JobStatus(job["status"])
        if status in (JobStatus.VALIDATING_FILES, JobStatus.QUEUED):
            try:
                return self.transition(
                    job_id, JobStatus.CANCELLED, "Job cancelled.", expected={status}
                )
            except InvalidStateError:
                return self.request_cancel(job_id)  # a worker claimed it meanwhile
        if status is not JobStatus.RUNNING:
            raise InvalidStateError(f"Job {job_id} is {status.value}; it cannot be cancelled.")
        with self._tx() as conn:
            updated = conn.execute(
                t.jobs.update()
                .where(
                    t.jobs.c.id == job_id,
                    t.jobs.c.status == JobStatus.RUNNING.value,
                    t.jobs.c.cancel_requested.is_(False),
                )
                .values(cancel_requested=True)
            ).rowcount
            if updated:
                _add_event(conn, job_id, "Cancellation requested; stopping at the next step.")
        return self.require_job(job_id)

    def claim_next_job(self, worker_id: str, job_id: str | None = None) -> Row | None:
        """Atomically take the oldest queued job (or the queued job `job_id`) for `worker_id`;
        None if there is none."""
        now = time.time()
        with self._tx() as conn:
            candidates = (
                select(t.jobs.c.id)
                .where(t.jobs.c.status == JobStatus.QUEUED.value)
                .order_by(t.jobs.c.created_at, t.jobs.c.id)
                .limit(1)
            )
            if job_id:
                candidates = candidates.where(t.jobs.c.id == job_id)
            if not self.is_sqlite:
                candidates = candidates.with_for_update(skip_locked=True)
            job_id = conn.execute(candidates).scalar()
            if job_id is None:
                return None
            updated = conn.execute(
                t.jobs.update()
                .where(t.jobs.c.id == job_id, t.jobs.c.status == JobStatus.QUEUED.value)
                .values(
                    status=JobStatus.RUNNING.value,
                    worker_id=worker_id,
                    started_at=now,
                    heartbeat_at=now,
                    attempts=t.jobs.c.attempts + 1,
                )
            ).rowcount
            if updated != 1:
                return None
            _add_event(
                conn, job_id, f"Job started on worker {worker_id}.", data={"worker_id": worker_id}
            )
        return self.get_job(job_id)

    def heartbeat(self, job_id: str, worker_id: str) -> None:
        with self._tx() as conn:
            conn.execute(
                t.jobs.update()
                .where(
                    t.jobs.c.id == job_id,
                    t.jobs.c.worker_id == worker_id,
                    t.jobs.c.status == JobStatus.RUNNING.value,
                )
                .values(heartbeat_at=time.time())
            )

    def requeue_stalled(self, older_than: float) -> list[str]:
        """Put back in the queue every running job whose worker stopped beating."""
        cutoff = time.time() - older_than
        with self._tx() as conn:
            stalled = conn.execute(
                select(t.jobs.c.id, t.jobs.c.worker_id).where(
                    t.jobs.c.status == JobStatus.RUNNING.value, t.jobs.c.heartbeat_at < cutoff
                )
            ).all()
        requeued = []
        for job_id, worker_id in stalled:
            try:
                self.transition(
                    job_id,
                    JobStatus.QUEUED,
                    f"Worker {worker_id} stopped responding; job queued again.",
                    expected={JobStatus.RUNNING},
                    level="warning",
                    worker_id=None,
                )
                requeued.append(job_id)
            except InvalidStateError:
                pass
        return requeued

    def update_job_fields(self, job_id: str, **fields: Any) -> None:
        """Set progress/metrics/result fields of a job without changing its status."""
        with self._tx() as conn:
            conn.execute(t.jobs.update().where(t.jobs.c.id == job_id).values(**fields))

    def cancel_requested(self, job_id: str) -> bool:
        with self._tx() as conn:
            return bool(
                conn.execute(
                    select(t.jobs.c.cancel_requested).where(t.jobs.c.id == job_id)
                ).scalar()
            )

    # -- events ------------------------------------------------------------------------------

    def add_event(
        self,
        job_id: str,
        message: str,
        *,
        level: str = "info",
        type: str = "message",
        data: dict[str, Any] | None = None,
    ) -> None:
        with self._tx() as conn:
            _add_event(conn, job_id, message, level=level, type=type, data=data)

    def list_events(
        self,
        job_id: str,
        *,
        after: int | None = None,
        limit: int = 20,
        level: str | None = None,
        type: str | None = None,
        newest_first: bool = True,
    ) -> tuple[list[Row], bool]:
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
        return [dict(r._mapping) for r in rows[:limit]], len(rows) > limit

    # -- checkpoints -------------------------------------------------------------------------

    def add_checkpoint(self, row: Row) -> None:
        with self._tx() as conn:
            conn.execute(t.checkpoints.insert().values(**row))

    def list_checkpoints(
        self, job_id: str, *, after: str | None = None, limit: int = 10
    ) -> tuple[list[Row], bool]:
        query = select(t.checkpoints).where(t.checkpoints.c.job_id == job_id)
        with self._tx() as conn:
            if after:
                step = conn.execute(
                    select(t.checkpoints.c.step).where(t.checkpoints.c.id == after)
                ).scalar()
                if step is not None:
                    query = query.where(t.checkpoints.c.step < step)
            rows = conn.execute(query.order_by(t.checkpoints.c.step.desc()).limit(limit + 1)).all()
        return [dict(r._mapping) for r in rows[:limit]], len(rows) > limit

    # -- models ------------------------------------------------------------------------------

    def upsert_model(self, row: Row) -> None:
        with self._tx() as conn:
            exists = conn.execute(select(t.models.c.id).where(t.models.c.id == row["id"])).first()
            if exists:
                conn.execute(t.models.update().where(t.models.c.id == row["id"]).values(**row))
            else:
                conn.execute(t.models.insert().values(**row))

    def get_model(self, model_id: str) -> Row | None:
        with self._tx() as conn:
            found = conn.execute(select(t.models).where(t.models.c.id == model_id)).first()
        return dict(found._mapping) if found else None

    def list_models(self) -> list[Row]:
        with self._tx() as conn:
            rows = conn.execute(select(t.models).order_by(t.models.c.created_at)).all()
        return [dict(r._mapping) for r in rows]

    def count_jobs(self) -> dict[str, int]:
        with self._tx() as conn:
            rows = conn.execute(
                select(t.jobs.c.status, func.count()).group_by(t.jobs.c.status)
            ).all()
        return {status: n for status, n in rows}


def _add_event(
    conn: Connection,
    job_id: str,
    message: str,
    *,
    level: str = "info",
    type: str = "message",
    data: dict[str, Any] | None = None,
) -> None:
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


def _after_cursor(conn: Connection, query: Any, table: Any, after: str | None) -> Any:
    """Restrict a newest-first listing to the rows that come after the row `after`."""
    if not after:
        return query
    anchor = conn.execute(select(table.c.created_at).where(table.c.id == after)).scalar()
    if anchor is None:
        return query.where(False)
    return query.where(
        (table.c.created_at < anchor) | ((table.c.created_at == anchor) & (table.c.id < after))
    )
