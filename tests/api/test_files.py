"""Files and datasets over HTTP against the real server."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx

from ..conftest import Server


def test_upload_list_get_content_delete(server: Server, stsb_slice: Path) -> None:
    uploaded = server.upload(stsb_slice)
    assert uploaded["object"] == "file" and uploaded["id"].startswith("file-")
    assert uploaded["status"] == "processed" and uploaded["purpose"] == "fine-tune"
    assert uploaded["bytes"] == stsb_slice.stat().st_size
    assert uploaded["sha256"] == hashlib.sha256(stsb_slice.read_bytes()).hexdigest()

    listed = server.client.get("/v1/files").json()
    assert uploaded["id"] in [f["id"] for f in listed["data"]]
    assert server.client.get(f"/v1/files/{uploaded['id']}").json() == uploaded
    content = server.client.get(f"/v1/files/{uploaded['id']}/content")
    assert content.content == stsb_slice.read_bytes()

    dataset = server.client.get(f"/v1/datasets/{uploaded['id']}").json()
    assert dataset["valid"] and dataset["layout"] == "scored_pair"
    stats = dataset["statistics"]
    assert stats["rows"] == len(stsb_slice.read_bytes().strip().split(b"\n"))
    tokens = stats["columns"]["sentence1"]["tokens"]
    assert 0 < tokens["min"] <= tokens["median"] <= tokens["p95"] <= tokens["max"]

    deleted = server.client.delete(f"/v1/files/{uploaded['id']}").json()
    assert deleted == {"id": uploaded["id"], "object": "file", "deleted": True}
    missing = server.client.get(f"/v1/files/{uploaded['id']}")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "file_not_found"


def test_broken_file_is_kept_with_its_report(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text('{"question": "q", "positive": "p", "negative": "n"}\n'
                    '{"question": "q", "positive": "p"\n'
                    '{"question": "q", "positive": "", "negative": "n"}\n')
    uploaded = server.upload(path)
    assert uploaded["status"] == "error"
    report = server.client.get(f"/v1/datasets/{uploaded['id']}").json()
    assert [(p["line"], p["code"]) for p in report["problems"]] == [
        (2, "invalid_json"), (3, "empty_value")]

    job = server.client.post("/v1/fine_tuning/jobs", json={
        "model": "sentence-transformers/all-MiniLM-L6-v2", "training_file": uploaded["id"]})
    assert job.status_code == 400
    error = job.json()["error"]
    assert error["code"] == "invalid_dataset" and error["param"] == "training_file"
    assert [p["line"] for p in error["details"]["problems"]] == [2, 3]
    assert server.client.get("/v1/fine_tuning/jobs").json()["data"] == []


def test_upload_over_the_limit_is_refused_while_streaming(tmp_path: Path, offline_hub) -> None:
    home = tmp_path / "tuneforge-data"
    home.mkdir()
    import os

    os.environ["TUNEFORGE_MAX_UPLOAD_BYTES"] = "4096"
    try:
        small = Server(home)
    finally:
        del os.environ["TUNEFORGE_MAX_UPLOAD_BYTES"]
    try:
        big = b'{"anchor": "a", "positive": "b"}\n' * 2000

        def chunks():
            for i in range(0, len(big), 1024):
                yield big[i:i + 1024]

        boundary = "tfboundary"
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                f"filename=\"big.jsonl\"\r\nContent-Type: application/octet-stream\r\n\r\n")
        tail = f"\r\n--{boundary}--\r\n"

        def body():
            yield head.encode()
            yield from chunks()
            yield tail.encode()

        # Streamed without Content-Length: the limit must hold while reading.
        r = httpx.post(f"{small.url}/v1/files", content=body(),
                       headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "file_too_large"
        # Declared too large: refused before the body is read.
        r = small.client.post("/v1/files", files={"file": ("big.jsonl", big)})
        assert r.status_code == 413
        assert small.client.get("/v1/files").json()["data"] == []
        assert list((home / "files").iterdir()) == []
    finally:
        small.stop()


def test_bad_purpose_and_unknown_ids(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "ok.jsonl"
    path.write_text(json.dumps({"anchor": "a", "positive": "b"}) + "\n"
                    + json.dumps({"anchor": "c", "positive": "d"}) + "\n")
    with path.open("rb") as f:
        r = server.client.post("/v1/files", files={"file": ("ok.jsonl", f)},
                               data={"purpose": "assistants"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "purpose"
    for bad in ("file-../../etc/passwd", "..%2F..%2Fetc", "file-123"):
        r = server.client.get(f"/v1/files/{bad}/content")
        assert r.status_code == 404, bad
