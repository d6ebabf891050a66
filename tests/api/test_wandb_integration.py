"""OpenAI's `integrations: [{"type": "wandb"}]`: with wandb installed and its offline mode
set, a job's metrics go to a Weights & Biases run named after the job (no network). Skipped
where wandb is not installed (it is the optional extra `tuneforge[wandb]`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server import TEST_ENV, Server
from tests.tiny_llm import QWEN, install_in_hf_cache, write_jsonl
from tests.training.conftest import json_chats

pytestmark = pytest.mark.slow
pytest.importorskip("wandb")


@pytest.fixture
def offline_wandb_server(tmp_path: Path, offline_hub: Path) -> Iterator[Server]:
    install_in_hf_cache(offline_hub, QWEN)
    env = {**TEST_ENV, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path / "runs"),
           "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
    os.makedirs(env["WANDB_DIR"])
    server = Server(tmp_path / "tuneforge-data", env=env)
    yield server
    server.stop()


def test_metrics_go_to_an_offline_wandb_run(offline_wandb_server: Server, tmp_path: Path) -> None:
    server = offline_wandb_server
    chats = server.upload(write_jsonl(tmp_path / "chats.jsonl", json_chats()))
    created = server.client.post("/v1/fine_tuning/jobs", json={
        "model": QWEN, "training_file": chats["id"],
        "hyperparameters": {"n_epochs": 1, "batch_size": 8},
        "integrations": [{"type": "wandb", "wandb": {"project": "tuneforge-test",
                                                     "tags": ["compat"]}}],
    })
    assert created.status_code == 200, created.text
    assert created.json()["integrations"][0]["wandb"]["project"] == "tuneforge-test"
    job = server.wait_for(created.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    runs = list((tmp_path / "runs" / "wandb").glob(f"offline-run-*-{job['id']}"))
    assert len(runs) == 1, list((tmp_path / "runs").rglob("*"))
    logged = (runs[0] / f"run-{job['id']}.wandb").read_bytes()
    assert b"train_loss" in logged or b"loss" in logged
