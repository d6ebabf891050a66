"""Validation of reranker data files: the two layouts, and every problem with its line."""

from __future__ import annotations

import json
from pathlib import Path

from tuneforge.datasets.kinds import detect_kind, read_upload
from tuneforge.datasets.readers import detect_format
from tuneforge.datasets.reranker import read_reranker_file

from ..conftest import DATA


def check(tmp_path: Path, name: str, lines: list, **options):
    path = tmp_path / name
    text = "\n".join(json.dumps(r) if isinstance(r, dict) else r for r in lines)
    path.write_text(text + "\n", encoding="utf-8")
    return read_reranker_file(path, detect_format(name, path), min_rows=1, **options)


def problems(data) -> list[tuple[int | None, str | None, str]]:
    return [(p["line"], p["column"], p["code"]) for p in data.report["problems"]]


def test_labeled_pairs_with_aliases_are_scaled_to_0_1(tmp_path: Path) -> None:
    rows = [{"question": "q", "passage": "p", "score": s} for s in (0, 2.5, 5)]
    data = check(tmp_path, "pairs.jsonl", rows)
    assert data.valid and data.layout == "labeled_pair"
    assert [r["label"] for r in data.rows] == [0.0, 0.5, 1.0]
    assert data.rows[0] == {"query": "q", "document": "p", "label": 0.0}
    assert data.report["statistics"]["label_range"] == [0.0, 5.0]


def test_a_declared_score_range_scales_and_bounds_the_labels(tmp_path: Path) -> None:
    rows = [{"query": "q", "document": "d", "label": s} for s in (1, 3, 5, 7)]
    data = check(tmp_path, "pairs.jsonl", rows, score_range=(1.0, 5.0))
    assert not data.valid
    assert problems(data) == [(4, "label", "score_out_of_range")]
    assert "[1, 5]" in data.report["problems"][0]["message"]
    data = check(tmp_path, "pairs.jsonl", rows[:3], score_range=(1.0, 5.0))
    assert [r["label"] for r in data.rows] == [0.0, 0.5, 1.0]


def test_ranking_rows_take_a_list_n_tuples_or_one_negative(tmp_path: Path) -> None:
    listed = check(tmp_path, "a.jsonl", [{"query": "q", "positive": "p", "negatives": ["a", "b"]}])
    tuples = check(tmp_path, "b.jsonl", [{"anchor": "q", "positive": "p", "negative_1": "a",
                                          "negative_2": "b"}])
    triplet = check(tmp_path, "c.jsonl", [{"query": "q", "positive": "p", "negative": "a"}])
    assert listed.layout == tuples.layout == triplet.layout == "ranking"
    assert listed.rows == tuples.rows == [{"query": "q", "positive": "p", "negatives": ["a", "b"]}]
    assert triplet.rows == [{"query": "q", "positive": "p", "negatives": ["a"]}]
    assert listed.report["statistics"]["negatives"] == 2


def test_every_problem_is_named_by_line_and_column(tmp_path: Path) -> None:
    data = check(tmp_path, "bad.jsonl", [
        {"query": "q", "document": "d", "label": 1},
        {"document": "d", "label": 1},
        {"query": "q", "document": "d", "label": 6},
        {"query": "q", "document": "d", "label": "high"},
        {"query": "", "document": 3, "label": 0},
        {"query": "q", "document": "d", "label": -1, "extra": "x"},
    ])
    assert not data.valid and data.rows == []
    assert problems(data) == [
        (2, "query", "missing_column"),
        (3, "label", "score_out_of_range"),
        (4, "label", "invalid_score"),
        (5, "document", "wrong_type"),
        (5, "query", "empty_value"),
        (6, "extra", "unknown_column"),
        (6, "label", "score_out_of_range"),
    ]
    assert "needs a query" in data.report["problems"][0]["message"]


def test_ranking_rows_need_a_query_and_a_negative(tmp_path: Path) -> None:
    data = check(tmp_path, "bad.jsonl", [
        {"query": "q", "positive": "p", "negatives": ["n"]},
        {"positive": "p", "negatives": ["n"]},
        {"query": "q", "positive": "p", "negatives": []},
        {"query": "q", "positive": "p", "negatives": ["n", None]},
    ])
    assert problems(data) == [
        (2, "query", "missing_column"),
        (3, "negative", "missing_column"),
        (4, "negatives[1]", "null_value"),
    ]


def test_uploads_tell_reranker_data_from_embedding_data(tmp_path: Path) -> None:
    assert detect_kind(["query", "document", "label"]) == "reranker"
    assert detect_kind(["query", "positive", "negatives"]) == "reranker"
    assert detect_kind(["anchor", "positive", "negative"]) == "embedding"
    assert detect_kind(["sentence1", "sentence2", "score"]) == "embedding"
    assert detect_kind(["text", "label"]) == "classification"
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"query": "q", "passage": "p", "label": 1}) + "\n")
    upload = read_upload(path, "jsonl", min_rows=1)
    assert upload.valid and upload.report["kind"] == "reranker"


def test_the_headerless_sts_benchmark_reads_as_labeled_pairs() -> None:
    data = read_reranker_file(DATA / "stsb-en-dev.csv", "csv", min_rows=1)
    assert data.valid and data.layout == "labeled_pair" and len(data.rows) == 1500
    assert data.report["has_header"] is False
    assert all(0.0 <= r["label"] <= 1.0 for r in data.rows)
