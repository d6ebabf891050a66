"""A job's data as the job reads it: the base model of an LLM job is resolved once, with the
caller's store, and its tokenizer reads every file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.tiny_llm import build_tiny_llm
from tests.training.conftest import json_chats
from tuneforge.config import Settings
from tuneforge.datasets.ingest import ingest_file
from tuneforge.db.store import Store
from tuneforge.errors import InvalidDatasetError, ModelNotFoundError
from tuneforge.jobs import data
from tuneforge.jobs.service import create_job
from tuneforge.training.spec import JobCreate


@pytest.fixture
def local(tmp_path: Path) -> Iterator[tuple[Store, Settings]]:
    build_tiny_llm(tmp_path / "models" / "tiny-qwen2", "qwen2")
    settings = Settings(home=tmp_path / "home", model_dirs=[tmp_path / "models"])
    settings.ensure_dirs()
    store = Store(settings.db_url)
    store.create_schema()
    yield store, settings
    store.dispose()


def upload(store: Store, settings: Settings, name: str, rows: list[dict[str, Any]]) -> str:
    path = settings.home / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with path.open("rb") as f:
        return ingest_file(store, settings, name, f)["id"]


def supervised_job(**fields: Any) -> JobCreate:
    return JobCreate.model_validate(
        {"model": "tiny-qwen2", "method": {"type": "supervised"}, "device": "cpu", **fields}
    )


def test_an_llm_job_resolves_its_model_once(
    local: tuple[Store, Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, settings = local
    train = upload(store, settings, "train.jsonl", json_chats())
    valid = upload(store, settings, "valid.jsonl", json_chats()[:2])
    resolved: list[Store] = []
    resolve = data.resolve_model
    monkeypatch.setattr(
        data, "resolve_model", lambda *args: resolved.append(args[0]) or resolve(*args)
    )
    job = create_job(store, settings, supervised_job(training_file=train, validation_file=valid))
    assert job["status"] == "queued"
    assert resolved == [store]  # once for both files and the job, through the caller's store
    assert store.get_model("tiny-qwen2")["path"] == str(settings.model_dirs[0] / "tiny-qwen2")


def test_the_tokenizer_finds_too_long_examples(local: tuple[Store, Settings]) -> None:
    store, settings = local
    train = upload(store, settings, "train.jsonl", json_chats())
    spec = supervised_job(
        training_file=train, method={"type": "supervised", "supervised": {
            "hyperparameters": {"max_seq_length": 16}}},
    )
    with pytest.raises(InvalidDatasetError) as caught:
        data.load_job_data(data.JobInputs(store, settings, spec), seed=1)
    assert caught.value.param == "training_file"
    assert "too_long" in caught.value.details["problems_by_code"]


def test_files_are_checked_before_the_model(local: tuple[Store, Settings]) -> None:
    """An embedding job reads no tokenizer: its files are checked first, then its model."""
    store, settings = local
    pairs = [{"anchor": f"q{i}", "positive": f"d{i}"} for i in range(4)]
    train = upload(store, settings, "pairs.jsonl", pairs)
    spec = JobCreate.model_validate({"model": "org/absent", "training_file": train})
    inputs = data.JobInputs(store, settings, spec)
    assert data.load_job_data(inputs, seed=1).layout == "pair"
    with pytest.raises(ModelNotFoundError):
        _ = inputs.model
