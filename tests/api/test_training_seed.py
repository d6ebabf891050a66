"""Seed 000's training API, with its JSON examples verbatim, on the same job engine."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tuneforge.config import Settings
from tuneforge.datasets.ingest import ingest_file
from tuneforge.db.store import Store

from ..conftest import Server

pytestmark = pytest.mark.slow

MINIMAL = """{
  "model_tag": "models--sentence-transformers--all-MiniLM-L6-v2",
  "train_dataset_ids": ["0b30b284-f7fe-4e6c-a270-17cafc5b5bcb"]
}"""

STANDARD = """{
  "model_tag": "models--sentence-transformers--all-MiniLM-L6-v2",
  "train_dataset_ids": [
    "0b30b284-f7fe-4e6c-a270-17cafc5b5bcb",
    "0a9d5e87-e497-4737-9829-2070780d10df"
  ],
  "val_dataset_id": "0a9d5e87-e497-4737-9829-2070780d10df",
  "epochs": 3,
  "learning_rate": 0.00005,
  "per_device_train_batch_size": 8
}"""

FULL = """{
  "model_tag": "models--sentence-transformers--all-MiniLM-L6-v2",
  "train_dataset_ids": [
    "0b30b284-f7fe-4e6c-a270-17cafc5b5bcb",
    "0a9d5e87-e497-4737-9829-2070780d10df"
  ],
  "val_dataset_id": "0a9d5e87-e497-4737-9829-2070780d10df",
  "epochs": 3,
  "per_device_train_batch_size": 16,
  "learning_rate": 5e-5,
  "warmup_steps": 200,
  "optimizer_name": "AdamW",
  "scheduler": "constantlr",
  "weight_decay": 0.01,
  "max_grad_norm": 1.0,
  "use_amp": true,
  "show_progress_bar": true,
  "evaluation_steps": 1000,
  "save_best_model": true,
  "save_each_epoch": false,
  "save_optimizer_state": false,
  "dataloader_num_workers": 0,
  "device": "cuda",
  "timeout_seconds": 7200
}"""


@pytest.fixture(scope="module")
def seed_datasets(server: Server, german_triplets: Path, tmp_path_factory) -> None:
    """The seed's two dataset UUIDs, as German question/positive/negative files."""
    settings = Settings(home=server.home)
    store = Store(settings.db_url)
    lines = german_triplets.read_text(encoding="utf-8").splitlines()
    folder = tmp_path_factory.mktemp("seed")
    # 32 rows each: the examples run as given (3 epochs), on data small enough for the suite.
    for dataset_id, part in (("0b30b284-f7fe-4e6c-a270-17cafc5b5bcb", lines[:32]),
                             ("0a9d5e87-e497-4737-9829-2070780d10df", lines[96:128])):
        path = folder / f"{dataset_id}.jsonl"
        path.write_text("\n".join(part) + "\n", encoding="utf-8")
        with path.open("rb") as f:
            ingest_file(store, settings, path.name, f, file_id=f"file-{uuid.UUID(dataset_id).hex}")
    store.dispose()


def run_example(server: Server, body: str, path: str = "/training/train") -> dict:
    r = server.client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 202, r.text
    location = r.headers["Location"]
    task_id = location.split("/")[2]
    assert location == f"/training/{task_id}/status" and str(uuid.UUID(task_id)) == task_id
    server.wait_for(f"ftjob-{uuid.UUID(task_id).hex}")
    status = server.client.get(location).json()
    assert set(status) >= {"task_id", "status", "created_at", "end_date", "error_msg",
                           "trained_model_id"}
    return status


@pytest.mark.parametrize("example", [MINIMAL, STANDARD, FULL], ids=["minimal", "standard", "full"])
def test_examples_run_verbatim(server: Server, seed_datasets, example: str) -> None:
    status = run_example(server, example)
    assert status["status"] == "DONE", status
    assert status["error_msg"] is None and status["end_date"].endswith("Z")
    model = status["trained_model_id"]
    assert model.startswith("ft:all-MiniLM-L6-v2:")
    assert model in [m["id"] for m in server.client.get("/v1/models").json()["data"]]
    job = server.client.get(f"/v1/fine_tuning/jobs/ftjob-{uuid.UUID(status['task_id']).hex}")
    job = job.json()
    request = json.loads(example)
    assert job["hyperparameters"]["n_epochs"] == request.get("epochs", 1)
    if "val_dataset_id" in request:
        assert job["validation_file"] == f"file-{uuid.UUID(request['val_dataset_id']).hex}"
    if request.get("device") == "cuda":
        warnings = server.client.get(f"/v1/fine_tuning/jobs/{job['id']}/events",
                                     params={"level": "warn"}).json()["data"]
        assert any("asked for device cuda" in e["message"] for e in warnings)
        # ... and at the top of the job, and of its seed-000 status.
        assert "device_unavailable" in [w["code"] for w in job["warnings"]]
        assert "device_unavailable" in [w["code"] for w in status["warnings"]]
    if request.get("warmup_steps", 0) >= 200:  # against a few dozen steps
        assert "warmup_longer_than_training" in [w["code"] for w in job["warnings"]]
    # The trained model is usable as a base model by its seed-000 id.
    assert server.client.get(f"/v1/models/{model}").status_code == 200


def test_short_forms_and_cancel(server: Server, seed_datasets) -> None:
    body = json.loads(MINIMAL) | {"epochs": 100}
    r = server.client.post("/train", json=body)
    assert r.status_code == 202
    task_id = r.json()["task_id"]
    cancelled = server.client.post(f"/training/{task_id}/cancel")
    assert cancelled.status_code == 200
    server.wait_for(f"ftjob-{uuid.UUID(task_id).hex}")
    status = server.client.get(f"/train/status/{task_id}").json()
    assert status["status"] == "CANCELED" and status["trained_model_id"] is None


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"model_tag": "models--sentence-transformers--all-MiniLM-L6-v2",
      "train_dataset_ids": ["not-a-uuid"]}, 400, "invalid_request"),
    ({"model_tag": "models--sentence-transformers--all-MiniLM-L6-v2",
      "train_dataset_ids": [str(uuid.uuid4())]}, 404, "file_not_found"),
    ({"model_tag": "models--acme--missing",
      "train_dataset_ids": ["0b30b284-f7fe-4e6c-a270-17cafc5b5bcb"]}, 404, "model_not_found"),
    ({"model_tag": "x", "train_dataset_ids": []}, 422, "validation_error"),
    ({"model_tag": "x", "train_dataset_ids": ["0b30b284-f7fe-4e6c-a270-17cafc5b5bcb"],
      "per_device_train_batch_size": 0}, 422, "validation_error"),
    ({"model_tag": "x", "train_dataset_ids": ["0b30b284-f7fe-4e6c-a270-17cafc5b5bcb"],
      "learning_rate": 0}, 422, "validation_error"),
])
def test_error_classes(server: Server, seed_datasets, body: dict, status: int,
                       code: str) -> None:
    r = server.client.post("/training/train", json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


def test_invalid_dataset_and_unknown_task(server: Server, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "Was?", "positive": "", "negative": "n"}\n')
    file_id = server.upload(broken)["id"]
    r = server.client.post("/training/train", json={
        "model_tag": "models--sentence-transformers--all-MiniLM-L6-v2",
        "train_dataset_ids": [str(uuid.UUID(file_id.removeprefix("file-")))]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_dataset"
    missing = server.client.get(f"/training/{uuid.uuid4()}/status")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "job_not_found"
