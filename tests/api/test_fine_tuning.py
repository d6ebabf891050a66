"""Fine-tuning jobs end to end: the real server trains all-MiniLM-L6-v2 on STS Benchmark."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from scipy.stats import spearmanr

from ..conftest import Server

pytestmark = pytest.mark.slow


def spearman(model, pairs: list[tuple[str, str, float]]) -> float:
    a = model.encode([p[0] for p in pairs], normalize_embeddings=True)
    b = model.encode([p[1] for p in pairs], normalize_embeddings=True)
    return float(spearmanr((a * b).sum(axis=1), [p[2] for p in pairs]).statistic)


def job_body(model_id: str, file_id: str, **embedding) -> dict:
    return {"model": model_id, "training_file": file_id,
            "method": {"type": "embedding", "embedding": embedding}}


@pytest.fixture(scope="module")
def sts_file(server: Server, stsb_slice: Path) -> str:
    return server.upload(stsb_slice)["id"]


def test_embedding_job_trains_a_better_model(server: Server, sts_file: str, model_id: str,
                                             stsb_heldout) -> None:
    from sentence_transformers import SentenceTransformer

    body = job_body(model_id, sts_file, loss="cosent",
                    hyperparameters={"n_epochs": 1, "batch_size": 16, "logging_steps": 3})
    body.update(seed=42, suffix="sts", metadata={"team": "search"})
    created = server.client.post("/v1/fine_tuning/jobs", json=body)
    assert created.status_code == 200, created.text
    job = created.json()
    assert job["object"] == "fine_tuning.job" and job["id"].startswith("ftjob-")
    assert job["status"] == "queued" and job["seed"] == 42
    assert job["hyperparameters"]["batch_size"] == 16

    job = server.wait_for(job["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["fine_tuned_model"].startswith("ft:all-MiniLM-L6-v2:sts:")
    assert job["finished_at"] >= job["created_at"]
    assert job["progress"]["percent"] == 100.0
    assert job["metadata"] == {"team": "search"}

    # Every transition is an event, in order; metrics events carry the loss.
    events = server.client.get(f"/v1/fine_tuning/jobs/{job['id']}/events",
                               params={"limit": 1000}).json()["data"][::-1]
    texts = [e["message"] for e in events if e["type"] == "message"]
    assert texts[0] == "Validating training file(s)."
    assert texts[1].endswith("job queued.") and texts[2].startswith("Job started on worker")
    assert texts[-1].startswith("Job succeeded")
    losses = [e["data"]["loss"] for e in events if e["type"] == "metrics"
              and "loss" in e["data"]]
    # CoSENT's loss of 48 pairs is noisy from one log to the next: compare the ends' means.
    assert len(losses) >= 6 and sum(losses[-3:]) < sum(losses[:3]), losses
    metric_events = server.client.get(f"/v1/fine_tuning/jobs/{job['id']}/events",
                                      params={"type": "metrics", "limit": 5}).json()
    assert metric_events["has_more"] and all(
        e["type"] == "metrics" for e in metric_events["data"])

    checkpoints = server.client.get(f"/v1/fine_tuning/jobs/{job['id']}/checkpoints").json()
    assert checkpoints["data"][0]["step_number"] == job["progress"]["total_steps"]

    models = {m["id"]: m for m in server.client.get("/v1/models").json()["data"]}
    assert models[job["fine_tuned_model"]]["base_model"] == model_id
    assert models[model_id]["kind"] == "base"

    # The saved sentence-transformers folder loads, embeds, and beats the base model.
    tuned = SentenceTransformer(str(server.home / "models" / job["id"]))
    assert tuned.encode(["Ein Satz."]).shape == (1, 384)
    base = SentenceTransformer(model_id)
    tuned_score, base_score = spearman(tuned, stsb_heldout), spearman(base, stsb_heldout)
    assert tuned_score > base_score + 0.005, (base_score, tuned_score)
    evaluation = job["evaluation"]
    assert evaluation["primary_metric"] == "spearman_cosine"
    assert evaluation["fine_tuned_model"]["spearman_cosine"] > (
        evaluation["base_model"]["spearman_cosine"])

    # The events as a Server-Sent Events stream, replayed from the start, then the end.
    with server.client.stream("GET", f"/v1/fine_tuning/jobs/{job['id']}/events",
                              params={"stream": "true"}) as stream:
        body = "".join(stream.iter_text())
    ids = [line[4:] for line in body.splitlines() if line.startswith("id: ")]
    assert ids == [e["id"] for e in events]
    assert 'event: end\ndata: {"status": "succeeded"}' in body
    # Replay after a given event id returns only the later ones.
    with server.client.stream("GET", f"/v1/fine_tuning/jobs/{job['id']}/events",
                              params={"stream": "true"},
                              headers={"Last-Event-ID": ids[-3]}) as stream:
        tail = "".join(stream.iter_text())
    assert [line[4:] for line in tail.splitlines() if line.startswith("id: ")] == ids[-2:]


@pytest.mark.parametrize(("change", "param"), [
    ({"hyperparameters": {"batch_size": 0}}, "method.embedding.hyperparameters.batch_size"),
    ({"hyperparameters": {"learning_rate": -1}},
     "method.embedding.hyperparameters.learning_rate"),
    ({"hyperparameters": {"n_epochs": "many"}}, "method.embedding.hyperparameters.n_epochs"),
    ({"loss": "hinge"}, "method.embedding.loss"),
    ({"hyperparameters": {"unknown_knob": 1}},
     "method.embedding.hyperparameters.unknown_knob"),
])
def test_bad_hyperparameters_get_422_with_the_field_path(server: Server, sts_file: str,
                                                         model_id: str, change, param) -> None:
    r = server.client.post("/v1/fine_tuning/jobs", json=job_body(model_id, sts_file, **change))
    assert r.status_code == 422
    assert r.json()["error"]["param"] == param


def test_bad_references_change_nothing(server: Server, sts_file: str, model_id: str) -> None:
    before = server.client.get("/v1/fine_tuning/jobs", params={"limit": 100}).json()["data"]
    r = server.client.post("/v1/fine_tuning/jobs", json=job_body("acme/no-such-model", sts_file,
                                                                 loss="cosent"))
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = server.client.post("/v1/fine_tuning/jobs", json=job_body(model_id, "file-0123abcd",
                                                                 loss="cosent"))
    assert r.status_code == 404 and r.json()["error"]["code"] == "file_not_found"
    r = server.client.post("/v1/fine_tuning/jobs", json=job_body(model_id, sts_file,
                                                                 loss="triplet"))
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_dataset"
    assert "scored_pair" in r.json()["error"]["message"]
    r = server.client.post("/v1/fine_tuning/jobs", json=job_body("../../etc/passwd", sts_file))
    assert r.status_code == 422 and r.json()["error"]["param"] == "model"
    after = server.client.get("/v1/fine_tuning/jobs", params={"limit": 100}).json()["data"]
    assert after == before


def _wait_until_training(server: Server, job_id: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = server.client.get(f"/v1/fine_tuning/jobs/{job_id}").json()
        if job["status"] == "running" and (job["progress"] or {}).get("step", 0) > 0:
            return
        assert job["status"] in ("queued", "running"), job
        time.sleep(0.3)
    raise AssertionError("job never started training")


def test_cancel_a_running_job(server: Server, sts_file: str, model_id: str) -> None:
    job = server.client.post("/v1/fine_tuning/jobs", json=job_body(
        model_id, sts_file, loss="cosent", hyperparameters={"n_epochs": 50})).json()
    _wait_until_training(server, job["id"])
    cancelled = server.client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200
    job = server.wait_for(job["id"], timeout=60)
    assert job["status"] == "cancelled" and job["fine_tuned_model"] is None
    assert job["progress"]["step"] < job["progress"]["total_steps"]
    messages = [e["message"] for e in server.client.get(
        f"/v1/fine_tuning/jobs/{job['id']}/events", params={"limit": 100}).json()["data"]]
    assert "Cancellation requested; stopping at the next step." in messages
    assert not (server.home / "models" / job["id"]).exists()
    again = server.client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "invalid_state"


def test_timeout_fails_the_job_with_code_timeout(server: Server, sts_file: str,
                                                 model_id: str) -> None:
    job = server.client.post("/v1/fine_tuning/jobs", json={
        **job_body(model_id, sts_file, loss="cosent", hyperparameters={"n_epochs": 50}),
        "timeout_seconds": 12}).json()
    job = server.wait_for(job["id"], timeout=120)
    assert job["status"] == "failed"
    assert job["error"]["code"] == "timeout" and job["error"]["param"] == "timeout_seconds"


def test_job_list_is_paginated_newest_first(server: Server, sts_file: str,
                                            model_id: str) -> None:
    for _ in range(2):
        job = server.client.post("/v1/fine_tuning/jobs", json=job_body(
            model_id, sts_file, loss="cosent")).json()
        server.client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")
    page = server.client.get("/v1/fine_tuning/jobs", params={"limit": 1}).json()
    assert page["data"][0]["id"] == job["id"]
    assert page["object"] == "list" and len(page["data"]) == 1 and page["has_more"]
    rest = server.client.get("/v1/fine_tuning/jobs",
                             params={"after": page["data"][0]["id"], "limit": 100}).json()
    assert page["data"][0]["created_at"] >= rest["data"][0]["created_at"]
    assert page["data"][0]["id"] not in [j["id"] for j in rest["data"]]
    assert json.dumps(rest)  # every job object is plain JSON
