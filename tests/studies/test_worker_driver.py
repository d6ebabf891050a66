"""`tuneforge worker` drives studies too: a deployment of API processes without workers and
worker processes elsewhere still advances its studies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import ROOT
from tests.studies.test_studies_api import study_body
from tuneforge.api.app import create_app
from tuneforge.config import Settings

pytestmark = pytest.mark.slow


def test_a_standalone_worker_drives_a_study_and_releases_it(
        tmp_path: Path, stsb_slice: Path, model_id: str) -> None:
    home = tmp_path / "home"
    data = tmp_path / "sts-60.csv"
    data.write_bytes(b"\n".join(stsb_slice.read_bytes().split(b"\n")[:60]) + b"\n")
    # The API alone: no worker and no study driver in this process.
    with TestClient(create_app(Settings(home=home), run_worker=False),
                    base_url="http://127.0.0.1") as client:
        with data.open("rb") as handle:
            uploaded = client.post("/v1/files", data={"purpose": "fine-tune"},
                                   files={"file": (data.name, handle)}).json()
        created = client.post("/v1/studies", json=study_body(
            model_id, uploaded["id"], n_trials=2, parallelism=1))
        assert created.status_code == 200, created.text
        study_id = created.json()["id"]
        assert client.get(f"/v1/studies/{study_id}").json()["trials"] == []

        # A worker for classification jobs only: it drives the study (its trials are
        # embedding jobs, which it leaves in the queue), and nothing trains here.
        env = dict(os.environ, TUNEFORGE_HOME=str(home), TUNEFORGE_POLL_SECONDS="0.2")
        worker = subprocess.Popen(
            [sys.executable, "-m", "tuneforge.cli", "worker", "--worker-id", "w-studies",
             "--kinds", "classification"],
            env=env, cwd=str(ROOT), stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "worker.log").open("wb"))
        try:
            deadline = time.monotonic() + 120
            while not (trials := client.get(f"/v1/studies/{study_id}").json()["trials"]):
                assert worker.poll() is None, (tmp_path / "worker.log").read_text()
                assert time.monotonic() < deadline, "the worker's driver started no trial"
                time.sleep(0.5)
        finally:
            worker.send_signal(signal.SIGTERM)
            code = worker.wait(timeout=60)
        assert code == 0, (tmp_path / "worker.log").read_text()

        # One trial at a time (parallelism 1); a normal job of the study, still queued.
        assert len(trials) == 1
        job = client.get(f"/v1/fine_tuning/jobs/{trials[0]['job_id']}").json()
        assert job["metadata"]["study"] == study_id
        assert job["status"] == "queued"
        # On its way out the worker let go of the study, for another driver to take over.
        assert client.app.state.store.require_study(study_id)["driver_id"] is None
