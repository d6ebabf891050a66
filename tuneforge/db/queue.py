"""The job queue's state machine: transitions, cancel/pause/resume, claims under a lease,
heartbeats, retries and the recovery of stalled jobs.

Every job state change is one conditional UPDATE (`WHERE status IN (:expected)`) and writes
its event row in the same transaction, so the event table is a faithful log of the job.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Connection, case, func, select

from tuneforge.db import tables as t
from tuneforge.db.jobs import JobStore, check_lease, no_such_job, write_event
from tuneforge.db.records import Job
from tuneforge.errors import InvalidStateError, LeaseLostError
from tuneforge.jobs.status import TERMINAL, JobStatus, sources_of


class JobQueue(JobStore):
    """How jobs move through their statuses (tuneforge.jobs.status)."""

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
    ) -> Job:
        """Move a job to `target` if its status is one of `expected` (default: any status
        that may lead there) and, given a `lease`, the job is still held by it; set `fields`
        and log `message`. Raises InvalidStateError or LeaseLostError."""
        if conn is not None:
            return _transition(conn, job_id, target, message, expected, lease, level, data, fields)
        with self._tx() as own:
            return _transition(own, job_id, target, message, expected, lease, level, data, fields)

    def request_cancel(self, job_id: str) -> Job:
        """Cancel a job: at once if no process runs it, else flag it for its process to stop."""
        job = self.require_job(job_id)
        status = JobStatus(job.status)
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

    def request_pause(self, job_id: str) -> Job:
        """Pause a job: at once if it waits in the queue; a running job checkpoints at its
        next step and stops."""
        job = self.require_job(job_id)
        status = JobStatus(job.status)
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

    def resume(self, job_id: str) -> Job:
        """Queue a paused job again (it continues from its checkpoint); withdraw a pause that
        a running job has not acted on yet."""
        job = self.require_job(job_id)
        status = JobStatus(job.status)
        if status is JobStatus.PAUSED:
            return self.transition(
                job_id,
                JobStatus.QUEUED,
                "Job resumed; queued to continue from its last checkpoint.",
                expected={status},
                pause_requested=False,
            )
        if status is JobStatus.RUNNING and job.pause_requested:
            with self._tx() as conn:
                conn.execute(
                    t.jobs.update()
                    .where(t.jobs.c.id == job_id, t.jobs.c.status == status.value)
                    .values(pause_requested=False)
                )
                write_event(conn, job_id, "Pause request withdrawn.")
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
                write_event(conn, job_id, message)

    def claim_next_job(
        self,
        worker_id: str,
        job_id: str | None = None,
        *,
        kinds: list[str] | None = None,
        devices: list[str] | None = None,
    ) -> Job | None:
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
            write_event(
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
    ) -> Job:
        """End a run that crashed: queue the job again to continue from its last checkpoint
        while it has attempts left, else fail it with `error`."""
        with self._tx() as conn:
            job = check_lease(conn, job_id, lease)
            failures = job.failures + 1
            limit = job.max_attempts
            if retry and failures < limit:
                _transition(
                    conn,
                    job_id,
                    JobStatus.QUEUED,
                    f"Attempt {failures} of {limit} failed: {error['message']} "
                    "Retrying from the last checkpoint.",
                    {JobStatus.RUNNING},
                    lease,
                    "warn",
                    {"retry": failures, "max_attempts": limit, "error": error},
                    {"failures": failures, "worker_id": None, "cancel_requested": False},
                )
            else:
                tried = f" after {failures} attempts" if failures > 1 else ""
                _transition(
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


def _transition(
    conn: Connection,
    job_id: str,
    target: JobStatus,
    message: str,
    expected: set[JobStatus] | frozenset[JobStatus] | None,
    lease: int | None,
    level: str,
    data: dict[str, Any] | None,
    fields: dict[str, Any],
) -> Job:
    """JobQueue.transition inside the caller's transaction."""
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
            raise no_such_job(job_id)
        if lease is not None and current.lease != lease:
            raise LeaseLostError(f"Job {job_id} was taken over (lease {current.lease}).")
        raise InvalidStateError(
            f"Job {job_id} is {current.status}; it cannot become {target.value}."
        )
    write_event(conn, job_id, message, level=level, data=data)
    # Read back in the same transaction: the job as this change left it, even if a worker
    # claims it the moment it commits.
    return Job(conn.execute(select(t.jobs).where(t.jobs.c.id == job_id)).one()._mapping)
