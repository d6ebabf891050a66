"""Jobs on several machines: real `tuneforge worker` processes, each standing for a machine,
on one database and data folder. The worker that claims a job waits for the others to join,
then each starts its share of the processes under torch's launcher, which meet at node 0's
address (127.0.0.1 here).

The quick runner (tests.jobs.quick_runner) trains nothing and shows who ran what; the last
tests train for real and compare the loss with one machine of the same global batch."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.jobs.test_distributed import (
    dropout_free_minilm,
    embedding,
    finished,
    losses,
    submit,
    triplet_split,  # noqa: F401 (a fixture)
)
from tests.jobs.test_recovery import Workers, job_processes, wait_gone
from tuneforge.db.store import new_id
from tuneforge.jobs.worker import Worker

QUICK = {"TUNEFORGE_RUNNER_MODULE": "tests.jobs.quick_runner"}
HERE = {"TUNEFORGE_WORKER_ADDRESS": "127.0.0.1"}
# The same, for a worker in this process.
QUICK_SETTINGS = {"runner_module": "tests.jobs.quick_runner", "worker_address": "127.0.0.1",
                  "poll_seconds": 0.1, "heartbeat_seconds": 0.5}


def quick_job(workers: Workers, machines: int = 2, **distributed: Any) -> str:
    """A job on `machines` machines, one attempt (the quick runner needs no data or model)."""
    job_id = new_id("ftjob")
    spec = {"training_files": ["file-unused"], "validation_file": None, "num_processes": 1,
            "distributed": {"num_machines": machines, **distributed}}
    workers.store.insert_job({"id": job_id, "kind": "embedding", "model": "m", "spec": spec,
                              "status": "queued", "max_attempts": 1,
                              "created_at": time.time()}, "created")
    return job_id


def events(workers: Workers, job_id: str) -> list[dict]:
    return workers.store.list_events(job_id, limit=10000, newest_first=False)[0]


def wait_for_message(workers: Workers, job_id: str, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not any(text in m for m in workers.messages(job_id)):
        assert time.monotonic() < deadline, workers.messages(job_id)
        time.sleep(0.05)


def status_is(workers: Workers, job_id: str, status: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while (job := workers.store.require_job(job_id))["status"] != status:
        assert time.monotonic() < deadline, (job["status"], workers.messages(job_id))
        time.sleep(0.05)
    return job


@pytest.fixture(params=["sqlite", "postgres"])
def quick_workers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Workers]:
    """Workers with the quick runner, on SQLite or (where configured) PostgreSQL, the
    database machines of a real cluster share."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    group = Workers(tmp_path / "tuneforge-data", url, **QUICK, **HERE)
    yield group
    group.stop()


def test_two_workers_run_one_job_as_two_machines(quick_workers: Workers) -> None:
    workers = quick_workers
    workers.start("a")
    workers.start("b")
    job_id = quick_job(workers)
    job = status_is(workers, job_id, "succeeded", timeout=120)
    ran = [e["data"] for e in events(workers, job_id) if (e["data"] or {}).get("ran")]
    # One process per machine, each told the whole run's size by the launcher.
    assert sorted(r["rank"] for r in ran) == [0, 1]
    assert {r["world_size"] for r in ran} == {"2"}
    messages = workers.messages(job_id)
    assert any("1 more machine(s) to join at 127.0.0.1:" in m for m in messages), messages
    assert any(m.startswith("Machine 1 (") and "2 of 2 machines are in" in m for m in messages)
    nodes = workers.store.rendezvous_nodes(job_id, job["lease"])
    assert [n["node_rank"] for n in nodes] == [0, 1]
    assert {n["worker_id"] for n in nodes} == {"a", "b"}
    assert nodes[0]["worker_id"] == job["worker_id"]
    # Machine 1's launcher ends a moment after the job (it waits for node 0's at the exit).
    assert follower_state(workers, job_id, job["lease"]) == ("done", 0)


