"""A deleted model leaves the serving cache at once: its memory is freed with the DELETE, and
the next request for it is a 404, never an answer from the cache."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.tiny_llm import build_tiny_llm
from tuneforge.api.app import create_app
from tuneforge.config import Settings

ASK = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(home=tmp_path / "data")
    with TestClient(create_app(settings, run_worker=False), base_url="http://127.0.0.1") as c:
        yield c


def add_fine_tuned(client: TestClient, model_id: str, folder_name: str) -> Path:
    """A tiny model saved where a job saves its model, and its row as a job writes it."""
    settings: Settings = client.app.state.settings  # type: ignore[attr-defined]
    folder = build_tiny_llm(settings.models_dir / folder_name, "qwen2")
    client.app.state.store.upsert_model(  # type: ignore[attr-defined]
        {
            "id": model_id,
            "kind": "fine-tuned",
            "owned_by": "user",
            "created_at": time.time(),
            "base_model": "tuneforge-test/tiny-qwen2",
            "job_id": None,
            "path": str(folder.relative_to(settings.home)),
        }
    )
    return folder.resolve()


def test_deleting_a_served_model_unloads_it_and_later_requests_get_404(
    client: TestClient,
) -> None:
    cache = client.app.state.model_cache  # type: ignore[attr-defined]
    gone = add_fine_tuned(client, "ft:tiny:gone", "gone")
    kept = add_fine_tuned(client, "ft:tiny:kept", "kept")
    for model in ("ft:tiny:gone", "ft:tiny:kept"):
        r = client.post("/v1/chat/completions", json={"model": model, **ASK})
        assert r.status_code == 200, r.text
    assert set(cache.loaded()) == {str(gone), str(kept)}

    r = client.delete("/v1/models/ft:tiny:gone")
    assert r.status_code == 200 and r.json()["deleted"] is True
    # Gone from memory with the answer, the other model still loaded.
    assert cache.loaded() == [str(kept)]
    r = client.post("/v1/chat/completions", json={"model": "ft:tiny:gone", **ASK})
    assert r.status_code == 404
    assert r.json()["error"]["param"] == "model"
    assert client.post("/v1/chat/completions", json={"model": "ft:tiny:kept", **ASK}).is_success
