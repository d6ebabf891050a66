"""The same service on PostgreSQL (DATABASE_URL): a real job from upload to model."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..conftest import Server

pytestmark = pytest.mark.slow


def test_job_on_postgres(tmp_path: Path, postgres_url: str, german_triplets: Path,
                         model_id: str, offline_hub) -> None:
    server = Server(tmp_path / "tuneforge-data", database_url=postgres_url)
    try:
        file = server.upload(german_triplets)
        assert file["status"] == "processed"
        job = server.client.post("/v1/fine_tuning/jobs", json={
            "model": model_id, "training_file": file["id"], "suffix": "de",
            "method": {"type": "embedding", "embedding": {
                "loss": "mnrl", "hyperparameters": {"batch_size": 16}}}}).json()
        job = server.wait_for(job["id"])
        assert job["status"] == "succeeded", job["error"]
        evaluation = job["evaluation"]
        assert evaluation["primary_metric"] == "cosine_accuracy"
        assert 0.5 < evaluation["fine_tuned_model"]["cosine_accuracy"] <= 1.0
        assert not (tmp_path / "tuneforge-data" / "tuneforge.db").exists()
        health = server.client.get("/health").json()
        assert health["jobs"] == {"succeeded": 1}
    finally:
        server.stop()
