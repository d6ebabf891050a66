"""Importing base models (tuneforge.imports): the real SmolLM2 GGUF through the CLI on a real
server, answering as the instruct model it is; a tiny Hugging Face folder by path; and every
bad input refused at once with nothing written."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.dashboard.test_dashboard import browser, page  # noqa: F401 (fixtures used)
from tests.offline_models import smollm2_gguf
from tests.server import Server
from tests.tiny_llm import build_tiny_llm
from tuneforge.errors import UnsupportedArchitectureError, UnsupportedFileError
from tuneforge.imports.gguf_header import read_header, supported_architectures

pytestmark = pytest.mark.slow
CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]


def write_gguf(path: Path, architecture: str, dtype: type = np.float16) -> Path:
    """A small GGUF file of `architecture` with one tensor of `dtype` (header facts only)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name("probe")
    file_type = {np.float16: gguf.LlamaFileType.MOSTLY_F16, np.float32: gguf.LlamaFileType.ALL_F32}
    writer.add_file_type(file_type[dtype])
    writer.add_tensor("token_embd.weight", np.ones((8, 16), dtype=dtype))
    writer.add_tensor("output_norm.weight", np.ones(16, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def wait_for_import(server: Server, import_id: str, timeout: float = 300) -> dict:
    return server.wait_for(import_id, timeout=timeout, resource="/v1/model_imports")


def written(server: Server) -> tuple[list[str], list[str], int]:
    """What an import leaves: model folders (staging ones included), models, import jobs."""
    folder = server.home / "models" / "imported"
    folders = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    models = sorted(m["id"] for m in server.client.get("/v1/models").json()["data"])
    imports = len(server.client.get("/v1/model_imports", params={"limit": 100}).json()["data"])
    return folders, models, imports


# -- the header, in-process ------------------------------------------------------------------


def test_the_header_of_the_real_gguf_names_its_quantization_and_what_is_written() -> None:
    header = read_header(smollm2_gguf())
    assert header.architecture == "llama" and header.file_type == "Q4_1"
    assert header.tensor_types == {"F32": 61, "Q4_1": 210, "Q8_0": 1}
    assert header.quantized and header.dtype == "bfloat16"


def test_float_files_keep_their_precision(tmp_path: Path) -> None:
    assert read_header(write_gguf(tmp_path / "a.gguf", "llama", np.float16)).dtype == "float16"
    f32 = read_header(write_gguf(tmp_path / "b.gguf", "qwen2", np.float32))
    assert (f32.dtype, f32.file_type, f32.quantized) == ("float32", "F32", False)


def test_architectures_transformers_cannot_read_are_refused_by_name(tmp_path: Path) -> None:
    readable = supported_architectures()
    assert {"llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3"} <= readable
    assert "t5" not in readable  # readable from GGUF, but no causal LM
    for architecture in ("rwkv6", "t5"):
        with pytest.raises(UnsupportedArchitectureError, match=repr(architecture)):
            read_header(write_gguf(tmp_path / f"{architecture}.gguf", architecture))


def test_truncated_and_foreign_files_are_refused(tmp_path: Path) -> None:
    data = smollm2_gguf().read_bytes()
    for size in (1000, len(data) // 2, len(data) - 1):
        cut = tmp_path / f"cut-{size}.gguf"
        cut.write_bytes(data[:size])
        with pytest.raises(UnsupportedFileError, match="truncated"):
            read_header(cut)
    text = tmp_path / "notes.gguf"
    text.write_text("GGU? not a model\n")
    with pytest.raises(UnsupportedFileError, match="not a GGUF file"):
        read_header(text)


# -- through a real server -------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2_import(server: Server) -> tuple[dict, subprocess.CompletedProcess[str]]:
    """SmolLM2's GGUF imported once for the module, as a user would: `tuneforge models import`
    uploads it and waits (about 15 s on a quiet 2-core machine)."""
    env = dict(os.environ, TUNEFORGE_URL=server.url, COLUMNS="200")
    done = subprocess.run(
        [sys.executable, "-m", "tuneforge.cli", "models", "import", str(smollm2_gguf()),
         "--name", "smollm2"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    model = server.client.get("/v1/models/smollm2").json()
    return model, done


def test_the_imported_gguf_answers_as_the_instruct_model_and_says_where_it_came_from(
    server: Server, smollm2_import: tuple[dict, subprocess.CompletedProcess[str]]
) -> None:
    model, done = smollm2_import
    assert done.stdout.strip().splitlines()[-1] == "smollm2"
    assert "Q4_1" in done.stdout  # the job's events, as they came
    gguf = smollm2_gguf()
    listed = {m["id"]: m for m in server.client.get("/v1/models").json()["data"]}
    assert listed["smollm2"] == model
    assert model["object"] == "model" and model["owned_by"] == "user"
    assert model["kind"] == "base" and isinstance(model["created"], int)
    provenance = model["provenance"]
    assert provenance["sha256"] == hashlib.sha256(gguf.read_bytes()).hexdigest()
    assert provenance["file_name"] == gguf.name and provenance["bytes"] == gguf.stat().st_size
    assert provenance["quantization"] == "Q4_1" and provenance["dtype"] == "bfloat16"
    assert provenance["architecture"] == "llama" and provenance["parameters"] == 134_515_008
    folder = server.home / "models" / "imported" / "smollm2"
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
            "chat_template.jinja"} <= {p.name for p in folder.iterdir()}
    answer = server.client.post("/v1/chat/completions", json={
        "model": "smollm2", "messages": CAPITAL, "max_tokens": 16, "temperature": 0})
    assert answer.status_code == 200, answer.text
    assert "Paris" in answer.json()["choices"][0]["message"]["content"]
    shown = subprocess.run(
        [sys.executable, "-m", "tuneforge.cli", "models", "list"],
        env=dict(os.environ, TUNEFORGE_URL=server.url, COLUMNS="200"),
        capture_output=True, text=True, timeout=60,
    )
    assert "smollm2" in shown.stdout and "SmolLM2-135M-Instruct.Q4_1.gguf (Q4_1 -> bfloat16)" in (
        shown.stdout)


def test_the_dashboard_shows_where_the_imported_model_came_from(
    smollm2_import: tuple[dict, subprocess.CompletedProcess[str]], request: pytest.FixtureRequest
) -> None:
    from playwright.sync_api import expect

    sha256 = smollm2_import[0]["provenance"]["sha256"]
    tab = request.getfixturevalue("page")  # the dashboard tests' tab, on this module's server
    tab.goto("/#/models")
    row = tab.get_by_role("region", name="All models").locator("tr").filter(has_text="smollm2")
    expect(row).to_contain_text("SmolLM2-135M-Instruct.Q4_1.gguf (Q4_1 → bfloat16, 134,515,008")
    expect(row).to_contain_text(f"sha256 {sha256[:16]}")


def test_a_folder_inside_the_import_roots_is_copied_in_its_dtype_and_serves(
    server: Server, smollm2_import: tuple[dict, subprocess.CompletedProcess[str]]
) -> None:
    source = build_tiny_llm(server.home / "imports" / "tiny-qwen2")
    created = server.client.post("/v1/model_imports", json={"path": "tiny-qwen2"})
    assert created.status_code == 200, created.text
    assert created.json()["name"] == "tiny-qwen2" and created.json()["source"] == "folder"
    job = wait_for_import(server, created.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    provenance = job["model"]["provenance"]
    assert provenance["format"] == "huggingface" and provenance["dtype"] == "float32"
    assert provenance["sha256"] is None and provenance["quantization"] is None
    [weights] = provenance["files"]
    assert weights["sha256"] == hashlib.sha256(
        (source / "model.safetensors").read_bytes()).hexdigest()
    answer = server.client.post("/v1/chat/completions", json={
        "model": "tiny-qwen2", "messages": CAPITAL, "max_tokens": 4})
    assert answer.status_code == 200, answer.text
    # It resolves by its name in a job process too: merged into a plain folder by an export.
    export = server.client.post("/v1/exports", json={"model": "tiny-qwen2", "format": "merged"})
    assert export.status_code == 200, export.text
    done = server.wait_for(export.json()["id"], timeout=120, resource="/v1/exports")
    assert done["status"] == "succeeded", done["error"]


def test_bad_sources_and_names_are_refused_at_once_and_nothing_is_written(
    server: Server, smollm2_import: tuple[dict, subprocess.CompletedProcess[str]],
    tmp_path: Path,
) -> None:
    before = written(server)
    roots = server.home / "imports"
    roots.mkdir(exist_ok=True)
    data = smollm2_gguf().read_bytes()
    (roots / "cut.gguf").write_bytes(data[: len(data) // 3])
    (roots / "notes.txt").write_text("not a model\n")
    write_gguf(roots / "rwkv.gguf", "rwkv6")
    write_gguf(roots / "probe.gguf", "llama")  # a sound header: only its name is wrong below
    outside = write_gguf(tmp_path / "outside.gguf", "llama")

    def refused(body: dict, status: int, code: str, words: str) -> None:
        r = server.client.post("/v1/model_imports", json=body)
        assert r.status_code == status, r.text
        error = r.json()["error"]
        assert error["code"] == code and words in error["message"], error

    refused({"path": "cut.gguf"}, 400, "unsupported_file", "cut.gguf is truncated")
    refused({"path": "notes.txt"}, 400, "unsupported_file", "not a GGUF file")
    refused({"path": "rwkv.gguf"}, 400, "unsupported_architecture", "'rwkv6'")
    refused({"path": str(outside)}, 400, "invalid_request", "outside the import roots")
    refused({"path": "../models/imported/smollm2"}, 400, "invalid_request",
            "outside the import roots")
    refused({"path": "/etc/passwd"}, 400, "invalid_request", "outside the import roots")
    refused({"path": "probe.gguf", "name": "smollm2"}, 409, "model_exists", "'smollm2' exists")
    refused({"path": "probe.gguf", "file": "file-abc"}, 422, "validation_error", "exactly one")
    refused({"path": "probe.gguf", "name": "../x"}, 422, "validation_error", "name")
    # Uploads: a model upload must be GGUF; a truncated one is refused when imported.
    notes = server.client.post("/v1/model_imports/files",
                               files={"file": ("notes.gguf", b"hello, not a model")})
    assert notes.status_code == 400 and "GGUF" in notes.json()["error"]["message"]
    cut = server.client.post("/v1/model_imports/files",
                             files={"file": ("cut.gguf", data[: len(data) // 3])})
    assert cut.status_code == 200 and cut.json()["purpose"] == "model"
    refused({"file": cut.json()["id"]}, 400, "unsupported_file", "cut.gguf is truncated")
    training = server.client.post("/v1/files", files={"file": (
        "rows.jsonl", b'{"anchor": "a", "positive": "b"}\n' * 4)}).json()
    refused({"file": training["id"]}, 400, "invalid_request", "purpose 'fine-tune'")
    # A model file is no dataset.
    assert server.client.get(f"/v1/datasets/{cut.json()['id']}").status_code == 404
    assert written(server) == before
    assert not list((server.home / "models").glob(".staging-*"))
