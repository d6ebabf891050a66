"""Supervised and DPO jobs end to end: a real server fine-tunes a tiny Qwen2 model, found by
its Hub id in the offline Hugging Face cache, through the REST API; the checkpoints' metrics
are read with the official `openai` client."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import Server
from tests.tiny_llm import QWEN, install_in_hf_cache, one_thread_jobs, write_jsonl
from tests.training.conftest import json_chats, preference_pairs

pytestmark = pytest.mark.slow

FAST = {
    "n_epochs": 60,
    "batch_size": 8,
    "gradient_accumulation_steps": 1,
    "learning_rate": 1e-2,
    "lr_scheduler": "constant",
    "warmup_ratio": 0,
    "gradient_checkpointing": False,
    "logging_steps": 5,
    "eval_steps": 1000,
}


@pytest.fixture(scope="module", autouse=True)
def tiny_models(offline_hub: Path) -> Iterator[None]:
    """The tiny Qwen2 model in the offline cache, and job processes on one thread each (set
    before the module's server starts: it passes its environment on)."""
    install_in_hf_cache(offline_hub, QWEN)
    with one_thread_jobs():
        yield


@pytest.fixture(scope="module")
def chat_file(server: Server, tmp_path_factory: pytest.TempPathFactory) -> str:
    rows = json_chats()
    path = write_jsonl(tmp_path_factory.mktemp("data") / "chats.jsonl", rows)
    uploaded = server.upload(path)
    assert uploaded["status"] == "processed", uploaded
    return str(uploaded["id"])


# OpenAI's checkpoint metrics, every one of which a supervised job with validation rows gives.
OPENAI_METRICS = (
    "step",
    "train_loss",
    "train_mean_token_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
    "full_valid_loss",
    "full_valid_mean_token_accuracy",
)


def checkpoints(server: Server, job_id: str) -> list:
    """The job's checkpoints as the official client reads them, oldest first."""
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="any", max_retries=0)
    found = list(client.fine_tuning.jobs.checkpoints.list(job_id, limit=100))
    return sorted(found, key=lambda c: c.step_number)


def supervised_job(file_id: str, **supervised) -> dict:
    hyperparameters = {**FAST, **supervised.pop("hyperparameters", {})}
    return {
        "model": QWEN,
        "training_file": file_id,
        "validation_file": file_id,
        "seed": 3,
        "method": {
            "type": "supervised",
            "supervised": {
                "lora": {"r": 16, "alpha": 32},
                "generation_checks": {"samples": 2, "max_new_tokens": 64},
                **supervised,
                "hyperparameters": hyperparameters,
            },
        },
    }


