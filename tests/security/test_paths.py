"""Traversal attempts against every route that takes an id or a file name: `..`, encoded and
double-encoded, absolute paths and NUL bytes all get 4xx, and nothing outside the data
folder is ever read."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

SECRET = "tuneforge-test-secret-7f3a9c"

ATTACKS = [
    "..",
    "../../secret.txt",
    "..%2f..%2fsecret.txt",
    "%2e%2e%2f%2e%2e%2fsecret.txt",
    "%2e%2e/%2e%2e/secret.txt",
    "%252e%252e%252f%252e%252e%252fsecret.txt",
    "..%252f..%252fsecret.txt",
    "%2Fetc%2Fpasswd",
    "%2F{home}%2F..%2Fsecret.txt",
    "file-abc%00",
    "file-abc%00.jsonl",
    "%00",
    "..%5c..%5csecret.txt",
    "....//....//secret.txt",
]

ROUTES = [
    "/v1/files/{x}",
    "/v1/files/{x}/content",
    "/v1/datasets/{x}",
    "/v1/models/{x}",
    "/v1/fine_tuning/jobs/{x}",
    "/v1/fine_tuning/jobs/{x}/checkpoints",
    "/v1/fine_tuning/jobs/{x}/events",
    "/v1/exports/{x}",
    "/v1/exports/{x}/content",
    "/v1/evaluations/{x}",
    "/v1/registered_models/{x}",
    "/v1/registered_models/{x}/versions",
    "/training/{x}/status",
    "/evaluation/{x}",
]


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    """A secret beside the data folder, which no request may reach."""
    (tmp_path / "secret.txt").write_text(SECRET)
    return tmp_path


def assert_refused(r, what: str) -> None:
    assert 400 <= r.status_code < 500, (what, r.status_code, r.text[:200])
    assert SECRET not in r.text and "root:" not in r.text, what


@pytest.mark.parametrize("route", ROUTES)
def test_ids_never_become_paths(client: TestClient, planted: Path, route: str) -> None:
    prefix = route.split("{x}")[0]
    for attack in ATTACKS:
        url = route.replace("{x}", attack.replace("{home}", str(planted).strip("/")))
        r = client.get(url)
        if not r.request.url.path.startswith(prefix):
            continue  # the client removed the dot segments: no traversal reached the server
        assert_refused(r, url)
    for attack in ATTACKS[:6]:
        url = route.replace("{x}", attack)
        if route == "/v1/files/{x}":
            assert_refused(client.delete(url), "DELETE " + url)


def _succeeded_export(client: TestClient, planted: Path, files: list[str]) -> str:
    """An export as a worker leaves it: a succeeded job row and its folder of files."""
    store = client.app.state.store
    export_id = "export-" + "ab" * 16
    store.insert_job({"id": export_id, "kind": "export", "model": "m", "status": "queued",
                      "spec": {"model": "m", "format": "gguf"}, "created_at": time.time(),
                      "device": "cpu", "max_attempts": 1}, "queued")
    store.update_job_fields(export_id, status="succeeded", result={
        "primary_file": files[0],
        "files": [{"name": n, "sha256": "0" * 64, "bytes": 1} for n in files],
    })
    folder = planted / "data" / "exports" / export_id
    folder.mkdir(parents=True)
    (folder / "model.gguf").write_bytes(b"GGUF")
    return export_id


def test_export_file_parameter_takes_only_listed_names(client: TestClient, planted: Path) -> None:
    export_id = _succeeded_export(client, planted, ["model.gguf"])
    ok = client.get(f"/v1/exports/{export_id}/content", params={"file": "model.gguf"})
    assert ok.status_code == 200 and ok.content == b"GGUF"
    for name in ("../../../secret.txt", "..", "%2e%2e%2f%2e%2e%2fsecret.txt",
                 "%252e%252e%252fsecret.txt", str(planted / "secret.txt"), "/etc/passwd",
                 "model.gguf\0", "\0", "model.gguf/../../../../secret.txt"):
        assert_refused(client.get(f"/v1/exports/{export_id}/content", params={"file": name}),
                       name)


def test_a_tampered_stored_name_cannot_leave_the_data_folder(
    client: TestClient, planted: Path
) -> None:
    """Defence in depth: even a stored file list naming `../..` (a corrupted or forged row)
    is resolved and refused, for single files and for the tar of all files."""
    export_id = _succeeded_export(client, planted, ["../../../secret.txt", "model.gguf"])
    r = client.get(f"/v1/exports/{export_id}/content",
                   params={"file": "../../../secret.txt"})
    assert_refused(r, "stored traversal")
    r = client.get(f"/v1/exports/{export_id}/content")
    assert_refused(r, "primary file traversal")
