"""Exports end to end: a real server fine-tunes tiny Qwen2 and Llama models with LoRA, exports
them as GGUF (f16, bf16, q8_0, q4_k_m) with a Modelfile, as merged safetensors, and an
embedding model as a sentence-transformers folder; the files are downloaded and loaded by
llama.cpp, transformers and sentence-transformers."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Server
from tests.tiny_llm import LLAMA, QWEN, install_in_hf_cache, one_thread_jobs, write_jsonl
from tests.training.conftest import json_chats
from tuneforge.export.modelfile import render_template

pytestmark = pytest.mark.slow

SYSTEM = "You answer with one JSON object."


@pytest.fixture(scope="module", autouse=True)
def tiny_models(offline_hub: Path) -> Iterator[None]:
    for repo in (QWEN, LLAMA):
        install_in_hf_cache(offline_hub, repo)
    with one_thread_jobs():
        yield


@pytest.fixture(scope="module")
def chat_file(server: Server, tmp_path_factory: pytest.TempPathFactory) -> str:
    rows = [
        {"messages": [{"role": "system", "content": SYSTEM}, *r["messages"]]} for r in json_chats()
    ]
    uploaded = server.upload(write_jsonl(tmp_path_factory.mktemp("data") / "chats.jsonl", rows))
    assert uploaded["status"] == "processed", uploaded
    return str(uploaded["id"])


def _train(server: Server, base: str, file_id: str) -> str:
    job = server.client.post(
        "/v1/fine_tuning/jobs",
        json={
            "model": base,
            "training_file": file_id,
            "seed": 5,
            "suffix": "json",
            "method": {
                "type": "supervised",
                "supervised": {
                    "lora": {"r": 16, "alpha": 32},
                    "generation_checks": {"samples": 1, "max_new_tokens": 8},
                    "hyperparameters": {
                        "n_epochs": 30,
                        "batch_size": 8,
                        "learning_rate": 1e-2,
                        "lr_scheduler": "constant",
                        "warmup_ratio": 0,
                        "gradient_checkpointing": False,
                        "eval_steps": 1000,
                    },
                },
            },
        },
    )
    assert job.status_code == 200, job.text
    done = server.wait_for(job.json()["id"], timeout=600)
    assert done["status"] == "succeeded", done["error"]
    return str(done["fine_tuned_model"])


@pytest.fixture(scope="module")
def qwen_model(server: Server, chat_file: str) -> str:
    return _train(server, QWEN, chat_file)


@pytest.fixture(scope="module")
def llama_model(server: Server, chat_file: str) -> str:
    return _train(server, LLAMA, chat_file)


def export(server: Server, **body: object) -> dict:
    created = server.client.post("/v1/exports", json=body)
    assert created.status_code == 200, created.text
    assert created.json()["status"] == "queued"
    return wait_for_export(server, created.json()["id"])


def wait_for_export(server: Server, export_id: str, timeout: float = 300) -> dict:
    return server.wait_for(export_id, timeout=timeout, resource="/v1/exports")


def download(server: Server, export_id: str, name: str | None = None) -> tuple[bytes, dict]:
    params = {"file": name} if name else {}
    response = server.client.get(f"/v1/exports/{export_id}/content", params=params)
    assert response.status_code == 200, response.text
    return response.content, dict(response.headers)


def _chat_tokenizer(server: Server, model: str):
    from tuneforge.training.llm import load_chat_tokenizer

    job_id = server.client.get(f"/v1/models/{model}").json()["job_id"]
    return load_chat_tokenizer(str(server.home / "models" / job_id))


def test_a_lora_model_exports_to_f16_gguf_that_llama_cpp_runs_like_transformers(
    server: Server, qwen_model: str, tmp_path: Path
) -> None:
    from llama_cpp import Llama

    result = export(server, model=qwen_model, format="gguf", quantization="f16")
    assert result["status"] == "succeeded", result["error"]
    gguf_name = result["primary_file"]
    assert gguf_name.endswith("-f16.gguf")
    assert {f["name"] for f in result["files"]} == {gguf_name, "Modelfile"}

    verification = result["verification"]
    assert verification["identical"] and verification["token_agreement"] == 1.0
    assert verification["tokenization_identical"] and verification["template_identical"]
    # The prompts are the job's own conversations, and the trained behaviour shows in both.
    for sample in verification["samples"]:
        assert SYSTEM in sample["prompt"] and "Hashtags for" in sample["prompt"]
        assert sample["gguf"] == sample["reference"]
        assert sample["reference"].startswith('{"topic"'), sample

    content, headers = download(server, result["id"])
    entry = next(f for f in result["files"] if f["name"] == gguf_name)
    assert hashlib.sha256(content).hexdigest() == entry["sha256"] == headers["x-sha256"]
    path = tmp_path / gguf_name
    path.write_bytes(content)

    # The downloaded file, in llama.cpp, continues a validation prompt with what the export
    # reported (and so with what transformers generates).
    sample = verification["samples"][0]
    llm = Llama(model_path=str(path), n_ctx=512, n_threads=1, verbose=False)
    try:
        tokens = llm.tokenize(sample["prompt"].encode(), add_bos=False, special=True)
        out = llm(
            sample["prompt"],
            max_tokens=verification["max_new_tokens"],
            temperature=0.0,
            top_k=1,
            repeat_penalty=1.0,
        )
        assert len(tokens) > 10
        assert sample["gguf"].startswith(out["choices"][0]["text"])
    finally:
        llm.close()

    # The Modelfile: the file, the job's system prompt, the end-of-turn stop, a template that
    # renders the conversation as the model's chat template does.
    text, _ = download(server, result["id"], "Modelfile")
    lines = text.decode().splitlines()
    assert lines[0] == f"FROM ./{gguf_name}"
    assert f'SYSTEM """{SYSTEM}"""' in lines
    assert 'PARAMETER stop "<|im_end|>"' in lines
    template = text.decode().split('TEMPLATE """')[1].split('"""')[0]
    conversation = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Hashtags for sailing"},
    ]
    tokenizer = _chat_tokenizer(server, qwen_model)
    assert render_template(template, conversation) == tokenizer.apply_chat_template(
        conversation, tokenize=False, add_generation_prompt=True
    )


@pytest.mark.parametrize("quantization", ["q8_0", "q4_k_m"])
def test_quantized_gguf_exports_report_their_agreement(
    server: Server, llama_model: str, quantization: str
) -> None:
    result = export(server, model=llama_model, format="gguf", quantization=quantization)
    assert result["status"] == "succeeded", result["error"]
    details = result["details"]
    assert details["file_type"] == quantization and details["converted_from"] == "f16"
    assert set(details["tensor_types"]) - {"f32", "f16"}, details["tensor_types"]
    agreement = result["verification"]["token_agreement"]
    minimum = result["verification"]["min_agreement"]
    assert 0.0 < minimum <= agreement <= 1.0
    assert not any(s["repetition_loop"] for s in result["verification"]["samples"])
    events = server.client.get(f"/v1/fine_tuning/jobs/{result['id']}/events").json()["data"]
    assert any(
        e["message"].startswith("Verified:") and f"{agreement:.1%}" in e["message"] for e in events
    )


def test_a_quantized_file_that_loops_fails_the_export(server: Server) -> None:
    """The untrained tiny Llama in 4 bits loops where the model does not: the export fails
    with the reason, and no file is kept."""
    result = export(server, model=LLAMA, format="gguf", quantization="q4_k_m")
    assert result["status"] == "failed", result
    assert result["error"]["code"] == "export_verification_failed"
    assert (
        "repetition loop" in result["error"]["message"]
        or "below the" in (result["error"]["message"])
    )
    assert not result.get("files")


def test_bf16_gguf_is_identical_too(server: Server, llama_model: str) -> None:
    result = export(server, model=llama_model, format="gguf", quantization="bf16")
    assert result["status"] == "succeeded", result["error"]
    assert result["verification"]["identical"]
    assert result["details"]["tensor_types"].get("bf16", 0) > 0


def test_a_merged_export_loads_in_transformers_with_the_models_logits(
    server: Server, qwen_model: str, tmp_path: Path
) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from tuneforge.training.llm import load_causal_lm

    result = export(server, model=qwen_model, format="merged")
    assert result["status"] == "succeeded", result["error"]
    names = {f["name"].split("/", 1)[1] for f in result["files"]}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    archive, _ = download(server, result["id"])  # a folder comes as a tar stream
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tmp_path, filter="data")
    folder = tmp_path / result["primary_file"]
    for entry in result["files"]:
        assert (
            hashlib.sha256((tmp_path / entry["name"]).read_bytes()).hexdigest() == entry["sha256"]
        )
    merged = AutoModelForCausalLM.from_pretrained(folder)
    assert not (folder / "adapter_config.json").exists()
    job_id = server.client.get(f"/v1/models/{qwen_model}").json()["job_id"]
    original = load_causal_lm(
        str(server.home / "models" / job_id), device="cpu", dtype=torch.float32
    )
    ids = torch.tensor([[5, 17, 42, 99, 120]])
    with torch.inference_mode():
        assert torch.allclose(merged(ids).logits, original(ids).logits, atol=1e-4)


def test_an_embedding_model_exports_as_a_sentence_transformers_folder(
    server: Server, model_id: str, tmp_path: Path
) -> None:
    from sentence_transformers import SentenceTransformer

    from tuneforge.registry.models import cached_snapshot

    result = export(server, model=model_id, format="sentence-transformers")
    assert result["status"] == "succeeded", result["error"]
    archive, _ = download(server, result["id"])
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tmp_path, filter="data")
    exported = SentenceTransformer(str(tmp_path / result["primary_file"]), device="cpu")
    original = SentenceTransformer(str(cached_snapshot(model_id)), device="cpu")
    texts = ["A cat sits on the mat.", "Die Katze sitzt auf der Matte."]
    assert (exported.encode(texts) == original.encode(texts)).all()


def test_bad_exports_are_refused_and_nothing_is_queued(
    server: Server, model_id: str, qwen_model: str
) -> None:
    before = len(server.client.get("/v1/exports", params={"limit": 100}).json()["data"])
    cases = [
        ({"model": model_id, "format": "gguf"}, 400, "format"),
        ({"model": qwen_model, "format": "sentence-transformers"}, 400, "format"),
        ({"model": qwen_model, "format": "gguf", "quantization": "q9_z"}, 422, None),
        ({"model": qwen_model, "format": "merged", "quantization": "q8_0"}, 422, None),
        ({"model": "ft:nothing:here:123", "format": "gguf"}, 404, "model"),
    ]
    for body, status, param in cases:
        response = server.client.post("/v1/exports", json=body)
        assert response.status_code == status, (body, response.text)
        if param:
            assert response.json()["error"]["param"] == param
    after = len(server.client.get("/v1/exports", params={"limit": 100}).json()["data"])
    assert after == before
    missing = server.client.get("/v1/exports/export-nope/content")
    assert missing.status_code == 404
    # Exports are not fine-tuning jobs.
    jobs = server.client.get("/v1/fine_tuning/jobs", params={"limit": 100}).json()["data"]
    assert not any(j["id"].startswith("export-") for j in jobs)


def test_the_cli_exports_and_downloads_checked_files(
    server: Server, qwen_model: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "tuneforge.cli",
            "export",
            qwen_model,
            "--format",
            "gguf",
            "--quantization",
            "q8_0",
            "--output",
            str(out),
            "--url",
            server.url,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Verified in llama.cpp" in run.stdout
    files = sorted(p.name for p in out.iterdir())
    assert files[0] == "Modelfile" and files[1].endswith("-q8_0.gguf") and len(files) == 2
    latest = server.client.get("/v1/exports", params={"limit": 1}).json()["data"][0]
    for entry in latest["files"]:
        assert hashlib.sha256((out / entry["name"]).read_bytes()).hexdigest() == entry["sha256"]
    queued = subprocess.run(
        [
            sys.executable,
            "-m",
            "tuneforge.cli",
            "export",
            qwen_model,
            "--format",
            "merged",
            "--no-wait",
            "--url",
            server.url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert queued.returncode == 0 and "queued" in queued.stdout, queued.stdout + queued.stderr
    assert wait_for_export(server, queued.stdout.split()[1])["status"] == "succeeded"
