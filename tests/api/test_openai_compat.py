"""OpenAI's documented fine-tuning flows with the official `openai` client against a real
server, only `base_url` changed: files, supervised (no method: the data says it) and DPO
jobs, list with a metadata filter, retrieve, pause, resume, cancel, events, checkpoints,
models retrieve and delete.

Every answer is read raw and validated against the client's own type
(`FineTuningJob.model_validate`: a missing required field or a wrong type fails), besides
being parsed by the client as a user's script would."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import openai
import pytest
from openai.types import FileObject, Model, ModelDeleted
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent
from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint
from pydantic import BaseModel

from tests.conftest import Server
from tests.tiny_llm import QWEN, install_in_hf_cache, one_thread_jobs, write_jsonl
from tests.training.conftest import TOPICS, json_chats

pytestmark = pytest.mark.slow

T = TypeVar("T", bound=BaseModel)


@pytest.fixture(scope="module", autouse=True)
def tiny_models(offline_hub: Path) -> Iterator[None]:
    """The tiny Qwen2 model in the offline cache; job processes on one thread each."""
    install_in_hf_cache(offline_hub, QWEN)
    with one_thread_jobs():
        yield


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="any", max_retries=0)


# The one value outside the client's types: a paused job's status. The client has pause()
# and resume(), but FineTuningJob.status (openai 3.54) does not list "paused"; the client
# still reads such a job (it parses leniently), which the test checks separately.
OUTSIDE_THE_TYPES = {"status": "paused"}


def strict(model: type[T], raw: Any) -> T:
    """`raw` (a raw response, or its JSON) validated as the client's `model`: every required
    field there, every field of the right type."""
    body = raw.http_response.json() if hasattr(raw, "http_response") else raw
    if model is FineTuningJob and body.get("status") == OUTSIDE_THE_TYPES["status"]:
        body = {**body, "status": "queued"}
    return model.model_validate(body)


def openai_dpo_rows() -> list[dict[str, Any]]:
    """OpenAI's preference format: input.messages, preferred and non-preferred outputs."""
    return [
        {
            "input": {"messages": [{"role": "user", "content": f"Hashtags for {topic}"}]},
            "preferred_output": [
                {"role": "assistant", "content": json.dumps({"hashtags": [f"#{topic}"]})}
            ],
            "non_preferred_output": [{"role": "assistant", "content": f"I like {topic}."}],
        }
        for topic in TOPICS
    ]


def upload(client: openai.OpenAI, path: Path) -> FileObject:
    with path.open("rb") as handle:
        raw = client.files.with_raw_response.create(file=handle, purpose="fine-tune")
    uploaded = strict(FileObject, raw)
    assert uploaded.status == "processed", uploaded
    return uploaded


def wait(client: openai.OpenAI, job_id: str, statuses: tuple[str, ...]) -> FineTuningJob:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        raw = client.fine_tuning.jobs.with_raw_response.retrieve(job_id)
        job = strict(FineTuningJob, raw)
        if job.status in statuses or raw.http_response.json()["status"] in statuses:
            return job
        time.sleep(0.5)
    raise AssertionError(f"{job_id} is still {job.status}")


