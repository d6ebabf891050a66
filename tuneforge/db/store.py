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

from sqlalchemy import Connection, Engine, case, create_engine, event, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import NullPool

from tuneforge.db import tables as t
from tuneforge.db.migrate import migrate
from tuneforge.errors import (
    InvalidStateError,
    JobNotFoundError,
    LeaseLostError,
    ModelNotFoundError,
    StudyNotFoundError,
)
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
        """Apply the migrations (see tuneforge.db.migrate)."""
        migrate(self.engine)

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

    # -- feedback ----------------------------------------------------------------------------

    def insert_feedback(self, row: Row) -> Row:
        with self._tx() as conn:
            conn.execute(t.feedback.insert().values(**row))
        return row

    def get_feedback(self, feedback_id: str) -> Row | None:
        with self._tx() as conn:
            found = conn.execute(select(t.feedback).where(t.feedback.c.id == feedback_id)).first()
        return dict(found._mapping) if found else None

    def list_feedback(
        self,
        *,
        model: str | None = None,
        registered_model: str | None = None,
        rating: str | None = None,
        since: float | None = None,
        until: float | None = None,
        after: str | None = None,
        limit: int | None = 100,
        oldest_first: bool = False,
    ) -> tuple[list[Row], bool]:
        """Feedback matching every filter given (`since` inclusive, `until` exclusive), newest
        first unless `oldest_first`; `after` is the id of the previous page's last row."""
        fb = t.feedback
        query = select(fb)
        if model:
            query = query.where(fb.c.model == model)
        if registered_model:
            query = query.where(fb.c.registered_model == registered_model)
        if rating:
            query = query.where(fb.c.rating == rating)
        if since is not None:
            query = query.where(fb.c.created_at >= since)
        if until is not None:
            query = query.where(fb.c.created_at < until)
        order = (
            (fb.c.created_at, fb.c.id) if oldest_first else (fb.c.created_at.desc(), fb.c.id.desc())
        )
        with self._tx() as conn:
            if after is not None:
                cursor = conn.execute(select(fb.c.created_at).where(fb.c.id == after)).first()
                if cursor is not None:
                    if oldest_first:
                        query = query.where(
                            (fb.c.created_at > cursor.created_at)
                            | ((fb.c.created_at == cursor.created_at) & (fb.c.id > after))
                        )
                    else:
                        query = query.where(
                            (fb.c.created_at < cursor.created_at)
                            | ((fb.c.created_at == cursor.created_at) & (fb.c.id < after))
                        )
            query = query.order_by(*order)
            if limit is not None:
                query = query.limit(limit + 1)
            rows = conn.execute(query).all()
        if limit is None:
            return [dict(r._mapping) for r in rows], False
        return [dict(r._mapping) for r in rows[:limit]], len(rows) > limit

    # -- jobs --------------------------------------------------------------------------------

    def insert_job(self, row: Row, message: str) -> Row:
        with self._tx() as conn:
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
        self,
        *,
        after: str | None = None,
        limit: int = 20,
        status: str | None = None,
        kind: str | None = None,
        not_kinds: tuple[str, ...] = (),
    ) -> tuple[list[Row], bool]:
        query = select(t.jobs)
        if status:
            query = query.where(t.jobs.c.status == status)
        if kind:
            query = query.where(t.jobs.c.kind == kind)
        if not_kinds:
            query = query.where(t.jobs.c.kind.not_in(not_kinds))
        with self._tx() as conn:
            query = _after_cursor(conn, query, t.jobs, after)
            rows = conn.execute(
                query.order_by(t.jobs.c.created_at.desc(), t.jobs.c.id.desc()).limit(limit + 1)
            ).all()
        return [dict(r._mapping) for r in rows[:limit]], len(rows) > limit

    def _lock_job(self, conn: Connection, job_id: str) -> Row:
        """Read a job inside a transaction, holding its row until commit (PostgreSQL; SQLite's
        BEGIN IMMEDIATE already holds the whole database)."""
        query = select(t.jobs).where(t.jobs.c.id == job_id)
        if not self.is_sqlite:
            query = query.with_for_update()
        found = conn.execute(query).first()
        if found is None:
            raise JobNotFoundError(f"No fine-tuning job with id {job_id!r}.", param="id")
        return dict(found._mapping)

    def _check_lease(self, conn: Connection, job_id: str, lease: int | None) -> Row:
        job = self._lock_job(conn, job_id)
        if lease is not None and (
            job["lease"] != lease or job["status"] != JobStatus.RUNNING.value
        ):
            raise LeaseLostError(
                f"Job {job_id} is no longer held by lease {lease} (now lease {job['lease']}, "
                f"{job['status']})."
            )
        return job

    @contextmanager
    def fenced(self, job_id: str, lease: int) -> Iterator[Connection]:
        """A transaction in which the job is still held by `lease`, and stays so until commit:
        what happens inside (publishing a model) cannot race a takeover."""
        with self._tx() as conn:
            self._check_lease(conn, job_id, lease)
            yield conn

    def transition(
        self,
        job_id: str,
        target: JobStatus,
        message: str,
        *,
        expected: set[JobStatus] | frozenset[JobStatus] | None = None,
        lease: int | None = None,
        level: str = "info",
        data: dict[str, Any] | None = None,
        conn: Connection | None = None,
        **fields: Any,
    ) -> Row:
        """Move a job to `target` if its status is one of `expected` (default: any status
        that may lead there) and, given a `lease`, the job is still held by it; set `fields`
        and log `message`. Raises InvalidStateError or LeaseLostError."""
        if conn is not None:
            return self._transition(
                conn, job_id, target, message, expected, lease, level, data, fields
            )
        with self._tx() as own:
            return self._transition(
                own, job_id, target, message, expected, lease, level, data, fields
            )

    def _transition(
        self,
        conn: Connection,
        job_id: str,
        target: JobStatus,
        message: str,
        expected: set[JobStatus] | frozenset[JobStatus] | None,
        lease: int | None,
        level: str,
        data: dict[str, Any] | None,
        fields: dict[str, Any],
    ) -> Row:
        allowed = sources_of(target) if expected is None else expected & sources_of(target)
        now = time.time()
        values = dict(fields, status=target.value)
        if target in TERMINAL:
            values.setdefault("finished_at", now)
        if target is not JobStatus.RUNNING:
            # Leaving `running` adds the run's time to the job's total.
            values["run_seconds"] = case(
                (
                    t.jobs.c.status == JobStatus.RUNNING.value,
                    t.jobs.c.run_seconds + (now - func.coalesce(t.jobs.c.claimed_at, now)),
                ),
                else_=t.jobs.c.run_seconds,
            )
        query = t.jobs.update().where(
            t.jobs.c.id == job_id, t.jobs.c.status.in_([s.value for s in allowed])
        )
        if lease is not None:
            query = query.where(t.jobs.c.lease == lease)
        if conn.execute(query.values(**values)).rowcount != 1:
            current = conn.execute(
                select(t.jobs.c.status, t.jobs.c.lease).where(t.jobs.c.id == job_id)
            ).first()
            if current is None:
                raise JobNotFoundError(f"No fine-tuning job with id {job_id!r}.", param="id")
            if lease is not None and current.lease != lease:
                raise LeaseLostError(f"Job {job_id} was taken over (lease {current.lease}).")
            raise InvalidStateError(
                f"Job {job_id} is {current.status}; it cannot become {target.value}."
            )
        _add_event(conn, job_id, message, level=level, data=data)
        # Read back in the same transaction: the job as this change left it, even if a worker
        # claims it the moment it commits.
        return dict(conn.execute(select(t.jobs).where(t.jobs.c.id == job_id)).one()._mapping)

    def request_cancel(self, job_id: str) -> Row:
        """Cancel a job: at once if no process runs it, else flag it for its process to stop."""
        job = self.require_job(job_id)
        status = JobStatus(job["status"])
        if status in (JobStatus.VALIDATING_FILES, JobStatus.QUEUED, JobStatus.PAUSED):
            try:
                return self.transition(
                    job_id, JobStatus.CANCELLED, "Job cancelled.", expected={status}
                )
            except InvalidStateError:
                return self.request_cancel(job_id)  # a worker claimed it meanwhile
        if status is not JobStatus.RUNNING:
            raise InvalidStateError(f"Job {job_id} is {status.value}; it cannot be cancelled.")
        self._flag(job_id, "cancel_requested", "Cancellation requested; stopping at the next step.")
        return self.require_job(job_id)

    def request_pause(self, job_id: str) -> Row:
        """Pause a job: at once if it waits in the queue; a running job checkpoints at its
        next step and stops."""
        job = self.require_job(job_id)
        status = JobStatus(job["status"])
        if status is JobStatus.PAUSED:
            return job
        if status is JobStatus.QUEUED:
            try:
                return self.transition(
                    job_id, JobStatus.PAUSED, "Job paused before it started.", expected={status}
                )
            except InvalidStateError:
                return self.request_pause(job_id)  # a worker claimed it meanwhile
        if status is not JobStatus.RUNNING:
            raise InvalidStateError(f"Job {job_id} is {status.value}; it cannot be paused.")
        self._flag(
            job_id,
            "pause_requested",
            "Pause requested; the job writes a checkpoint at its next step and stops.",
        )
        return self.require_job(job_id)

    def resume(self, job_id: str) -> Row:
        """Queue a paused job again (it continues from its checkpoint); withdraw a pause that
        a running job has not acted on yet."""
        job = self.require_job(job_id)
        status = JobStatus(job["status"])
        if status is JobStatus.PAUSED:
            return self.transition(
                job_id,
                JobStatus.QUEUED,
                "Job resumed; queued to continue from its last checkpoint.",
                expected={status},
                pause_requested=False,
            )
        if status is JobStatus.RUNNING and job["pause_requested"]:
            with self._tx() as conn:
                conn.execute(
                    t.jobs.update()
                    .where(t.jobs.c.id == job_id, t.jobs.c.status == status.value)
                    .values(pause_requested=False)
                )
                _add_event(conn, job_id, "Pause request withdrawn.")
            return self.require_job(job_id)
        raise InvalidStateError(f"Job {job_id} is {status.value}; only a paused job resumes.")

    def _flag(self, job_id: str, column: str, message: str) -> None:
        """Set a running job's request flag once, with its event."""
        flag = t.jobs.c[column]
        with self._tx() as conn:
            updated = conn.execute(
                t.jobs.update()
                .where(
                    t.jobs.c.id == job_id,
                    t.jobs.c.status == JobStatus.RUNNING.value,
                    flag.is_(False),
                )
                .values({column: True})
            ).rowcount
            if updated:
                _add_event(conn, job_id, message)

    def claim_next_job(
        self,
        worker_id: str,
        job_id: str | None = None,
        *,
        kinds: list[str] | None = None,
        devices: list[str] | None = None,
    ) -> Row | None:
        """Atomically take the oldest queued job (or the queued job `job_id`) that fits the
        worker's kinds and devices, under a new lease; None if there is none."""
        now = time.time()
        with self._tx() as conn:
            candidates = (
                select(t.jobs.c.id, t.jobs.c.attempts)
                .where(t.jobs.c.status == JobStatus.QUEUED.value)
                .order_by(t.jobs.c.created_at, t.jobs.c.id)
                .limit(1)
            )
            if job_id:
                candidates = candidates.where(t.jobs.c.id == job_id)
            if kinds:
                candidates = candidates.where(t.jobs.c.kind.in_(kinds))
            if devices:
                candidates = candidates.where(t.jobs.c.device.in_(["auto", *devices]))
            if not self.is_sqlite:
                candidates = candidates.with_for_update(skip_locked=True)
            found = conn.execute(candidates).first()
            if found is None:
                return None
            updated = conn.execute(
                t.jobs.update()
                .where(t.jobs.c.id == found.id, t.jobs.c.status == JobStatus.QUEUED.value)
                .values(
                    status=JobStatus.RUNNING.value,
                    worker_id=worker_id,
                    started_at=func.coalesce(t.jobs.c.started_at, now),
                    claimed_at=now,
                    heartbeat_at=now,
                    attempts=t.jobs.c.attempts + 1,
                    lease=t.jobs.c.lease + 1,
                    pause_requested=False,
                )
            ).rowcount
            if updated != 1:
                return None
            verb = "resumed" if found.attempts else "started"
            _add_event(
                conn,
                found.id,
                f"Job {verb} on worker {worker_id} (run {found.attempts + 1}).",
                data={"worker_id": worker_id, "run": found.attempts + 1},
            )
        return self.get_job(found.id)

    def heartbeat(self, job_id: str, lease: int) -> bool:
        """Renew the lease; False when the job is no longer held by it."""
        with self._tx() as conn:
            return (
                conn.execute(
                    t.jobs.update()
                    .where(
                        t.jobs.c.id == job_id,
                        t.jobs.c.lease == lease,
                        t.jobs.c.status == JobStatus.RUNNING.value,
                    )
                    .values(heartbeat_at=time.time())
                ).rowcount
                == 1
            )

    def retry_or_fail(
        self, job_id: str, lease: int, error: dict[str, Any], *, retry: bool = True
    ) -> Row:
        """End a run that crashed: queue the job again to continue from its last checkpoint
        while it has attempts left, else fail it with `error`."""
        with self._tx() as conn:
            job = self._check_lease(conn, job_id, lease)
            failures = job["failures"] + 1
            limit = job["max_attempts"]
            if retry and failures < limit:
                self._transition(
                    conn,
                    job_id,
                    JobStatus.QUEUED,
                    f"Attempt {failures} of {limit} failed: {error['message']} "
                    "Retrying from the last checkpoint.",
                    {JobStatus.RUNNING},
                    lease,
                    "warning",
                    {"retry": failures, "max_attempts": limit, "error": error},
                    {"failures": failures, "worker_id": None, "cancel_requested": False},
                )
            else:
                tried = f" after {failures} attempts" if failures > 1 else ""
                self._transition(
                    conn,
                    job_id,
                    JobStatus.FAILED,
                    f"Job failed{tried}: {error['message']}",
                    {JobStatus.RUNNING},
                    lease,
                    "error",
                    {"attempts": failures, "error": error},
                    {"failures": failures, "error": error},
                )
        return self.require_job(job_id)

    def requeue_stalled(self, older_than: float) -> list[str]:
        """Take back every running job whose worker stopped renewing its lease: a crash, so
        it is retried (or failed at max_attempts)."""
        cutoff = time.time() - older_than
        with self._tx() as conn:
            stalled = conn.execute(
                select(t.jobs.c.id, t.jobs.c.lease, t.jobs.c.worker_id).where(
                    t.jobs.c.status == JobStatus.RUNNING.value, t.jobs.c.heartbeat_at < cutoff
                )
            ).all()
        requeued = []
        for job_id, lease, worker_id in stalled:
            message = (
                f"Worker {worker_id} stopped renewing its lease for {older_than:g} s "
                "(killed or lost)."
            )
            try:
                self.retry_or_fail(job_id, lease, {"code": "internal", "message": message})
                requeued.append(job_id)
            except (InvalidStateError, LeaseLostError):
                pass  # its worker came back, or another worker took it first
        return requeued

    def update_job_fields(self, job_id: str, *, lease: int | None = None, **fields: Any) -> None:
        """Set progress/metrics/result fields of a job without changing its status; given a
        `lease`, only while the job is still held by it (else LeaseLostError)."""
        query = t.jobs.update().where(t.jobs.c.id == job_id)
        if lease is not None:
            query = query.where(t.jobs.c.lease == lease, t.jobs.c.status == JobStatus.RUNNING.value)
        with self._tx() as conn:
            if conn.execute(query.values(**fields)).rowcount != 1 and lease is not None:
                raise LeaseLostError(f"Job {job_id} is no longer held by lease {lease}.")

    def add_metrics(
        self, job_id: str, message: str, data: dict[str, Any], latest: dict[str, Any], lease: int
    ) -> None:
        """A metrics event and the job's latest metrics, in one transaction under `lease`
        (one commit per logging step instead of two)."""
        with self._tx() as conn:
            self._check_lease(conn, job_id, lease)
            _add_event(conn, job_id, message, level="info", type="metrics", data=data)
            conn.execute(t.jobs.update().where(t.jobs.c.id == job_id).values(metrics=latest))

    def job_controls(self, job_id: str) -> Row:
        """What a running job's process polls: its requests, status and lease."""
        with self._tx() as conn:
            row = conn.execute(
                select(
                    t.jobs.c.status,
                    t.jobs.c.lease,
                    t.jobs.c.cancel_requested,
                    t.jobs.c.pause_requested,
                ).where(t.jobs.c.id == job_id)
            ).first()
        if row is None:
            raise JobNotFoundError(f"No fine-tuning job with id {job_id!r}.", param="id")
        return dict(row._mapping)

    # -- workers -----------------------------------------------------------------------------

    def register_worker(self, row: Row) -> None:
        now = time.time()
        with self._tx() as conn:
            conn.execute(t.workers.delete().where(t.workers.c.id == row["id"]))
            conn.execute(t.workers.insert().values(started_at=now, heartbeat_at=now, **row))

    def worker_alive(self, worker_id: str, job_id: str | None) -> None:
        with self._tx() as conn:
            conn.execute(
                t.workers.update()
                .where(t.workers.c.id == worker_id)
                .values(heartbeat_at=time.time(), job_id=job_id)
            )

    def worker_stopped(self, worker_id: str) -> None:
        with self._tx() as conn:
            conn.execute(
                t.workers.update()
                .where(t.workers.c.id == worker_id)
                .values(stopped_at=time.time(), job_id=None)
            )

    def list_workers(self) -> list[Row]:
        with self._tx() as conn:
            rows = conn.execute(select(t.workers).order_by(t.workers.c.started_at.desc())).all()
        return [dict(r._mapping) for r in rows]

    # -- the machines of a multi-machine job -----------------------------------------------

    def open_rendezvous(self, job_id: str, lease: int, node: Row) -> None:
        """Node 0 of a run: the worker holding `lease` waits here for the other machines
        (`node` has machines, worker_id, hostname, address, port, token)."""
        now = time.time()
        with self.fenced(job_id, lease) as conn:
            conn.execute(
                t.job_nodes.insert().values(
                    job_id=job_id,
                    lease=lease,
                    node_rank=0,
                    state="joined",
                    joined_at=now,
                    heartbeat_at=now,
                    **node,
                )
            )

    def rendezvous_openings(self) -> list[Row]:
        """Node 0 of every running multi-machine run that still misses machines, oldest job
        first, with the job's kind, device, spec and creation time."""
        nodes = t.job_nodes
        others = nodes.alias("others")
        joined = (
            select(func.count())
            .where(others.c.job_id == nodes.c.job_id, others.c.lease == nodes.c.lease)
            .scalar_subquery()
        )
        query = (
            select(
                nodes,
                t.jobs.c.kind,
                t.jobs.c.device,
                t.jobs.c.spec,
                t.jobs.c.created_at,
                joined.label("joined"),
            )
            .join(t.jobs, t.jobs.c.id == nodes.c.job_id)
            .where(
                nodes.c.node_rank == 0,
                t.jobs.c.status == JobStatus.RUNNING.value,
                t.jobs.c.lease == nodes.c.lease,
                joined < nodes.c.machines,
            )
            .order_by(t.jobs.c.created_at, t.jobs.c.id)
        )
        with self._tx() as conn:
            return [dict(r._mapping) for r in conn.execute(query).all()]

    def join_rendezvous(self, job_id: str, lease: int, worker_id: str, hostname: str) -> Row | None:
        """Take the next node rank of a run that still misses machines; None if it is full,
        no longer running under `lease`, or another worker took that rank at the same
        moment."""
        now = time.time()
        try:
            with self._tx() as conn:
                job = conn.execute(
                    select(t.jobs.c.status, t.jobs.c.lease).where(t.jobs.c.id == job_id)
                ).first()
                if job is None or job.status != JobStatus.RUNNING.value or job.lease != lease:
                    return None
                nodes = conn.execute(
                    select(t.job_nodes)
                    .where(t.job_nodes.c.job_id == job_id, t.job_nodes.c.lease == lease)
                    .order_by(t.job_nodes.c.node_rank)
                ).all()
                if not nodes or len(nodes) >= nodes[0].machines:
                    return None
                row = {
                    "job_id": job_id,
                    "lease": lease,
                    "node_rank": len(nodes),
                    "machines": nodes[0].machines,
                    "worker_id": worker_id,
                    "hostname": hostname,
                    "state": "joined",
                    "joined_at": now,
                    "heartbeat_at": now,
                }
                conn.execute(t.job_nodes.insert().values(**row))
                _add_event(
                    conn,
                    job_id,
                    f"Machine {row['node_rank']} ({hostname}, worker {worker_id}) joined; "
                    f"{len(nodes) + 1} of {nodes[0].machines} machines are in.",
                    data={"node_rank": row["node_rank"], "worker_id": worker_id},
                )
        except IntegrityError:
            return None  # that rank went to another worker
        return row

    def rendezvous_nodes(self, job_id: str, lease: int) -> list[Row]:
        with self._tx() as conn:
            rows = conn.execute(
                select(t.job_nodes)
                .where(t.job_nodes.c.job_id == job_id, t.job_nodes.c.lease == lease)
                .order_by(t.job_nodes.c.node_rank)
            ).all()
        return [dict(r._mapping) for r in rows]

    def update_node(self, job_id: str, lease: int, node_rank: int, **fields: Any) -> None:
        """Set a node's state or exit code; always renews its heartbeat."""
        with self._tx() as conn:
            conn.execute(
                t.job_nodes.update()
                .where(
                    t.job_nodes.c.job_id == job_id,
                    t.job_nodes.c.lease == lease,
                    t.job_nodes.c.node_rank == node_rank,
                )
                .values(heartbeat_at=time.time(), **fields)
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
        lease: int | None = None,
        conn: Connection | None = None,
    ) -> None:
        """Log an event; given a `lease`, only while the job is still held by it.

        The job's row is locked first, so that a job's event ids grow in commit order and a
        reader that follows ids (SSE) never skips an event committed late."""
        if conn is not None:  # the caller's transaction holds the row already
            _add_event(conn, job_id, message, level=level, type=type, data=data)
            return
        with self._tx() as own:
            self._check_lease(own, job_id, lease)
            _add_event(own, job_id, message, level=level, type=type, data=data)

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
            self._check_lease(conn, row["job_id"], lease)
            conn.execute(t.checkpoints.insert().values(**row))
            _add_event(
                conn,
                row["job_id"],
                message,
                data={"step": row["step"], "checkpoint": row["id"], "path": row["path"]},
            )

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

    def upsert_model(self, row: Row, *, conn: Connection | None = None) -> None:
        """Insert or replace a model row (inside `conn`'s transaction when given)."""
        if conn is None:
            with self._tx() as conn:
                self.upsert_model(row, conn=conn)
            return
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

    def delete_model(self, model_id: str, *, conn: Connection | None = None) -> None:
        if conn is None:
            with self._tx() as conn:
                self.delete_model(model_id, conn=conn)
            return
        conn.execute(t.models.delete().where(t.models.c.id == model_id))

    # -- registry ----------------------------------------------------------------------------

    def add_model_version(self, row: Row, *, conn: Connection) -> int:
        """Add the next version (1..N) of the registered model `row["name"]`, creating the
        registered model on its first version; returns the version number. Runs inside the
        caller's transaction (the job's fenced publish)."""
        now = time.time()
        name = row["name"]
        exists = conn.execute(
            select(t.registered_models.c.name).where(t.registered_models.c.name == name)
        ).first()
        if exists is None:
            try:
                with conn.begin_nested():
                    conn.execute(
                        t.registered_models.insert().values(
                            name=name,
                            kind=row["kind"],
                            description=None,
                            tags=[],
                            created_at=now,
                            updated_at=now,
                        )
                    )
            except IntegrityError:
                pass  # created by a concurrent publish
        lock = select(t.registered_models.c.name).where(t.registered_models.c.name == name)
        if not self.is_sqlite:
            lock = lock.with_for_update()  # versions of one name are numbered one at a time
        conn.execute(lock)
        latest = conn.execute(
            select(func.max(t.model_versions.c.version)).where(t.model_versions.c.name == name)
        ).scalar()
        version = (latest or 0) + 1
        conn.execute(t.model_versions.insert().values(version=version, created_at=now, **row))
        conn.execute(
            t.registered_models.update()
            .where(t.registered_models.c.name == name)
            .values(updated_at=now)
        )
        return version

    def get_registered_model(self, name: str) -> Row | None:
        with self._tx() as conn:
            found = conn.execute(
                select(t.registered_models).where(t.registered_models.c.name == name)
            ).first()
        return dict(found._mapping) if found else None

    def list_registered_models(self) -> list[Row]:
        with self._tx() as conn:
            rows = conn.execute(
                select(t.registered_models).order_by(t.registered_models.c.updated_at.desc())
            ).all()
        return [dict(r._mapping) for r in rows]

    def update_registered_model(self, name: str, **fields: Any) -> None:
        with self._tx() as conn:
            conn.execute(
                t.registered_models.update()
                .where(t.registered_models.c.name == name)
                .values(updated_at=time.time(), **fields)
            )

    def list_versions(self, name: str | None = None) -> list[Row]:
        """Versions of one registered model (or of all), newest first."""
        query = select(t.model_versions)
        if name is not None:
            query = query.where(t.model_versions.c.name == name)
        with self._tx() as conn:
            rows = conn.execute(
                query.order_by(t.model_versions.c.name, t.model_versions.c.version.desc())
            ).all()
        return [dict(r._mapping) for r in rows]

    def get_version(self, name: str, version: int) -> Row | None:
        with self._tx() as conn:
            found = conn.execute(
                select(t.model_versions).where(
                    t.model_versions.c.name == name, t.model_versions.c.version == version
                )
            ).first()
        return dict(found._mapping) if found else None

    def version_of_model(self, model_id: str) -> Row | None:
        """The registry version a fine-tuned model id (ft:...) is."""
        with self._tx() as conn:
            found = conn.execute(
                select(t.model_versions).where(t.model_versions.c.model_id == model_id)
            ).first()
        return dict(found._mapping) if found else None

    def update_version(self, name: str, version: int, **fields: Any) -> None:
        with self._tx() as conn:
            conn.execute(
                t.model_versions.update()
                .where(t.model_versions.c.name == name, t.model_versions.c.version == version)
                .values(**fields)
            )

    def delete_version(self, name: str, version: int) -> Row:
        """Remove a version and its model row; refused (InvalidStateError) while an alias
        points at it. Returns the removed row (its files are the caller's to remove)."""
        with self._tx() as conn:
            row = conn.execute(
                select(t.model_versions).where(
                    t.model_versions.c.name == name, t.model_versions.c.version == version
                )
            ).first()
            if row is None:
                raise ModelNotFoundError(f"{name} has no version {version}.", param="version")
            aliases = (
                conn.execute(
                    select(t.model_aliases.c.alias).where(
                        t.model_aliases.c.name == name, t.model_aliases.c.version == version
                    )
                )
                .scalars()
                .all()
            )
            if aliases:
                raise InvalidStateError(
                    f"Version {version} of {name} is what alias(es) {', '.join(aliases)} "
                    "point at; move or delete the alias first.",
                    param="version",
                )
            conn.execute(t.model_versions.delete().where(t.model_versions.c.id == row.id))
            conn.execute(t.models.delete().where(t.models.c.id == row.model_id))
        return dict(row._mapping)

    def set_alias(
        self, name: str, alias: str, version: int, *, conn: Connection | None = None
    ) -> None:
        """Point `alias` of `name` at `version` (which must exist)."""
        if conn is None:
            with self._tx() as conn:
                self.set_alias(name, alias, version, conn=conn)
            return
        exists = conn.execute(
            select(t.model_versions.c.id).where(
                t.model_versions.c.name == name, t.model_versions.c.version == version
            )
        ).first()
        if exists is None:
            raise ModelNotFoundError(f"{name} has no version {version}.", param="version")
        values = {"version": version, "updated_at": time.time()}
        updated = conn.execute(
            t.model_aliases.update()
            .where(t.model_aliases.c.name == name, t.model_aliases.c.alias == alias)
            .values(**values)
        ).rowcount
        if not updated:
            conn.execute(t.model_aliases.insert().values(name=name, alias=alias, **values))

    def delete_alias(self, name: str, alias: str) -> bool:
        with self._tx() as conn:
            return (
                conn.execute(
                    t.model_aliases.delete().where(
                        t.model_aliases.c.name == name, t.model_aliases.c.alias == alias
                    )
                ).rowcount
                == 1
            )

    def aliases(self, name: str | None = None) -> list[Row]:
        query = select(t.model_aliases)
        if name is not None:
            query = query.where(t.model_aliases.c.name == name)
        with self._tx() as conn:
            rows = conn.execute(query.order_by(t.model_aliases.c.alias)).all()
        return [dict(r._mapping) for r in rows]

    def alias_version(self, name: str, alias: str, *, conn: Connection | None = None) -> int | None:
        query = select(t.model_aliases.c.version).where(
            t.model_aliases.c.name == name, t.model_aliases.c.alias == alias
        )
        if conn is not None:
            return conn.execute(query).scalar()
        with self._tx() as own:
            return own.execute(query).scalar()

    def count_jobs(self) -> dict[str, int]:
        with self._tx() as conn:
            rows = conn.execute(
                select(t.jobs.c.status, func.count()).group_by(t.jobs.c.status)
            ).all()
        return {status: n for status, n in rows}

    # -- API keys and the audit log ----------------------------------------------------------

    def insert_api_key(self, row: Row) -> None:
        with self._tx() as conn:
            conn.execute(t.api_keys.insert().values(**row))

    def list_api_keys(self) -> list[Row]:
        """Every key, revoked ones included, oldest first; never with its hash."""
        columns = [c for c in t.api_keys.c if c.name != "secret_hash"]
        with self._tx() as conn:
            rows = conn.execute(select(*columns).order_by(t.api_keys.c.created_at)).all()
        return [dict(r._mapping) for r in rows]

    def active_api_keys(self) -> dict[str, Row]:
        """The keys not revoked, by the hash of their secret."""
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
    ) -> tuple[list[Row], bool]:
        """Newest first; `after` is the id of the last entry of the previous page."""
        query = select(t.audit_log)
        if after is not None:
            query = query.where(t.audit_log.c.id < after)
        if actor:
            query = query.where(t.audit_log.c.actor == actor)
        with self._tx() as conn:
            rows = conn.execute(query.order_by(t.audit_log.c.id.desc()).limit(limit + 1)).all()
        return [dict(r._mapping) for r in rows[:limit]], len(rows) > limit

    def count_waiting_jobs_of(self, actor: str) -> int:
        """Jobs (of any kind) that `actor` created, by the audit log, still waiting to run."""
        waiting = [JobStatus.VALIDATING_FILES.value, JobStatus.QUEUED.value]
        query = (
            select(func.count(func.distinct(t.jobs.c.id)))
            .select_from(t.jobs.join(t.audit_log, t.audit_log.c.resource_id == t.jobs.c.id))
            .where(t.audit_log.c.actor == actor, t.jobs.c.status.in_(waiting))
        )
        with self._tx() as conn:
            return int(conn.execute(query).scalar() or 0)

    # -- studies (tuneforge.studies) ---------------------------------------------------------

    def insert_study(self, row: Row) -> Row:
        with self._tx() as conn:
            conn.execute(t.studies.insert().values(cancel_requested=False, **row))
        return self.require_study(row["id"])

    def get_study(self, study_id: str) -> Row | None:
        with self._tx() as conn:
            found = conn.execute(select(t.studies).where(t.studies.c.id == study_id)).first()
        return dict(found._mapping) if found else None

    def require_study(self, study_id: str) -> Row:
        row = self.get_study(study_id)
        if row is None:
            raise StudyNotFoundError(f"No study with id {study_id!r}.", param="id")
        return row

    def list_studies(
        self, *, after: str | None = None, limit: int = 20, status: str | None = None
    ) -> tuple[list[Row], bool]:
        query = select(t.studies)
        if status:
            query = query.where(t.studies.c.status == status)
        with self._tx() as conn:
            query = _after_cursor(conn, query, t.studies, after)
            rows = conn.execute(
                query.order_by(t.studies.c.created_at.desc(), t.studies.c.id.desc()).limit(
                    limit + 1
                )
            ).all()
        return [dict(r._mapping) for r in rows[:limit]], len(rows) > limit

    def claim_studies(self, driver_id: str, hold_seconds: float) -> list[str]:
        """Running studies this driver now coordinates: those it held, nobody held, or whose
        driver's claim ran out (it stopped or vanished), each claimed for `hold_seconds`."""
        now = time.time()
        claimed = []
        with self._tx() as conn:
            ids = conn.execute(
                select(t.studies.c.id).where(t.studies.c.status == "running")
            ).scalars()
            for study_id in list(ids):
                changed = conn.execute(
                    t.studies.update()
                    .where(
                        t.studies.c.id == study_id,
                        t.studies.c.status == "running",
                        (t.studies.c.driver_id.is_(None))
                        | (t.studies.c.driver_id == driver_id)
                        | (t.studies.c.driver_until < now),
                    )
                    .values(driver_id=driver_id, driver_until=now + hold_seconds)
                ).rowcount
                if changed:
                    claimed.append(study_id)
        return claimed

    def release_studies(self, driver_id: str) -> None:
        with self._tx() as conn:
            conn.execute(
                t.studies.update()
                .where(t.studies.c.driver_id == driver_id)
                .values(driver_id=None, driver_until=None)
            )

    def request_study_cancel(self, study_id: str) -> Row:
        """Flag a running study for its driver to cancel (with its trial jobs)."""
        with self._tx() as conn:
            changed = conn.execute(
                t.studies.update()
                .where(t.studies.c.id == study_id, t.studies.c.status == "running")
                .values(cancel_requested=True)
            ).rowcount
        study = self.require_study(study_id)
        if not changed:
            raise InvalidStateError(
                f"Study {study_id} is {study['status']}; it cannot be cancelled."
            )
        return study

    def finish_study(self, study_id: str, driver_id: str, status: str, **fields: Any) -> bool:
        """End a running study held by `driver_id`; False if it was not (any more)."""
        with self._tx() as conn:
            return bool(
                conn.execute(
                    t.studies.update()
                    .where(
                        t.studies.c.id == study_id,
                        t.studies.c.status == "running",
                        t.studies.c.driver_id == driver_id,
                    )
                    .values(
                        status=status,
                        finished_at=time.time(),
                        driver_id=None,
                        driver_until=None,
                        **fields,
                    )
                ).rowcount
            )

    def update_study_result(self, study_id: str, result: Row) -> None:
        with self._tx() as conn:
            conn.execute(t.studies.update().where(t.studies.c.id == study_id).values(result=result))

    def insert_trial(self, row: Row) -> None:
        with self._tx() as conn:
            conn.execute(t.study_trials.insert().values(**row))

    def update_trial(self, study_id: str, number: int, **fields: Any) -> None:
        with self._tx() as conn:
            conn.execute(
                t.study_trials.update()
                .where(t.study_trials.c.study_id == study_id, t.study_trials.c.number == number)
                .values(**fields)
            )

    def list_trials(self, study_id: str) -> list[Row]:
        with self._tx() as conn:
            rows = conn.execute(
                select(t.study_trials)
                .where(t.study_trials.c.study_id == study_id)
                .order_by(t.study_trials.c.number)
            ).all()
        return [dict(r._mapping) for r in rows]

    def read_study_journal(self, study_id: str, from_seq: int) -> list[Row]:
        """Optuna journal entries of a study, from `from_seq` on, in order."""
        with self._tx() as conn:
            rows = conn.execute(
                select(t.study_journal.c.entry)
                .where(t.study_journal.c.study_id == study_id, t.study_journal.c.seq >= from_seq)
                .order_by(t.study_journal.c.seq)
            ).scalars()
            return list(rows)

    def append_study_journal(self, study_id: str, entries: list[Row]) -> None:
        """Append entries after the study's last one, in one transaction."""
        with self._tx() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(
                    select(t.studies.c.id).where(t.studies.c.id == study_id).with_for_update()
                )
            last = conn.execute(
                select(func.max(t.study_journal.c.seq)).where(
                    t.study_journal.c.study_id == study_id
                )
            ).scalar()
            start = 0 if last is None else int(last) + 1
            if entries:
                conn.execute(
                    t.study_journal.insert(),
                    [
                        {"study_id": study_id, "seq": start + i, "entry": entry}
                        for i, entry in enumerate(entries)
                    ],
                )


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
