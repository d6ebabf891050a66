"""Hostile HTTP requests for a real tuneforge server, as hypothesis strategies.

Every operation of the server's OpenAPI document, called with what a careless or hostile
client sends: ids and cursors with NUL, `..`, huge numbers and odd unicode; query values of
the wrong type or out of range; `Last-Event-ID` headers; JSON bodies nested 10,000 deep, with
4,000-digit integers, lone surrogates, NULs and wrong types; multipart uploads with odd file
names (raw NUL, quotes, 300 characters, paths). tests/api/test_fuzz_requests.py and
bench/fuzz_requests.py send them and judge the answers with `problems`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from hypothesis import strategies as st

BOUNDARY = "tuneforge-fuzz-boundary"
# Ids, cursors and query values a client may send by mistake or on purpose.
HOSTILE_TEXTS = [
    "", " ", "\x00", "a\x00b", "%00", "\x01\x1f", "..", "../../etc/passwd", "..%2f..%2f",
    "/etc/passwd", "C:\\Windows", "ftevent-99999999999999999999", "ftevent-9223372036854775807",
    "ftevent-9223372036854775808", "ftevent--1", "ftevent-", "ftevent-1e3",
    "99999999999999999999", "9223372036854775808", "-9223372036854775809", "-1", "0",
    "1e400", "nan", "inf", "0x10", "null", "true", "[]", "{}", "%", "%zz", "\\", "/", "'",
    "\"", "' OR 1=1 --", "file-" + "0" * 32, "ftjob-" + "f" * 32, "file-" + "a" * 33,
    "x" * 3000, "\u202e\u200b", "\U0001f600", "é" * 50, "\ufeff", "\uffff",
]
# Cursors (`after`): out of range, out of shape, and of the right shape.
CURSORS = [
    "ftevent-99999999999999999999", "ftevent-9223372036854775808", "ftevent-9223372036854775807",
    "ftevent-2147483648", "ftevent-0", "ftevent-1", "ftevent--1", "ftevent-", "1", "-1",
    "file-" + "0" * 32, "ftjob-" + "f" * 32, "x-" + "0" * 31, "%00", "\x00",
]
HOSTILE_HEADERS = [b"ftevent-1", b"ftevent-99999999999999999999", b"ftevent-9223372036854775808",
                   b"garbage", b"", b"ftevent-" + b"9" * 300, b"-1", "ftevent-\u00e9".encode()]
# Bodies no JSON encoder writes.
RAW_BODIES = [
    b"[" * 10_000 + b"]" * 10_000,
    b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
    b"1" * 5_000,
    b'{"model": ' + b"9" * 5_000 + b"}",
    b'"\\ud800"',
    b'{"model": "\\udfff\\ud800"}',
    b'{"model": "a\\u0000b"}',
    b'{"input": ["\\u0000"], "model": "x"}',
    b'{"model": "\\\\u0000"}',
    b"\xff\xfe{\x00}",
    b"\xed\xa0\x80",
    b"",
    b"{",
    b"null",
    b"NaN",
    b'{"a": 1e999999}',
    b"{" + b'"k": 1,' * 20_000 + b'"k": 2}',
]
# What an upload holds: enough for a report, none of it hostile to the readers (that is
# tests/datasets/'s part).
UPLOAD_BODIES = [
    b'{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n',
    b"sentence1,sentence2,score\na,b,0.5\nc,d,1.0\n",
    b"GGUF\x03\x00\x00\x00",
    b"",
]
FILE_NAMES = [
    b"data.jsonl", b"a\x00b.jsonl", b"\x00", b"../../evil.jsonl", b"C:\\data\\x.csv",
    b"a" * 300 + b".jsonl", b"a" * 300, b".jsonl", b"x\r\ny.csv", b"\xff\xfe.jsonl",
    "\u202egpj.jsonl".encode(), b"\x7f\x1b.csv", b"", b"  ", b"a\"b.jsonl",
]


@dataclass
class Operation:
    """One method at one path of the OpenAPI document, and what it takes."""

    method: str
    path: str
    path_params: list[str]
    query: list[str]
    body_fields: list[str] = field(default_factory=list)
    json_body: bool = False
    multipart: bool = False


@dataclass
class Request:
    method: str
    url: str
    headers: dict[str, str | bytes]
    content: bytes | None

    def send(self, client: httpx.Client) -> httpx.Response | None:
        """The answer, or None when the server dropped the connection without one. A pooled
        connection that the server had closed after its previous answer is tried again on a
        new one, as any client does."""
        for _ in range(2):
            try:
                return client.request(
                    self.method, self.url, headers=self.headers, content=self.content
                )
            except httpx.TransportError:
                continue
        return None


def operations(document: dict[str, Any]) -> list[Operation]:
    """Every operation of the document, the event streams excepted (they wait for events)."""
    ops = []
    for path, methods in document["paths"].items():
        for method, spec in methods.items():
            if path.endswith("/stream"):
                continue
            params = spec.get("parameters", [])
            content = spec.get("requestBody", {}).get("content", {})
            ops.append(
                Operation(
                    method=method.upper(),
                    path=path,
                    path_params=[p["name"] for p in params if p["in"] == "path"],
                    query=[p["name"] for p in params if p["in"] == "query"],
                    body_fields=_fields(document, content.get("application/json", {})),
                    json_body="application/json" in content,
                    multipart="multipart/form-data" in content,
                )
            )
    return ops


def _fields(document: dict[str, Any], media: dict[str, Any]) -> list[str]:
    """The property names of a body schema (and of the members of its unions)."""
    names: set[str] = set()
    todo = [media.get("schema", {})]
    while todo:
        schema = todo.pop()
        if "$ref" in schema:
            schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
        names.update(schema.get("properties", {}))
        for key in ("anyOf", "oneOf", "allOf"):
            todo.extend(schema.get(key, []))
    return sorted(names)


def vocabulary(document: dict[str, Any]) -> list[str]:
    """Every property name of every schema: keys for nested objects in bodies."""
    names = set()
    for schema in document["components"]["schemas"].values():
        names.update(schema.get("properties", {}))
    return sorted(names)


def texts() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(HOSTILE_TEXTS), st.text(max_size=30))


def json_values(keys: list[str]) -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(min_value=2**63 - 2, max_value=2**70),
        st.floats(),
        texts(),
        st.sampled_from(["\ud800", "\udc00x", "a\x00", "\U0001f600"]),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(st.sampled_from(keys or ["x"]), inner, max_size=4),
        ),
        max_leaves=12,
    )


def json_body(op: Operation, keys: list[str]) -> st.SearchStrategy[bytes]:
    fields = op.body_fields or keys
    objects = st.dictionaries(st.sampled_from(fields), json_values(keys), max_size=6)
    encoded = st.one_of(objects, json_values(keys)).map(
        lambda value: json.dumps(value, ensure_ascii=True, allow_nan=True).encode()
    )
    return st.one_of(encoded, encoded, st.sampled_from(RAW_BODIES))


def multipart(op: Operation) -> st.SearchStrategy[bytes]:
    part = st.tuples(
        st.one_of(st.sampled_from(FILE_NAMES), st.text(max_size=20).map(_utf8)),
        st.sampled_from(UPLOAD_BODIES),
        st.one_of(st.none(), st.sampled_from(["fine-tune", "model", "batch", "a\x00"]), texts()),
    )
    return part.map(lambda p: multipart_body(*p))


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def multipart_body(filename: bytes, content: bytes, purpose: str | None) -> bytes:
    """A multipart/form-data body written by hand, so that the file name's bytes go as they
    are (clients escape NUL and quotes)."""
    parts = [
        b"--" + BOUNDARY.encode() + b"\r\n"
        b'Content-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + content + b"\r\n"
    ]
    if purpose is not None:
        parts.append(
            b"--" + BOUNDARY.encode() + b"\r\n"
            b'Content-Disposition: form-data; name="purpose"\r\n\r\n'
            + _utf8(purpose) + b"\r\n"
        )
    return b"".join(parts) + b"--" + BOUNDARY.encode() + b"--\r\n"


def requests(
    ops: list[Operation], keys: list[str], known_ids: list[str]
) -> st.SearchStrategy[Request]:
    """A hostile request to one of `ops`; `known_ids` (real files, jobs) reach deeper code."""
    return st.sampled_from(ops).flatmap(lambda op: _request(op, keys, known_ids))


@st.composite
def _request(draw: Any, op: Operation, keys: list[str], known_ids: list[str]) -> Request:
    path = op.path
    for name in op.path_params:
        known = st.sampled_from(known_ids or ["x"])
        value = draw(st.one_of(known, known, texts()))
        # As sent, unquoted: `%00`, `%zz`, `..%2f` (printable ASCII only, as URLs go).
        raw = draw(st.booleans()) and "%" in value and value.isascii() and value.isprintable()
        path = path.replace("{" + name + "}", value if raw else quote(value, safe=""))
    query = []
    for name in op.query:
        if draw(st.booleans()):
            values = st.one_of(st.sampled_from(CURSORS), texts()) if name == "after" else texts()
            query.append(f"{quote(name)}={quote(draw(values), safe='')}")
    if draw(st.integers(0, 9)) == 0:
        query.append(f"{draw(st.sampled_from(['after', 'limit', 'x%00']))}=%00")
    url = path + ("?" + "&".join(query) if query else "")
    headers: dict[str, str | bytes] = {}
    if draw(st.integers(0, 4)) == 0:
        headers["Last-Event-ID"] = draw(st.sampled_from(HOSTILE_HEADERS))
    content = None
    if op.multipart:
        content = draw(multipart(op))
        headers["Content-Type"] = f"multipart/form-data; boundary={BOUNDARY}"
    elif op.json_body or op.method in ("POST", "PUT", "PATCH") and draw(st.booleans()):
        content = draw(json_body(op, keys))
        headers["Content-Type"] = draw(
            st.sampled_from(["application/json", "application/json", "text/plain",
                             "application/json; charset=latin-1"])
        )
    return Request(op.method, url, headers, content)


def problems(response: httpx.Response | None) -> list[str]:
    """What is wrong with an answer: none at all, a 5xx, or an error not in our shape."""
    if response is None:
        return ["the connection dropped without an answer"]
    found = []
    if response.status_code >= 500:
        found.append(f"status {response.status_code}")
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
            assert isinstance(error, dict)
            assert isinstance(error["message"], str) and isinstance(error["code"], str)
            assert isinstance(error["type"], str) and "param" in error
        except (ValueError, KeyError, TypeError, AssertionError):
            found.append(f"status {response.status_code} not in our error shape: "
                         f"{response.text[:200]!r}")
    return found


def cancelled_job(client: httpx.Client, file_id: str, model: str) -> str:
    """A real embedding job on `file_id`, cancelled while it waits (the fuzzed servers run no
    worker): its events and checkpoints can be read, and their cursors tried."""
    job = client.post("/v1/fine_tuning/jobs", json={
        "model": model, "training_file": file_id, "method": {"type": "embedding"}})
    assert job.status_code == 200, job.text
    cancelled = client.post(f"/v1/fine_tuning/jobs/{job.json()['id']}/cancel").json()
    assert cancelled["status"] == "cancelled", cancelled
    return str(cancelled["id"])


def orphans(home: Path, client: httpx.Client) -> list[str]:
    """Files in the data folder's files/ that are neither a listed file nor its row index
    (`file-….idx`); parts and unlisted files included."""
    listed = {f["id"] for f in client.get("/v1/files", params={"limit": 1000}).json()["data"]}
    kept = listed | {f"{file_id}.idx" for file_id in listed}
    files = home / "files"
    return sorted(p.name for p in files.iterdir() if p.name not in kept) if files.exists() \
        else []
