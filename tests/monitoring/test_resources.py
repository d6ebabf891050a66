"""Resource samples of a job's process (tuneforge.monitoring.resources) on a real SQLite
store: what a sample holds, and the monitor's events under the job's lease."""

from __future__ import annotations

import time
from pathlib import Path

from tests.jobs.conftest import add_job
from tuneforge.db.store import Store
from tuneforge.jobs.status import JobStatus
from tuneforge.monitoring.resources import ResourceMonitor, ResourceSampler


def test_a_sample_sees_cpu_time_and_memory() -> None:
    sampler = ResourceSampler()
    ballast = bytearray(64 * 2**20)  # touched: resident
    ballast[::4096] = b"x" * len(ballast[::4096])
    # Busy until this process has used 0.2 s of CPU, however long a shared machine takes.
    started, cpu = time.monotonic(), time.process_time()
    while time.process_time() - cpu < 0.2:
        pass
    busy = 100 * (time.process_time() - cpu) / (time.monotonic() - started)
    values = sampler.sample()
    assert 0.5 * busy < values["cpu_percent"] < 1.5 * busy + 5
    assert values["rss_bytes"] > 64 * 2**20
    assert values["peak_rss_bytes"] >= values["rss_bytes"]
    assert 0 < values["system_memory_percent"] <= 100
    assert "gpu_memory_allocated_bytes" not in values  # CUDA never started here
    del ballast


def test_the_monitor_writes_metrics_events_while_the_job_runs(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'test.db'}")
    store.create_schema()
    job_id = add_job(store)
    job = store.claim_next_job("w")
    assert job is not None and job["id"] == job_id
    monitor = ResourceMonitor(store, job_id, job["lease"], 0.2, lambda: 7)
    monitor.start()
    time.sleep(0.7)
    monitor.stop()
    events, _ = store.list_events(job_id, type="metrics", limit=100, newest_first=False)
    assert len(events) >= 3  # at the start, every 0.2 s, at the stop
    assert all(e["data"]["step"] == 7 and e["data"]["rss_bytes"] > 0 for e in events)
    assert events[0]["message"].startswith("Resources: CPU ")
    # Once the job has ended, a sample is not written, and nothing is raised.
    store.transition(job_id, JobStatus.SUCCEEDED, "done", expected={JobStatus.RUNNING})
    late = ResourceMonitor(store, job_id, job["lease"], 10, lambda: 8)
    late.start()
    late.stop()
    after, _ = store.list_events(job_id, type="metrics", limit=100)
    assert len(after) == len(events)
    store.dispose()
