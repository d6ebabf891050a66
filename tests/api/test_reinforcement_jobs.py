"""Reinforcement fine-tuning end to end: a real server trains the tiny Qwen2 model with GRPO,
its answers scored by a string_check grader, through the REST API; checkpoints are read with
the official `openai` client. Bad graders and data lines without the grader's fields are
refused when the job is created, and nothing is queued."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import Server
from tests.tiny_llm import QWEN, install_in_hf_cache, one_thread_jobs, write_jsonl

pytestmark = pytest.mark.slow

LETTER = {
    "type": "string_check",
    "name": "has the letter",
    "input": "{{sample.output_text}}",
    "reference": "{{item.letter}}",
    "operation": "like",
}
FAST = {
    "batch_size": 4,
    "num_generations": 4,
    "max_completion_length": 8,
    "learning_rate": 1e-2,
    "lr_scheduler": "constant",
    "warmup_ratio": 0,
}


@pytest.fixture(scope="module", autouse=True)
def tiny_models(offline_hub: Path) -> Iterator[None]:
    """The tiny Qwen2 model in the offline cache, and job processes on one thread each."""
    install_in_hf_cache(offline_hub, QWEN)
    with one_thread_jobs():
        yield


def prompts(letters: str) -> list[dict]:
    """OpenAI's reinforcement lines: a prompt, and the field the grader checks against."""
    return [
        {
            "messages": [
                {"role": "developer", "content": "Answer with one word."},
                {"role": "user", "content": f"Write a word with the letter {letter}."},
            ],
            "letter": letter,
        }
        for letter in letters
    ]


