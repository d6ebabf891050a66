"""Jobs that survive: pause/resume, kills, a kill during a checkpoint write, SIGTERM and
timeouts, with real `tuneforge worker` processes training all-MiniLM-L6-v2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, Server
from tuneforge.config import Settings
from tuneforge.datasets.ingest import ingest_file
from tuneforge.db.store import Store
from tuneforge.jobs.service import create_job
from tuneforge.training.spec import JobCreate

pytestmark = pytest.mark.slow


class Workers:
    """`tuneforge worker` processes on one data folder (SQLite unless a URL is given)."""

    def __init__(self, home: Path, database_url: str | None = None, **env: str):
        self.home = home
        self.env = dict(
            os.environ,
            TUNEFORGE_HOME=str(home),
            TUNEFORGE_HEARTBEAT_SECONDS="0.5",
            TUNEFORGE_STALLED_AFTER_SECONDS="4",
            TUNEFORGE_POLL_SECONDS="0.1",
            **env,
        )
        if database_url:
            self.env["DATABASE_URL"] = database_url
        self.settings = Settings(home=home, database_url=database_url)
        self.settings.ensure_dirs()
        self.store = Store(self.settings.db_url)
        self.store.create_schema()
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, name: str) -> subprocess.Popen[bytes]:
        log = (self.home.parent / f"worker-{name}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "tuneforge.cli", "worker", "--worker-id", name],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT))
        self.processes.append(process)
        return process

    def job(self, data: Path, model_id: str, timeout_seconds: int | None = None,
            **hyperparameters: object) -> str:
        with data.open("rb") as f:
            file_id = ingest_file(self.store, self.settings, data.name, f)["id"]
        spec = JobCreate.model_validate({
            "model": model_id, "training_file": file_id, "seed": 7,
            "timeout_seconds": timeout_seconds,
            "method": {"type": "embedding", "embedding": {
                "loss": "mnrl", "hyperparameters": {"batch_size": 16, **hyperparameters}}}})
        return create_job(self.store, self.settings, spec)["id"]

    def wait(self, job_id: str, until, timeout: float = 240) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.store.require_job(job_id)
            if until(job):
                return job
            assert job["status"] not in ("failed", "cancelled"), job["error"]
            time.sleep(0.05)
        raise AssertionError(f"timed out; job is {job['status']}")

    def messages(self, job_id: str) -> list[str]:
        events, _ = self.store.list_events(job_id, limit=10000, newest_first=False)
        return [e["message"] for e in events if e["type"] == "message"]

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        self.store.dispose()


@pytest.fixture
def workers(tmp_path: Path, offline_hub: Path) -> Iterator[Workers]:
    group = Workers(tmp_path / "tuneforge-data")
    yield group
    group.stop()


def job_processes(job_id: str) -> list[int]:
    """Pids of the job processes (`python -m tuneforge.jobs.runner JOB_ID ...`) of a job."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"tuneforge.jobs.runner" in args and job_id.encode() in args:
            pids.append(int(entry.name))
    return pids


def wait_gone(pids: list[int], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if Path(f"/proc/{p}").exists()
                 and "Z" not in Path(f"/proc/{p}/stat").read_text().split()[2:3]]
        if not alive:
            return
        time.sleep(0.1)
    raise AssertionError(f"processes {pids} still alive")


def checkpoint_steps(store: Store, job_id: str) -> list[int]:
    rows, _ = store.list_checkpoints(job_id, limit=100)
    return sorted(r["step"] for r in rows)


