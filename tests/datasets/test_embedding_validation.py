"""Validation of embedding data files: every problem, with its line, column and code."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tuneforge.datasets.embedding import read_embedding_file
from tuneforge.datasets.readers import detect_format
from tuneforge.jobs.data import split_rows

from ..conftest import DATA


def check(tmp_path: Path, name: str, content: bytes, min_rows: int = 1):
    path = tmp_path / name
    path.write_bytes(content)
    return read_embedding_file(path, detect_format(name, path), min_rows=min_rows)


def problems(data) -> list[tuple[int | None, str | None, str]]:
    return [(p["line"], p["column"], p["code"]) for p in data.report["problems"]]


def test_valid_triplets_with_question_alias(tmp_path: Path) -> None:
    rows = [{"question": f"q{i}", "positive": f"p{i}", "negative": f"n{i}"} for i in range(5)]
    data = check(tmp_path, "t.jsonl", "\n".join(json.dumps(r) for r in rows).encode())
    assert data.valid and data.layout == "triplet"
    assert data.rows[0] == {"anchor": "q0", "positive": "p0", "negative": "n0"}
    assert data.report["statistics"]["rows"] == 5


def test_every_problem_is_reported_with_its_line(tmp_path: Path) -> None:
    content = "\n".join([
        json.dumps({"question": "a", "positive": "b", "negative": "c"}),
        "this is not json",
        "[1, 2]",
        json.dumps({"question": "a", "positive": ""}),
        json.dumps({"question": None, "positive": "b", "negative": "c", "extra": 1}),
        json.dumps({"question": 5, "positive": "  ", "negative": "c"}),
    ]).encode()
    data = check(tmp_path, "bad.jsonl", content)
    assert not data.valid
    assert problems(data) == [
        (2, None, "invalid_json"),
        (3, None, "not_an_object"),
        (4, "negative", "missing_column"),
        (4, "positive", "empty_value"),
        (5, "anchor", "null_value"),
        (5, "extra", "unknown_column"),
        (6, "anchor", "wrong_type"),
        (6, "positive", "empty_value"),
    ]
    assert data.report["problems_by_code"]["empty_value"] == 2
    assert data.report["problem_count"] == 8
    assert data.rows == []


def test_not_utf8_names_the_line(tmp_path: Path) -> None:
    good = json.dumps({"anchor": "a", "positive": "b"}).encode()
    data = check(tmp_path, "x.jsonl", good + b"\n" + b'{"anchor": "\xff\xfe", "positive": "b"}\n')
    assert problems(data) == [(2, None, "not_utf8")]


def test_headerless_sts_csv_is_scored_pairs_scaled_to_unit(tmp_path: Path) -> None:
    lines = (DATA / "stsb-en-train.csv").read_bytes().split(b"\n")[:50]
    data = check(tmp_path, "sts.csv", b"\n".join(lines))
    assert data.valid, data.report["problems"]
    assert data.layout == "scored_pair" and not data.report["has_header"]
    assert data.report["statistics"]["score_scale"] == 5.0
    assert all(0.0 <= r["score"] <= 1.0 for r in data.rows)
    assert max(r["score"] for r in data.rows) > 0.5


def test_csv_score_problems(tmp_path: Path) -> None:
    content = b"sentence1,sentence2,score\na,b,0.5\nc,d,7\ne,f,high\ng,h,\n"
    data = check(tmp_path, "s.csv", content)
    assert problems(data) == [
        (3, "score", "score_out_of_range"),
        (4, "score", "invalid_score"),
        (5, "score", "null_value"),
    ]


def test_csv_unknown_and_missing_columns(tmp_path: Path) -> None:
    data = check(tmp_path, "c.csv", b"anchor,label\na,b\n")
    assert [p["code"] for p in data.report["problems"]] == ["unknown_format"]
    data = check(tmp_path, "c2.csv", b"anchor,positive,id\na,b,1\nc,d,2\n")
    assert problems(data) == [(2, "id", "unknown_column"), (3, "id", "unknown_column")]


def test_wrong_column_count_in_csv(tmp_path: Path) -> None:
    data = check(tmp_path, "w.csv", b"anchor,positive\na,b\nc\nd,e\n")
    assert problems(data) == [(3, None, "wrong_column_count")]


def test_too_few_rows_and_empty_file(tmp_path: Path) -> None:
    data = check(tmp_path, "few.jsonl", json.dumps({"anchor": "a", "positive": "b"}).encode(),
                 min_rows=10)
    assert [p["code"] for p in data.report["problems"]] == ["too_few_rows"]
    data = check(tmp_path, "empty.jsonl", b"")
    assert [p["code"] for p in data.report["problems"]] == ["empty_file"]


def test_parquet_rows_are_numbered(tmp_path: Path) -> None:
    table = pa.table({"anchor": ["a", "b", None], "positive": ["x", "y", "z"]})
    pq.write_table(table, tmp_path / "d.parquet")
    data = read_embedding_file(tmp_path / "d.parquet", "parquet", min_rows=1)
    assert data.layout == "pair"
    assert problems(data) == [(3, "anchor", "null_value")]
    corrupt = check(tmp_path, "bad.parquet", b"PAR1 not really")
    assert [p["code"] for p in corrupt.report["problems"]] == ["invalid_parquet"]


def test_only_the_first_hundred_problems_are_listed_but_all_counted(tmp_path: Path) -> None:
    content = "\n".join(json.dumps({"anchor": "", "positive": "p"}) for _ in range(150)).encode()
    data = check(tmp_path, "many.jsonl", content)
    assert data.report["problem_count"] == 150
    assert len(data.report["problems"]) == 100
    assert data.report["problems_by_code"] == {"empty_value": 150}


def test_statistics_lengths_and_duplicates(tmp_path: Path) -> None:
    rows = [{"anchor": "abc", "positive": "x" * 10}] * 3 + [{"anchor": "a", "positive": "yy"}]
    data = check(tmp_path, "s.jsonl", "\n".join(json.dumps(r) for r in rows).encode())
    stats = data.report["statistics"]
    assert stats["exact_duplicates"] == 2
    assert stats["columns"]["anchor"]["chars"] == {"min": 1, "median": 3.0, "p95": 3.0, "max": 3}


@pytest.mark.parametrize("n", [2, 10, 101])
def test_split_is_deterministic_and_ninety_ten(n: int) -> None:
    rows = [{"i": i} for i in range(n)]
    train, held = split_rows(rows, seed=3)
    assert (train, held) == split_rows(rows, seed=3)
    assert len(held) == max(1, round(n * 0.1)) and len(train) + len(held) == n
    assert split_rows(rows, seed=4)[1] != held or n == 2
