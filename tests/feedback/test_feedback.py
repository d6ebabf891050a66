"""Feedback: recording, filtering, and export into SFT and DPO datasets that pass validation.

A real SQLite store and data folder; the exported files are read back with the same readers
that jobs use."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from tuneforge.config import Settings
from tuneforge.datasets.chat import read_chat_file, read_preference_file
from tuneforge.datasets.ingest import file_path
from tuneforge.db.store import Store
from tuneforge.errors import InvalidRequestError, ModelNotFoundError
from tuneforge.feedback.export import FeedbackExport, export_feedback
from tuneforge.feedback.service import FeedbackCreate, add_feedback

MODEL = "ft:tiny:demo:abc123"


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Store, Settings]]:
    settings = Settings(home=tmp_path / "home")
    settings.ensure_dirs()
    store = Store(settings.db_url)
    store.create_schema()
    store.upsert_model(
        {
            "id": MODEL,
            "kind": "fine-tuned",
            "owned_by": "user",
            "created_at": time.time(),
            "base_model": "org/base",
            "job_id": None,
            "path": "models/x",
        }
    )
    yield store, settings
    store.dispose()


def rate(
    store: Store,
    prompt: str,
    output: str,
    rating: str,
    corrected: str | None = None,
    model: str = MODEL,
) -> str:
    row = add_feedback(
        store,
        FeedbackCreate(
            model=model, prompt=prompt, output=output, rating=rating, corrected_output=corrected
        ),
    )
    return str(row["id"])


def test_feedback_is_checked_and_filtered(setup: tuple[Store, Settings]) -> None:
    store, _ = setup
    up = rate(store, "Hashtags for coffee", "#coffee #morning", "up")
    down = rate(store, "Hashtags for coffee", "coffee is nice", "down")
    edited = rate(store, "Post about tea", "Tea.", "edited", "Tea time! #tea")
    listed, _ = store.list_feedback(model=MODEL)
    assert [r["id"] for r in listed] == [edited, down, up]
    assert [r["id"] for r in store.list_feedback(rating="down")[0]] == [down]
    assert store.list_feedback(since=time.time() + 10)[0] == []
    page, more = store.list_feedback(limit=2)
    assert more and [r["id"] for r in store.list_feedback(after=page[-1]["id"])[0]] == [up]
    with pytest.raises(ModelNotFoundError):
        rate(store, "x", "y", "up", model="ft:nobody:knows:this")
    for bad in (
        dict(prompt="p", output="o", rating="edited"),  # no corrected output
        dict(prompt="p", output="o", rating="up", corrected_output="c"),
        dict(prompt="p", output="o", rating="edited", corrected_output=" o "),  # the same
        dict(output="o", rating="up"),  # no prompt
        dict(messages=[{"role": "assistant", "content": "hi"}], output="o", rating="up"),
        dict(prompt="p", output="o", rating="meh"),
    ):
        with pytest.raises(ValidationError):
            FeedbackCreate(model=MODEL, **bad)
    assert len(store.list_feedback()[0]) == 3


def test_export_gives_valid_sft_and_dpo_datasets_with_provenance(
    setup: tuple[Store, Settings],
) -> None:
    store, settings = setup
    up1 = rate(store, "Hashtags for coffee", "#coffee #morning", "up")
    up1_again = rate(store, "Hashtags for coffee", "#coffee #morning", "up")
    down1 = rate(store, "Hashtags for coffee", "coffee is nice", "down")
    edited = rate(store, "Post about tea", "Tea.", "edited", "Tea time! #tea")
    rate(store, "Hashtags for tea", "tea", "down")  # no pair: nothing preferred over it

    sft = export_feedback(store, settings, FeedbackExport(model=MODEL, kind="supervised"))
    dataset = sft["dataset"]
    assert dataset["report"]["valid"] and dataset["report"]["kind"] == "supervised"
    rows = read_chat_file(file_path(settings, dataset["id"]), "jsonl", min_rows=2).rows
    answers = [r["messages"][-1]["content"] for r in rows]
    assert answers == ["#coffee #morning", "Tea time! #tea"]
    provenance = dataset["report"]["feedback_export"]["provenance"]
    assert provenance == [
        {"line": 1, "source": "up", "feedback_ids": [up1, up1_again]},
        {"line": 2, "source": "edited", "feedback_ids": [edited]},
    ]

    dpo = export_feedback(store, settings, FeedbackExport(registered_model=None, kind="dpo"))
    report = dpo["dataset"]["report"]
    assert report["valid"] and report["kind"] == "dpo"
    pairs = read_preference_file(
        file_path(settings, dpo["dataset"]["id"]), "jsonl", min_rows=2
    ).rows
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs] == [
        ("Tea time! #tea", "Tea."),
        ("#coffee #morning", "coffee is nice"),
    ]
    assert report["feedback_export"]["by_source"] == {"edited": 1, "up_vs_down": 1}
    assert report["feedback_export"]["provenance"][1]["feedback_ids"] == [up1, down1, up1_again]


def test_too_little_feedback_is_refused_and_writes_nothing(
    setup: tuple[Store, Settings],
) -> None:
    store, settings = setup
    rate(store, "Hashtags for coffee", "coffee is nice", "down")
    rate(store, "Hashtags for tea", "#tea", "up")
    before = store.list_files()[0]
    with pytest.raises(InvalidRequestError) as refused:
        export_feedback(store, settings, FeedbackExport(kind="dpo"))
    assert "0 dpo example(s)" in refused.value.message
    with pytest.raises(InvalidRequestError):
        export_feedback(store, settings, FeedbackExport(kind="supervised"))
    assert store.list_files()[0] == before
