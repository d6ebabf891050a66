"""Preparing datasets: normalisation, duplicates of every sort, filters, merge, split, report.

A real SQLite store and data folder; datasets go in the way an upload does (`ingest_file`)."""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tuneforge.config import Settings
from tuneforge.datasets.dedup import clean, find_duplicates
from tuneforge.datasets.ingest import file_path, ingest_file
from tuneforge.datasets.languages import detect_language
from tuneforge.datasets.prepare import PrepareRequest, prepare_dataset
from tuneforge.db.store import Store
from tuneforge.errors import InvalidDatasetError, InvalidRequestError

GERMAN = [
    "Der Hund läuft jeden Morgen durch den großen Park am Fluss.",
    "Heute regnet es in Berlin, und die Straßen sind sehr nass.",
    "Meine Großmutter backt am Sonntag immer einen leckeren Kuchen.",
    "Die Besprechung wurde auf nächste Woche Dienstag verschoben.",
]
ENGLISH = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Our new coffee blend is roasted in small batches every single week.",
    "Please remember to submit your expense reports before Friday evening.",
    "The football match was postponed because of the heavy snowstorm.",
    "She plays the violin in the city orchestra every other weekend.",
    "Fresh bread from the bakery on the corner is the best breakfast.",
]


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Store, Settings]]:
    settings = Settings(home=tmp_path / "home")
    settings.ensure_dirs()
    store = Store(settings.db_url)
    store.create_schema()
    yield store, settings
    store.dispose()


def upload(store: Store, settings: Settings, name: str, rows: list[dict]) -> str:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    row = ingest_file(store, settings, name, io.BytesIO(text.encode("utf-8")))
    assert row["report"]["valid"], row["report"]["problems"]
    return str(row["id"])


def read_back(settings: Settings, file_id: str) -> list[dict]:
    lines = file_path(settings, file_id).read_text("utf-8").splitlines()
    return [json.loads(line) for line in lines]


def chat(user: str, answer: str, system: str | None = None) -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return {"messages": messages}


def test_clean_normalises_unicode_and_whitespace() -> None:
    decomposed = "Cafe\u0301  am\tSee \u200b\r\n\r\n\r\n  zweite   Zeile  "
    assert clean(decomposed) == "Café am See\n\nzweite Zeile"
    assert clean("Café am See") == "Café am See"


def test_find_duplicates_tells_exact_normalised_and_near_ones_apart() -> None:
    texts = [
        "The quick brown fox jumps over the lazy dog near the river bank.",  # 0 kept
        "Our new coffee blend is roasted in small batches every single week.",  # 1 kept
        "The quick brown fox jumps over the lazy dog near the river bank.",  # exact of 0
        "THE QUICK BROWN FOX jumps over the lazy dog near the river bank!",  # normalised of 0
        "Our new coffee blend is roasted in small batches every week.",  # near of 1
        "Please remember to submit your expense reports before Friday.",  # kept
    ]
    found = {d.index: d for d in find_duplicates(texts, near_threshold=0.8)}
    assert set(found) == {2, 3, 4}
    assert (found[2].reason, found[2].of) == ("exact_duplicate", 0)
    assert (found[3].reason, found[3].of) == ("normalised_duplicate", 0)
    assert (found[4].reason, found[4].of) == ("near_duplicate", 1)
    assert 0.8 <= found[4].similarity < 1.0
    # Without near-duplicate search, and with a threshold the near pair does not reach.
    assert {d.index for d in find_duplicates(texts, near_threshold=None)} == {2, 3}
    assert {d.index for d in find_duplicates(texts, near_threshold=0.99)} == {2, 3}


def test_language_detection_is_real_and_repeatable() -> None:
    assert [detect_language(t) for t in GERMAN] == ["de"] * len(GERMAN)
    assert [detect_language(t) for t in ENGLISH] == ["en"] * len(ENGLISH)
    assert detect_language("12 + 7 = 19") == "unknown"
    assert {detect_language(ENGLISH[0]) for _ in range(5)} == {"en"}


