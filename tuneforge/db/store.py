"""tuneforge's database: `Store`, every resource's SQL over one engine (SQLite or PostgreSQL).

Each resource has its module in tuneforge.db, holding one class of its SQL over the shared
`Database` (tuneforge.db.engine: the engine, one transaction per call): files, feedback, jobs
with their events and checkpoints, the queue's state machine, workers and rendezvous, the
registry, API keys and the audit log, studies with Optuna's journal, served requests per
minute. `Store` is all of them at once, by inheritance: one object opened on a URL reads and
writes everything, callers write `store.claim_next_job(...)` wherever the method lives, and
each method is written once (no forwarding layer repeating 85 signatures). The classes share
only `Database` (the queue's state machine builds on `JobStore`); what two of them need alike
(the lease check, writing an event) is a function over the caller's connection in
tuneforge.db.jobs.

Reads return records (tuneforge.db.records): read-only dicts whose columns are attributes
too, `job.status` as well as `job["status"]`. Writes take `Row`, a plain dict of columns.
"""

from __future__ import annotations

from tuneforge.db.access import AccessStore
from tuneforge.db.feedback import FeedbackStore
from tuneforge.db.files import FileStore
from tuneforge.db.monitoring import MonitoringStore
from tuneforge.db.queue import JobQueue
from tuneforge.db.records import Row, new_id
from tuneforge.db.registry import RegistryStore
from tuneforge.db.studies import StudyStore
from tuneforge.db.workers import WorkerStore

__all__ = ["Row", "Store", "new_id"]


class Store(
    FileStore,
    FeedbackStore,
    JobQueue,
    WorkerStore,
    RegistryStore,
    AccessStore,
    StudyStore,
    MonitoringStore,
):
    """The database: files, feedback, jobs and their queue, workers, models and the
    registry, API keys and the audit log, studies, served requests."""