def test_a_supervised_job_trains_and_saves_an_adapter(server: Server, chat_file: str) -> None:
    created = server.client.post(
        "/v1/fine_tuning/jobs", json=supervised_job(chat_file) | {"suffix": "hashtags"}
    )
    assert created.status_code == 200, created.text
    job = created.json()
    assert job["method"]["type"] == "supervised"
    assert job["hyperparameters"]["n_epochs"] == 60
    assert job["method"]["supervised"]["quantization"] == "auto"

    job = server.wait_for(job["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["fine_tuned_model"].startswith("ft:tiny-qwen2:hashtags:")
    evaluation = job["evaluation"]
    assert evaluation["primary_metric"] == "loss"
    base, tuned = evaluation["base_model"], evaluation["fine_tuned_model"]
    assert base["loss"] > 4.0 and tuned["loss"] < 1.0, evaluation
    assert evaluation["delta"]["loss"] < -3.0
    assert tuned["json_valid_share"] == 1.0 and base["json_valid_share"] == 0.0

    events = server.client.get(
        f"/v1/fine_tuning/jobs/{job['id']}/events", params={"limit": 1000}
    ).json()["data"][::-1]
    losses = [e["data"]["loss"] for e in events if e["type"] == "metrics" and "loss" in e["data"]]
    assert len(losses) >= 5 and losses[-1] < losses[0]
    texts = [e["message"] for e in events if e["type"] == "message"]
    assert any("(supervised) on cpu" in t for t in texts)
    assert texts[-1].startswith("Job succeeded") and "loss: " in texts[-1]
    # The generation checks say how long they took, for the base and the tuned model.
    timed = [e["data"] for e in events if (e["data"] or {}).get("generation_checks")]
    assert [t["generation_checks"] for t in timed] == ["base", "fine-tuned"]
    assert all(t["answers"] == 2 and t["seconds"] > 0 for t in timed)
    assert any(t.startswith("Generation checks of the base model: 2 answers in ") for t in texts)

    # A checkpoint an epoch (60), each with all of OpenAI's metrics, as its client parses them.
    saved = checkpoints(server, job["id"])
    assert [c.step_number for c in saved] == list(range(1, 61))
    for c in saved:
        values = c.metrics.model_dump()
        assert all(values[name] is not None for name in OPENAI_METRICS), values
        assert c.metrics.step == c.step_number
    first, last = saved[0].metrics, saved[-1].metrics
    assert last.full_valid_loss < 1.0 < 4.0 < first.full_valid_loss
    assert last.full_valid_mean_token_accuracy > 0.8 > 0.2 > first.full_valid_mean_token_accuracy
    assert last.train_loss < first.train_loss
    # The small batch is the whole validation file here (8 rows): the same measurement.
    assert last.valid_loss == pytest.approx(last.full_valid_loss, rel=0.02, abs=0.01)

    folder = server.home / "models" / job["id"]
    assert (folder / "adapter_model.safetensors").is_file()
    assert (folder / "chat_template.jinja").is_file()
    info = json.loads((folder / "tuneforge.json").read_text())
    assert info["base_model"] == QWEN and info["quantization"] == "none"
    adapter_config = json.loads((folder / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == QWEN
    models = {m["id"]: m for m in server.client.get("/v1/models").json()["data"]}
    assert models[job["fine_tuned_model"]]["base_model"] == QWEN


def test_4bit_without_cuda_is_refused_when_the_job_is_created(
    server: Server, chat_file: str
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: 4-bit is allowed")
    before = server.client.get("/v1/fine_tuning/jobs", params={"limit": 100}).json()["data"]
    for body in (
        supervised_job(chat_file, quantization="4bit"),
        supervised_job(chat_file, quantization="8bit") | {"device": "cpu"},
    ):
        refused = server.client.post("/v1/fine_tuning/jobs", json=body)
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert error["code"] == "validation_error"
        assert error["param"] == "method.supervised.quantization"
        assert "CUDA" in error["message"]
    # Full fine-tuning of a quantized model is no valid spec anywhere.
    refused = server.client.post(
        "/v1/fine_tuning/jobs", json=supervised_job(chat_file, tuning="full", quantization="4bit")
    )
    assert refused.status_code == 422 and refused.json()["error"]["param"] == "method.supervised"
    refused = server.client.post(
        "/v1/fine_tuning/jobs", json=supervised_job(chat_file, lora={"r": 0})
    )
    assert refused.status_code == 422
    assert refused.json()["error"]["param"] == "method.supervised.lora.r"
    after = server.client.get("/v1/fine_tuning/jobs", params={"limit": 100}).json()["data"]
    assert after == before


def test_examples_longer_than_max_seq_length_are_refused_with_their_lines(
    server: Server, chat_file: str
) -> None:
    refused = server.client.post(
        "/v1/fine_tuning/jobs",
        json=supervised_job(chat_file, hyperparameters={"max_seq_length": 16}),
    )
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "invalid_dataset" and error["param"] == "training_file"
    problems = error["details"]["problems"]
    assert {p["code"] for p in problems} == {"too_long"}
    assert [p["line"] for p in problems[:3]] == [1, 2, 3]
    assert "max_seq_length 16" in problems[0]["message"]


def test_pause_and_resume_end_with_the_same_adapter(server: Server, chat_file: str) -> None:
    from safetensors.torch import load_file

    body = supervised_job(
        chat_file,
        generation_checks={"samples": 0},
        lora={"r": 8, "alpha": 16, "dropout": 0.1},
        # Long enough that, on an idle machine, the pause (checked once a second) lands
        # before the end: the 80 steps of 20 epochs took under 2 s there.
        hyperparameters={"n_epochs": 80, "batch_size": 2},
    )
    straight = server.client.post("/v1/fine_tuning/jobs", json=body).json()
    straight = server.wait_for(straight["id"])
    assert straight["status"] == "succeeded", straight["error"]

    paused = server.client.post("/v1/fine_tuning/jobs", json=body).json()
    deadline = time.monotonic() + 120
    while (server.client.get(f"/v1/fine_tuning/jobs/{paused['id']}").json()["progress"] or {}).get(
        "step", 0
    ) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert server.client.post(f"/v1/fine_tuning/jobs/{paused['id']}/pause").status_code == 200
    job = server.wait_for(paused["id"], ("paused", "succeeded"))
    assert job["status"] == "paused", "the job ended before the pause reached it"
    step = job["progress"]["step"]
    assert 2 <= step < job["progress"]["total_steps"] == 320

    resumed = server.client.post(f"/v1/fine_tuning/jobs/{paused['id']}/resume")
    assert resumed.status_code == 200 and resumed.json()["status"] == "queued"
    job = server.wait_for(paused["id"])
    assert job["status"] == "succeeded", job["error"]
    texts = [
        e["message"]
        for e in server.client.get(
            f"/v1/fine_tuning/jobs/{paused['id']}/events", params={"limit": 1000}
        ).json()["data"]
    ]
    assert f"Resuming from the checkpoint at step {step}." in texts

    a = load_file(server.home / "models" / straight["id"] / "adapter_model.safetensors")
    b = load_file(server.home / "models" / paused["id"] / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].allclose(b[name], atol=1e-5), name
    assert any(a[name].abs().max() > 0 for name in a if "lora_B" in name)  # they start at 0
    assert straight["evaluation"]["fine_tuned_model"] == pytest.approx(
        job["evaluation"]["fine_tuned_model"], abs=1e-4
    )


def test_a_dpo_job_on_openai_preference_data(
    server: Server, tmp_path_factory: pytest.TempPathFactory
) -> None:
    rows = [
        {
            "input": {"messages": p["prompt"]},
            "preferred_output": p["chosen"],
            "non_preferred_output": p["rejected"],
        }
        for p in preference_pairs()
    ]
    path = write_jsonl(tmp_path_factory.mktemp("data") / "preferences.jsonl", rows)
    file_id = server.upload(path)["id"]
    created = server.client.post(
        "/v1/fine_tuning/jobs",
        json={
            "model": QWEN,
            "training_file": file_id,
            "validation_file": file_id,
            "seed": 5,
            "method": {
                "type": "dpo",
                "dpo": {
                    "generation_checks": {"samples": 0},
                    "hyperparameters": {**FAST, "n_epochs": 5, "learning_rate": 5e-3, "beta": 0.1},
                },
            },
        },
    )
    assert created.status_code == 200, created.text
    job = server.wait_for(created.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    evaluation = job["evaluation"]
    assert evaluation["primary_metric"] == "preference_accuracy"
    assert evaluation["base_model"]["preference_accuracy"] < 0.5
    assert evaluation["fine_tuned_model"]["preference_accuracy"] == 1.0
    assert evaluation["delta"]["logp_margin"] > 10
    margins = [
        e["data"]["rewards/margins"]
        for e in server.client.get(
            f"/v1/fine_tuning/jobs/{job['id']}/events", params={"type": "metrics", "limit": 1000}
        ).json()["data"]
        if "rewards/margins" in e["data"]
    ]
    assert margins and margins[0] > 0  # newest first: the last margin is positive

    # Every checkpoint (one an epoch) carries the reward accuracy and margin, of its
    # training steps and of the validation split.
    saved = checkpoints(server, job["id"])
    assert [c.step_number for c in saved] == [1, 2, 3, 4, 5]
    for c in saved:
        values = c.metrics.model_dump()
        for name in ("train_reward_accuracy", "train_reward_margin", "train_loss"):
            assert isinstance(values[name], float), (name, values)
        for name in ("full_valid_reward_accuracy", "full_valid_reward_margin", "full_valid_loss"):
            assert isinstance(values[name], float), (name, values)
    assert saved[-1].metrics.full_valid_reward_accuracy == 1.0
    assert saved[-1].metrics.full_valid_reward_margin > saved[0].metrics.full_valid_reward_margin
