"""Many `tuneforge worker` processes on one PostgreSQL database: each job runs exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.jobs.conftest import add_job
from tuneforge.db.store import Store

pytestmark = pytest.mark.slow


def test_three_workers_run_two_hundred_jobs_each_exactly_once(
        postgres_url: str, tmp_path: Path) -> None:
    store = Store(postgres_url)
    store.create_schema()
    job_ids = [add_job(store) for _ in range(200)]
    env = dict(os.environ, DATABASE_URL=postgres_url, TUNEFORGE_HOME=str(tmp_path / "data"),
               TUNEFORGE_RUNNER_MODULE="tests.jobs.quick_runner",
               TUNEFORGE_POLL_SECONDS="0.05", TUNEFORGE_HEARTBEAT_SECONDS="0.2")
    workers = [
        subprocess.Popen([sys.executable, "-m", "tuneforge.cli", "worker", "--worker-id",
                          f"w{i}"], env=env, cwd=str(ROOT), stdout=subprocess.DEVNULL,
                         stderr=(tmp_path / f"w{i}.log").open("wb"))
        for i in range(3)
    ]
    try:
        deadline = time.monotonic() + 400
        while store.count_jobs().get("succeeded", 0) < len(job_ids):
            assert time.monotonic() < deadline, store.count_jobs()
            assert all(w.poll() is None for w in workers), "a worker died"
            time.sleep(0.5)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=60)

    assert store.count_jobs() == {"succeeded": 200}
    ran_by: dict[str, int] = {}
    for job_id in job_ids:
        job = store.require_job(job_id)
        events, _ = store.list_events(job_id, limit=100, newest_first=False)
        runs = [e for e in events if (e["data"] or {}).get("ran")]
        claims = [e for e in events if e["message"].startswith("Job started on worker")]
        assert len(runs) == 1 and len(claims) == 1, [e["message"] for e in events]
        assert job["attempts"] == 1 and job["lease"] == 1
        ran_by[job["worker_id"]] = ran_by.get(job["worker_id"], 0) + 1
    # All three took part; they registered, and said when they stopped.
    assert set(ran_by) == {"w0", "w1", "w2"}, ran_by
    registered = {w["id"]: w for w in store.list_workers()}
    assert set(registered) == {"w0", "w1", "w2"}
    assert all(w["stopped_at"] is not None for w in registered.values())
    store.dispose()
