"""`/rows` reads by the offset index written at upload: every page equals the records a full
read gives, CSV's quoted multi-line fields and header decision included; a file without an
index gets one on its first page; deleting a file deletes its index."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tuneforge.api.app import create_app
from tuneforge.config import Settings
from tuneforge.datasets.embedding import HEADERLESS, KNOWN_COLUMNS
from tuneforge.datasets.preview import preview_rows
from tuneforge.datasets.problems import ProblemLog
from tuneforge.datasets.readers import RecordStream
from tuneforge.datasets.row_index import EVERY, index_path

ROWS = 3 * EVERY + 5


def all_records(path: Path, fmt: str, known: set[str]) -> list[tuple[int, dict]]:
    return list(RecordStream(path, fmt, ProblemLog(), known, HEADERLESS))


def pages(path: Path, fmt: str, report: dict, size: int) -> list[tuple[int, dict]]:
    seen: list[tuple[int, dict]] = []
    offset = 0
    while True:
        page = preview_rows(path, fmt, report, offset=offset, limit=size)
        seen += [(row["line"], row["values"]) for row in page["data"]]
        if not page["has_more"]:
            return seen
        offset += size


def jsonl_with_bad_lines(path: Path) -> None:
    lines = []
    for i in range(ROWS):
        lines.append(json.dumps({"anchor": f"a{i}", "positive": f"p{i}"}))
        if i % 7 == 0:
            lines += ["", "not json", "[1]"]
    path.write_text("\n".join(lines) + "\n")


def csv_with_multiline_fields(path: Path, header: bool) -> None:
    out = io.StringIO()
    writer = csv.writer(out)
    if header:
        writer.writerow(["sentence1", "sentence2", "score"])
    for i in range(ROWS):
        text = f"line one of {i}\nline two" if i % 5 == 0 else f"s{i}"
        writer.writerow([text, f"t{i}", "0.5"])
        if i % 11 == 0:
            out.write("only,two\n")
    path.write_text(out.getvalue())


@pytest.mark.parametrize("size", [1, 7, EVERY, 500])
def test_pages_of_jsonl_match_a_full_read(tmp_path: Path, size: int) -> None:
    path = tmp_path / "p.jsonl"
    jsonl_with_bad_lines(path)
    expected = all_records(path, "jsonl", set())
    assert len(expected) == ROWS
    assert pages(path, "jsonl", {"has_header": True}, size) == expected
    assert index_path(path).exists()  # built on the first page, and kept


@pytest.mark.parametrize("header", [True, False])
def test_pages_of_csv_with_multiline_fields_match_a_full_read(tmp_path: Path, header: bool) -> None:
    path = tmp_path / "p.csv"
    csv_with_multiline_fields(path, header)
    expected = all_records(path, "csv", KNOWN_COLUMNS)
    assert len(expected) == ROWS and expected[0][0] == (2 if header else 1)
    assert any(record["sentence1"].endswith("\nline two") for _, record in expected)
    report = {"has_header": header}
    for size in (3, EVERY + 1):
        assert pages(path, "csv", report, size) == expected
    last = preview_rows(path, "csv", report, offset=ROWS - 1, limit=5)
    assert last["total"] == ROWS and not last["has_more"]
    assert last["columns"] == ["sentence1", "sentence2", "score"]


def test_an_index_that_no_longer_matches_its_file_is_built_again(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    jsonl_with_bad_lines(path)
    preview_rows(path, "jsonl", {}, offset=0, limit=1)
    with path.open("a") as f:
        f.write(json.dumps({"anchor": "new", "positive": "row"}) + "\n")
    page = preview_rows(path, "jsonl", {}, offset=ROWS, limit=5)
    assert page["total"] == ROWS + 1 and page["data"][0]["values"]["anchor"] == "new"


def test_columns_are_those_of_the_records_up_to_the_page(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    rows = [{"a": 1}] * 100 + [{"a": 1, "b": 2}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    assert preview_rows(path, "jsonl", {}, offset=0, limit=10)["columns"] == ["a"]
    assert preview_rows(path, "jsonl", {}, offset=95, limit=10)["columns"] == ["a", "b"]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(Settings(home=tmp_path / "data"), run_worker=False)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c


def test_upload_writes_the_index_and_delete_removes_it(client: TestClient, tmp_path: Path) -> None:
    source = tmp_path / "up.jsonl"
    jsonl_with_bad_lines(source)
    r = client.post(
        "/v1/files",
        files={"file": ("up.jsonl", source.read_bytes())},
        data={"purpose": "fine-tune"},
    )
    assert r.status_code == 200, r.text
    file_id = r.json()["id"]
    stored = tmp_path / "data" / "files" / file_id
    index = index_path(stored)
    assert index.name == f"{file_id}.idx" and index.exists()
    written = index.stat().st_mtime_ns
    page = client.get(f"/v1/datasets/{file_id}/rows", params={"offset": ROWS - 2}).json()
    assert [row["values"]["anchor"] for row in page["data"]] == [f"a{ROWS - 2}", f"a{ROWS - 1}"]
    assert index.stat().st_mtime_ns == written  # read, not built again
    assert client.delete(f"/v1/files/{file_id}").status_code == 200
    assert not stored.exists() and not index.exists()
