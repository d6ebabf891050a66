"""An upload onto a full disk, for real: a server whose data folder (and, in the second case,
temporary folder) is a 4 MiB tmpfs gets an 8 MiB upload. It answers 507 `disk_full` in our
error shape, keeps nothing of the upload, and goes on answering and taking uploads that fit.
Needs the right to mount a tmpfs (root); skipped where it is missing."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.hostile_requests import orphans, problems
from tests.server import TEST_ENV, Server

pytestmark = pytest.mark.slow

JSONL = b'{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n'


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("spooled_there", [False, True],
                         ids=["data-folder-full", "temporary-folder-full"])
def test_an_upload_larger_than_the_free_space_is_a_507_and_leaves_nothing(
        small_disk: Path, tmp_path: Path, spooled_there: bool) -> None:
    home = small_disk / "data"
    env = dict(TEST_ENV)
    if spooled_there:  # the multipart parser spools the upload here before any route runs
        (small_disk / "tmp").mkdir()
        env["TMPDIR"] = str(small_disk / "tmp")
    server = Server(home, args=("--no-worker",), env=env)
    try:
        big = tmp_path / "big.jsonl"
        big.write_bytes(JSONL * (8 * 1024 * 1024 // len(JSONL)))
        r = server.client.post("/v1/files", files={"file": ("big.jsonl", big.read_bytes())},
                               data={"purpose": "fine-tune"})
        assert r.status_code == 507, r.text
        assert problems(r) == ["status 507"]  # a 5xx, but in our shape
        error = r.json()["error"]
        assert error["code"] == "disk_full" and error["type"] == "server_error"
        assert "disk is full" in error["message"]
        assert orphans(home, server.client) == []
        assert list((home / "files").iterdir()) == []
        if spooled_there:
            assert list((small_disk / "tmp").iterdir()) == []
        # The service goes on: it answers, and an upload that fits is taken.
        small = server.client.post("/v1/files", files={"file": ("small.jsonl", JSONL)},
                                   data={"purpose": "fine-tune"})
        assert small.status_code == 200, small.text
        assert [f["filename"] for f in server.client.get("/v1/files").json()["data"]] == [
            "small.jsonl"]
    finally:
        server.stop()
