"""Models that would run code when loaded are refused, by the one check every loader goes
through (registry.models.resolve_model / local_model)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tuneforge.config import Settings
from tuneforge.db.store import Store
from tuneforge.errors import RemoteCodeRefusedError, UnsafeWeightsError
from tuneforge.registry.models import local_model, resolve_model

PACKAGE = Path(__file__).resolve().parents[2] / "tuneforge"


def minilm_copy(offline_hub: Path, target: Path) -> Path:
    snapshot = next((offline_hub / "hub").glob("models--sentence-transformers--*/snapshots/*"))
    shutil.copytree(snapshot, target, symlinks=False)
    return target


def spoil(folder: Path, how: str) -> None:
    if how == "auto_map":
        config = json.loads((folder / "config.json").read_text())
        config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
        (folder / "config.json").write_text(json.dumps(config))
    elif how == "tokenizer_auto_map":
        config = json.loads((folder / "tokenizer_config.json").read_text())
        config["auto_map"] = {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
    elif how == "code_file":
        (folder / "modeling_evil.py").write_text("import os\nos.system('touch /tmp/pwned')\n")
    elif how == "foreign_module":
        modules = json.loads((folder / "modules.json").read_text())
        modules.append({"idx": 9, "name": "9", "path": "", "type": "evil_package.Module"})
        (folder / "modules.json").write_text(json.dumps(modules))
    elif how == "pickle_only":
        (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    elif how == "pickle_module":
        (folder / "1_Pooling" / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")


REFUSALS = {
    "auto_map": RemoteCodeRefusedError,
    "tokenizer_auto_map": RemoteCodeRefusedError,
    "code_file": RemoteCodeRefusedError,
    "foreign_module": RemoteCodeRefusedError,
    "pickle_only": UnsafeWeightsError,
    "pickle_module": UnsafeWeightsError,
}


@pytest.fixture
def model_dirs(tmp_path: Path, offline_hub: Path) -> Path:
    folder = tmp_path / "models"
    minilm_copy(offline_hub, folder / "minilm")
    return folder


@pytest.mark.parametrize("how", sorted(REFUSALS))
def test_models_that_run_code_are_refused(tmp_path: Path, model_dirs: Path, how: str) -> None:
    settings = Settings(home=tmp_path / "data", model_dirs=[model_dirs])
    settings.ensure_dirs()
    store = Store(settings.db_url)
    store.create_schema()
    try:
        assert local_model(store, settings, "minilm") == model_dirs / "minilm"
        spoil(model_dirs / "minilm", how)
        with pytest.raises(REFUSALS[how]) as refused:
            resolve_model(store, settings, "minilm")
        assert refused.value.param == "model"
        assert "minilm" in refused.value.message
        with pytest.raises(REFUSALS[how]):
            local_model(store, settings, "minilm")
    finally:
        store.dispose()


def test_weights_beside_safetensors_are_never_read(tmp_path: Path, model_dirs: Path) -> None:
    settings = Settings(home=tmp_path / "data", model_dirs=[model_dirs])
    settings.ensure_dirs()
    store = Store(settings.db_url)
    store.create_schema()
    try:
        (model_dirs / "minilm" / "training_args.bin").write_bytes(b"\x80\x04K\x01.")
        (model_dirs / "minilm" / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")
        assert resolve_model(store, settings, "minilm").is_local
    finally:
        store.dispose()


def test_api_refuses_a_remote_code_base_model_with_a_clear_error(
    make_client, model_dirs: Path
) -> None:
    client: TestClient = make_client(model_dirs=[model_dirs])
    spoil(model_dirs / "minilm", "auto_map")
    rows = b"".join(b'{"anchor": "q %d", "positive": "a %d"}\n' % (i, i) for i in range(4))
    file_id = client.post("/v1/files", files={"file": ("p.jsonl", rows)}).json()["id"]
    body = {"model": "minilm", "training_file": file_id,
            "method": {"type": "embedding", "embedding": {"loss": "mnrl"}}}
    r = client.post("/v1/fine_tuning/jobs", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "remote_code_refused"
    assert r.json()["error"]["param"] == "model"
    assert client.get("/v1/fine_tuning/jobs").json()["data"] == []
    for path, payload in (
        ("/v1/embeddings", {"model": "minilm", "input": "hello"}),
        ("/v1/exports", {"model": "minilm", "format": "sentence-transformers"}),
    ):
        r = client.post(path, json=payload)
        assert (r.status_code, r.json()["error"]["code"]) == (400, "remote_code_refused"), path


def test_package_never_trusts_remote_code_or_unpickles() -> None:
    """Every `torch.load` passes weights_only=True; `trust_remote_code` is never true."""
    for source in PACKAGE.rglob("*.py"):
        text = source.read_text()
        assert not re.search(r"trust_remote_code\s*=\s*(?!False)", text), source
        for call in re.finditer(r"torch\.load\(([^)]*)\)", text):
            assert "weights_only=True" in call.group(1), source
        assert "import pickle" not in text and "pickle.load" not in text, source
