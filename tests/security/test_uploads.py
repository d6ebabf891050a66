"""Archives and compressed files are refused by their bytes, whatever their name; nothing of
them is stored, and nothing is ever unpacked."""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient


def _zip_traversal() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("../evil", "pwned\n")
        archive.writestr("../../tmp/evil.jsonl", '{"anchor": "a", "positive": "b"}\n')
    return buffer.getvalue()


def _zip_symlink() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        link = zipfile.ZipInfo("train.jsonl")
        link.external_attr = (0o120777 << 16)  # a symlink, pointing at the target below
        archive.writestr(link, "/etc/passwd")
    return buffer.getvalue()


def _zip_bomb() -> bytes:
    # 50 MB of zeros in a few tens of kB: a ratio of about 1000:1.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("train.jsonl", b"\0" * (50 * 1024 * 1024))
    return buffer.getvalue()


def _tar_with_link() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("train.jsonl")
        info.type = tarfile.SYMTYPE
        info.linkname = "../../../etc/passwd"
        archive.addfile(info)
        data = b'{"anchor": "a", "positive": "b"}\n'
        member = tarfile.TarInfo("../evil")
        member.size = len(data)
        archive.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


ARCHIVES = {
    "zip-traversal": ("train.jsonl", _zip_traversal, "zip"),
    "zip-symlink": ("data.zip", _zip_symlink, "zip"),
    "zip-bomb": ("train.csv", _zip_bomb, "zip"),
    "tar-link": ("train.tar", _tar_with_link, "tar"),
    "gzip": ("train.jsonl.gz", lambda: gzip.compress(b'{"anchor": "a", "positive": "b"}\n' * 9),
             "gzip"),
}


@pytest.mark.parametrize("case", sorted(ARCHIVES))
def test_archives_are_refused_and_nothing_is_kept(client: TestClient, tmp_path: Path,
                                                  case: str) -> None:
    name, build, kind = ARCHIVES[case]
    data = build()
    r = client.post("/v1/files", files={"file": (name, data)}, data={"purpose": "fine-tune"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "unsupported_file"
    assert f"{kind} archive" in error["message"]
    assert client.get("/v1/files").json()["data"] == []
    files_dir = tmp_path / "data" / "files"
    assert list(files_dir.iterdir()) == []
    # Nothing was unpacked anywhere near the data folder.
    assert not list(tmp_path.rglob("evil*"))


def test_plain_data_still_uploads(client: TestClient) -> None:
    rows = b"".join(
        b'{"anchor": "question %d", "positive": "answer %d"}\n' % (i, i) for i in range(4)
    )
    r = client.post("/v1/files", files={"file": ("pairs.jsonl", rows)},
                    data={"purpose": "fine-tune"})
    assert r.status_code == 200, r.text
    assert r.json()["bytes"] == len(rows)


def test_file_name_is_never_a_path(client: TestClient, tmp_path: Path) -> None:
    rows = b'{"anchor": "a", "positive": "b"}\n{"anchor": "c", "positive": "d"}\n'
    r = client.post("/v1/files", files={"file": ("../../../outside.jsonl", rows)},
                    data={"purpose": "fine-tune"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["filename"] == "outside.jsonl"
    assert not list(tmp_path.rglob("outside.jsonl"))
    # The stored file and its row index, both named by the id.
    stored = sorted(p.name for p in (tmp_path / "data" / "files").iterdir())
    assert stored == [body["id"], f"{body['id']}.idx"]


def test_upload_over_the_limit_gets_413_while_streaming(make_client) -> None:
    client = make_client(max_upload_bytes=1000)
    # Declared too large: refused before a byte of the body is read.
    r = client.post("/v1/files", content=b"x" * 10, headers={
        "content-type": "multipart/form-data; boundary=b", "content-length": str(10**9)})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "file_too_large"
    big = b'{"anchor": "a", "positive": "b"}\n' * 2000
    r = client.post("/v1/files", files={"file": ("big.jsonl", big)},
                    data={"purpose": "fine-tune"})
    assert r.status_code == 413
    assert client.get("/v1/files").json()["data"] == []