def test_openai_flows_with_only_base_url_changed(client: openai.OpenAI, tmp_path: Path) -> None:
    chats = upload(client, write_jsonl(tmp_path / "chats.jsonl", json_chats()))
    prefs = upload(client, write_jsonl(tmp_path / "prefs.jsonl", openai_dpo_rows()))

    # Supervised, as OpenAI's quickstart does it: no method (the chat data says which), and
    # the deprecated top-level hyperparameters the client still offers.
    raw = client.fine_tuning.jobs.with_raw_response.create(
        model=QWEN,
        training_file=chats.id,
        hyperparameters={"n_epochs": 2, "batch_size": 8, "learning_rate_multiplier": 2},
        suffix="compat",
        metadata={"flow": "sft"},
        seed=7,
    )
    sft = strict(FineTuningJob, raw)
    assert sft.method is not None and sft.method.type == "supervised"
    assert sft.hyperparameters.n_epochs == 2 and sft.hyperparameters.batch_size == 8
    assert sft.user_provided_suffix == "compat" and sft.metadata == {"flow": "sft"}

    # DPO with OpenAI's method object, "auto" where OpenAI allows it; paused while queued,
    # resumed, then cancelled.
    raw = client.fine_tuning.jobs.with_raw_response.create(
        model=QWEN,
        training_file=prefs.id,
        method={
            "type": "dpo",
            "dpo": {"hyperparameters": {"beta": "auto", "n_epochs": 1, "batch_size": "auto"}},
        },
        metadata={"flow": "dpo"},
    )
    dpo = strict(FineTuningJob, raw)
    assert dpo.method is not None and dpo.method.type == "dpo"
    assert dpo.method.dpo is not None and dpo.method.dpo.hyperparameters is not None
    assert dpo.method.dpo.hyperparameters.beta == 0.1
    raw = client.fine_tuning.jobs.with_raw_response.pause(dpo.id)
    strict(FineTuningJob, raw)
    wait(client, dpo.id, ("paused",))
    assert client.fine_tuning.jobs.retrieve(dpo.id).status == "paused"  # type: ignore[comparison-overlap]
    resumed = strict(FineTuningJob, client.fine_tuning.jobs.with_raw_response.resume(dpo.id))
    assert resumed.status in ("queued", "running")
    cancelled = strict(FineTuningJob, client.fine_tuning.jobs.with_raw_response.cancel(dpo.id))
    assert cancelled.id == dpo.id
    assert wait(client, dpo.id, ("cancelled",)).status == "cancelled"

    # List, filtered by metadata as the client sends it (metadata[flow]=sft).
    raw = client.fine_tuning.jobs.with_raw_response.list(metadata={"flow": "sft"}, limit=10)
    listed = raw.http_response.json()
    assert [job["id"] for job in listed["data"]] == [sft.id]
    for job in listed["data"]:
        strict(FineTuningJob, job)
    every = [job.id for job in client.fine_tuning.jobs.list(limit=10)]
    assert sft.id in every and dpo.id in every

    done = wait(client, sft.id, ("succeeded", "failed", "cancelled"))
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model and ":compat:" in done.fine_tuned_model
    # The learning rate the run chose (auto, times the multiplier) is shown once known.
    assert done.model_extra is not None
    assert done.hyperparameters.model_extra is not None
    assert done.hyperparameters.model_extra["learning_rate"] == pytest.approx(2e-3)

    raw = client.fine_tuning.jobs.with_raw_response.list_events(sft.id, limit=100)
    events = [strict(FineTuningJobEvent, e) for e in raw.http_response.json()["data"]]
    messages = [e.message for e in events]
    assert any("No method given" in m and "supervised" in m for m in messages), messages

    raw = client.fine_tuning.jobs.checkpoints.with_raw_response.list(sft.id)
    checkpoints = [strict(FineTuningJobCheckpoint, c) for c in raw.http_response.json()["data"]]
    assert checkpoints and all(c.fine_tuning_job_id == sft.id for c in checkpoints)
    assert all(c.metrics.train_loss is not None for c in checkpoints)

    model = strict(Model, client.models.with_raw_response.retrieve(done.fine_tuned_model))
    assert model.id == done.fine_tuned_model
    deleted = strict(ModelDeleted, client.models.with_raw_response.delete(model.id))
    assert deleted.deleted and deleted.id == model.id
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(model.id)

    # Reinforcement fine-tuning, OpenAI's way: prompt-only lines with the field the grader
    # reads, a string_check grader, OpenAI's hyperparameter names (and two of ours to keep it
    # small); followed to the end, with rewards in its events and checkpoints.
    prompts = [
        {
            "messages": [{"role": "user", "content": f"Write a word with the letter {letter}."}],
            "letter": letter,
        }
        for letter in "eaoeaoea"
    ]
    rft_file = upload(client, write_jsonl(tmp_path / "rft.jsonl", prompts))
    raw = client.fine_tuning.jobs.with_raw_response.create(
        model=QWEN,
        training_file=rft_file.id,
        method={
            "type": "reinforcement",
            "reinforcement": {
                "grader": {
                    "type": "string_check",
                    "name": "has the letter",
                    "input": "{{sample.output_text}}",
                    "reference": "{{item.letter}}",
                    "operation": "like",
                },
                "hyperparameters": {
                    "n_epochs": 1,
                    "batch_size": 4,
                    "compute_multiplier": 1,
                    "max_completion_length": 8,  # tuneforge's own
                    "learning_rate": 1e-2,
                },
            },
        },
        seed=7,
    )
    rft = strict(FineTuningJob, raw)
    assert rft.method is not None and rft.method.type == "reinforcement"
    assert rft.method.reinforcement is not None
    assert rft.method.reinforcement.grader.type == "string_check"
    done = wait(client, rft.id, ("succeeded", "failed", "cancelled"))
    assert done.status == "succeeded", done.error
    raw = client.fine_tuning.jobs.with_raw_response.list_events(rft.id, limit=100)
    events = [strict(FineTuningJobEvent, e) for e in raw.http_response.json()["data"]]
    rewards = [e.data["reward"] for e in events if isinstance(e.data, dict) and "reward" in e.data]
    assert rewards and all(0 <= r <= 1 for r in rewards), rewards
    raw = client.fine_tuning.jobs.checkpoints.with_raw_response.list(rft.id)
    checkpoints = [strict(FineTuningJobCheckpoint, c) for c in raw.http_response.json()["data"]]
    assert checkpoints and all(c.fine_tuning_job_id == rft.id for c in checkpoints)
    assert all(c.metrics.model_extra and "train_reward_mean" in c.metrics.model_extra
               for c in checkpoints)


