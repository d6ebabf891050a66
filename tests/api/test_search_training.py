"""Issue 26 for the embedding side, through a real server: the loss follows the data (also in
the seed-000 API), files in their UUID form, Matryoshka jobs and `/v1/embeddings` cut to
their sizes, a job that leaves its model worse (flagged, no alias without force), best-model
selection that keeps the base, and hard-negative mining."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ..conftest import DATA, Server, stsb_rows

pytestmark = pytest.mark.slow

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    import os

    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env["TUNEFORGE_URL"] = server.url
    return subprocess.run([sys.executable, "-m", "tuneforge.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small files from STS Benchmark: scored pairs (train, dev), close pairs as (anchor,
    positive), and a pair file too small to mine."""
    folder = tmp_path_factory.mktemp("search")
    rows = stsb_rows()
    scored = folder / "scored.csv"
    with scored.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows[:320:10])
    dev = folder / "dev.csv"
    dev.write_bytes(b"\n".join((DATA / "stsb-en-dev.csv").read_bytes().split(b"\n")[:24]) + b"\n")
    close = [r for r in rows if float(r[2]) >= 4.0][:60]
    pairs = folder / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"anchor": a, "positive": b}) + "\n" for a, b, _ in close))
    tiny = folder / "tiny.jsonl"
    tiny.write_text("".join(json.dumps({"anchor": a, "positive": b}) + "\n"
                            for a, b, _ in close[:3]))
    return {"scored": scored, "dev": dev, "pairs": pairs, "tiny": tiny}


@pytest.fixture(scope="module")
def files(server: Server, paths: dict[str, Path]) -> dict[str, str]:
    return {name: server.upload(path)["id"] for name, path in paths.items()}


@pytest.fixture(scope="module")
def idle(tmp_path_factory: pytest.TempPathFactory, offline_hub: Path) -> Iterator[Server]:
    """A server without a worker: the jobs that are only created stay queued."""
    srv = Server(tmp_path_factory.mktemp("idle") / "tuneforge-data", args=("--no-worker",))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def idle_files(idle: Server, paths: dict[str, Path]) -> dict[str, str]:
    return {name: idle.upload(path)["id"] for name, path in paths.items()}


def create(server: Server, body: dict) -> dict:
    r = server.client.post("/v1/fine_tuning/jobs", json={"model": MODEL, **body})
    assert r.status_code == 200, r.text
    return r.json()


