"""What the edge refuses, on a real server over SQLite and over PostgreSQL: NUL in ids,
queries, JSON bodies and file names; cursors out of shape or range; bodies that stop
arriving. Every refusal is a 4xx in our error shape, never a 500 or a dropped connection."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

import httpx
import pytest

from tests.api.hostile_requests import BOUNDARY, multipart_body, orphans, problems
from tests.conftest import Server, postgres_schema
from tests.jobs.conftest import add_job
from tuneforge.api.edge import json_text_problem
from tuneforge.db.store import Store
from tuneforge.jobs.status import JobStatus

pytestmark = pytest.mark.slow

IDLE_SECONDS = 1.0
LISTINGS = ["/v1/files", "/v1/fine_tuning/jobs", "/v1/evaluations", "/v1/exports",
            "/v1/model_imports", "/v1/synthetic-data", "/v1/studies", "/v1/feedback"]
MULTIPART = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
JSONL = b'{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n'


class Edge:
    def __init__(self, server: Server, store: Store, home: Path, job_id: str):
        self.server, self.client, self.store, self.home = server, server.client, store, home
        self.job_id = job_id


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def edge(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Edge]:
    home = tmp_path_factory.mktemp("edge") / "data"
    env = {"TUNEFORGE_BODY_IDLE_SECONDS": str(IDLE_SECONDS)}
    with (postgres_schema() if request.param == "postgres" else nullcontext()) as url:
        server = Server(home, database_url=url, args=("--no-worker",), env=env)
        store = Store(url or f"sqlite:///{home / 'tuneforge.db'}")
        try:
            # A job that has ended: its stream answers at once.
            yield Edge(server, store, home, add_job(store, JobStatus.SUCCEEDED))
        finally:
            store.dispose()
            server.stop()


def error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert problems(response) == []
    body = response.json()["error"]
    if code is not None:
        assert body["code"] == code, body
    return body


@pytest.mark.parametrize("method,path", [
    ("GET", "/v1/files/file-%00"),
    ("GET", "/v1/files/%00/content"),
    ("DELETE", "/v1/files/file-a%00b"),  # a write: audited, and PostgreSQL stores no NUL
    ("GET", "/v1/fine_tuning/jobs/ftjob-%00"),
    ("POST", "/v1/fine_tuning/jobs/%00/cancel"),
    ("GET", "/v1/models/x%00y"),
    ("GET", "/v1/datasets/%00/rows"),
    ("PATCH", "/v1/registered_models/a%00"),
])
def test_nul_in_an_id_is_refused_before_any_lookup(edge: Edge, method: str, path: str) -> None:
    body = error(edge.client.request(method, path, json={}), 400, "invalid_request")
    assert body["param"] == "path"


@pytest.mark.parametrize("url,param", [
    ("/v1/files?purpose=a%00", "purpose"),
    ("/v1/feedback?model=%00", "model"),
    ("/v1/files?after=file-%00", "after"),
    ("/v1/audit?actor=%00", "actor"),
    ("/v1/models?x%00=1", "x"),
])
def test_nul_in_a_query_value_is_refused_naming_it(edge: Edge, url: str, param: str) -> None:
    assert error(edge.client.get(url), 400, "invalid_request")["param"] == param


@pytest.mark.parametrize("body", [
    b'{"model": "a\\u0000b", "training_file": "file-x"}',
    b'{"model": "\\ud800", "training_file": "file-x"}',
    b'{"model": "x", "training_file": ["\\udc00\\ud800"]}',
])
def test_text_no_database_stores_is_refused_in_json_bodies(edge: Edge, body: bytes) -> None:
    r = edge.client.post("/v1/fine_tuning/jobs", content=body,
                         headers={"Content-Type": "application/json"})
    message = error(r, 400, "invalid_request")["message"]
    assert ("NUL" if b"u0000" in body else "lone surrogate") in message


def test_an_escaped_backslash_before_u0000_is_text_not_nul(edge: Edge) -> None:
    r = edge.client.post("/v1/feedback", content=b'{"model": "\\\\u0000"}',
                         headers={"Content-Type": "application/json"})
    assert error(r, 422, "validation_error")  # reached validation: not refused as a NUL


def test_an_upload_named_with_a_nul_is_refused_and_nothing_is_kept(edge: Edge) -> None:
    r = edge.client.post("/v1/files", content=multipart_body(b"a\x00b.jsonl", JSONL, None),
                         headers=MULTIPART)
    assert error(r, 400, "invalid_request")["param"] == "file"
    assert orphans(edge.home, edge.client) == []


def test_a_long_file_name_keeps_its_extension_and_loses_control_characters(edge: Edge) -> None:
    name = b"\x1b[31m" + b"a" * 300 + b".jsonl"
    r = edge.client.post("/v1/files", content=multipart_body(name, JSONL, "fine-tune"),
                         headers=MULTIPART)
    assert r.status_code == 200, r.text
    file = r.json()
    assert file["filename"] == "[31m" + "a" * 245 + ".jsonl"
    assert edge.client.get(f"/v1/datasets/{file['id']}").json()["format"] == "jsonl"


@pytest.mark.parametrize("listing", LISTINGS)
@pytest.mark.parametrize("cursor", ["nope", "file-" + "0" * 33, "ftevent-1", "x" * 5000])
def test_a_malformed_cursor_is_a_400_naming_after(edge: Edge, listing: str, cursor: str
                                                  ) -> None:
    r = edge.client.get(listing, params={"after": cursor})
    assert error(r, 400, "invalid_request")["param"] == "after"


@pytest.mark.parametrize("listing", LISTINGS)
def test_a_well_formed_cursor_that_names_nothing_gives_an_empty_page(edge: Edge, listing: str
                                                                    ) -> None:
    r = edge.client.get(listing, params={"after": "file-" + "0" * 32})
    assert r.status_code == 200, r.text
    assert r.json()["data"] == [] and r.json()["has_more"] is False


@pytest.mark.parametrize("cursor", ["ftevent-99999999999999999999", "ftevent-9223372036854775808",
                                    "ftevent--1", "ftevent-", "42", "ftevent-١"])
def test_event_cursors_out_of_range_or_shape_are_a_400(edge: Edge, cursor: str) -> None:
    events = f"/v1/fine_tuning/jobs/{edge.job_id}/events"
    assert error(edge.client.get(events, params={"after": cursor}), 400)["param"] == "after"
    checkpoints = f"/v1/fine_tuning/jobs/{edge.job_id}/checkpoints"
    assert error(edge.client.get(checkpoints, params={"after": cursor}), 400)["param"] == "after"


def test_the_largest_event_cursor_lists_the_events_before_it(edge: Edge) -> None:
    events = f"/v1/fine_tuning/jobs/{edge.job_id}/events"
    r = edge.client.get(events, params={"after": f"ftevent-{2**63 - 1}"})
    assert r.status_code == 200, r.text
    assert [e["message"] for e in r.json()["data"]] == ["created"]
    # An id of the right shape for a job that does not exist: 404, as OpenAI's.
    error(edge.client.get(f"/v1/fine_tuning/jobs/ftjob-{'0' * 32}/events"), 404)


def test_a_stream_resumed_from_an_out_of_range_id_is_refused_before_it_starts(edge: Edge
                                                                            ) -> None:
    stream = f"/v1/fine_tuning/jobs/{edge.job_id}/events/stream"
    r = edge.client.get(stream, headers={"Last-Event-ID": "ftevent-99999999999999999999"})
    assert error(r, 400)["param"] == "Last-Event-ID"
    r = edge.client.get(stream, headers={"Last-Event-ID": f"ftevent-{2**63 - 1}"})
    assert r.status_code == 200 and "event: end" in r.text


def test_audit_cursors_beyond_a_bigint_are_refused(edge: Edge) -> None:
    error(edge.client.get("/v1/audit", params={"after": 2**63}), 422, "validation_error")
    assert edge.client.get("/v1/audit", params={"after": 2**63 - 1}).status_code == 200


@pytest.mark.parametrize("method,path,kwargs,status", [
    ("GET", "/v1/nothing-here", {}, 404),
    ("DELETE", "/v1/models", {}, 405),
    ("PUT", "/v1/files", {}, 405),
    ("POST", "/v1/feedback", {"content": b"{", "headers": {"Content-Type": "application/json"}},
     422),
    ("POST", "/v1/feedback", {"content": b"[" * 10_000 + b"]" * 10_000,
                              "headers": {"Content-Type": "application/json"}}, 400),
    ("POST", "/v1/files", {"content": b"--x\r\n", "headers": {
        "Content-Type": "multipart/form-data; boundary=x"}}, 422),
    ("POST", "/v1/files", {"content": b"abc", "headers": {
        "Content-Type": "multipart/form-data"}}, 400),
    ("POST", "/v1/files", {"content": b"abc", "headers": {"Content-Type": "text/plain"}}, 422),
])
def test_the_frameworks_own_answers_come_in_our_shape(edge: Edge, method: str, path: str,
                                                      kwargs: dict, status: int) -> None:
    error(edge.client.request(method, path, **kwargs), status)


@pytest.mark.parametrize("path,media_type", [
    ("/v1/feedback", "application/json"),
    ("/v1/files", f"multipart/form-data; boundary={BOUNDARY}"),
])
def test_a_body_shorter_than_its_content_length_is_answered_not_held(
        edge: Edge, path: str, media_type: str) -> None:
    with socket.create_connection(("127.0.0.1", edge.server.port), timeout=30) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {media_type}"
                     f"\r\nContent-Length: 1000\r\n\r\n--{BOUNDARY}\r\n".encode())
        started = time.monotonic()
        answer = b""
        while chunk := sock.recv(65536):  # the server closes the connection after answering
            answer += chunk
    assert time.monotonic() - started < IDLE_SECONDS + 5
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert httpx.Response(408, content=body).json()["error"]["code"] == "request_timeout"
    assert edge.client.get("/health").status_code == 200


@pytest.mark.parametrize("body,problem", [
    (b'{"a": "\\u0000"}', "NUL"),
    (b'{"a": "\\\\\\u0000"}', "NUL"),  # an escaped backslash, then the escape
    (b'{"a": "\\\\u0000"}', None),  # an escaped backslash, then text
    (b'{"a": "\\ud83d\\ude00"}', None),  # a pair: one emoji
    (b'{"a": "\\ud83d"}', "surrogate"),
    (b'{"a": "\\ud83d\\u0041"}', "surrogate"),
    (b'{"a": "\\ud83d", "b": "\\ude00"}', "surrogate"),
    (b'{"a": "\\ude00"}', "surrogate"),
    (b'{"a": "\\u00e9\\"\\u0001"}', None),
])
def test_json_text_problem_reads_escapes_as_json_does(body: bytes, problem: str | None) -> None:
    found = json_text_problem(body)
    assert (found is None) if problem is None else (problem in (found or ""))
    # What the parser makes of the same text agrees.
    text = "".join(json.loads(body).values())
    assert ("\x00" in text) == (problem == "NUL")
    if problem == "surrogate":
        with pytest.raises(UnicodeEncodeError):
            text.encode("utf-8")
    else:
        text.encode("utf-8")


def test_an_unexpected_failure_is_a_500_in_our_shape(edge: Edge) -> None:
    # The fixture's job was written straight into the database without the `method` its
    # spec always has: reading it fails, as any bug would.
    r = edge.client.get(f"/v1/fine_tuning/jobs/{edge.job_id}")
    assert r.status_code == 500
    assert problems(r) == ["status 500"]
    assert r.json()["error"]["type"] == "server_error"
    assert r.json()["error"]["code"] == "internal"
    assert edge.client.get("/health").status_code == 200
