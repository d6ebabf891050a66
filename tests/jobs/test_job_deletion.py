"""Deleting a finished job (its rows and files go, what it registered stays), checkpoint names
that never change, attempts that count failures and not pauses, and base models listed once:
in the store on both databases, and through the real server and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.jobs.conftest import add_job
from tests.offline_models import MINILM
from tuneforge.api.schemas.fine_tuning import attempt_number
from tuneforge.db.store import Store, new_id
from tuneforge.errors import InvalidStateError
from tuneforge.jobs.status import JobStatus

from ..conftest import Server

CACHE_NAME = "models--" + MINILM.replace("/", "--")


def run_to_pause(store: Store, job_id: str, worker: str) -> None:
    """A worker claims the job and its process stops it for a user's pause."""
    lease = store.claim_next_job(worker)["lease"]
    store.transition(job_id, JobStatus.PAUSED, "Paused at step 3.", lease=lease)


def test_pause_and_resume_are_runs_not_attempts(store: Store) -> None:
    job_id = add_job(store)
    assert attempt_number(store.require_job(job_id)) == 0
    run_to_pause(store, job_id, "w1")
    store.resume(job_id)
    job = store.claim_next_job("w2")
    assert (attempt_number(job), job["attempts"], job["failures"]) == (1, 2, 0)
    # A crash is what starts the next attempt; failing at the last one shows that one.
    store.retry_or_fail(job_id, job["lease"], {"code": "internal", "message": "killed"})
    job = store.claim_next_job("w3")
    assert (attempt_number(job), job["attempts"], job["failures"]) == (2, 3, 1)
    store.retry_or_fail(job_id, job["lease"], {"code": "internal", "message": "killed"})
    job = store.claim_next_job("w4")
    store.retry_or_fail(job_id, job["lease"], {"code": "internal", "message": "killed"})
    job = store.require_job(job_id)
    assert job["status"] == "failed" and attempt_number(job) == 3 == job["max_attempts"]


def test_store_deletes_only_finished_jobs_and_not_trials(store: Store) -> None:
    running = add_job(store)
    store.claim_next_job("w1")
    with pytest.raises(InvalidStateError, match="only a finished job"):
        store.delete_finished_job(running)
    paused = add_job(store)
    store.request_pause(paused)
    with pytest.raises(InvalidStateError, match="is paused"):
        store.delete_finished_job(paused)
    assert store.require_job(paused)["status"] == "paused"

    done = add_job(store, JobStatus.CANCELLED)
    store.add_event(done, "one more event")
    store.delete_finished_job(done)
    assert store.get_job(done) is None
    assert store.list_events(done, limit=10)[0] == []

    trial = add_job(store, JobStatus.SUCCEEDED)
    study = new_id("study")
    store.insert_study({"id": study, "name": study, "status": "succeeded", "spec": {},
                        "created_at": time.time()})
    store.insert_trial({"study_id": study, "number": 0, "trial_id": 0, "job_id": trial,
                        "state": "complete", "params": {}, "created_at": time.time()})
    with pytest.raises(InvalidStateError, match=f"trial of study {study}"):
        store.delete_finished_job(trial)
    assert store.get_job(trial) is not None


# -- through the server ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished(server: Server, stsb_slice: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A one-step job, named by the base model's Hugging Face cache folder, run to the end."""
    path = tmp_path_factory.mktemp("del") / "sts-16.csv"
    path.write_bytes(b"\n".join(stsb_slice.read_bytes().split(b"\n")[:16]) + b"\n")
    file_id = server.upload(path)["id"]
    created = server.client.post("/v1/fine_tuning/jobs", json={
        "model": CACHE_NAME, "training_file": file_id, "seed": 1, "suffix": "del",
        "registered_model": "del-sts",
        "method": {"type": "embedding", "embedding": {"loss": "cosent", "hyperparameters": {
            "n_epochs": 1, "batch_size": 16, "checkpoint_steps": 1}}}})
    assert created.status_code == 200, created.text
    job = server.wait_for(created.json()["id"], timeout=300)
    assert job["status"] == "succeeded", job["error"]
    return job | {"file_id": file_id}


