"""The OpenAI-compatible endpoints on a real server, called with the official `openai` client:
embeddings of all-MiniLM-L6-v2 and of a model fine-tuned by a job, chat completions and
completions of the tiny Qwen2 model and of a LoRA model trained by a supervised job, each
compared with what the libraries give for the same saved model."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
import torch

from tests.api.test_llm_jobs import FAST
from tests.conftest import Server, stsb_rows
from tests.offline_models import MINILM, REVISION
from tests.tiny_llm import QWEN, install_in_hf_cache, write_jsonl
from tests.training.conftest import TOPICS, json_chats
from tuneforge.serving.loading import serving_device
from tuneforge.training.llm import compute_dtype

pytestmark = pytest.mark.slow

TEXTS = ["A man is playing a guitar.", "Ein Mann spielt Gitarre.", "The cat sleeps."]
ASK = [{"role": "user", "content": "Hashtags for coffee"}]
# The server runs models here (a CUDA GPU if there is one): the references run alike.
DEVICE = serving_device()


@pytest.fixture(scope="module", autouse=True)
def tiny_qwen(offline_hub: Path) -> Iterator[Path]:
    """The tiny Qwen2 model in the offline cache (its snapshot folder), and job processes on
    one thread each (set before the module's server starts: it passes its environment on)."""
    snapshot = install_in_hf_cache(offline_hub, QWEN)
    threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    yield snapshot
    if threads is None:
        os.environ.pop("OMP_NUM_THREADS")
    else:
        os.environ["OMP_NUM_THREADS"] = threads


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="any", max_retries=0)


