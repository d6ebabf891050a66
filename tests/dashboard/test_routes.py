"""What the dashboard needs from the server, without a browser: its files at `/` and
`/dashboard/`, the row preview of a dataset and the length histograms of its statistics."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tuneforge.api.app import create_app
from tuneforge.config import Settings
from tuneforge.datasets.statistics import histogram


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(Settings(home=tmp_path / "data"), run_worker=False)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c


def upload(client: TestClient, name: str, text: str) -> str:
    r = client.post("/v1/files", files={"file": (name, text.encode())},
                    data={"purpose": "fine-tune"})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def test_the_page_and_its_modules_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/dashboard/app.js">' in page.text
    script = client.get("/dashboard/app.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert client.get("/dashboard/app.css").headers["content-type"].startswith("text/css")
    # Every module a script imports is served.
    static = Path(__file__).resolve().parents[2] / "tuneforge" / "dashboard" / "static"
    for module in static.glob("*.js"):
        for imported in set(re.findall(r'from "\./([a-z_]+\.js)"', module.read_text())):
            assert client.get(f"/dashboard/{imported}").status_code == 200, imported
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize("name", ["../pyproject.toml", "..%2F__init__.py", "__init__.py",
                                  ".hidden.js", "nothing.js"])
def test_nothing_but_the_static_files_is_served(client: TestClient, name: str) -> None:
    r = client.get(f"/dashboard/{name}")
    assert r.status_code == 404


def test_rows_are_previewed_with_their_lines(client: TestClient) -> None:
    file_id = upload(client, "pairs.csv",
                     "A man.,A woman.,1.0\nonly one\nA cat.,A dog.,2.5\nA b.,C d.,3\n")
    page = client.get(f"/v1/datasets/{file_id}/rows", params={"limit": 2}).json()
    assert page["columns"] == ["sentence1", "sentence2", "score"]
    assert page["total"] == 3 and page["has_more"]
    assert [r["line"] for r in page["data"]] == [1, 3]  # line 2 is a problem, not a row
    assert page["data"][1]["values"] == {"sentence1": "A cat.", "sentence2": "A dog.",
                                         "score": "2.5"}
    rest = client.get(f"/v1/datasets/{file_id}/rows", params={"offset": 2}).json()
    assert [r["line"] for r in rest["data"]] == [4] and not rest["has_more"]


def test_rows_of_jsonl_with_a_header_named_file(client: TestClient) -> None:
    rows = [{"text": f"text {i}", "label": "a" if i % 2 else "b"} for i in range(5)]
    file_id = upload(client, "labels.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    page = client.get(f"/v1/datasets/{file_id}/rows", params={"limit": 10}).json()
    assert page["columns"] == ["text", "label"]
    assert [r["values"] for r in page["data"]] == rows
    assert [r["line"] for r in page["data"]] == [1, 2, 3, 4, 5]


def test_bad_preview_requests(client: TestClient) -> None:
    assert client.get("/v1/datasets/file-0123abcd/rows").status_code == 404
    file_id = upload(client, "p.csv", "a,b\nc,d\n")
    r = client.get(f"/v1/datasets/{file_id}/rows", params={"limit": 0})
    assert r.status_code == 422 and r.json()["error"]["param"] == "limit"


def test_statistics_carry_a_length_histogram(client: TestClient) -> None:
    file_id = upload(client, "pairs.csv", "".join(
        f"{'word ' * n}.,other.,{n % 5}\n" for n in range(1, 41)))
    column = client.get(f"/v1/datasets/{file_id}").json()["statistics"]["columns"]["sentence1"]
    hist = column["histogram"]
    assert sum(hist["counts"]) == 40 and len(hist["edges"]) == len(hist["counts"]) + 1
    assert hist["edges"][0] == column[hist["unit"]]["min"]
    assert hist["edges"][-1] > column[hist["unit"]]["max"]


def test_histogram_bins() -> None:
    assert histogram([], "chars") is None
    assert histogram([5, 5], "chars") == {"unit": "chars", "edges": [5, 6], "counts": [2]}
    wide = histogram(list(range(100)), "tokens")
    assert wide is not None and len(wide["counts"]) == 20 and set(wide["counts"]) == {5}