def test_kill_9_of_a_worker_the_job_completes_on_another(
        workers: Workers, german_triplets: Path, model_id: str) -> None:
    first = workers.start("first")
    job_id = workers.job(german_triplets, model_id, n_epochs=4, checkpoint_steps=4)
    workers.wait(job_id, lambda j: len(checkpoint_steps(workers.store, job_id)) >= 2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    # Its job process notices that its worker is gone and stops, writing nothing more.
    wait_gone(job_processes(job_id))
    saved = checkpoint_steps(workers.store, job_id)[-1]
    progress_at_kill = workers.store.require_job(job_id)["progress"]["step"]

    workers.start("second")
    job = workers.wait(job_id, lambda j: j["status"] == "succeeded")
    assert job["attempts"] == 2 and job["failures"] == 1 and job["worker_id"] == "second"
    texts = workers.messages(job_id)
    retry = next(t for t in texts if t.startswith("Attempt 1 of 3 failed"))
    assert "Worker first stopped renewing its lease" in retry
    # It continued from the newest checkpoint: at most the steps after it were lost.
    assert f"Resuming from the checkpoint at step {saved}." in texts
    assert saved <= progress_at_kill
    assert texts.index(retry) < texts.index(f"Resuming from the checkpoint at step {saved}.")
    assert texts[-1].startswith("Job succeeded")
    model = workers.store.get_model(job["fine_tuned_model"])
    assert (workers.home / model["path"] / "model.safetensors").is_file()


def test_a_kill_during_a_checkpoint_write_resumes_from_the_one_before(
        workers: Workers, german_triplets: Path, model_id: str) -> None:
    workers.start("only")
    job_id = workers.job(german_triplets, model_id, n_epochs=3, checkpoint_steps=3)
    checkpoints = workers.home / "jobs" / job_id / "checkpoints"
    workers.wait(job_id, lambda j: len(checkpoint_steps(workers.store, job_id)) >= 1)
    deadline = time.monotonic() + 120
    staging: list[Path] = []
    while not staging:  # the next checkpoint is being written: kill its process now
        assert time.monotonic() < deadline, "no checkpoint write seen"
        staging = [p for p in checkpoints.glob(".staging-*/checkpoint-*")]
    for pid in job_processes(job_id):
        os.kill(pid, signal.SIGKILL)
    half_written = int(staging[0].name.removeprefix("checkpoint-"))
    complete = [s for s in checkpoint_steps(workers.store, job_id) if s < half_written][-1]

    job = workers.wait(job_id, lambda j: j["status"] == "succeeded")
    texts = workers.messages(job_id)
    assert job["failures"] == 1 and job["attempts"] == 2
    assert any(t.startswith("Attempt 1 of 3 failed: The job's process was killed (SIGKILL)")
               for t in texts)
    assert any(t.startswith("Removed incomplete checkpoint data") for t in texts)
    assert f"Resuming from the checkpoint at step {complete}." in texts


def test_sigterm_to_a_worker_checkpoints_and_requeues(
        workers: Workers, german_triplets: Path, model_id: str) -> None:
    first = workers.start("first")
    job_id = workers.job(german_triplets, model_id, n_epochs=3)
    workers.wait(job_id, lambda j: (j["progress"] or {}).get("step", 0) >= 3)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=90) == 0
    job = workers.store.require_job(job_id)
    assert job["status"] == "queued" and job["failures"] == 0
    step = checkpoint_steps(workers.store, job_id)[-1]
    assert step >= 3
    assert (workers.home / "jobs" / job_id / "checkpoints" / f"checkpoint-{step}").is_dir()
    texts = workers.messages(job_id)
    assert f"Worker shutting down; checkpoint at step {step} written, job queued again." in texts

    workers.start("second")
    job = workers.wait(job_id, lambda j: j["status"] == "succeeded")
    assert f"Resuming from the checkpoint at step {step}." in workers.messages(job_id)
    assert job["failures"] == 0 and job["attempts"] == 2


def test_timeout_checkpoints_and_fails_with_its_code(
        workers: Workers, german_triplets: Path, model_id: str) -> None:
    workers.start("only")
    job_id = workers.job(german_triplets, model_id, timeout_seconds=12, n_epochs=50)
    deadline = time.monotonic() + 120
    while (job := workers.store.require_job(job_id))["status"] != "failed":
        assert time.monotonic() < deadline and job["status"] in ("queued", "running")
        time.sleep(0.2)
    assert job["error"]["code"] == "timeout"
    assert job["failures"] == 1  # a timeout is not retried
    step = checkpoint_steps(workers.store, job_id)[-1]
    assert f"checkpoint at step {step}" in job["error"]["message"]
    assert job["run_seconds"] >= 12