def follower_state(workers: Workers, job_id: str, lease: int) -> tuple[str, int | None]:
    deadline = time.monotonic() + 60
    while (node := workers.store.rendezvous_nodes(job_id, lease)[1])["state"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return node["state"], node["exit_code"]


def test_a_job_whose_machines_do_not_come_fails_with_a_clear_error(
        quick_workers: Workers, tmp_path: Path) -> None:
    workers = quick_workers
    workers.start("alone")
    # A worker on the same database but another data folder cannot take part.
    elsewhere = Workers(tmp_path / "other-folder", workers.settings.db_url, **QUICK, **HERE)
    try:
        job_id = quick_job(workers, join_timeout_seconds=6)
        wait_for_message(workers, job_id, "to join at")  # claimed by "alone"
        elsewhere.start("elsewhere")
        job = status_is(workers, job_id, "failed", timeout=60)
    finally:
        elsewhere.stop()
    assert job["error"]["code"] == "rendezvous_timeout"
    assert "Only 1 of 2 machines joined within join_timeout_seconds=6" in job["error"]["message"]
    assert any("Worker elsewhere" in m and "does not join" in m
               for m in workers.messages(job_id)), workers.messages(job_id)
    assert len(workers.store.rendezvous_nodes(job_id, job["lease"])) == 1


def test_a_waiting_job_pauses_resumes_and_cancels(quick_workers: Workers) -> None:
    workers = quick_workers
    workers.start("alone")
    job_id = quick_job(workers)
    wait_for_message(workers, job_id, "to join at")
    workers.store.request_pause(job_id)
    status_is(workers, job_id, "paused")
    workers.store.resume(job_id)
    job = status_is(workers, job_id, "running")
    deadline = time.monotonic() + 30
    while len(workers.store.rendezvous_nodes(job_id, job["lease"])) != 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    workers.store.request_cancel(job_id)
    status_is(workers, job_id, "cancelled")
    assert "Job cancelled while waiting for machines." in workers.messages(job_id)
    # A second worker arriving now has nothing to join, and nothing ran.
    assert not any((e["data"] or {}).get("ran") for e in events(workers, job_id))


def test_the_younger_of_two_waiting_jobs_gives_way(quick_workers: Workers) -> None:
    """Worker a waits on the older job and b claims the younger one: b steps back and joins
    a, instead of both waiting for a machine that never comes."""
    workers = quick_workers
    older = quick_job(workers)
    younger = quick_job(workers)
    workers.start("a")
    wait_for_message(workers, older, "to join at")
    assert workers.store.require_job(younger)["status"] == "queued"
    b = Worker(workers.store, workers.settings.model_copy(update=QUICK_SETTINGS), "b")
    assert b.run_once(younger)  # claims it, gives way, joins the older job and runs it
    status_is(workers, older, "succeeded", timeout=120)
    assert any("goes first; queued again" in m for m in workers.messages(younger))
    # Then the younger job runs on both.
    thread = threading.Thread(target=b.run_forever, daemon=True)
    thread.start()
    try:
        status_is(workers, younger, "succeeded", timeout=120)
    finally:
        b.stop.set()
        thread.join(timeout=30)
    for job_id in (older, younger):
        ranks = sorted(e["data"]["rank"] for e in events(workers, job_id)
                       if (e["data"] or {}).get("ran"))
        assert ranks == [0, 1], (job_id, ranks)


# -- real training ------------------------------------------------------------------------------


@pytest.fixture
def two_machines(tmp_path: Path, offline_hub: Path) -> Iterator[Workers]:
    group = Workers(tmp_path / "tuneforge-data", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                    TUNEFORGE_MODEL_DIRS=json.dumps([str(tmp_path / "base-models")]), **HERE)
    group.start("node-a")
    group.start("node-b")
    yield group
    group.stop()


@pytest.mark.slow
def test_an_embedding_job_on_two_machines_trains_like_one_with_their_global_batch(
        two_machines: Workers, triplet_split: tuple[Path, Path], offline_hub: Path,  # noqa: F811
        model_id: str) -> None:
    workers = two_machines
    model = dropout_free_minilm(workers, offline_hub, model_id)
    train, validation = triplet_split
    two = submit(workers, train, embedding(4), validation, model=model,
                 distributed={"num_machines": 2})
    finished(workers, two)
    one = submit(workers, train, embedding(8), validation, model=model)
    finished(workers, one)
    on_two, on_one = losses(workers, two), losses(workers, one)
    # The negatives of both machines are gathered, as with two processes on one machine.
    assert sorted(on_two) == sorted(on_one) == list(range(1, 9))
    for step in on_one:
        assert on_two[step] == pytest.approx(on_one[step], rel=1e-3), (step, on_one, on_two)
    job = workers.store.require_job(two)
    nodes = workers.store.rendezvous_nodes(two, job["lease"])
    assert {n["worker_id"] for n in nodes} == {"node-a", "node-b"}
    assert follower_state(workers, two, job["lease"]) == ("done", 0)
    assert (workers.home / "jobs" / two / "process-node1.log").is_file()


@pytest.mark.slow
def test_a_lost_machine_sends_the_job_back_and_it_finishes_when_machines_return(
        two_machines: Workers, triplet_split: tuple[Path, Path], model_id: str,  # noqa: F811
) -> None:
    workers = two_machines
    train, _ = triplet_split
    job_id = submit(workers, train, embedding(4, n_epochs=6, checkpoint_steps=4),
                    model=model_id, distributed={"num_machines": 2, "join_timeout_seconds": 120})
    job = workers.wait(job_id, lambda j: (j["progress"] or {}).get("step", 0) >= 6)
    follower = next(n for n in workers.store.rendezvous_nodes(job_id, job["lease"])
                    if n["node_rank"] == 1)
    lost = next(p for p in workers.processes if p.args[-1] == follower["worker_id"])
    # The machine hangs (its worker and its job's processes stop answering): rank 0 would
    # wait in gloo for half an hour; node 0 ends the run once the machine is silent.
    hung = [lost.pid, *(c.pid for c in psutil.Process(lost.pid).children(recursive=True))]
    for pid in hung:
        os.kill(pid, signal.SIGSTOP)
    try:
        back = workers.wait(job_id, lambda j: j["failures"] == 1, timeout=120)
    finally:
        for pid in hung:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert back["status"] in ("queued", "running")
    retried = next(m for m in workers.messages(job_id) if m.startswith("Attempt 1 of 3 failed"))
    assert "A machine of this multi-machine run was lost: machine 1" in retried, retried
    assert f"worker {follower['worker_id']}) has not answered for 4 s" in retried, retried
    workers.start(follower["worker_id"] + "-again")
    done = finished(workers, job_id)
    assert done["failures"] == 1
    messages = workers.messages(job_id)
    assert any("Resuming from the checkpoint at step" in m for m in messages), messages
    wait_gone(job_processes(job_id))
