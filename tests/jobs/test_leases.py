"""Leases, fencing, retries, pause/resume and migrations in the database, on SQLite and
PostgreSQL."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import sqlalchemy

from tests.jobs.conftest import add_job, messages
from tuneforge.db import tables as t
from tuneforge.db.store import Store, new_id
from tuneforge.errors import InvalidStateError, LeaseLostError
from tuneforge.jobs.status import JobStatus


def test_a_taken_over_lease_fences_out_its_old_holder(store: Store) -> None:
    job_id = add_job(store)
    first = store.claim_next_job("w1")
    assert first["lease"] == 1 and first["worker_id"] == "w1"
    store.update_job_fields(job_id, heartbeat_at=time.time() - 120)
    assert store.requeue_stalled(older_than=60) == [job_id]
    second = store.claim_next_job("w2")
    assert second["lease"] == 2 and second["attempts"] == 2

    # Everything the first holder might still try is refused and changes nothing.
    assert store.heartbeat(job_id, 1) is False
    with pytest.raises(LeaseLostError):
        store.update_job_fields(job_id, lease=1, progress={"step": 99})
    with pytest.raises(LeaseLostError):
        store.add_event(job_id, "stale", lease=1)
    with pytest.raises(LeaseLostError):
        store.add_checkpoint(
            {"id": new_id("ftckpt"), "job_id": job_id, "step": 5, "created_at": time.time(),
             "path": "x"}, "stale checkpoint", lease=1)
    with pytest.raises(LeaseLostError):
        store.transition(job_id, JobStatus.SUCCEEDED, "stale success", lease=1)
    with pytest.raises(LeaseLostError), store.fenced(job_id, 1):
        pass
    job = store.require_job(job_id)
    assert job["status"] == "running" and job["progress"] is None
    assert "stale" not in " ".join(messages(store, job_id))
    assert store.list_checkpoints(job_id)[0] == []

    # The new holder goes on.
    assert store.heartbeat(job_id, 2) is True
    store.add_event(job_id, "mine", lease=2)
    store.transition(job_id, JobStatus.SUCCEEDED, "done", lease=2)
    assert store.require_job(job_id)["status"] == "succeeded"


def test_crashes_are_retried_until_max_attempts_then_fail_with_the_cause(store: Store) -> None:
    job_id = add_job(store)
    store.update_job_fields(job_id, max_attempts=2)
    lease = store.claim_next_job("w")["lease"]
    oom = {"code": "out_of_memory", "message": "Killed. Try a smaller batch_size."}
    job = store.retry_or_fail(job_id, lease, oom)
    assert job["status"] == "queued" and job["failures"] == 1 and job["error"] is None
    retry_event = store.list_events(job_id, limit=1)[0][0]
    assert retry_event["level"] == "warn"
    assert retry_event["data"] == {"retry": 1, "max_attempts": 2, "error": oom}
    assert "Attempt 1 of 2 failed" in retry_event["message"]

    lease = store.claim_next_job("w")["lease"]
    job = store.retry_or_fail(job_id, lease, oom)
    assert job["status"] == "failed" and job["error"] == oom and job["failures"] == 2
    assert "after 2 attempts" in messages(store, job_id)[-1]


def test_errors_that_would_repeat_fail_at_once(store: Store) -> None:
    job_id = add_job(store)
    lease = store.claim_next_job("w")["lease"]
    error = {"code": "invalid_dataset", "message": "bad rows"}
    job = store.retry_or_fail(job_id, lease, error, retry=False)
    assert job["status"] == "failed" and job["error"] == error


def test_pause_and_resume(store: Store) -> None:
    queued = add_job(store)
    assert store.request_pause(queued)["status"] == "paused"
    assert store.claim_next_job("w") is None  # a paused job is not taken
    assert store.resume(queued)["status"] == "queued"

    job = store.claim_next_job("w", queued)
    flagged = store.request_pause(queued)
    assert flagged["status"] == "running" and flagged["pause_requested"]
    assert store.job_controls(queued)["pause_requested"]
    # Withdrawn before the process acted on it.
    assert not store.resume(queued)["pause_requested"]
    store.request_pause(queued)
    store.transition(queued, JobStatus.PAUSED, "paused at step 3", lease=job["lease"],
                     pause_requested=False)
    with pytest.raises(InvalidStateError):
        store.request_cancel(add_job(store, JobStatus.SUCCEEDED))
    assert store.request_cancel(queued)["status"] == "cancelled"  # a paused job cancels at once
    with pytest.raises(InvalidStateError):
        store.resume(queued)


def test_run_time_adds_up_over_runs(store: Store) -> None:
    job_id = add_job(store)
    lease = store.claim_next_job("w")["lease"]
    store.update_job_fields(job_id, claimed_at=time.time() - 30)
    store.transition(job_id, JobStatus.PAUSED, "paused", lease=lease)
    store.resume(job_id)
    lease = store.claim_next_job("w")["lease"]
    store.update_job_fields(job_id, claimed_at=time.time() - 12)
    store.transition(job_id, JobStatus.SUCCEEDED, "done", lease=lease)
    assert store.require_job(job_id)["run_seconds"] == pytest.approx(42, abs=2)


def test_workers_take_only_their_kinds_and_devices(store: Store) -> None:
    gpu_job = add_job(store, created_at=time.time() - 20)
    store.update_job_fields(gpu_job, device="cuda")
    other_kind = add_job(store, created_at=time.time() - 10)
    store.update_job_fields(other_kind, kind="classification")
    anywhere = add_job(store)
    assert store.claim_next_job("cpu", devices=["cpu"], kinds=["embedding"])["id"] == anywhere
    assert store.claim_next_job("cpu", devices=["cpu"], kinds=["embedding"]) is None
    assert store.claim_next_job("gpu", devices=["cuda"], kinds=["embedding"])["id"] == gpu_job
    assert store.claim_next_job("any")["id"] == other_kind


def test_a_thousand_concurrent_claims_of_one_job_have_one_winner(store: Store) -> None:
    rounds, threads_per_round = 20, 50
    wins: list[tuple[str, int]] = []
    lock = threading.Lock()

    for _ in range(rounds):
        job_id = add_job(store)
        barrier = threading.Barrier(threads_per_round)

        def claim(worker: str, job_id: str = job_id, barrier: threading.Barrier = barrier
                  ) -> None:
            barrier.wait()
            job = store.claim_next_job(worker, job_id)
            if job is not None:
                with lock:
                    wins.append((job_id, job["lease"]))

        threads = [threading.Thread(target=claim, args=(f"w{i}",))
                   for i in range(threads_per_round)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    # 1,000 claims in all: every job has exactly one winner, with the first lease.
    assert len(wins) == rounds
    assert len({job_id for job_id, _ in wins}) == rounds
    assert {lease for _, lease in wins} == {1}


def test_event_ids_grow_per_job(store: Store) -> None:
    job_id = add_job(store)
    lease = store.claim_next_job("w")["lease"]

    def write(n: int) -> None:
        for i in range(25):
            store.add_event(job_id, f"{n}-{i}", lease=lease)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    events, _ = store.list_events(job_id, limit=1000, newest_first=False)
    ids = [e["id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids) == 1 + 1 + 100


def test_a_database_from_before_migrations_is_upgraded(tmp_path: Path) -> None:
    """A database created by the first release (no alembic_version table) keeps its jobs."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sqlalchemy.create_engine(url)
    old = sqlalchemy.MetaData()
    columns = [c.copy() for c in t.jobs.columns if c.name not in (
        "lease", "failures", "max_attempts", "pause_requested", "device", "claimed_at",
        "run_seconds", "created_by", "warnings", "estimate")]
    sqlalchemy.Table("jobs", old, *columns)
    # Columns later migrations add are left out, as the first release had no such columns.
    sqlalchemy.Table("models", old, *[c.copy() for c in t.models.columns
                                      if c.name != "provenance"])
    for table in (t.files, t.events, t.checkpoints):
        table.to_metadata(old)
    old.create_all(engine)
    with engine.begin() as conn:
        conn.execute(old.tables["jobs"].insert().values(
            id="ftjob-old", kind="embedding", model="m", status="queued", spec={},
            created_at=1.0, cancel_requested=False, attempts=0))
    engine.dispose()

    upgraded = Store(url)
    upgraded.create_schema()
    upgraded.create_schema()  # a second start changes nothing
    job = upgraded.require_job("ftjob-old")
    assert job["lease"] == 0 and job["max_attempts"] == 3 and job["device"] == "auto"
    assert upgraded.claim_next_job("w")["id"] == "ftjob-old"
    with upgraded.engine.begin() as conn:
        version = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    from alembic.script import ScriptDirectory

    from tuneforge.db.migrate import MIGRATIONS

    assert version == ScriptDirectory(str(MIGRATIONS)).get_current_head()
    upgraded.dispose()
