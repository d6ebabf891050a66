"""Feedback and synthetic data end to end against a real server with a tiny Qwen2 model:
synthetic answers written locally and through tuneforge's own /v1/chat/completions, and the
feedback loop (rate a production model, export, retrain in one call, promotion gate)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Server
from tests.tiny_llm import QWEN, install_in_hf_cache, write_jsonl
from tests.training.conftest import json_chats

pytestmark = pytest.mark.slow

NAME = "feedback-demo"
FAST = {
    "n_epochs": 1,
    "batch_size": 4,
    "gradient_accumulation_steps": 1,
    "learning_rate": 1e-3,
    "warmup_ratio": 0,
    "gradient_checkpointing": False,
}


@pytest.fixture(scope="module", autouse=True)
def tiny_models(offline_hub: Path) -> Iterator[None]:
    install_in_hf_cache(offline_hub, QWEN)
    threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    if threads is None:
        os.environ.pop("OMP_NUM_THREADS")
    else:
        os.environ["OMP_NUM_THREADS"] = threads


def wait_synthetic(server: Server, job_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = server.client.get(f"/v1/synthetic-data/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"{job_id} still {job['status']}")


def synthetic_body(**source: object) -> dict:
    return {
        "template_prompts": ["Write a short post about {topic}.", "Hashtags for {topic}?"],
        "values": {"topic": ["coffee", "football", "music", "travel"]},
        "generation_config": {"num_samples": 6, "temperature": 1.0, "max_tokens": 12},
        "quality": {"near_duplicate_threshold": 0.95},
        "seed": 3,
        **source,
    }


@pytest.mark.parametrize("where", ["local", "endpoint"])
def test_synthetic_data_becomes_a_valid_dataset(server: Server, where: str) -> None:
    source = (
        {"model": QWEN}
        if where == "local"
        else {"endpoint": {"url": server.url, "model": QWEN, "api_key": "secret"}}
    )
    created = server.client.post("/v1/synthetic-data", json=synthetic_body(**source))
    assert created.status_code == 200, created.text
    assert created.json()["object"] == "synthetic_data"
    if where == "endpoint":
        assert created.json()["request"]["endpoint"]["api_key"] == "***"
    job = wait_synthetic(server, created.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    result = job["result"]
    assert result["generated"] == 6
    assert result["kept"] + sum(result["removed"].values()) == 6
    dataset = server.client.get(f"/v1/datasets/{job['dataset_id']}").json()
    assert dataset["valid"] and dataset["kind"] == "supervised"
    assert dataset["statistics"]["rows"] == result["kept"]
    assert dataset["synthetic"]["job_id"] == job["id"]
    content = server.client.get(f"/v1/files/{job['dataset_id']}/content").text
    assert "Write a short post about" in content or "Hashtags for" in content
    # Synthetic jobs are not fine-tuning jobs.
    listed = server.client.get("/v1/fine_tuning/jobs", params={"limit": 100}).json()["data"]
    assert job["id"] not in [j["id"] for j in listed]


def test_synthetic_errors_are_clear(server: Server) -> None:
    body = synthetic_body(model=QWEN)
    body["template_prompts"].append("About {brand} and {topic}")
    refused = server.client.post("/v1/synthetic-data", json=body)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["param"] == "template_prompts"
    assert "no values for {brand}" in refused.json()["error"]["message"]
    both = server.client.post(
        "/v1/synthetic-data",
        json=synthetic_body(model=QWEN, endpoint={"url": server.url, "model": QWEN}),
    )
    assert both.status_code == 422
    unknown = server.client.post("/v1/synthetic-data", json=synthetic_body(model="ft:no:such:x"))
    assert unknown.status_code == 404
    schema = server.client.post(
        "/v1/synthetic-data",
        json=synthetic_body(model=QWEN, quality={"json_schema": {"type": "object", "oneOf": []}}),
    )
    assert schema.status_code == 400 and "oneOf" in schema.json()["error"]["message"]
    closed = server.client.post(
        "/v1/synthetic-data",
        json=synthetic_body(endpoint={"url": "http://127.0.0.1:9", "model": "m"}),
    )
    job = wait_synthetic(server, closed.json()["id"])
    assert job["status"] == "failed"
    assert job["error"]["code"] == "endpoint_error" and "127.0.0.1:9" in job["error"]["message"]
    # Every answer fails a JSON schema: the job says so instead of storing an empty dataset.
    strict = server.client.post(
        "/v1/synthetic-data",
        json=synthetic_body(model=QWEN, quality={"json_schema": {"type": "object"}}),
    )
    job = wait_synthetic(server, strict.json()["id"])
    assert job["status"] == "failed" and job["error"]["code"] == "invalid_dataset"
    assert "0 of 6" in job["error"]["message"]


def test_feedback_retrain_in_one_call(
    server: Server, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = write_jsonl(tmp_path_factory.mktemp("data") / "chats.jsonl", json_chats())
    file_id = server.upload(path)["id"]
    first = server.client.post(
        "/v1/fine_tuning/jobs",
        json={
            "model": QWEN,
            "training_file": file_id,
            "seed": 1,
            "registered_model": NAME,
            "promote": {"alias": "production", "min_delta": -1e9},
            "method": {
                "type": "supervised",
                "supervised": {"generation_checks": {"samples": 0}, "hyperparameters": FAST},
            },
        },
    )
    assert first.status_code == 200, first.text
    done = server.wait_for(first.json()["id"])
    assert done["status"] == "succeeded", done["error"]
    production = f"{NAME}@production"

    def rate(prompt: str, output: str, rating: str, corrected: str | None = None) -> dict:
        body = {"model": production, "prompt": prompt, "output": output, "rating": rating}
        if corrected:
            body["corrected_output"] = corrected
        r = server.client.post("/v1/feedback", json=body)
        assert r.status_code == 200, r.text
        return r.json()

    rate("Hashtags for coffee", '{"topic": "coffee", "hashtags": ["#coffee"]}', "up")
    rate("Hashtags for coffee", "coffee coffee coffee", "down")
    edited = rate("Hashtags for tea", "tea", "edited", '{"topic": "tea", "hashtags": ["#tea"]}')
    rate("Hashtags for music", '{"topic": "music", "hashtags": ["#music"]}', "up")
    rate("Hashtags for music", "la la la", "down")
    assert edited["registered_model"] == NAME and edited["rating"] == "edited"
    listed = server.client.get("/v1/feedback", params={"registered_model": NAME, "rating": "down"})
    assert len(listed.json()["data"]) == 2
    missing = server.client.post(
        "/v1/feedback",
        json={"model": f"{NAME}@staging", "prompt": "p", "output": "o", "rating": "up"},
    )
    assert missing.status_code == 404

    sft = server.client.post(
        "/v1/feedback/export", json={"registered_model": NAME, "kind": "supervised"}
    )
    assert sft.status_code == 200, sft.text
    assert sft.json()["dataset"]["valid"] and sft.json()["rows"] == 3

    files_before = len(server.client.get("/v1/files").json()["data"])
    bad = server.client.post(
        "/v1/feedback/retrain",
        json={"registered_model": NAME, "kind": "dpo", "method": {"hyperparameters": {"beta": -1}}},
    )
    assert bad.status_code == 400 and "beta" in bad.json()["error"]["param"]
    assert len(server.client.get("/v1/files").json()["data"]) == files_before

    retrain = server.client.post(
        "/v1/feedback/retrain",
        json={
            "registered_model": NAME,
            "kind": "dpo",
            "seed": 2,
            "min_delta": -1e9,
            "method": {"generation_checks": {"samples": 0}, "hyperparameters": FAST},
        },
    )
    assert retrain.status_code == 200, retrain.text
    body = retrain.json()
    assert body["export"]["by_source"] == {"edited": 1, "up_vs_down": 2}
    assert body["job"]["model"] == production
    job = server.wait_for(body["job"]["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["registered_model"] == {"name": NAME, "version": 2}
    assert job["promotion"]["promote"] is True
    registered = server.client.get(f"/v1/registered_models/{NAME}").json()
    assert registered["aliases"] == {"production": 2}
