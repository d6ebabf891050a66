"""A full disk is a clear fault (issue 22): what each library raises when it runs out of
space is recorded as `disk_full`, and a job that fills its disk fails once with it, not
retried. On real small file systems: a tmpfs of a few MiB (skipped where mount is refused)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fault_campaign import pairs_file
from tests.server import TEST_ENV, Server
from tuneforge.config import Settings
from tuneforge.jobs.runner import _classify, is_disk_full


def _raised(write: Callable[[], object]) -> Exception:
    with pytest.raises(Exception) as caught:
        write()
    return caught.value


def test_every_library_out_of_space_error_is_disk_full(
    small_disk: Callable[[Path, int], Path], tmp_path: Path
) -> None:
    import safetensors.torch
    import torch

    disk = small_disk(tmp_path / "disk", 1)
    big = torch.zeros(1024 * 1024)  # 4 MiB
    errors = {
        "open().write": _raised(lambda: (disk / "raw").write_bytes(b"x" * 4 * 2**20)),
        "safetensors": _raised(lambda: safetensors.torch.save_file({"w": big}, disk / "w.st")),
        "torch.save": _raised(lambda: torch.save({"w": big}, disk / "w.pt")),
        "sqlite": _raised(lambda: _fill_sqlite(disk / "db.sqlite")),
    }
    settings = Settings(home=disk)
    for library, exc in errors.items():
        assert is_disk_full(exc, [disk]), (library, repr(exc))
        error = _classify(exc, settings, disk)
        assert error.code == "disk_full", library
        assert "MiB free" in error.message and str(tmp_path) not in error.message
    assert not is_disk_full(RuntimeError("shape mismatch"), [disk])
    # A short write of torch's on a disk with room is something else.
    assert not is_disk_full(errors["torch.save"], [tmp_path])
    assert _classify(RuntimeError("shape mismatch"), settings, disk).code == "internal"


def _fill_sqlite(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (b BLOB)")
        for _ in range(64):
            conn.execute("INSERT INTO t VALUES (?)", (b"x" * 2**17,))


@pytest.mark.slow
def test_a_job_that_fills_its_disk_fails_with_disk_full_once(
    small_disk: Callable[[Path, int], Path], tmp_path: Path, model_id: str
) -> None:
    home = tmp_path / "tuneforge-data"
    # The jobs' folder (checkpoints) on a disk too small for one MiniLM checkpoint (~90 MB).
    small_disk(home / "jobs", 8)
    # The estimate would refuse the job at creation (issue 24); what is shown here is what a
    # disk that fills up anyway does to a run.
    server = Server(home, env={**TEST_ENV, "TUNEFORGE_CHECK_FIT": "false"})
    try:
        file_id = server.upload(pairs_file(tmp_path, rows=16))["id"]
        job = server.client.post(
            "/v1/fine_tuning/jobs",
            json={
                "model": model_id,
                "training_file": file_id,
                "max_attempts": 3,
                "method": {
                    "type": "embedding",
                    "embedding": {
                        "loss": "mnrl",
                        "hyperparameters": {"n_epochs": 1, "batch_size": 8},
                    },
                },
            },
        )
        assert job.status_code == 200, job.text
        done = server.wait_for(job.json()["id"], timeout=240)
        assert done["status"] == "failed"
        assert done["error"]["code"] == "disk_full", done["error"]
        message = done["error"]["message"]
        assert "No space left on device" in message or "unexpected pos" in message, message
        assert f"tuneforge-data/jobs/{done['id']}/ has " in message, message
        events = server.client.get(
            f"/v1/fine_tuning/jobs/{done['id']}/events", params={"limit": 1000}
        ).json()["data"]
        assert not [e for e in events if "Retrying" in e["message"]]
    finally:
        server.stop()