@pytest.fixture(scope="module")
def files(server: Server, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("data")
    train = server.upload(write_jsonl(folder / "train.jsonl", prompts("eaoeaoea")))
    valid = server.upload(write_jsonl(folder / "valid.jsonl", prompts("eoae")))
    return str(train["id"]), str(valid["id"])


def job(training: str, validation: str | None, grader: dict = LETTER, **hyperparameters) -> dict:
    return {
        "model": QWEN,
        "training_file": training,
        "validation_file": validation,
        "seed": 7,
        "method": {
            "type": "reinforcement",
            "reinforcement": {
                "grader": grader,
                "hyperparameters": {**FAST, **hyperparameters},
            },
        },
    }


def test_a_reinforcement_job_reports_rewards_and_registers_a_model(
    server: Server, files: tuple[str, str]
) -> None:
    created = server.client.post(
        "/v1/fine_tuning/jobs",
        json=job(*files, n_epochs=2, reasoning_effort="low") | {"suffix": "letters"},
    )
    assert created.status_code == 200, created.text
    body = created.json()
    assert body["method"]["type"] == "reinforcement"
    assert body["hyperparameters"]["n_epochs"] == 2
    assert body["method"]["reinforcement"]["grader"] == LETTER

    done = server.wait_for(body["id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["fine_tuned_model"].startswith("ft:tiny-qwen2:letters:")
    assert done["registered_model"] is not None
    # The evaluation: greedy answers to the 4 validation prompts, graded, base and tuned.
    evaluation = done["evaluation"]
    assert evaluation["primary_metric"] == "reward_mean"
    for which in ("base_model", "fine_tuned_model"):
        assert 0.0 <= evaluation[which]["reward_mean"] <= 1.0
        assert evaluation[which]["reward_mean"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    assert "reward_mean" in evaluation["delta"]

    events = server.client.get(
        f"/v1/fine_tuning/jobs/{body['id']}/events", params={"limit": 1000}
    ).json()["data"][::-1]
    # Every step (8 prompts / 4 per step, 2 epochs: 4 steps) logs its reward's mean and spread
    # over its 16 answers: each a multiple of 1/16.
    steps = [e["data"] for e in events if e["type"] == "metrics" and "reward" in e["data"]]
    assert len(steps) == 4, steps
    for values in steps:
        assert (values["reward"] * 16).is_integer() and 0 <= values["reward"] <= 1
        assert values["reward_std"] >= 0
    texts = [e["message"] for e in events if e["type"] == "message"]
    assert any("(reinforcement) on cpu" in t for t in texts)
    assert any("reasoning_effort 'low' has no effect" in t for t in texts)

    # A checkpoint an epoch, with the reward of its steps and of its validation answers.
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="any", max_retries=0)
    saved = sorted(
        client.fine_tuning.jobs.checkpoints.list(body["id"]), key=lambda c: c.step_number
    )
    assert [c.step_number for c in saved] == [2, 4]
    for checkpoint in saved:
        values = checkpoint.metrics.model_dump()
        for name in ("train_reward_mean", "train_reward_std", "full_valid_reward_mean"):
            assert isinstance(values[name], float) and values[name] >= 0, (name, values)
    first = saved[0].metrics.model_dump()
    assert first["train_reward_mean"] == pytest.approx(
        (steps[0]["reward"] + steps[1]["reward"]) / 2
    )

    folder = server.home / "models" / body["id"]
    assert (folder / "adapter_model.safetensors").is_file()
    assert json.loads((folder / "tuneforge.json").read_text())["kind"] == "reinforcement"
    models = {m["id"] for m in server.client.get("/v1/models").json()["data"]}
    assert done["fine_tuned_model"] in models


def test_bad_graders_and_missing_fields_are_refused_and_nothing_is_queued(
    server: Server, files: tuple[str, str]
) -> None:
    before = server.client.get("/v1/fine_tuning/jobs", params={"limit": 100}).json()["data"]

    refused = server.client.post(
        "/v1/fine_tuning/jobs", json=job(*files, grader={**LETTER, "operation": "contains"})
    )
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["param"] == "method.reinforcement.grader.operation"

    # The grader reads {{item.answer}}; no line has it: every line is named, with the field.
    missing = {**LETTER, "reference": "{{item.answer}}"}
    refused = server.client.post("/v1/fine_tuning/jobs", json=job(*files, grader=missing))
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "invalid_dataset" and error["param"] == "training_file"
    problems = error["details"]["problems"]
    assert [(p["line"], p["column"], p["code"]) for p in problems[:2]] == [
        (1, "answer", "missing_reference"),
        (2, "answer", "missing_reference"),
    ]
    assert "has no field 'answer'" in problems[0]["message"]
    assert "method.reinforcement.grader.reference" in problems[0]["message"]

    python = {"type": "python", "name": "p", "source": "def grade(sample, item):\n    return 1\n"}
    refused = server.client.post("/v1/fine_tuning/jobs", json=job(*files, grader=python))
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "python_graders_disabled"
    assert "TUNEFORGE_PYTHON_GRADERS=1" in refused.json()["error"]["message"]

    # A prompt that already ends with its answer is no reinforcement prompt.
    folder = server.home.parent / "bad-data"
    folder.mkdir(exist_ok=True)
    answered = prompts("ea")
    answered[1]["messages"].append({"role": "assistant", "content": "apple"})
    bad = server.upload(write_jsonl(folder / "answered.jsonl", answered * 5))
    refused = server.client.post("/v1/fine_tuning/jobs", json=job(bad["id"], None))
    assert refused.status_code == 400, refused.text
    problems = refused.json()["error"]["details"]["problems"]
    assert (problems[0]["line"], problems[0]["code"]) == (2, "role_order")

    # A method without a grader is no reinforcement job.
    no_grader = job(*files)
    del no_grader["method"]["reinforcement"]["grader"]
    assert server.client.post("/v1/fine_tuning/jobs", json=no_grader).status_code in (400, 422)

    after = server.client.get("/v1/fine_tuning/jobs", params={"limit": 100}).json()["data"]
    assert after == before


def test_a_paused_reinforcement_job_resumes_from_its_checkpoint(
    server: Server, files: tuple[str, str]
) -> None:
    created = server.client.post(
        "/v1/fine_tuning/jobs", json=job(files[0], None, n_epochs=10, batch_size=2)
    ).json()
    deadline = time.monotonic() + 120
    while (server.client.get(f"/v1/fine_tuning/jobs/{created['id']}").json()["progress"] or {}).get(
        "step", 0
    ) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert server.client.post(f"/v1/fine_tuning/jobs/{created['id']}/pause").status_code == 200
    paused = server.wait_for(created["id"], ("paused", "succeeded"))
    assert paused["status"] == "paused", "the job ended before the pause reached it"
    step = paused["progress"]["step"]
    assert 2 <= step < paused["progress"]["total_steps"]

    assert server.client.post(f"/v1/fine_tuning/jobs/{created['id']}/resume").status_code == 200
    done = server.wait_for(created["id"])
    assert done["status"] == "succeeded", done["error"]
    events = server.client.get(
        f"/v1/fine_tuning/jobs/{created['id']}/events", params={"limit": 1000}
    ).json()["data"]
    assert f"Resuming from the checkpoint at step {step}." in [e["message"] for e in events]
    # Each step logged its reward once, before the pause or after the resume (7 of the 8
    # prompts train, 1 is held out: 3 steps of 2 prompts an epoch).
    rewarded = sorted(e["data"]["step"] for e in events if "reward" in (e["data"] or {}))
    assert rewarded == list(range(1, done["progress"]["total_steps"] + 1))
    assert done["progress"]["total_steps"] == 30
