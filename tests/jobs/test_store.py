"""The job state machine in the database, on SQLite and on PostgreSQL."""

from __future__ import annotations

import copy
import json
import pickle
import threading
import time

import pytest

from tests.jobs.conftest import add_job, messages
from tuneforge.db.records import Event, Job
from tuneforge.db.store import Store
from tuneforge.errors import InvalidStateError, JobNotFoundError
from tuneforge.jobs.status import TRANSITIONS, JobStatus


def test_transition_is_conditional_and_logged(store: Store) -> None:
    job_id = add_job(store, JobStatus.VALIDATING_FILES)
    job = store.transition(job_id, JobStatus.QUEUED, "queued now")
    assert job["status"] == "queued"
    with pytest.raises(InvalidStateError):
        store.transition(job_id, JobStatus.SUCCEEDED, "cannot skip running")
    assert store.require_job(job_id)["status"] == "queued"
    assert messages(store, job_id) == ["created", "queued now"]


def test_terminal_statuses_are_final(store: Store) -> None:
    for terminal in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED):
        assert TRANSITIONS[terminal] == frozenset()
    job_id = add_job(store)
    store.transition(job_id, JobStatus.CANCELLED, "bye")
    assert store.require_job(job_id)["finished_at"] is not None
    for target in JobStatus:
        with pytest.raises(InvalidStateError):
            store.transition(job_id, target, "no")


def test_unknown_job(store: Store) -> None:
    with pytest.raises(JobNotFoundError):
        store.transition("ftjob-nope", JobStatus.QUEUED, "x")
    with pytest.raises(JobNotFoundError):
        store.request_cancel("ftjob-nope")


def test_claim_takes_oldest_queued_once(store: Store) -> None:
    older = add_job(store, created_at=time.time() - 10)
    newer = add_job(store)
    add_job(store, JobStatus.VALIDATING_FILES)
    first = store.claim_next_job("w1")
    second = store.claim_next_job("w2")
    assert (first["id"], second["id"]) == (older, newer)
    assert first["status"] == "running" and first["worker_id"] == "w1"
    assert first["attempts"] == 1
    assert store.claim_next_job("w3") is None


def test_concurrent_claims_never_share_a_job(store: Store) -> None:
    job_ids = {add_job(store) for _ in range(12)}
    claimed: list[str] = []
    lock = threading.Lock()

    def claim(worker: str) -> None:
        while (job := store.claim_next_job(worker)) is not None:
            with lock:
                claimed.append(job["id"])

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(job_ids)


def test_cancel_queued_is_immediate_and_running_is_flagged(store: Store) -> None:
    queued = add_job(store)
    assert store.request_cancel(queued)["status"] == "cancelled"
    running = add_job(store)
    store.claim_next_job("w")
    job = store.request_cancel(running)
    assert job["status"] == "running" and job["cancel_requested"]
    assert store.job_controls(running)["cancel_requested"]
    store.request_cancel(running)  # a second request logs nothing new
    assert messages(store, running).count(
        "Cancellation requested; stopping at the next step.") == 1
    with pytest.raises(InvalidStateError):
        store.request_cancel(queued)


def test_stalled_jobs_are_requeued(store: Store) -> None:
    job_id = add_job(store)
    store.claim_next_job("gone")
    assert store.requeue_stalled(older_than=60) == []
    store.update_job_fields(job_id, heartbeat_at=time.time() - 120)
    assert store.requeue_stalled(older_than=60) == [job_id]
    job = store.require_job(job_id)
    assert job["status"] == "queued" and job["worker_id"] is None
    assert store.claim_next_job("w2")["attempts"] == 2


def test_event_pagination_and_filters(store: Store) -> None:
    job_id = add_job(store)
    for i in range(5):
        store.add_event(job_id, f"m{i}", type="metrics", data={"step": i})
    store.add_event(job_id, "warn", level="warn")
    newest, more = store.list_events(job_id, limit=3)
    assert [e["message"] for e in newest] == ["warn", "m4", "m3"] and more
    older, _ = store.list_events(job_id, after=newest[-1]["id"], limit=10)
    assert [e["message"] for e in older] == ["m2", "m1", "m0", "created"]
    metrics, _ = store.list_events(job_id, type="metrics", limit=10)
    assert len(metrics) == 5 and metrics[0]["data"] == {"step": 4}
    warnings, _ = store.list_events(job_id, level="warn", limit=10)
    assert [e["message"] for e in warnings] == ["warn"]


def test_job_list_cursor(store: Store) -> None:
    ids = [add_job(store, created_at=1000.0 + i) for i in range(5)]
    page, more = store.list_jobs(limit=2)
    assert [j["id"] for j in page] == [ids[4], ids[3]] and more
    page, more = store.list_jobs(after=ids[3], limit=10)
    assert [j["id"] for j in page] == [ids[2], ids[1], ids[0]] and not more


def test_claim_a_given_job(store: Store) -> None:
    older = add_job(store, created_at=time.time() - 10)
    mine = add_job(store)
    assert store.claim_next_job("local", mine)["id"] == mine
    assert store.claim_next_job("local", mine) is None
    assert store.require_job(older)["status"] == "queued"


def test_rows_come_back_as_read_only_records(store: Store) -> None:
    job_id = add_job(store)
    job = store.require_job(job_id)
    assert isinstance(job, Job) and job.id == job_id and job.status == job["status"] == "queued"
    assert job.spec["training_files"] == ["file-a"] and job.get("fine_tuned_model") is None
    with pytest.raises(TypeError):
        job["status"] = "running"
    with pytest.raises(TypeError):
        job.update(status="running")
    with pytest.raises(AttributeError):
        job.status = "running"
    with pytest.raises(AttributeError):
        job.no_such_column  # noqa: B018
    changed = dict(job) | {"status": "running"}  # a copy changes freely
    assert changed["status"] == "running" and job.status == "queued"
    assert json.loads(json.dumps(job)) == {**job}
    for twin in (pickle.loads(pickle.dumps(job)), copy.deepcopy(job), copy.copy(job)):
        assert type(twin) is Job and twin == job
    events, _ = store.list_events(job_id)
    assert isinstance(events[0], Event) and events[0].message == "created"
