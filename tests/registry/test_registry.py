"""Evaluation against the baseline and the model registry, end to end on the real server:
all-MiniLM-L6-v2 fine-tuned on STS Benchmark pairs."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest

from tests.conftest import Server

pytestmark = pytest.mark.slow

NAME = "sts-minilm"


def wait_evaluation(server: Server, evaluation_id: str) -> dict:
    import time

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        found = server.client.get(f"/v1/evaluations/{evaluation_id}").json()
        if found["status"] in ("succeeded", "failed", "cancelled"):
            return found
        time.sleep(0.5)
    raise AssertionError("evaluation did not finish")


@pytest.fixture(scope="module")
def trained(server: Server, stsb_slice: Path, model_id: str) -> dict:
    file_id = server.upload(stsb_slice)["id"]
    job = server.client.post("/v1/fine_tuning/jobs", json={
        "model": model_id, "training_file": file_id, "seed": 42, "suffix": "sts",
        "registered_model": NAME, "promote": {"alias": "production", "min_delta": 0.0},
        "method": {"type": "embedding", "embedding": {
            "loss": "cosent", "hyperparameters": {"n_epochs": 1, "batch_size": 16}}}})
    assert job.status_code == 200, job.text
    done = server.wait_for(job.json()["id"])
    assert done["status"] == "succeeded", done["error"]
    return done


def test_a_finished_job_is_a_version_with_its_lineage_and_a_model_card(
        server: Server, trained: dict, stsb_slice: Path) -> None:
    job = server.client.get(f"/v1/fine_tuning/jobs/{trained['id']}").json()
    registered = server.client.get(f"/v1/registered_models/{NAME}").json()
    assert registered["kind"] == "embedding" and registered["versions"] == 1
    # The gate compared with the base model on the job's validation split, and passed.
    assert registered["aliases"] == {"production": 1}
    version = server.client.get(f"/v1/registered_models/{NAME}/versions/1").json()
    assert version["model"] == trained["fine_tuned_model"] and version["job_id"] == trained["id"]
    assert version["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert version["spec"]["method"]["embedding"]["loss"] == "cosent"
    assert version["spec"]["seed"] == 42
    sha = hashlib.sha256(stsb_slice.read_bytes()).hexdigest()
    assert version["data_files"][0]["sha256"] == sha
    assert version["data_files"][0]["role"] == "training"
    assert {"torch", "transformers", "sentence-transformers"} <= set(version["library_versions"])
    evaluation = version["evaluation"]
    assert evaluation == job["evaluation"]
    assert evaluation["fine_tuned_model"]["spearman_cosine"] > (
        evaluation["base_model"]["spearman_cosine"])
    # Every artefact is listed with its real size and checksum; the card says what it is.
    folder = server.home / "models" / trained["id"]
    listed = {a["path"]: a for a in version["artefacts"]}
    assert "model.safetensors" in listed and "README.md" in listed
    for path, artefact in listed.items():
        data = (folder / path).read_bytes()
        assert artefact["bytes"] == len(data)
        assert artefact["sha256"] == hashlib.sha256(data).hexdigest(), path
    card = (folder / "README.md").read_text()
    assert trained["id"] in card and sha in card and "spearman_cosine" in card
    assert listed["model.safetensors"]["sha256"] in card
    promotion = [e for e in server.client.get(
        f"/v1/fine_tuning/jobs/{trained['id']}/events", params={"limit": 100}).json()["data"]
        if e["message"].startswith("Promotion gate")]
    assert promotion and "passed" in promotion[0]["message"]
    assert "the base model" in promotion[0]["message"]


def test_evaluation_on_held_out_pairs_shows_the_gain_over_the_base_model(
        server: Server, trained: dict, stsb_heldout, tmp_path: Path, model_id: str) -> None:
    held_out = tmp_path / "heldout.csv"
    with held_out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["sentence1", "sentence2", "score"])
        writer.writerows(stsb_heldout)
    file_id = server.upload(held_out)["id"]
    created = server.client.post("/v1/evaluations", json={
        "model": f"{NAME}@production", "baseline_model": model_id, "file_id": file_id})
    assert created.status_code == 200, created.text
    assert created.json()["status"] == "queued"
    done = wait_evaluation(server, created.json()["id"])
    assert done["status"] == "succeeded", done["error"]
    result = done["result"]
    assert result["rows"] == len(stsb_heldout) and result["primary_metric"] == "spearman_cosine"
    tuned = result["model"]["metrics"]["spearman_cosine"]
    base = result["baseline"]["metrics"]["spearman_cosine"]
    assert tuned > base + 0.005, (tuned, base)
    assert result["delta"]["spearman_cosine"] == pytest.approx(tuned - base)
    assert "pearson_cosine" in result["model"]["metrics"]
    listed = server.client.get("/v1/evaluations").json()["data"]
    assert created.json()["id"] in [e["id"] for e in listed]
    # Evaluations are not fine-tuning jobs.
    jobs = server.client.get("/v1/fine_tuning/jobs", params={"limit": 100}).json()["data"]
    assert created.json()["id"] not in [j["id"] for j in jobs]
    assert server.client.get(f"/v1/fine_tuning/jobs/{created.json()['id']}").status_code == 404


def test_evaluation_on_a_jobs_own_validation_split_and_the_seed_000_endpoint(
        server: Server, trained: dict, model_id: str) -> None:
    import uuid

    task_id = str(uuid.UUID(trained["id"].removeprefix("ftjob-")))
    started = server.client.post("/evaluation/evaluate", json={
        "model_tag": trained["fine_tuned_model"], "training_task_id": task_id,
        "baseline_model_tag": "models--sentence-transformers--all-MiniLM-L6-v2"})
    assert started.status_code == 202, started.text
    location = started.headers["Location"]
    evaluation_id = started.json()["evaluation_id"]
    assert location == f"/evaluation/{evaluation_id}"
    done = wait_evaluation(server, f"evaljob-{uuid.UUID(evaluation_id).hex}")
    assert done["status"] == "succeeded", done["error"]
    seed_view = server.client.get(location).json()
    assert seed_view["status"] == "DONE"
    # The same rows the job held out, so the same numbers the job reported.
    job_eval = trained["evaluation"]
    assert seed_view["rows"] == 72  # 10% of the slice's 719 rows
    assert seed_view["model_results"]["spearman_cosine"] == pytest.approx(
        job_eval["fine_tuned_model"]["spearman_cosine"], abs=1e-5)
    assert seed_view["baseline_results"]["spearman_cosine"] == pytest.approx(
        job_eval["base_model"]["spearman_cosine"], abs=1e-5)


def test_retrieval_metrics_agree_with_sentence_transformers(
        server: Server, german_triplets: Path, tmp_path: Path, model_id: str,
        offline_hub: Path) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.evaluation import (
        InformationRetrievalEvaluator,
    )

    rows = [json.loads(line) for line in german_triplets.read_text().splitlines()][:80]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"question": r["question"], "positive": r["positive"]},
                                        ensure_ascii=False) + "\n" for r in rows))
    file_id = server.upload(pairs)["id"]
    created = server.client.post("/v1/evaluations", json={"model": model_id, "file_id": file_id})
    done = wait_evaluation(server, created.json()["id"])
    assert done["status"] == "succeeded", done["error"]
    ours = done["result"]["model"]["metrics"]

    evaluator = InformationRetrievalEvaluator(
        {str(i): r["question"] for i, r in enumerate(rows)},
        {f"doc{i}": r["positive"] for i, r in enumerate(rows)},
        {str(i): {f"doc{i}"} for i in range(len(rows))},
        mrr_at_k=[10], ndcg_at_k=[10], accuracy_at_k=[1, 10], precision_recall_at_k=[1, 10],
        map_at_k=[10], name="st", show_progress_bar=False)
    minilm = offline_hub / "hub" / "models--sentence-transformers--all-MiniLM-L6-v2"
    snapshot = next(minilm.glob("snapshots/*"))
    theirs = evaluator(SentenceTransformer(str(snapshot)))
    for metric in ("cosine_mrr@10", "cosine_ndcg@10", "cosine_recall@1", "cosine_recall@10"):
        assert ours[metric] == pytest.approx(theirs[f"st_{metric}"], abs=1e-6), metric
    assert done["result"]["primary_metric"] == "cosine_ndcg@10"


def test_aliases_delete_protection_and_a_gate_that_refuses_a_worse_model(
        server: Server, trained: dict, german_triplets: Path, model_id: str) -> None:
    file_id = server.upload(german_triplets)["id"]
    second = server.client.post("/v1/fine_tuning/jobs", json={
        "model": model_id, "training_file": file_id, "seed": 1, "registered_model": NAME,
        "promote": {"alias": "production", "min_delta": 0.5},
        "method": {"type": "embedding", "embedding": {"hyperparameters": {"batch_size": 16}}}})
    done = server.wait_for(second.json()["id"])
    assert done["status"] == "succeeded", done["error"]
    promotion = done["promotion"]
    assert promotion["promote"] is False and promotion["against"] == f"{NAME} version 1"
    assert done["registered_model"] == {"name": NAME, "version": 2}
    registered = server.client.get(f"/v1/registered_models/{NAME}").json()
    assert registered["aliases"] == {"production": 1} and registered["versions"] == 2
    texts = [e["message"] for e in server.client.get(
        f"/v1/fine_tuning/jobs/{done['id']}/events", params={"limit": 100}).json()["data"]]
    assert any(t.startswith("Promotion gate refused") and "alias production unchanged" in t
               for t in texts)

    compared = server.client.get(f"/v1/registered_models/{NAME}/compare",
                                 params={"versions": [1, 2]}).json()
    assert compared["spec_differences"]["method.embedding.loss"] == ["cosent", "mnrl"]
    assert compared["spec_differences"]["seed"] == [42, 1]
    assert compared["metrics"]["spearman_cosine"][0] is not None

    # Move production to 2 and staging to 1; an aliased version cannot be deleted. A version
    # worse than its base model moves an alias only when forced.
    moved = server.client.put(f"/v1/registered_models/{NAME}/aliases/production",
                              json={"version": 2})
    if done["worse_than_base"]:
        assert moved.status_code == 409, moved.text
        moved = server.client.put(f"/v1/registered_models/{NAME}/aliases/production",
                                  json={"version": 2, "force": True})
    assert moved.status_code == 200, moved.text
    assert server.client.put(f"/v1/registered_models/{NAME}/aliases/staging",
                             json={"version": 1}).json()["version"] == 1
    assert server.client.put(f"/v1/registered_models/{NAME}/aliases/staging",
                             json={"version": 9}).status_code == 404
    refused = server.client.delete(f"/v1/registered_models/{NAME}/versions/1")
    assert refused.status_code == 409 and "staging" in refused.json()["error"]["message"]
    assert (server.home / "models" / trained["id"]).is_dir()
    found = server.client.get("/v1/model_versions", params={
        "alias": "production", "kind": "embedding"}).json()["data"]
    assert [(v["name"], v["version"]) for v in found] == [(NAME, 2)]
    above = server.client.get("/v1/model_versions", params={
        "metric": "spearman_cosine", "min_value": 0.5}).json()["data"]
    assert [v["version"] for v in above] == [1]
    tagged = server.client.patch(f"/v1/registered_models/{NAME}/versions/2",
                                 json={"tags": ["de"], "description": "German triplets"})
    assert tagged.json()["tags"] == ["de"]
    assert [v["version"] for v in server.client.get(
        "/v1/model_versions", params={"tag": "de"}).json()["data"]] == [2]

    assert server.client.delete(f"/v1/registered_models/{NAME}/aliases/staging"
                                ).status_code == 204
    deleted = server.client.delete(f"/v1/registered_models/{NAME}/versions/1")
    assert deleted.status_code == 200
    assert not (server.home / "models" / trained["id"]).exists()
    assert server.client.get(f"/v1/models/{trained['fine_tuned_model']}").status_code == 404


def test_the_registry_survives_a_restart(server: Server) -> None:
    before = server.client.get(f"/v1/registered_models/{NAME}").json()
    home = server.home
    server.stop()
    again = Server(home)
    try:
        after = again.client.get(f"/v1/registered_models/{NAME}").json()
        assert after["aliases"] == before["aliases"] == {"production": 2}
        assert after["versions"] == before["versions"] == 1
        version = again.client.get(f"/v1/registered_models/{NAME}/versions/2").json()
        assert version["tags"] == ["de"] and version["description"] == "German triplets"
    finally:
        again.stop()
