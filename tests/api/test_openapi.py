"""The OpenAPI document declares every answer: each operation's success with its schema (or
media type), and each error it can answer, in our error shape. On the real app, in-process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tuneforge.api.app import create_app
from tuneforge.api.security import guard_statuses
from tuneforge.config import Settings

ERROR_REF = "#/components/schemas/ErrorResponse"


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    app = create_app(Settings(home=tmp_path_factory.mktemp("data")), run_worker=False)
    return app.openapi()


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(Settings(home=tmp_path / "data"), run_worker=False)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield method.upper(), path, operation


def test_every_operation_declares_its_success_with_a_schema(document: dict[str, Any]) -> None:
    ops = list(operations(document))
    assert len(ops) >= 69
    for method, path, operation in ops:
        successes = {s: r for s, r in operation["responses"].items() if s.startswith("2")}
        assert len(successes) == 1, (method, path, successes)
        [(status, response)] = successes.items()
        if status == "204":
            assert "content" not in response, (method, path)
            continue
        content = response["content"]
        assert content, (method, path)
        for media_type, body in content.items():
            assert body["schema"], (method, path, media_type)
        if "application/json" in content:
            # A named Public schema, never FastAPI's "any JSON".
            assert content["application/json"]["schema"]["$ref"], (method, path)


def test_every_error_answer_is_declared_in_our_shape(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert set(schemas["ErrorResponse"]["required"]) == {"error"}
    assert set(schemas["Error"]["required"]) == {"message", "type", "param", "code"}
    for method, path, operation in operations(document):
        responses = operation["responses"]
        errors = {int(s) for s in responses if not s.startswith("2")}
        for status in errors:
            schema = responses[str(status)]["content"]["application/json"]["schema"]
            assert schema == {"$ref": ERROR_REF}, (method, path, status)
        expected = set(guard_statuses(method, path))
        if "requestBody" in operation:
            expected |= {413, 422}
        parameters = operation.get("parameters", [])
        if parameters:
            expected.add(422)
        if any(p["in"] == "path" for p in parameters):
            expected.add(404)
        assert expected <= errors, (method, path, expected - errors)


def test_the_routers_own_errors_have_our_shape(client: TestClient) -> None:
    missing = client.get("/v1/no-such-thing")
    assert missing.status_code == 404
    assert missing.json() == {"error": {
        "message": "No route GET /v1/no-such-thing.", "type": "invalid_request_error",
        "param": None, "code": "not_found"}}
    wrong = client.delete("/v1/models")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET"
    error = wrong.json()["error"]
    assert error["code"] == "method_not_allowed" and error["param"] is None
    assert "DELETE /v1/models" in error["message"]
    # A path served by two routes (list and upload) names both methods.
    both = client.delete("/v1/files")
    assert both.status_code == 405 and both.headers["allow"] == "GET, POST"
    assert both.json()["error"]["message"].endswith("(allowed: GET, POST).")
    assert client.get("/nowhere").json()["error"]["code"] == "not_found"


def test_answers_keep_their_nulls_and_leave_out_what_a_report_lacks(client: TestClient) -> None:
    listed = client.get("/v1/files").json()
    assert listed == {"object": "list", "data": [], "has_more": False, "first_id": None,
                      "last_id": None}
    pairs = b"".join(b'{"anchor": "q %d", "positive": "a %d"}\n' % (i, i) for i in range(8))
    r = client.post("/v1/files", files={"file": ("pairs.jsonl", pairs)})
    assert r.status_code == 200, r.text
    assert r.json()["status_details"] is None
    dataset = client.get(f"/v1/datasets/{r.json()['id']}").json()
    # An embedding file's report has no `source_columns` (only classification files do) and
    # no annotations of a made dataset: those keys are absent, not null.
    assert dataset["kind"] == "embedding"
    assert not {"source_columns", "preparation", "synthetic", "feedback_export"} & set(dataset)