def test_prepare_removes_duplicates_and_reports_why(setup: tuple[Store, Settings]) -> None:
    store, settings = setup
    system = "You write social media posts."
    rows = [chat(f"Post {i}", text, system) for i, text in enumerate(ENGLISH + GERMAN)]
    rows.append(chat("Post 0", ENGLISH[0], system))  # exact duplicate of row 1
    rows.append(chat("Post  0 ", "  " + ENGLISH[0].replace(" ", "   "), system))  # whitespace
    rows.append(chat("post 0", ENGLISH[0].upper(), system))  # case variant
    rows.append(chat("Post 1", ENGLISH[1].replace("every single week", "every week"), system))
    rows.append(chat("Kurz", "Ja.", "Du antwortest kurz."))  # too short
    source = upload(store, settings, "posts.jsonl", rows)

    done = prepare_dataset(
        store,
        settings,
        source,
        PrepareRequest(min_chars=40, validation_share=0.2, seed=5),
    )
    report = done["report"]
    assert report["kind"] == "supervised"
    assert report["rows_in"] == 15 and report["rows_out"] == 10
    assert report["removed"] == {
        "exact_duplicate": 2,
        "normalised_duplicate": 1,
        "near_duplicate": 1,
        "too_short": 1,
    }
    assert report["normalised_rows"] == 1
    near = report["examples"]["near_duplicate"][0]
    assert near["row"] == 14 and near["duplicate_of"] == {"dataset": source, "row": 2}
    assert report["examples"]["too_short"][0]["row"] == 15
    assert report["statistics"]["languages"] == {"en": 6, "de": 4}
    assert report["statistics"]["task_types"] == {system: 10}
    assert report["split"] == {
        "seed": 5,
        "validation_share": 0.2,
        "stratified": False,
        "train_rows": 8,
        "validation_rows": 2,
    }
    train, validation = done["train"], done["validation"]
    assert train["report"]["valid"] and train["report"]["kind"] == "supervised"
    assert validation["report"]["preparation"]["train_dataset"] == train["id"]
    written = read_back(settings, train["id"]) + read_back(settings, validation["id"])
    answers = sorted(r["messages"][2]["content"] for r in written)
    assert answers == sorted(ENGLISH + GERMAN)
    # The source is untouched, and the same request gives the same split.
    assert len(read_back(settings, source)) == 15
    again = prepare_dataset(
        store, settings, source, PrepareRequest(min_chars=40, validation_share=0.2, seed=5)
    )
    assert read_back(settings, again["train"]["id"]) == read_back(settings, train["id"])


def test_language_filter_and_merge(setup: tuple[Store, Settings]) -> None:
    store, settings = setup
    english = upload(
        store, settings, "en.jsonl", [{"prompt": t, "completion": "ok " + t} for t in ENGLISH]
    )
    german = upload(
        store, settings, "de.jsonl", [{"prompt": t, "completion": "ok " + t} for t in GERMAN]
    )
    done = prepare_dataset(
        store,
        settings,
        english,
        PrepareRequest(merge=[german], languages=["de"], validation_share=0),
    )
    assert done["report"]["removed"] == {"language": 6}
    assert done["report"]["examples"]["language"][0]["language"] == "en"
    assert done["validation"] is None
    kept = [r["messages"][0]["content"] for r in read_back(settings, done["train"]["id"])]
    assert kept == GERMAN


def test_stratified_split_keeps_class_ratios(setup: tuple[Store, Settings]) -> None:
    store, settings = setup
    counts = {"billing": 40, "shipping": 20, "refund": 10}
    rows = [
        {
            "text": f"Question {i} about {label}: case number {i * 7919 % 1000} please",
            "label": label,
        }
        for label, n in counts.items()
        for i in range(n)
    ]
    source = upload(store, settings, "support.jsonl", rows)
    done = prepare_dataset(
        store,
        settings,
        source,
        PrepareRequest(near_duplicate_threshold=None, validation_share=0.2, seed=11),
    )
    split = done["report"]["split"]
    assert split["stratified"] and split["validation_rows"] == 14
    validation = Counter(r["label"] for r in read_back(settings, done["validation"]["id"]))
    train = Counter(r["label"] for r in read_back(settings, done["train"]["id"]))
    assert validation == {"billing": 8, "shipping": 4, "refund": 2}
    assert train == {"billing": 32, "shipping": 16, "refund": 8}
    assert split["validation_labels"] == split["train_labels"]
    assert done["report"]["statistics"]["task_types"] == counts
    # Another seed holds out other rows with the same shares.
    other = prepare_dataset(
        store,
        settings,
        source,
        PrepareRequest(near_duplicate_threshold=None, validation_share=0.2, seed=12),
    )
    assert read_back(settings, other["validation"]["id"]) != read_back(
        settings, done["validation"]["id"]
    )


