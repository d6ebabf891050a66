"""One watcher per job for all of its event streams.

Events are written by job processes, so the API learns of them from the database. Without
sharing, every open stream would poll on its own (50 idle clients of one job: about a third
of a core, measured by bench/service.py). Here one task per watched job reads the job's
newest event id and status a few times a second and wakes the job's streams when either
changes; each stream then reads its own new rows (its level/type filters, its position).
The task ends when the job's last stream closes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi.concurrency import run_in_threadpool

from tuneforge.db.store import Store

POLL_SECONDS = 0.2
# (the job's newest event id or 0, its status; None until first read)
Head = tuple[int, str | None]


@dataclass
class JobWatch:
    """The newest event id and status of one job, and the streams waiting on them."""

    job_id: str
    head: Head = (0, None)
    streams: int = 0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    task: asyncio.Task[None] | None = None

    async def wait_past(self, head: Head, timeout: float) -> Head:
        """The head once it differs from `head`, or after `timeout` seconds."""
        async with self.changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait_for(lambda: self.head != head), timeout)
            return self.head


class EventWatcher:
    """The watches of the jobs that have open event streams in this process."""

    def __init__(self, store: Store, poll_seconds: float = POLL_SECONDS):
        self.store = store
        self.poll_seconds = poll_seconds
        self.watches: dict[str, JobWatch] = {}

    def open(self, job_id: str) -> JobWatch:
        watch = self.watches.get(job_id)
        if watch is None:
            watch = self.watches[job_id] = JobWatch(job_id)
            watch.task = asyncio.create_task(self._poll(watch))
        watch.streams += 1
        return watch

    def close(self, watch: JobWatch) -> None:
        watch.streams -= 1
        if watch.streams == 0:
            self.watches.pop(watch.job_id, None)
            if watch.task is not None:
                watch.task.cancel()

    async def _poll(self, watch: JobWatch) -> None:
        read: Callable[[str], Head] = self.store.event_head
        while True:
            head = await run_in_threadpool(read, watch.job_id)
            if head != watch.head:
                async with watch.changed:
                    watch.head = head
                    watch.changed.notify_all()
            await asyncio.sleep(self.poll_seconds)
