"""Job statuses, the transitions between them, and why a running job stops before its end."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    # Accepted; its files are being checked against the job's method.
    VALIDATING_FILES = "validating_files"
    # Waiting for a worker to claim it.
    QUEUED = "queued"
    # Claimed by a worker; its process is training.
    RUNNING = "running"
    # Stopped at the user's request after writing a checkpoint; `resume` queues it again.
    PAUSED = "paused"
    # Finished; `fine_tuned_model` names the result.
    SUCCEEDED = "succeeded"
    # Ended with an error; `error.code` says why.
    FAILED = "failed"
    # Stopped at the user's request.
    CANCELLED = "cancelled"


class StopReason(StrEnum):
    """Why a running job stops before its end. The job process's reporter decides the first
    four (`JobReporter.stop_reason`); the worker, when it has to kill the process, says which
    of them (or MACHINE_LOST) it acted on."""

    # The user asked to cancel: no checkpoint; the job ends cancelled.
    CANCELLED = "cancelled"
    # The user asked to pause: checkpoint, then paused until resumed.
    PAUSED = "paused"
    # timeout_seconds ran out: checkpoint, then the job fails with code "timeout".
    TIMEOUT = "timeout"
    # The worker is stopping (SIGTERM): checkpoint and go back to the queue.
    SHUTDOWN = "shutdown"
    # Another machine of a multi-machine run was lost; the worker kills the process.
    MACHINE_LOST = "machine_lost"


# Stop reasons after which the run writes a checkpoint to continue from.
CHECKPOINTING_STOPS = frozenset({StopReason.PAUSED, StopReason.TIMEOUT, StopReason.SHUTDOWN})


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
# A job waiting to run: what the per-key queue bound counts.
WAITING = frozenset({JobStatus.VALIDATING_FILES, JobStatus.QUEUED})

# Which status may follow which. RUNNING -> QUEUED is a retry, or the requeue of a job whose
# worker shut down or vanished.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.VALIDATING_FILES: frozenset(
        {JobStatus.QUEUED, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.QUEUED: frozenset(
        {JobStatus.RUNNING, JobStatus.PAUSED, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.RUNNING: frozenset(
        {
            JobStatus.SUCCEEDED,
            JobStatus.FAILED,
            JobStatus.CANCELLED,
            JobStatus.QUEUED,
            JobStatus.PAUSED,
        }
    ),
    JobStatus.PAUSED: frozenset({JobStatus.QUEUED, JobStatus.CANCELLED}),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


def sources_of(target: JobStatus) -> frozenset[JobStatus]:
    """Statuses from which `target` may be reached."""
    return frozenset(s for s, targets in TRANSITIONS.items() if target in targets)


# Job kinds that are not fine-tuning: they run on the same engine but are listed under their
# own endpoints (/v1/evaluations, /v1/exports, /v1/synthetic-data, /v1/model_imports,
# /v1/deployments), not under /v1/fine_tuning/jobs.
SERVICE_KINDS = ("evaluation", "export", "synthetic", "model_import", "deployment")