def test_bad_requests_change_nothing(setup: tuple[Store, Settings], tmp_path: Path) -> None:
    store, settings = setup
    chats = upload(store, settings, "chats.jsonl", [chat(t, t) for t in ENGLISH])
    labels = upload(
        store,
        settings,
        "labels.jsonl",
        [{"text": t, "label": str(i % 2)} for i, t in enumerate(ENGLISH)],
    )
    broken = ingest_file(store, settings, "broken.jsonl", io.BytesIO(b'{"messages": 3}\n'))
    before = len(store.list_files(limit=100)[0])
    with pytest.raises(InvalidRequestError) as mixed:
        prepare_dataset(store, settings, chats, PrepareRequest(merge=[labels]))
    assert mixed.value.param == "merge[0]" and "one kind" in mixed.value.message
    with pytest.raises(InvalidDatasetError) as invalid:
        prepare_dataset(store, settings, str(broken["id"]), PrepareRequest())
    assert invalid.value.param == "id"
    with pytest.raises(InvalidRequestError) as nothing_left:
        prepare_dataset(store, settings, chats, PrepareRequest(languages=["fr"]))
    assert nothing_left.value.details["removed"] == {"language": 6}
    with pytest.raises(ValueError):
        PrepareRequest(min_chars=10, max_chars=5)
    assert len(store.list_files(limit=100)[0]) == before


def test_chat_rows_name_their_task_type(setup: tuple[Store, Settings]) -> None:
    store, settings = setup
    rows = [
        dict(chat(t, f"#{i}", system="You write hashtags."), task_type="hashtags")
        for i, t in enumerate(ENGLISH[:4])
    ]
    rows += [dict(chat(t, "Kurz.", system="Fasse zusammen."), task_type="summary") for t in GERMAN]
    rows[0]["metadata"] = {"team": "social", "reviewed": True, "score": 0.5, "note": None}
    rows += [chat(t, "Ok.", system="Answer politely.") for t in ENGLISH[4:]]
    source = upload(store, settings, "tasks.jsonl", rows)
    done = prepare_dataset(
        store, settings, source, PrepareRequest(near_duplicate_threshold=None, validation_share=0)
    )
    statistics = done["report"]["statistics"]
    # The field wins over the system prompt; rows without it still count by their prompt.
    assert statistics["task_types"] == {"summary": 4, "hashtags": 4, "Answer politely.": 2}
    assert statistics["task_type_source"] == "task_type+system_prompt"
    written = read_back(settings, done["train"]["id"])
    assert Counter(r.get("task_type") for r in written) == {"summary": 4, "hashtags": 4, None: 2}
    assert written[0]["metadata"] == {
        "team": "social",
        "reviewed": True,
        "score": 0.5,
        "note": None,
    }
    only_named = upload(store, settings, "named.jsonl", rows[:8])
    again = prepare_dataset(store, settings, only_named, PrepareRequest(validation_share=0))
    assert again["report"]["statistics"]["task_type_source"] == "task_type"


def test_bad_task_type_and_metadata_are_reported_by_line(setup: tuple[Store, Settings]) -> None:
    store, settings = setup
    good = [dict(chat(t, "Ok."), task_type="qa") for t in ENGLISH]
    bad = [
        dict(chat("a", "b"), task_type=""),
        dict(chat("c", "d"), task_type="x" * 65),
        dict(chat("e", "f"), task_type=["qa"]),
        dict(chat("g", "h"), task_type="two\nlines"),
        dict(chat("i", "j"), metadata=["team"]),
        dict(chat("k", "l"), metadata={"nested": {"a": 1}}),
        dict(chat("m", "n"), metadata={str(i): i for i in range(33)}),
        dict(chat("o", "p"), labels="qa"),
    ]
    text = "".join(json.dumps(r) + "\n" for r in good + bad)
    row = ingest_file(store, settings, "bad.jsonl", io.BytesIO(text.encode("utf-8")))
    report = row["report"]
    assert not report["valid"]
    found = [(p["line"], p["code"], p["column"]) for p in report["problems"]]
    first = len(good) + 1
    assert found == [
        (first, "invalid_task_type", "task_type"),
        (first + 1, "invalid_task_type", "task_type"),
        (first + 2, "invalid_task_type", "task_type"),
        (first + 3, "invalid_task_type", "task_type"),
        (first + 4, "invalid_metadata", "metadata"),
        (first + 5, "invalid_metadata", "metadata.nested"),
        (first + 6, "invalid_metadata", "metadata"),
        (first + 7, "unknown_column", "labels"),
    ]
    messages = {p["line"]: p["message"] for p in report["problems"]}
    assert "1 to 64 characters" in messages[first + 1]
    assert "got array" in messages[first + 2]
    assert "2 lines" in messages[first + 3]
    assert "metadata.nested" in messages[first + 5] and "got object" in messages[first + 5]
    assert "33 keys" in messages[first + 6]
    assert "task_type, metadata" in messages[first + 7]
