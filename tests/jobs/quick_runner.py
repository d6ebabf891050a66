"""A job process that trains nothing: it records that it ran and succeeds, through the same
fenced Store calls as the real runner. Workers use it (TUNEFORGE_RUNNER_MODULE) in the tests
of claiming, where hundreds of jobs must run and only who ran what matters."""

from __future__ import annotations

import os
import sys

from tuneforge.config import Settings
from tuneforge.db.store import Store
from tuneforge.jobs.status import JobStatus


def main() -> None:
    job_id, lease, settings_json = sys.argv[1:]
    settings = Settings.model_validate_json(settings_json)
    store = Store(settings.db_url)
    store.add_event(job_id, f"ran in process {os.getpid()}", lease=int(lease),
                    data={"ran": True})
    store.transition(job_id, JobStatus.SUCCEEDED, "done", expected={JobStatus.RUNNING},
                     lease=int(lease))
    store.dispose()


if __name__ == "__main__":
    main()
