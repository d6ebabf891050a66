"""Graders as the metric of evaluations and promotion gates, through the REST API of a real
server, on the tiny Qwen2 model: a reinforcement job whose gate compares by a grader, an
evaluation of its model against its base, an evaluation of a chat model on chat data with a
text_similarity grader; bad graders are refused before anything is queued."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.test_reinforcement_jobs import FAST, LETTER, prompts
from tests.conftest import Server
from tests.tiny_llm import QWEN, install_in_hf_cache, one_thread_jobs, write_jsonl
from tests.training.conftest import json_chats

pytestmark = pytest.mark.slow

# Graded answers of the tiny random model are all alike: rewards of 0 or 1, any of them.
REWARDS = (0.0, 0.25, 0.5, 0.75, 1.0)
SIMILAR = {
    "type": "text_similarity",
    "name": "close to the reference",
    "input": "{{sample.output_text}}",
    "reference": "{{item.reference_answer}}",
    "evaluation_metric": "fuzzy_match",
}


@pytest.fixture(scope="module", autouse=True)
def tiny_models(offline_hub: Path) -> Iterator[None]:
    install_in_hf_cache(offline_hub, QWEN)
    with one_thread_jobs():
        yield


@pytest.fixture(scope="module")
def files(server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("data")
    return {
        "train": server.upload(write_jsonl(folder / "train.jsonl", prompts("eaoe")))["id"],
        "valid": server.upload(write_jsonl(folder / "valid.jsonl", prompts("eo")))["id"],
        "chat": server.upload(write_jsonl(folder / "chat.jsonl", json_chats()[:4]))["id"],
    }


def wait(server: Server, evaluation_id: str) -> dict:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        found = server.client.get(f"/v1/evaluations/{evaluation_id}").json()
        if found["status"] in ("succeeded", "failed", "cancelled"):
            return found
        time.sleep(0.5)
    raise AssertionError(f"evaluation {evaluation_id} did not finish")


def rft_job(files: dict[str, str], promote: dict) -> dict:
    return {
        "model": QWEN,
        "training_file": files["train"],
        "validation_file": files["valid"],
        "seed": 3,
        "suffix": "graded",
        "promote": promote,
        "method": {
            "type": "reinforcement",
            "reinforcement": {"grader": LETTER, "hyperparameters": {**FAST, "n_epochs": 1}},
        },
    }


@pytest.fixture(scope="module")
def trained(server: Server, files: dict[str, str]) -> dict:
    """A reinforcement job whose gate compares the new model with the base by a grader."""
    gate = {"alias": "production", "min_delta": -1.0, "grader": LETTER}
    created = server.client.post("/v1/fine_tuning/jobs", json=rft_job(files, gate))
    assert created.status_code == 200, created.text
    done = server.wait_for(created.json()["id"])
    assert done["status"] == "succeeded", done["error"]
    return done


def test_the_promotion_gate_compares_by_the_grader(trained: dict) -> None:
    promotion = trained["promotion"]
    assert promotion["metric"] == "reward_mean"
    assert promotion["against"] == "the base model"
    assert promotion["new"] in REWARDS and promotion["old"] in REWARDS
    assert promotion["promote"] is True  # min_delta -1: any reward passes


def test_an_evaluation_grades_the_tuned_model_against_its_base(
    server: Server, files: dict[str, str], trained: dict
) -> None:
    body = {"model": trained["fine_tuned_model"], "file_id": files["valid"], "grader": LETTER}
    created = server.client.post("/v1/evaluations", json=body)
    assert created.status_code == 200, created.text
    assert created.json()["baseline_model"] == QWEN  # the model's base, by default
    done = wait(server, created.json()["id"])
    assert done["status"] == "succeeded", done["error"]
    result = done["result"]
    assert result["primary_metric"] == "reward_mean" and result["rows"] == 2
    assert result["model"]["metrics"]["reward_mean"] in (0.0, 0.5, 1.0)
    assert result["baseline"]["id"] == QWEN
    assert set(result["delta"]) >= {"reward_mean", "reward_std", "answer_tokens"}


def test_a_chat_model_is_graded_on_chat_data(server: Server, files: dict[str, str]) -> None:
    body = {"model": QWEN, "file_id": files["chat"], "grader": SIMILAR, "max_new_tokens": 8}
    created = server.client.post("/v1/evaluations", json=body)
    assert created.status_code == 200, created.text
    done = wait(server, created.json()["id"])
    assert done["status"] == "succeeded", done["error"]
    metrics = done["result"]["model"]["metrics"]
    # fuzzy_match of a random model's answer to the reference JSON: low, but measured.
    assert 0.0 <= metrics["reward_mean"] < 1.0
    assert done["result"]["baseline"] is None


def test_bad_graders_are_refused_and_nothing_is_queued(
    server: Server, files: dict[str, str]
) -> None:
    before = len(server.client.get("/v1/evaluations").json()["data"])
    python = {"type": "python", "name": "p", "source": "def grade(sample, item):\n    return 1"}
    refused = server.client.post(
        "/v1/evaluations", json={"model": QWEN, "file_id": files["chat"], "grader": python}
    )
    assert refused.status_code == 403, refused.text
    broken = {**LETTER, "operation": "sounds_like"}
    refused = server.client.post(
        "/v1/evaluations", json={"model": QWEN, "file_id": files["valid"], "grader": broken}
    )
    assert refused.status_code == 400 and refused.json()["error"]["param"].startswith("grader")
    assert len(server.client.get("/v1/evaluations").json()["data"]) == before
    # A gate whose grader reads a field the validation prompts lack.
    missing = {**LETTER, "reference": "{{item.nothing}}"}
    refused = server.client.post(
        "/v1/fine_tuning/jobs", json=rft_job(files, {"alias": "production", "grader": missing})
    )
    assert refused.status_code == 400, refused.text
    assert "nothing" in refused.json()["error"]["message"]
    assert refused.json()["error"]["param"] == "promote.grader.reference"
