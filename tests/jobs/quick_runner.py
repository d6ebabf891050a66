"""A job process that trains nothing: it records that it ran and succeeds, through the same
fenced Store calls as the real runner. Workers use it (TUNEFORGE_RUNNER_MODULE) in the tests
of claiming, where hundreds of jobs must run and only who ran what matters. Under a launcher
(a distributed job: the worker's pid follows the arguments) each rank records itself, and
rank 0 alone ends the job, as in the real runner."""

from __future__ import annotations

import os
import sys
import time

from tuneforge.config import Settings
from tuneforge.db.store import Store
from tuneforge.jobs.status import JobStatus


def main() -> None:
    job_id, lease, settings_json, *launched = sys.argv[1:]
    settings = Settings.model_validate_json(settings_json)
    store = Store(settings.db_url)
    rank = int(os.environ.get("RANK", "0")) if launched else 0
    store.add_event(job_id, f"ran in process {os.getpid()}", lease=int(lease),
                    data={"ran": True, "rank": rank, "world_size": os.environ.get("WORLD_SIZE"),
                          "parent": os.getppid()})
    if rank != 0:
        store.dispose()
        return
    world = int(os.environ.get("WORLD_SIZE", "1")) if launched else 1
    deadline = time.monotonic() + 60
    while world > 1 and time.monotonic() < deadline:  # every rank has recorded itself
        events, _ = store.list_events(job_id, limit=10000, newest_first=False)
        ranks = {(e["data"] or {}).get("rank") for e in events if (e["data"] or {}).get("ran")}
        if len(ranks) >= world:
            break
        time.sleep(0.1)
    store.transition(job_id, JobStatus.SUCCEEDED, "done", expected={JobStatus.RUNNING},
                     lease=int(lease))
    store.dispose()


if __name__ == "__main__":
    main()
