"""The `reranker` kind end to end on a real server: a cross-encoder trained from
all-MiniLM-L6-v2's weights on a toy set, registered, served by `/v1/rerank` and exported as a
CrossEncoder folder; and the bad requests each route refuses, naming the field."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from tests.server import Server

TOPICS = {
    "How do I bake bread at home?": "Mix flour, water, yeast and salt, let the dough rise, bake.",
    "What is the capital of France?": "Paris is the capital and largest city of France.",
    "How fast does light travel?": "Light travels at about 300,000 kilometres per second.",
    "Who wrote Hamlet?": "Hamlet is a tragedy written by William Shakespeare.",
    "How do plants make food?": "Plants make sugar from light, water and CO2: photosynthesis.",
    "What is the boiling point of water?": "At sea level water boils at 100 degrees Celsius.",
    "How many legs does a spider have?": "Spiders have eight legs and two body segments.",
    "What causes the tides?": "Tides are caused by the Moon's and the Sun's gravity.",
}


def ranking_rows(queries: list[str]) -> list[dict]:
    answers = list(TOPICS.values())
    return [
        {"query": q, "positive": TOPICS[q],
         "negatives": [a for a in answers if a != TOPICS[q]][i % 5 : i % 5 + 3]}
        for i, q in enumerate(queries)
    ]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def reranker_job(server: Server, model_id: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("reranker-data")
    queries = list(TOPICS)
    train = server.upload(write_jsonl(folder / "train.jsonl", ranking_rows(queries * 2)))
    valid = server.upload(write_jsonl(folder / "valid.jsonl", ranking_rows(queries[:4])))
    assert train["id"] and server.client.get(f"/v1/datasets/{train['id']}").json()["kind"] == (
        "reranker")
    body = {
        "model": model_id, "training_file": train["id"], "validation_file": valid["id"],
        "suffix": "toy", "seed": 7,
        "method": {"type": "reranker", "reranker": {"hyperparameters": {
            "n_epochs": 1, "batch_size": 8, "max_seq_length": 48, "learning_rate": 1e-4}}},
    }
    created = server.client.post("/v1/fine_tuning/jobs", json=body)
    assert created.status_code == 200, created.text
    job = server.wait_for(created.json()["id"], timeout=900)
    assert job["status"] == "succeeded", job["error"]
    return job


def test_a_reranker_job_ends_in_a_registered_model_with_ranking_metrics(
    server: Server, reranker_job: dict
) -> None:
    evaluation = reranker_job["evaluation"]
    assert evaluation["primary_metric"] == "ndcg@10"
    for side in ("base_model", "fine_tuned_model"):
        metrics = evaluation[side]
        assert {"ndcg@10", "mrr@10", "map", "no_reranking_ndcg@10"} <= set(metrics)
        assert 0.0 < metrics["ndcg@10"] <= 1.0
    # Without reranking is the candidates' shuffled order: the same for both models.
    assert (evaluation["base_model"]["no_reranking_ndcg@10"]
            == evaluation["fine_tuned_model"]["no_reranking_ndcg@10"])
    assert reranker_job["result"]["loss"] == "mnrl"  # the ranking rows' default
    assert reranker_job["kept_model"] == {"model": "last_step", "step": 2}  # 16 rows, 8 a step
    registered = reranker_job["registered_model"]
    version = server.client.get(
        f"/v1/registered_models/{registered['name']}/versions/{registered['version']}").json()
    assert version["kind"] == "reranker"
    assert version["model"] == reranker_job["fine_tuned_model"]


def test_rerank_orders_documents_and_honours_top_n_and_return_documents(
    server: Server, reranker_job: dict
) -> None:
    model = reranker_job["fine_tuned_model"]
    documents = list(TOPICS.values())[:4]
    answer = server.client.post("/v1/rerank", json={
        "model": model, "query": "Who wrote Hamlet?",
        "documents": [documents[0], {"text": documents[1]}, *documents[2:]],
        "top_n": 3, "return_documents": True}, timeout=600)  # the first request loads it
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model"] == model and body["id"].startswith("rerank-")
    results = body["results"]
    assert len(results) == 3
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)
    assert [r["document"]["text"] for r in results] == [documents[r["index"]] for r in results]
    assert body["usage"]["total_tokens"] > 0

    plain = server.client.post("/v1/rerank", json={
        "model": model, "query": "Who wrote Hamlet?", "documents": documents}).json()
    assert len(plain["results"]) == 4 and "document" not in plain["results"][0]
    assert sorted(r["index"] for r in plain["results"]) == [0, 1, 2, 3]
    # The same pairs score the same, with or without the others beside them.
    first = {r["index"]: r["relevance_score"] for r in plain["results"]}
    for r in results:
        assert r["relevance_score"] == pytest.approx(first[r["index"]], abs=1e-5)


@pytest.mark.parametrize(("body", "status", "param"), [
    ({"documents": []}, 400, "documents"),
    ({"documents": ["a", "  "]}, 400, "documents[1]"),
    ({"query": ""}, 400, "query"),
    ({"top_n": 0}, 422, "top_n"),
    ({"documents": "not a list"}, 422, "documents"),
    ({"model": "no-such/model"}, 404, "model"),
])
def test_bad_rerank_requests_name_the_field(
    server: Server, reranker_job: dict, body: dict, status: int, param: str
) -> None:
    request = {"model": reranker_job["fine_tuned_model"], "query": "q", "documents": ["d"]}
    answer = server.client.post("/v1/rerank", json={**request, **body})
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["param"] == param


def test_each_kind_is_served_by_its_own_endpoint(
    server: Server, reranker_job: dict, model_id: str
) -> None:
    embedder = server.client.post(
        "/v1/rerank", json={"model": model_id, "query": "q", "documents": ["d"]})
    assert embedder.status_code == 400 and "/v1/embeddings" in embedder.json()["error"]["message"]
    reranker = server.client.post(
        "/v1/embeddings", json={"model": reranker_job["fine_tuned_model"], "input": "q"})
    assert reranker.status_code == 400 and "/v1/rerank" in reranker.json()["error"]["message"]


def test_a_reranker_exports_as_a_cross_encoder_folder(
    server: Server, reranker_job: dict, tmp_path: Path
) -> None:
    from sentence_transformers import CrossEncoder

    model = reranker_job["fine_tuned_model"]
    created = server.client.post(
        "/v1/exports", json={"model": model, "format": "sentence-transformers"})
    assert created.status_code == 200, created.text
    export = server.wait_for(created.json()["id"], timeout=300, resource="/v1/exports")
    assert export["status"] == "succeeded", export["error"]
    archive = server.client.get(f"/v1/exports/{export['id']}/content")
    with tarfile.open(fileobj=io.BytesIO(archive.content)) as tar:
        tar.extractall(tmp_path, filter="data")
    exported = CrossEncoder(str(tmp_path / export["primary_file"]), device="cpu")
    documents = list(TOPICS.values())[:3]
    served = server.client.post("/v1/rerank", json={
        "model": model, "query": "What causes the tides?", "documents": documents}).json()
    scores = exported.predict([("What causes the tides?", d) for d in documents])
    for result in served["results"]:
        assert result["relevance_score"] == pytest.approx(float(scores[result["index"]]), abs=1e-5)


def test_reranker_jobs_refuse_data_their_loss_cannot_train_on(
    server: Server, model_id: str, tmp_path: Path
) -> None:
    pairs = [{"query": f"q{i}", "document": f"d{i}", "label": i % 2} for i in range(12)]
    file_id = server.upload(write_jsonl(tmp_path / "pairs.jsonl", pairs))["id"]
    body = {"model": model_id, "training_file": file_id,
            "method": {"type": "reranker", "reranker": {"loss": "listnet"}}}
    answer = server.client.post("/v1/fine_tuning/jobs", json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == "training_file"
    assert "listnet" in answer.json()["error"]["message"]

    ranking = server.upload(write_jsonl(tmp_path / "ranking.jsonl", ranking_rows(list(TOPICS))))
    body = {"model": model_id, "training_file": ranking["id"], "method": {
        "type": "reranker", "reranker": {"hyperparameters": {"both_orders": True}}}}
    answer = server.client.post("/v1/fine_tuning/jobs", json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == "method.reranker.hyperparameters.both_orders"

    bad = write_jsonl(tmp_path / "bad.jsonl", [*pairs[:11], {"document": "d", "label": 7}])
    report = server.upload(bad)
    dataset = server.client.get(f"/v1/datasets/{report['id']}").json()
    assert dataset["valid"] is False
    assert [(p["line"], p["column"], p["code"]) for p in dataset["problems"]] == [
        (12, "label", "score_out_of_range"), (12, "query", "missing_column")]


def test_an_evaluation_measures_a_reranker_on_embedding_triplets(
    server: Server, reranker_job: dict, tmp_path: Path
) -> None:
    import time

    triplets = [{"anchor": r["query"], "positive": r["positive"], "negative": r["negatives"][0]}
                for r in ranking_rows(list(TOPICS)[4:])]
    upload = server.upload(write_jsonl(tmp_path / "triplets.jsonl", triplets))
    assert server.client.get(f"/v1/datasets/{upload['id']}").json()["kind"] == "embedding"
    created = server.client.post("/v1/evaluations", json={
        "model": reranker_job["fine_tuned_model"], "file_id": upload["id"]})
    assert created.status_code == 200, created.text
    assert created.json()["kind"] == "reranker"
    deadline = time.monotonic() + 600
    while (done := server.client.get(f"/v1/evaluations/{created.json()['id']}").json())[
            "status"] not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, "evaluation did not finish"
        time.sleep(0.5)
    assert done["status"] == "succeeded", done["error"]
    assert done["result"]["primary_metric"] == "ndcg@10"
    assert {"ndcg@10", "mrr@10", "no_reranking_ndcg@10"} <= set(done["result"]["model"]["metrics"])