def test_pause_and_resume_end_with_the_same_weights(
        server: Server, german_triplets: Path, model_id: str, offline_hub: Path) -> None:
    from safetensors.torch import load_file

    file_id = server.upload(german_triplets)["id"]
    body = {"model": model_id, "training_file": file_id, "seed": 11,
            "method": {"type": "embedding", "embedding": {
                "loss": "mnrl", "hyperparameters": {"batch_size": 16, "n_epochs": 3}}}}
    straight = server.client.post("/v1/fine_tuning/jobs", json=body).json()
    straight = server.wait_for(straight["id"])
    assert straight["status"] == "succeeded", straight["error"]

    paused = server.client.post("/v1/fine_tuning/jobs", json=body).json()
    server.wait_for(paused["id"], ("running",))
    deadline = time.monotonic() + 120
    while (server.client.get(f"/v1/fine_tuning/jobs/{paused['id']}").json()["progress"]
           or {}).get("step", 0) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    requested = server.client.post(f"/v1/fine_tuning/jobs/{paused['id']}/pause")
    assert requested.status_code == 200 and requested.json()["pause_requested"]
    job = server.wait_for(paused["id"], ("paused", "succeeded"))
    assert job["status"] == "paused", "the job ended before the pause reached it"
    step = job["progress"]["step"]
    assert 2 <= step < job["progress"]["total_steps"]
    checkpoints = server.client.get(f"/v1/fine_tuning/jobs/{paused['id']}/checkpoints").json()
    assert checkpoints["data"][0]["step_number"] == step

    resumed = server.client.post(f"/v1/fine_tuning/jobs/{paused['id']}/resume")
    assert resumed.status_code == 200 and resumed.json()["status"] == "queued"
    job = server.wait_for(paused["id"])
    assert job["status"] == "succeeded", job["error"]
    events = server.client.get(f"/v1/fine_tuning/jobs/{paused['id']}/events",
                               params={"limit": 1000}).json()["data"]
    texts = [e["message"] for e in events]
    assert f"Resuming from the checkpoint at step {step}." in texts
    assert any(t.startswith(f"Job paused at step {step}") for t in texts)

    a = load_file(server.home / "models" / straight["id"] / "model.safetensors")
    b = load_file(server.home / "models" / paused["id"] / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].allclose(b[name], atol=1e-5), name
    # Training moved the weights: the two runs are not both copies of the base model.
    minilm = offline_hub / "hub" / "models--sentence-transformers--all-MiniLM-L6-v2"
    base = load_file(next(minilm.rglob("model.safetensors")))
    assert any(not a[name].allclose(base[name], atol=1e-4) for name in a if name in base)
    assert straight["evaluation"]["fine_tuned_model"] == pytest.approx(
        job["evaluation"]["fine_tuned_model"], abs=1e-4)


def test_pause_and_resume_refuse_what_they_cannot_do(
        server: Server, german_triplets: Path, model_id: str) -> None:
    assert server.client.post("/v1/fine_tuning/jobs/ftjob-nope/pause").status_code == 404
    file_id = server.upload(german_triplets)["id"]
    done = server.client.post("/v1/fine_tuning/jobs", json={
        "model": model_id, "training_file": file_id}).json()["id"]
    server.client.post(f"/v1/fine_tuning/jobs/{done}/cancel")
    assert server.wait_for(done)["status"] == "cancelled"
    for action in ("pause", "resume"):
        refused = server.client.post(f"/v1/fine_tuning/jobs/{done}/{action}")
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "invalid_state"


def test_sigterm_to_serve_requeues_and_the_next_start_resumes(
        tmp_path: Path, german_triplets: Path, model_id: str) -> None:
    home = tmp_path / "tuneforge-data"
    first = Server(home)
    try:
        file_id = first.upload(german_triplets)["id"]
        job = first.client.post("/v1/fine_tuning/jobs", json={
            "model": model_id, "training_file": file_id, "seed": 5,
            "method": {"type": "embedding", "embedding": {
                "hyperparameters": {"n_epochs": 3, "batch_size": 16}}}}).json()
        deadline = time.monotonic() + 120
        while (first.client.get(f"/v1/fine_tuning/jobs/{job['id']}").json()["progress"]
               or {}).get("step", 0) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        first.stop()  # SIGTERM
    assert first.process.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises it
    store = Store(f"sqlite:///{home / 'tuneforge.db'}")
    stopped = store.require_job(job["id"])
    assert stopped["status"] == "queued" and stopped["failures"] == 0
    step = checkpoint_steps(store, job["id"])[-1]
    store.dispose()

    second = Server(home)
    try:
        done = second.wait_for(job["id"])
        assert done["status"] == "succeeded", done["error"]
        texts = [e["message"] for e in second.client.get(
            f"/v1/fine_tuning/jobs/{job['id']}/events", params={"limit": 1000}).json()["data"]]
        assert f"Resuming from the checkpoint at step {step}." in texts
    finally:
        second.stop()