@pytest.mark.parametrize(
    ("rows", "kind"),
    [
        (
            [{"text": f"I want to pay with {w}", "label": w} for w in ("card", "cash") * 6],
            "classification",
        ),
        ([{"anchor": f"a {w}", "positive": f"one {w}"} for w in TOPICS], "embedding"),
    ],
)
def test_the_method_follows_the_data(
    client: openai.OpenAI, model_id: str, tmp_path: Path, rows: list, kind: str
) -> None:
    data = upload(client, write_jsonl(tmp_path / f"{kind}.jsonl", rows))
    # tuneforge's own kinds are outside the client's Method type; it reads them leniently.
    job = client.fine_tuning.jobs.create(model=model_id, training_file=data.id)
    assert job.method is not None and job.method.type == kind  # type: ignore[comparison-overlap]
    client.fine_tuning.jobs.cancel(job.id)
    events = client.fine_tuning.jobs.list_events(job.id, limit=50).data
    assert any(f"so this is a {kind} job" in e.message for e in events)


def test_openai_request_errors_are_sentences(client: openai.OpenAI, server: Server) -> None:
    chats = upload(client, write_jsonl(server.home.parent / "few.jsonl", json_chats()))
    jobs_before = len(client.fine_tuning.jobs.list(limit=100).data)
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(
            model=QWEN,
            training_file=chats.id,
            hyperparameters={"n_epochs": 2},
            method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3}}},
        )
    message = caught.value.body["message"]  # type: ignore[index]
    assert "hyperparameters.n_epochs" in message
    assert "method.supervised.hyperparameters.n_epochs" in message

    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(
            model=QWEN,
            training_file=chats.id,
            integrations=[{"type": "wandb", "wandb": {"project": "p"}}],
        )
    assert "wandb" in caught.value.body["message"]  # type: ignore[index]
    assert len(client.fine_tuning.jobs.list(limit=100).data) == jobs_before  # none queued

    for extra in (
        {"tools": [{"type": "function", "function": {"name": "f"}}]},
        {"logprobs": True},
        {"presence_penalty": 0.5},
    ):
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(
                model=QWEN, messages=[{"role": "user", "content": "hi"}], **extra
            )
        message = caught.value.body["message"]  # type: ignore[index]
        assert "not supported" in message and next(iter(extra)) in message
