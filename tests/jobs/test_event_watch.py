"""One watcher per job serves all of its event streams: one poll for any number of streams,
every stream woken by a new event or a status change, the poll gone with the last stream."""

from __future__ import annotations

import asyncio

from tests.jobs.conftest import add_job
from tuneforge.api.event_watch import EventWatcher
from tuneforge.db.store import Store
from tuneforge.jobs.status import JobStatus


def test_streams_of_a_job_share_one_watch(store: Store) -> None:
    job_id = add_job(store)
    reads = 0
    head_of = store.event_head

    def counted(job: str) -> tuple[int, str | None]:
        nonlocal reads
        reads += 1
        return head_of(job)

    store.event_head = counted  # type: ignore[method-assign]

    async def scenario() -> None:
        watcher = EventWatcher(store, poll_seconds=0.05)
        watches = [watcher.open(job_id) for _ in range(20)]
        assert len({id(w) for w in watches}) == 1 and len(watcher.watches) == 1
        first = await watches[0].wait_past((0, None), timeout=5)
        assert first[1] == "queued" and first[0] > 0

        # An idle second: about 20 polls for 20 streams, not 400.
        before = reads
        await asyncio.sleep(1.0)
        assert 5 <= reads - before <= 40, reads - before

        waiters = [asyncio.create_task(w.wait_past(first, timeout=5)) for w in watches]
        await asyncio.sleep(0.1)
        store.add_event(job_id, "a new event")
        heads = await asyncio.gather(*waiters)
        assert all(h[0] > first[0] and h[1] == "queued" for h in heads)

        store.transition(job_id, JobStatus.CANCELLED, "cancelled")
        assert (await watches[0].wait_past(heads[0], timeout=5))[1] == "cancelled"

        task = watches[0].task
        for w in watches:
            watcher.close(w)
        assert watcher.watches == {}
        await asyncio.sleep(0.1)
        assert task is not None and task.cancelled()

    asyncio.run(scenario())