@pytest.mark.slow
def test_checkpoint_names_do_not_change_when_the_job_finishes(
        server: Server, finished: dict) -> None:
    checkpoints = server.client.get(
        f"/v1/fine_tuning/jobs/{finished['id']}/checkpoints").json()["data"]
    assert checkpoints, "the job wrote no checkpoint"
    assert [c["fine_tuned_model_checkpoint"] for c in checkpoints] == [
        f"{finished['id']}:ckpt-step-{c['step_number']}" for c in checkpoints]
    assert finished["attempts"] == 1 and finished["runs"] == 1


@pytest.mark.slow
def test_base_model_listed_once_by_either_name(server: Server, finished: dict) -> None:
    # A row under the cache folder's name, as servers before this one wrote it.
    store = Store(f"sqlite:///{server.home / 'tuneforge.db'}")
    store.upsert_model({"id": CACHE_NAME, "kind": "base", "owned_by": "system",
                        "created_at": time.time(), "base_model": None, "job_id": None,
                        "path": MINILM})
    store.dispose()
    ids = [m["id"] for m in server.client.get("/v1/models").json()["data"]]
    assert ids.count(MINILM) == 1 and CACHE_NAME not in ids, ids
    assert finished["fine_tuned_model"] in ids
    for name in (MINILM, CACHE_NAME):
        shown = server.client.get(f"/v1/models/{name}")
        assert shown.status_code == 200 and shown.json()["id"] == MINILM
    listed = subprocess.run([sys.executable, "-m", "tuneforge.cli", "models", "list",
                             "--url", server.url], capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, COLUMNS="250"))
    assert listed.returncode == 0, listed.stderr
    rows = [line.strip(" │┃|") for line in listed.stdout.splitlines()]
    assert len([row for row in rows if row.startswith(f"{MINILM} ")]) == 1, listed.stdout
    assert CACHE_NAME not in listed.stdout, listed.stdout


@pytest.mark.slow
def test_delete_refuses_unfinished_then_removes_files_but_keeps_the_version(
        server: Server, finished: dict) -> None:
    # Queued, paused or running: 409, and the job is still there.
    created = server.client.post("/v1/fine_tuning/jobs", json={
        "model": MINILM, "training_file": finished["file_id"], "seed": 2,
        "method": {"type": "embedding", "embedding": {"loss": "cosent", "hyperparameters": {
            "n_epochs": 50, "batch_size": 4}}}}).json()
    server.client.post(f"/v1/fine_tuning/jobs/{created['id']}/pause")
    refused = server.client.delete(f"/v1/fine_tuning/jobs/{created['id']}")
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "invalid_state"
    assert "Cancel it first" in refused.json()["error"]["message"]
    server.client.post(f"/v1/fine_tuning/jobs/{created['id']}/cancel")
    cancelled = server.wait_for(created["id"], timeout=120)
    assert cancelled["status"] == "cancelled"

    job_id = finished["id"]
    job_dir = server.home / "jobs" / job_id
    model_dir = server.home / "models" / job_id
    assert (job_dir / "process.log").is_file() and model_dir.is_dir()
    result = subprocess.run([sys.executable, "-m", "tuneforge.cli", "jobs", "delete", job_id,
                             "--url", server.url], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"Job {job_id} deleted" in result.stdout
    assert finished["fine_tuned_model"] in result.stdout  # kept, and said so
    assert not job_dir.exists() and model_dir.is_dir()
    assert server.client.get(f"/v1/fine_tuning/jobs/{job_id}").status_code == 404
    assert server.client.get(f"/v1/fine_tuning/jobs/{job_id}/events").status_code == 404
    # What it registered stays.
    version = server.client.get("/v1/registered_models/del-sts/versions/1")
    assert version.status_code == 200 and version.json()["job_id"] == job_id
    assert server.client.get(f"/v1/models/{finished['fine_tuned_model']}").status_code == 200
    # Deleted once: the second time there is no such job.
    again = server.client.delete(f"/v1/fine_tuning/jobs/{job_id}")
    assert again.status_code == 404

    deleted = server.client.delete(f"/v1/fine_tuning/jobs/{created['id']}")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["kept_models"] == []
    assert not (server.home / "jobs" / created["id"]).exists()