def test_the_loss_follows_the_data(idle: Server, idle_files: dict[str, str]) -> None:
    server, files = idle, idle_files
    scored = create(server, {"training_file": files["scored"]})
    pairs = create(server, {"training_file": files["pairs"],
                            "method": {"type": "embedding", "embedding": {}}})
    assert scored["method"]["embedding"]["loss"] == "cosent"
    assert pairs["method"]["embedding"]["loss"] == "mnrl"
    events = server.client.get(f"/v1/fine_tuning/jobs/{scored['id']}/events").json()["data"]
    assert any("No loss given" in e["message"] and "cosent" in e["message"] for e in events)
    # A loss that does not fit the data is still refused, naming the file.
    r = server.client.post("/v1/fine_tuning/jobs", json={
        "model": MODEL, "training_file": files["scored"],
        "method": {"type": "embedding", "embedding": {"loss": "mnrl"}}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "training_file"


def test_seed_api_takes_a_loss_and_shows_files_as_uuids(
    idle: Server, idle_files: dict[str, str]
) -> None:
    server, files = idle, idle_files
    listed = server.client.get(f"/v1/files/{files['scored']}").json()
    assert listed["uuid"] == str(uuid.UUID(files["scored"].removeprefix("file-")))
    body = {"model_tag": MODEL, "train_dataset_ids": [listed["uuid"]], "loss": "cosine",
            "val_dataset_id": files["dev"]}
    r = server.client.post("/training/train", json=body)
    assert r.status_code == 202, r.text
    task = r.json()["task_id"]
    status = server.client.get(f"/training/{task}/status").json()
    assert status["loss"] == "cosine"
    assert status["train_dataset_ids"] == [listed["uuid"]]
    assert status["val_dataset_id"] == str(uuid.UUID(files["dev"][5:]))
    # Without a loss, scored pairs train with CoSENT (seed 000 fixed MNRL: a 400).
    r = server.client.post("/training/train", json={"model_tag": MODEL,
                                                    "train_dataset_ids": [listed["uuid"]]})
    assert r.status_code == 202, r.text
    task = r.json()["task_id"]
    assert server.client.get(f"/training/{task}/status").json()["loss"] == "cosent"
    # Errors name files as the seed's clients know them.
    r = server.client.post("/training/train", json={**body, "loss": "triplet"})
    assert r.status_code == 400
    error = r.json()["error"]
    assert listed["uuid"] in error["message"] and files["scored"] not in error["message"]
    assert error["param"] == "train_dataset_ids[0]"


@pytest.mark.parametrize("dims, why", [([128, 256], "strictly decreasing"),
                                       ([512, 128], "above the model's embedding dimension")])
def test_matryoshka_dims_are_checked(
    idle: Server, idle_files: dict[str, str], dims: list[int], why: str
) -> None:
    server, files = idle, idle_files
    r = server.client.post("/v1/fine_tuning/jobs", json={
        "model": MODEL, "training_file": files["scored"],
        "method": {"type": "embedding", "embedding": {"matryoshka_dims": dims}}})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert "matryoshka_dims" in error["param"] and why in error["message"]


@pytest.fixture(scope="module")
def matryoshka_job(server: Server, files: dict[str, str]) -> dict:
    job = create(server, {"training_file": files["scored"], "validation_file": files["dev"],
                          "seed": 1, "method": {"type": "embedding", "embedding": {
                              "matryoshka_dims": [384, 128, 32],
                              "hyperparameters": {"batch_size": 16, "max_seq_length": 48}}}})
    return server.wait_for(job["id"], timeout=900)


def test_matryoshka_job_reports_each_size(server: Server, matryoshka_job: dict) -> None:
    job = matryoshka_job
    assert job["status"] == "succeeded", job["error"]
    table = {row["dimensions"]: row for row in job["result"]["matryoshka"]}
    assert sorted(table) == [32, 128, 384]
    assert table[128]["metric"] == "dim_128_spearman_cosine"
    for row in table.values():
        assert -1 <= row["base_model"] <= 1 and -1 <= row["fine_tuned_model"] <= 1
    assert job["evaluation"]["primary_metric"] == "spearman_cosine"
    # Cut to 32 values, the base does worse than whole: the sizes are measured apart.
    assert table[32]["base_model"] != table[384]["base_model"]
    r = server.client.post("/v1/embeddings", json={
        "model": job["fine_tuned_model"], "input": ["a cat", "a dog"], "dimensions": 32},
        timeout=600)
    assert r.status_code == 200, r.text
    vectors = np.array([d["embedding"] for d in r.json()["data"]])
    assert vectors.shape == (2, 32)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


# A learning rate that wrecks the model in a few steps: the fine-tuned model ends worse.
WRECK = {"learning_rate": 0.05, "warmup_ratio": 0.0, "batch_size": 16, "max_seq_length": 48}


@pytest.fixture(scope="module")
def worse_job(server: Server, files: dict[str, str]) -> dict:
    job = create(server, {
        "training_file": files["scored"], "validation_file": files["dev"], "seed": 2,
        "suffix": "worse", "promote": {"alias": "production"},
        "method": {"type": "embedding", "embedding": {"hyperparameters": WRECK}}})
    return server.wait_for(job["id"], timeout=900)


def test_a_worse_model_is_flagged_and_takes_no_alias(server: Server, worse_job: dict) -> None:
    job = worse_job
    assert job["status"] == "succeeded", job["error"]
    keys = list(job)
    assert job["worse_than_base"] is True
    assert keys.index("worse_than_base") == keys.index("status") + 1  # at the top
    assert "below its base" in job["warning"]
    assert job["kept_model"]["model"] == "last_step"
    assert job["promotion"]["promote"] is False
    assert "worse than its base" in job["promotion"]["reason"]
    name, version = job["registered_model"]["name"], job["registered_model"]["version"]
    assert "production" not in server.client.get(f"/v1/registered_models/{name}").json()[
        "aliases"]
    path = f"/v1/registered_models/{name}/aliases/staging"
    r = server.client.put(path, json={"version": version})
    assert r.status_code == 409 and r.json()["error"]["param"] == "force"
    assert "staging" not in server.client.get(f"/v1/registered_models/{name}").json()["aliases"]
    # The CLI says so first (stderr), and moves the alias only with --force.
    shown = cli(server, "jobs", "get", job["id"])
    assert shown.returncode == 0 and "WORSE THAN BASE" in shown.stderr
    assert json.loads(shown.stdout)["worse_than_base"] is True
    refused = cli(server, "models", "alias", name, "staging", str(version))
    assert refused.returncode != 0 and "force" in refused.stderr
    forced = cli(server, "models", "alias", name, "staging", str(version), "--force")
    assert forced.returncode == 0, forced.stderr
    assert server.client.get(f"/v1/registered_models/{name}").json()["aliases"] == {
        "staging": version}


def test_best_model_selection_keeps_the_base_when_it_was_best(
    server: Server, files: dict[str, str], worse_job: dict
) -> None:
    job = create(server, {
        "training_file": files["scored"], "validation_file": files["dev"], "seed": 2,
        "method": {"type": "embedding", "embedding": {
            "hyperparameters": {**WRECK, "save_best_model": True}}}})
    job = server.wait_for(job["id"], timeout=900)
    assert job["status"] == "succeeded", job["error"]
    assert job["kept_model"] == {"model": "base", "step": 0}
    assert job["worse_than_base"] is False
    assert "base model was best" in job["warning"]
    evaluation = job["evaluation"]
    key = evaluation["primary_metric"]
    assert evaluation["fine_tuned_model"][key] == evaluation["base_model"][key]
    # What was saved is the base model's weights: the same embeddings as the base.
    vectors = [np.array(server.client.post("/v1/embeddings", json={
        "model": m, "input": ["hard negatives"]}, timeout=600).json()["data"][0]["embedding"])
        for m in (MODEL, job["fine_tuned_model"])]
    assert np.allclose(vectors[0], vectors[1], atol=1e-5)


def test_mining_turns_pairs_into_triplets(idle: Server, idle_files: dict[str, str]) -> None:
    server, files = idle, idle_files
    r = server.client.post(f"/v1/datasets/{files['pairs']}/mine_negatives", json={
        "model": MODEL, "num_negatives": 2, "range_min": 1, "range_max": 20, "margin": 0.05})
    assert r.status_code == 200, r.text
    done = r.json()
    report, dataset = done["report"], done["dataset"]
    assert dataset["valid"] and dataset["layout"] == "triplet"
    assert dataset["mining"]["rows_in"] == 60 == report["rows_in"]
    assert report["rows_out"] == report["negatives"] == dataset["statistics"]["rows"]
    assert report["rows_with_negatives"] + report["rows_without_negatives"] == 60
    hard = report["hardness"]
    assert hard["mean_negative_similarity"] < hard["mean_positive_similarity"] - 0.05
    assert sum(hard["rank_distribution"].values()) == report["negatives"]
    assert 2 <= hard["mean_rank"] <= 20  # range_min 1 skips rank 1
    rows = server.client.get(f"/v1/datasets/{dataset['id']}/rows?limit=500").json()["data"]
    for row in rows:
        record = row["values"]
        assert record["negative"] not in (record["positive"], record["anchor"])
    # An embedding job trains on them (its loss follows: mnrl).
    job = create(server, {"training_file": dataset["id"]})
    assert job["method"]["embedding"]["loss"] == "mnrl"


def test_mining_writes_n_tuples_for_embedding_and_reranker_jobs(
    idle: Server, idle_files: dict[str, str]
) -> None:
    server, files = idle, idle_files
    r = server.client.post(f"/v1/datasets/{files['pairs']}/mine_negatives", json={
        "model": MODEL, "num_negatives": 3, "range_max": 20, "margin": 0.05,
        "output_format": "n-tuple"})
    assert r.status_code == 200, r.text
    report, dataset = r.json()["report"], r.json()["dataset"]
    assert report["output_format"] == "n-tuple"
    assert report["columns"] == ["anchor", "positive", "negative_1", "negative_2", "negative_3"]
    kept = report["rows_with_negatives"]
    assert kept == report["rows_out"] == dataset["statistics"]["rows"] > 0
    assert kept + report["rows_without_negatives"] + report["rows_with_too_few_negatives"] == 60
    assert report["negatives"] == 3 * kept
    assert dataset["valid"] and dataset["kind"] == "reranker" and dataset["layout"] == "ranking"
    rows = server.client.get(f"/v1/datasets/{dataset['id']}/rows?limit=500").json()["data"]
    for row in rows:
        record = row["values"]
        negatives = [record[f"negative_{n}"] for n in (1, 2, 3)]
        assert len(set(negatives)) == 3 and record["positive"] not in negatives
    # Both kinds take it; the embedding job's loss follows the n-tuples: mnrl.
    job = create(server, {"training_file": dataset["id"], "method": {"type": "embedding"}})
    assert job["method"]["embedding"]["loss"] == "mnrl"
    job = create(server, {"training_file": dataset["id"], "method": {"type": "reranker"}})
    assert job["method"]["type"] == "reranker"


def test_mining_refuses_too_little_data_and_writes_nothing(
    idle: Server, idle_files: dict[str, str]
) -> None:
    server, files = idle, idle_files
    before = len(server.client.get("/v1/files").json()["data"])
    r = server.client.post(f"/v1/datasets/{files['tiny']}/mine_negatives",
                           json={"model": MODEL, "range_min": 5})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["param"] == "range_min" and "needs at least 7 distinct positives" in (
        error["message"])
    r = server.client.post(f"/v1/datasets/{files['scored']}/mine_negatives",
                           json={"model": MODEL})
    assert r.status_code == 400 and "needs pairs" in r.json()["error"]["message"]
    r = server.client.post(f"/v1/datasets/{files['pairs']}/mine_negatives",
                           json={"model": MODEL, "margin": 2.0})
    assert r.status_code == 400 and "nothing written" in r.json()["error"]["message"]
    assert len(server.client.get("/v1/files").json()["data"]) == before


def test_cli_mines(idle: Server, idle_files: dict[str, str]) -> None:
    done = cli(idle, "datasets", "mine", idle_files["pairs"], "--model", MODEL, "--range-max", "10")
    assert done.returncode == 0, done.stderr
    assert "60 pairs in" in done.stdout and "Negatives by rank" in done.stdout