@pytest.fixture(scope="module", autouse=True)
def jobs(
    tiny_qwen: Path, server: Server, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """An embedding job and a supervised LoRA job, queued at once: they train while the
    tests of base models run."""
    data = tmp_path_factory.mktemp("data")
    pairs = [
        {"sentence1": a, "sentence2": b, "score": float(s) / 5} for a, b, s in stsb_rows()[:48]
    ]
    sts = server.upload(write_jsonl(data / "sts.jsonl", pairs))["id"]
    chats = server.upload(write_jsonl(data / "chats.jsonl", json_chats()))["id"]
    bodies = {
        "embedding": {
            "model": MINILM,
            "training_file": sts,
            "seed": 1,
            "suffix": "served",
            "method": {
                "type": "embedding",
                "embedding": {
                    "loss": "cosent",
                    "hyperparameters": {"n_epochs": 1, "batch_size": 16, "learning_rate": 1e-4},
                },
            },
        },
        "lora": {
            "model": QWEN,
            "training_file": chats,
            "seed": 3,
            "suffix": "served",
            "method": {
                "type": "supervised",
                "supervised": {
                    "lora": {"r": 16, "alpha": 32},
                    "generation_checks": {"samples": 1, "max_new_tokens": 8},
                    "hyperparameters": FAST | {"n_epochs": 30},
                },
            },
        },
    }
    created = {}
    for name, body in bodies.items():
        response = server.client.post("/v1/fine_tuning/jobs", json=body)
        assert response.status_code == 200, response.text
        created[name] = response.json()["id"]
    return created


def finished(server: Server, job_id: str) -> dict[str, Any]:
    job = server.wait_for(job_id, timeout=240)
    assert job["status"] == "succeeded", job["error"]
    return job


@pytest.fixture(scope="module")
def minilm(offline_hub: Path) -> Any:
    """all-MiniLM-L6-v2 loaded with sentence-transformers from the folder the server reads."""
    from sentence_transformers import SentenceTransformer

    snapshots = offline_hub / "hub" / ("models--" + MINILM.replace("/", "--")) / "snapshots"
    return SentenceTransformer(str(snapshots / REVISION), device=DEVICE)


def greedy(model: Any, tokenizer: Any, ids: list[int], max_new_tokens: int) -> tuple[str, int]:
    """transformers' greedy answer to `ids`, ending at eos: (text, tokens written)."""
    with torch.no_grad():
        output = model.generate(
            torch.tensor([ids], device=model.device),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=model.device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    written = output[0, len(ids) :].tolist()
    return tokenizer.decode(written, skip_special_tokens=True), len(written)


def chat_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


@pytest.fixture(scope="module")
def qwen(tiny_qwen: Path) -> tuple[Any, Any]:
    """The tiny Qwen2 model and its tokenizer, loaded with transformers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen, dtype=compute_dtype(DEVICE))
    return model.to(DEVICE), AutoTokenizer.from_pretrained(tiny_qwen)


# -- embeddings --------------------------------------------------------------------------------


def test_embeddings_are_the_saved_models_vectors(
    server: Server, client: openai.OpenAI, minilm: Any
) -> None:
    expected = minilm.encode(TEXTS)
    # The client asks for base64 unless told otherwise, and decodes it.
    response = client.embeddings.create(model=MINILM, input=TEXTS)
    assert response.object == "list" and response.model == MINILM
    assert [d.index for d in response.data] == [0, 1, 2]
    assert np.allclose([d.embedding for d in response.data], expected, atol=1e-5)
    as_floats = client.embeddings.create(model=MINILM, input=TEXTS, encoding_format="float")
    assert np.allclose([d.embedding for d in as_floats.data], expected, atol=1e-5)
    tokens = sum(len(minilm.tokenizer(t)["input_ids"]) for t in TEXTS)
    assert response.usage.prompt_tokens == response.usage.total_tokens == tokens

    # On the wire: base64 of little-endian float32, the very floats of the float format.
    raw = server.client.post(
        "/v1/embeddings",
        json={"model": MINILM, "input": TEXTS[2], "encoding_format": "base64"},
    ).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    single = client.embeddings.create(model=MINILM, input=TEXTS[2], encoding_format="float")
    assert decoded.tolist() == single.data[0].embedding
    assert raw["data"][0]["object"] == "embedding" and len(raw["data"]) == 1


def test_dimensions_cut_the_vectors_and_normalise_them_again(
    client: openai.OpenAI, minilm: Any
) -> None:
    full = minilm.encode(TEXTS)[:, :64]
    expected = full / np.linalg.norm(full, axis=1, keepdims=True)
    response = client.embeddings.create(model=MINILM, input=TEXTS, dimensions=64)
    vectors = np.array([d.embedding for d in response.data])
    assert vectors.shape == (3, 64)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(vectors, expected, atol=1e-5)
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model=MINILM, input=TEXTS, dimensions=385)
    assert refused.value.body["param"] == "dimensions" and "384" in refused.value.body["message"]


def test_a_fine_tuned_embedding_model_is_served_by_id_and_by_registry_reference(
    server: Server, client: openai.OpenAI, jobs: dict[str, str]
) -> None:
    from sentence_transformers import SentenceTransformer

    job = finished(server, jobs["embedding"])
    tuned = SentenceTransformer(str(server.home / "models" / job["id"]), device=DEVICE)
    expected = tuned.encode(TEXTS)
    base = client.embeddings.create(model=MINILM, input=TEXTS, encoding_format="float")
    registered = job["registered_model"]
    for name in (job["fine_tuned_model"], f"{registered['name']}@v{registered['version']}"):
        response = client.embeddings.create(model=name, input=TEXTS)
        vectors = [d.embedding for d in response.data]
        assert response.model == name
        assert np.allclose(vectors, expected, atol=1e-5)
        # Training changed the model: these are not the base model's vectors.
        assert not np.allclose(vectors, [d.embedding for d in base.data], atol=1e-3)


# -- chat completions and completions ----------------------------------------------------------


def test_a_greedy_chat_completion_is_transformers_greedy_answer(
    client: openai.OpenAI, qwen: tuple[Any, Any]
) -> None:
    model, tokenizer = qwen
    ids = chat_ids(tokenizer, ASK)
    text, written = greedy(model, tokenizer, ids, 24)
    response = client.chat.completions.create(
        model=QWEN, messages=ASK, temperature=0, max_tokens=24
    )
    assert response.object == "chat.completion" and response.model == QWEN
    assert response.id.startswith("chatcmpl-")
    choice = response.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == text
    assert choice.finish_reason == ("length" if written == 24 else "stop")
    assert response.usage.prompt_tokens == len(ids)
    assert response.usage.completion_tokens == written
    assert response.usage.total_tokens == len(ids) + written


def test_streamed_chunks_join_to_the_whole_answer(server: Server, client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model=QWEN, messages=ASK, temperature=0, max_tokens=24)
    stream = client.chat.completions.create(
        model=QWEN,
        messages=ASK,
        temperature=0,
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    choices = [c.choices[0] for c in chunks if c.choices]
    assert choices[0].delta.role == "assistant"
    pieces = [c.delta.content for c in choices if c.delta.content]
    assert len(pieces) > 1  # sent as it was written, not at once
    assert "".join(pieces) == whole.choices[0].message.content
    assert [c.finish_reason for c in choices][-1] == whole.choices[0].finish_reason
    assert all(c.finish_reason is None for c in choices[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage

    with server.client.stream(
        "POST",
        "/v1/chat/completions",
        json={"model": QWEN, "messages": ASK, "max_tokens": 3, "stream": True},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        body = "".join(response.iter_text())
    events = [e for e in body.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[-2][6:])["choices"][0]["finish_reason"] in ("stop", "length")


def test_max_tokens_ends_the_answer_with_length(
    client: openai.OpenAI, qwen: tuple[Any, Any]
) -> None:
    model, tokenizer = qwen
    text, written = greedy(model, tokenizer, chat_ids(tokenizer, ASK), 5)
    assert written == 5  # the greedy answer is longer than 5 tokens
    for limit in ({"max_tokens": 5}, {"max_completion_tokens": 5}):
        response = client.chat.completions.create(model=QWEN, messages=ASK, temperature=0, **limit)
        assert response.choices[0].finish_reason == "length"
        assert response.usage.completion_tokens == 5
        assert response.choices[0].message.content == text


def test_stop_strings_cut_the_answer(client: openai.OpenAI, qwen: tuple[Any, Any]) -> None:
    model, tokenizer = qwen
    text, _ = greedy(model, tokenizer, chat_ids(tokenizer, ASK), 24)
    # A stretch of letters well inside the answer, found there first.
    start = next(i for i in range(3, len(text) - 3) if text[i : i + 3].isalpha())
    stop = text[start : start + 3]
    expected = text[: text.index(stop)]
    response = client.chat.completions.create(
        model=QWEN, messages=ASK, temperature=0, max_tokens=24, stop=[stop, "never-written"]
    )
    assert response.choices[0].message.content == expected
    assert response.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(
        model=QWEN, messages=ASK, temperature=0, max_tokens=24, stop=stop, stream=True
    )
    choices = [c.choices[0] for c in streamed]
    assert "".join(c.delta.content or "" for c in choices) == expected
    assert choices[-1].finish_reason == "stop"


def test_n_answers_and_seeded_sampling(client: openai.OpenAI, qwen: tuple[Any, Any]) -> None:
    model, tokenizer = qwen
    text, written = greedy(model, tokenizer, chat_ids(tokenizer, ASK), 8)
    greedy_pair = client.chat.completions.create(
        model=QWEN, messages=ASK, temperature=0, max_tokens=8, n=2
    )
    assert [c.index for c in greedy_pair.choices] == [0, 1]
    assert [c.message.content for c in greedy_pair.choices] == [text, text]
    assert greedy_pair.usage.completion_tokens == 2 * written

    def sampled(seed: int) -> list[str]:
        response = client.chat.completions.create(
            model=QWEN, messages=ASK, temperature=1.0, top_p=0.95, max_tokens=12, n=2, seed=seed
        )
        return [c.message.content or "" for c in response.choices]

    once, again = sampled(7), sampled(7)
    assert once == again  # the same seed, the same answers
    assert once[0] != once[1]  # the n answers are sampled apart
    assert sampled(8) != once


def test_concurrent_requests_get_the_answers_they_would_get_alone(
    client: openai.OpenAI, qwen: tuple[Any, Any]
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    model, tokenizer = qwen
    asks = [[{"role": "user", "content": f"Hashtags for {topic}"}] for topic in TOPICS[:4]]
    expected = [greedy(model, tokenizer, chat_ids(tokenizer, ask), 16)[0] for ask in asks]

    def answer(ask: list[dict[str, str]]) -> str:
        response = client.chat.completions.create(
            model=QWEN, messages=ask, temperature=0, max_tokens=16
        )
        return response.choices[0].message.content or ""

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(answer, asks * 2)) == expected * 2


def test_completions_continue_the_prompt(client: openai.OpenAI, qwen: tuple[Any, Any]) -> None:
    model, tokenizer = qwen
    prompt = "Hashtags for coffee:"
    text, written = greedy(model, tokenizer, tokenizer(prompt)["input_ids"], 12)
    response = client.completions.create(model=QWEN, prompt=prompt, temperature=0, max_tokens=12)
    assert response.object == "text_completion" and response.id.startswith("cmpl-")
    assert response.choices[0].text == text
    assert response.choices[0].finish_reason == ("length" if written == 12 else "stop")
    assert response.usage.completion_tokens == written
    streamed = list(
        client.completions.create(
            model=QWEN, prompt=prompt, temperature=0, max_tokens=12, stream=True
        )
    )
    assert "".join(c.choices[0].text for c in streamed) == text
    assert streamed[-1].choices[0].finish_reason == response.choices[0].finish_reason
    prompts = [prompt, "Guten Morgen"]
    two = client.completions.create(model=QWEN, prompt=prompts, temperature=0, max_tokens=4)
    assert [c.index for c in two.choices] == [0, 1]
    assert [c.text for c in two.choices] == [
        greedy(model, tokenizer, tokenizer(p)["input_ids"], 4)[0] for p in prompts
    ]


def test_a_lora_model_trained_by_a_job_answers_as_its_merged_weights(
    server: Server, client: openai.OpenAI, jobs: dict[str, str]
) -> None:
    from tuneforge.training.llm import load_causal_lm, load_chat_tokenizer

    job = finished(server, jobs["lora"])
    folder = server.home / "models" / job["id"]
    assert (folder / "adapter_config.json").is_file()
    model = load_causal_lm(str(folder), device=DEVICE).to(DEVICE)
    tokenizer = load_chat_tokenizer(str(folder))
    ask = [{"role": "user", "content": "Hashtags for travel"}]
    text, written = greedy(model, tokenizer, chat_ids(tokenizer, ask), 48)
    registered = job["registered_model"]
    for name in (job["fine_tuned_model"], f"{registered['name']}@v{registered['version']}"):
        response = client.chat.completions.create(
            model=name, messages=ask, temperature=0, max_tokens=48
        )
        assert response.choices[0].message.content == text
        assert response.usage.completion_tokens == written
    # It learnt its data: one JSON object, ended by the end-of-turn token.
    assert response.choices[0].finish_reason == "stop"
    assert json.loads(text)["topic"] == "travel"


# -- errors ------------------------------------------------------------------------------------


def test_unknown_models_and_models_of_the_wrong_kind_are_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="ft:nothing:here:abc", messages=ASK)
    assert unknown.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="acme/no-such-model", input="x")

    with pytest.raises(openai.BadRequestError) as embedding:
        client.chat.completions.create(model=MINILM, messages=ASK)
    assert embedding.value.body["param"] == "model"
    assert "is an embedding model; use /v1/embeddings" in embedding.value.body["message"]
    with pytest.raises(openai.BadRequestError) as causal:
        client.embeddings.create(model=QWEN, input="x")
    assert "use /v1/chat/completions" in causal.value.body["message"]


@pytest.mark.parametrize(
    ("change", "status", "param"),
    [
        ({"temperature": 3}, 422, "temperature"),
        ({"n": 0}, 422, "n"),
        ({"messages": []}, 422, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, 422, "messages[0].role"),
        ({"logit_bias": {"1": 5}}, 400, "logit_bias"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, 400, "tools"),
        ({"presence_penalty": 0.5}, 400, "presence_penalty"),
        ({"stream_options": {"include_usage": True}}, 400, "stream_options"),
        ({"max_tokens": 5000}, 400, "max_tokens"),
    ],
)
def test_bad_parameters_are_refused_with_their_name(
    server: Server, change: dict[str, Any], status: int, param: str
) -> None:
    body = {"model": QWEN, "messages": ASK, "max_tokens": 4} | change
    refused = server.client.post("/v1/chat/completions", json=body)
    assert refused.status_code == status, refused.text
    assert refused.json()["error"]["param"] == param


def test_token_ids_as_input_are_refused(server: Server) -> None:
    for path, body in (
        ("/v1/embeddings", {"model": MINILM, "input": [[1, 2, 3]]}),
        ("/v1/completions", {"model": QWEN, "prompt": [1, 2, 3]}),
    ):
        refused = server.client.post(path, json=body)
        assert refused.status_code == 400, refused.text
        assert "token ids" in refused.json()["error"]["message"]


def test_more_answers_than_one_request_may_ask_for_are_refused(server: Server) -> None:
    body = {"model": QWEN, "prompt": ["a", "b", "c"], "n": 6, "max_tokens": 2}
    refused = server.client.post("/v1/completions", json=body)
    assert refused.status_code == 400, refused.text
    assert "At most 16 answers" in refused.json()["error"]["message"]
