"""Who may do what: the Host allowlist, API keys and their scopes, the audit log, rate limits
and the bound on waiting jobs, on the real app (in-process, real SQLite, no worker)."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tuneforge.security.keys import create_api_key

PAIRS = b"".join(b'{"anchor": "question %d", "positive": "answer %d"}\n' % (i, i)
                 for i in range(8))


def upload(client: TestClient, headers: dict[str, str] | None = None) -> str:
    r = client.post("/v1/files", files={"file": ("pairs.jsonl", PAIRS)},
                    data={"purpose": "fine-tune"}, headers=headers)
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def job_body(model_id: str, file_id: str) -> dict:
    return {"model": model_id, "training_file": file_id,
            "method": {"type": "embedding", "embedding": {"loss": "mnrl"}}}


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example",
                                  "attacker.test"])
def test_rebinding_host_is_refused(client: TestClient, host: str) -> None:
    for path in ("/v1/models", "/health", "/docs"):
        r = client.get(path, headers={"Host": host})
        assert r.status_code == 400, (path, r.text)
        assert r.json()["error"]["code"] == "host_not_allowed"
    r = client.post("/v1/files", files={"file": ("pairs.jsonl", PAIRS)}, headers={"Host": host})
    assert r.status_code == 400
    assert client.get("/v1/files").json()["data"] == []


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost", "localhost:1234", "[::1]:8000",
                                  "LOCALHOST"])
def test_local_hosts_are_accepted(client: TestClient, host: str) -> None:
    assert client.get("/v1/models", headers={"Host": host}).status_code == 200


def test_configured_hosts_are_accepted(make_client) -> None:
    client = make_client(allowed_hosts=["tuneforge.internal"])
    assert client.get("/v1/models", headers={"Host": "tuneforge.internal:443"}).status_code == 200
    assert client.get("/v1/models", headers={"Host": "evil.example"}).status_code == 400


def test_open_loopback_api_audits_writes_as_local(client: TestClient) -> None:
    file_id = upload(client)
    assert client.get("/v1/models").status_code == 200  # reads are not audited
    client.delete(f"/v1/files/{file_id}")
    client.delete("/v1/files/file-0000")  # a refused write is audited too
    entries = client.get("/v1/audit").json()["data"]
    assert [(e["actor"], e["method"], e["path"], e["status"], e["resource_id"])
            for e in entries] == [
        ("local", "DELETE", "/v1/files/file-0000", 404, None),
        ("local", "DELETE", f"/v1/files/{file_id}", 200, file_id),
        ("local", "POST", "/v1/files", 200, file_id),
    ]
    assert all(e["client"] for e in entries)


def test_keys_scopes_and_audit(client: TestClient, tmp_path: Path) -> None:
    store = client.app.state.store
    admin_row, admin = create_api_key(store, "ops", "admin")
    read_row, read = create_api_key(store, "dashboards", "read")
    assert admin.startswith("tf-") and len(admin) > 40
    # Only a hash is kept.
    with sqlite3.connect(tmp_path / "data" / "tuneforge.db") as db:
        stored = db.execute("SELECT * FROM api_keys").fetchall()
    assert admin not in repr(stored) and read not in repr(stored)
    assert hashlib.sha256(admin.encode()).hexdigest() in repr(stored)

    r = client.get("/v1/models")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "missing_api_key"
    assert r.headers["www-authenticate"] == "Bearer"
    r = client.get("/v1/models", headers=bearer("tf-not-a-key"))
    assert (r.status_code, r.json()["error"]["code"]) == (401, "invalid_api_key")
    r = client.get("/v1/models", headers={"Authorization": f"Basic {admin}"})
    assert r.status_code == 401
    # The docs and /health stay public.
    assert client.get("/health").status_code == 200
    assert client.get("/openapi.json").status_code == 200

    assert client.get("/v1/models", headers=bearer(read)).status_code == 200
    r = client.post("/v1/files", files={"file": ("pairs.jsonl", PAIRS)}, headers=bearer(read))
    assert (r.status_code, r.json()["error"]["code"]) == (403, "insufficient_scope")
    assert client.get("/v1/audit", headers=bearer(read)).status_code == 403
    # The seed-000 routes are API routes too.
    assert client.post("/training/train", json={}).status_code == 401

    file_id = upload(client, bearer(admin))
    assert client.get("/v1/files", headers=bearer(read)).json()["data"][0]["id"] == file_id
    entries = client.get("/v1/audit", headers=bearer(admin)).json()["data"]
    assert [(e["actor"], e["method"], e["path"], e["resource_id"]) for e in entries] == [
        (admin_row["id"], "POST", "/v1/files", file_id)
    ]

    assert store.revoke_api_key(read_row["id"])
    deadline = time.monotonic() + 15
    while client.get("/v1/models", headers=bearer(read)).status_code != 401:
        assert time.monotonic() < deadline, "a revoked key still works"
        time.sleep(0.2)
    assert client.get("/v1/models", headers=bearer(admin)).status_code == 200


def test_audit_is_paginated_and_capped(client: TestClient) -> None:
    for _ in range(5):
        client.delete("/v1/files/file-0000")
    first = client.get("/v1/audit", params={"limit": 2}).json()
    assert len(first["data"]) == 2 and first["has_more"]
    second = client.get("/v1/audit", params={"limit": 2, "after": first["last_id"]}).json()
    assert second["data"][0]["id"] < first["data"][-1]["id"]
    seen = {e["id"] for e in first["data"]} | {e["id"] for e in second["data"]}
    assert len(seen) == 4
    assert client.get("/v1/audit", params={"limit": 1001}).status_code == 422


def test_expensive_endpoints_are_rate_limited(make_client) -> None:
    client = make_client(rate_limit_per_minute=1, rate_limit_burst=3)
    # The bucket is taken before the body is looked at: invalid requests count too.
    for _ in range(3):
        assert client.post("/v1/fine_tuning/jobs", json={}).status_code == 422
    r = client.post("/v1/fine_tuning/jobs", json={})
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "rate_limited"
    assert int(r.headers["retry-after"]) >= 1
    # Every other way to queue work or run a model shares the bucket.
    for path in ("/v1/embeddings", "/v1/studies", "/v1/synthetic-data", "/v1/feedback/retrain"):
        assert client.post(path, json={}).status_code == 429, path
    # Reads and cheap writes are not limited.
    assert client.get("/v1/fine_tuning/jobs").status_code == 200
    assert client.delete("/v1/files/file-0000").status_code == 404


def test_waiting_jobs_are_bounded_per_key(make_client, model_id: str) -> None:
    client = make_client(max_queued_jobs_per_key=2)
    store = client.app.state.store
    _, first_key = create_api_key(store, "team-a", "admin")
    _, second_key = create_api_key(store, "team-b", "admin")
    file_id = upload(client, bearer(first_key))
    jobs = []
    for _ in range(2):
        r = client.post("/v1/fine_tuning/jobs", json=job_body(model_id, file_id),
                        headers=bearer(first_key))
        assert r.status_code == 200, r.text
        jobs.append(r.json()["id"])
    r = client.post("/v1/fine_tuning/jobs", json=job_body(model_id, file_id),
                    headers=bearer(first_key))
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "queue_full"
    # Another key has its own bound.
    r = client.post("/v1/fine_tuning/jobs", json=job_body(model_id, file_id),
                    headers=bearer(second_key))
    assert r.status_code == 200, r.text
    # A cancelled job no longer waits: there is room again.
    client.post(f"/v1/fine_tuning/jobs/{jobs[0]}/cancel", headers=bearer(first_key))
    r = client.post("/v1/fine_tuning/jobs", json=job_body(model_id, file_id),
                    headers=bearer(first_key))
    assert r.status_code == 200, r.text


def test_every_limit_parameter_is_capped(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    capped = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if parameter["name"] != "limit":
                    continue
                assert parameter["schema"].get("maximum", 10**9) <= 1000, (method, path)
                capped.append((method, path))
                url = path.replace("{job_id}", "ftjob-0").replace("{", "").replace("}", "")
                r = client.request(method.upper(), url, params={"limit": 1001})
                assert r.status_code == 422, (path, r.text)
    assert ("get", "/v1/files") in capped and ("get", "/v1/audit") in capped
