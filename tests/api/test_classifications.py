"""Classification jobs end to end: the real server trains all-MiniLM-L6-v2 on BANKING77 and on
seed 003's layout, serves the models at /v1/classifications and `tuneforge predict`, and pauses
and resumes a run to the same weights."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from safetensors.torch import load_file
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from tests.datasets.test_classification_validation import SEED_003

from ..conftest import DATA, Server

pytestmark = pytest.mark.slow

FRAMES = ["Conflict", "Economic", "Human Impact", "Moral Value", "None", "Powerlessness"]


def banking77() -> list[dict[str, str]]:
    with (DATA / "banking77-train.csv").open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


# Eight of the 77 intents, spread over the alphabet.
CLASSES = sorted({row["category"] for row in banking77()})[::10]


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, ["text", "category"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def classification_job(model_id: str, training_file: str, **params: object) -> dict:
    return {"model": model_id, "training_file": training_file,
            "method": {"type": "classification", "classification": params}}


def job_result(server: Server, job_id: str) -> dict:
    """The finished job's `result`: losses, steps, per-class report, confusion matrix."""
    return server.client.get(f"/v1/fine_tuning/jobs/{job_id}").json()["result"]


def classify(server: Server, model: str, texts: list[str], **extra: object) -> dict:
    r = server.client.post("/v1/classifications", json={"model": model, "input": texts, **extra})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def banking(server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every 4th question of each of the eight intents is held out as the validation file."""
    folder = tmp_path_factory.mktemp("banking77")
    seen: Counter[str] = Counter()
    train, held = [], []
    for row in banking77():
        if row["category"] in CLASSES:
            (held if seen[row["category"]] % 4 == 0 else train).append(row)
            seen[row["category"]] += 1
    return {
        "train": train,
        "held": held,
        "train_file": server.upload(write_csv(folder / "train.csv", train))["id"],
        "validation_file": server.upload(write_csv(folder / "held.csv", held))["id"],
    }


@pytest.fixture(scope="module")
def banking_job(server: Server, banking: dict, model_id: str) -> dict:
    body = classification_job(model_id, banking["train_file"], hyperparameters={
        "n_epochs": 1, "batch_size": 16, "learning_rate": 1e-4, "max_seq_length": 64,
        "logging_steps": 10})
    body.update(validation_file=banking["validation_file"], seed=3, suffix="banking")
    created = server.client.post("/v1/fine_tuning/jobs", json=body)
    assert created.status_code == 200, created.text
    assert created.json()["method"]["type"] == "classification"
    job = server.wait_for(created.json()["id"], timeout=900)
    assert job["status"] == "succeeded", job["error"]
    return job


def test_banking77_classifier_far_above_the_majority_class(
        server: Server, banking: dict, banking_job: dict) -> None:
    evaluation = banking_job["evaluation"]
    assert evaluation["primary_metric"] == "f1_macro"
    tuned, baseline = evaluation["fine_tuned_model"], evaluation["base_model"]
    # The baseline always answers the training data's most frequent intent.
    counts = Counter(row["category"] for row in banking["train"])
    majority = max(counts, key=lambda name: counts[name])
    share = sum(row["category"] == majority for row in banking["held"]) / len(banking["held"])
    assert baseline["accuracy"] == pytest.approx(share)
    assert share < 0.2
    assert tuned["accuracy"] > 0.8 and tuned["accuracy"] > share + 0.6
    assert tuned["f1_macro"] > 0.8 and evaluation["delta"]["f1_macro"] > 0.6
    assert banking_job["fine_tuned_model"].startswith("ft:all-MiniLM-L6-v2:banking:")

    # Every evaluation's metrics are events; the job's latest metrics carry the last one.
    events = server.client.get(f"/v1/fine_tuning/jobs/{banking_job['id']}/events",
                               params={"type": "metrics", "limit": 1000}).json()["data"]
    evaluations = [e["data"] for e in events if "eval_f1_macro" in e["data"]]
    assert len(evaluations) == 1
    assert {"eval_accuracy", "eval_precision_weighted", "eval_recall_micro"} <= set(
        evaluations[0])
    assert banking_job["metrics"]["eval_accuracy"] == pytest.approx(tuned["accuracy"])


def test_metrics_agree_with_scikit_learn_on_the_served_predictions(
        server: Server, banking: dict, banking_job: dict) -> None:
    texts = [row["text"] for row in banking["held"]]
    truth = [row["category"] for row in banking["held"]]
    response = classify(server, banking_job["fine_tuned_model"], texts)
    assert response["object"] == "list" and response["multi_label"] is False
    assert response["usage"]["prompt_tokens"] > len(texts)
    predicted = [item["label"] for item in response["data"]]
    assert [item["index"] for item in response["data"]] == list(range(len(texts)))

    tuned = banking_job["evaluation"]["fine_tuned_model"]
    assert tuned["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
    for average in ("macro", "micro", "weighted"):
        precision, recall, f1, _ = precision_recall_fscore_support(
            truth, predicted, average=average, zero_division=0)
        assert tuned[f"precision_{average}"] == pytest.approx(precision)
        assert tuned[f"recall_{average}"] == pytest.approx(recall)
        assert tuned[f"f1_{average}"] == pytest.approx(f1)

    # The per-class report and the confusion matrix, with the job and with the model.
    result = job_result(server, banking_job["id"])
    assert result["labels"] == CLASSES and result["baseline"] == "majority_class"
    matrix = confusion_matrix(truth, predicted, labels=CLASSES).tolist()
    assert result["confusion_matrix"] == matrix
    per_class_f1 = f1_score(truth, predicted, labels=CLASSES, average=None)
    assert [c["f1"] for c in result["per_class"]] == pytest.approx(list(per_class_f1))
    assert [c["support"] for c in result["per_class"]] == [truth.count(c) for c in CLASSES]
    folder = server.home / "models" / banking_job["id"]
    saved = json.loads((folder / "evaluation.json").read_text())
    assert saved["confusion_matrix"] == matrix and saved["metrics"] == pytest.approx(tuned)
    config = json.loads((folder / "config.json").read_text())
    assert config["id2label"] == {str(i): name for i, name in enumerate(CLASSES)}
    # Each evaluation during training logged its own per-class report and confusion matrix;
    # the job evaluates once, at the end of its one epoch, on the same held-out rows.
    events = server.client.get(f"/v1/fine_tuning/jobs/{banking_job['id']}/events",
                               params={"limit": 1000}).json()["data"]
    reports = [e["data"] for e in events
               if e["message"] == "Evaluation: per-class report and confusion matrix."]
    assert reports and reports[0]["labels"] == CLASSES
    assert reports[0]["confusion_matrix"] == matrix


def test_scores_and_top_k(server: Server, banking: dict, banking_job: dict) -> None:
    text = banking["held"][0]["text"]
    full = classify(server, banking_job["fine_tuned_model"], text)["data"][0]
    scores = [s["score"] for s in full["scores"]]
    assert sorted(s["label"] for s in full["scores"]) == CLASSES
    assert scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1.0)
    assert full["labels"] == [full["label"]] == [full["scores"][0]["label"]]
    top = classify(server, banking_job["fine_tuned_model"], [text], top_k=3)["data"][0]
    assert [s["label"] for s in top["scores"]] == [s["label"] for s in full["scores"][:3]]
    assert [s["score"] for s in top["scores"]] == pytest.approx(scores[:3])


def test_cli_predict(server: Server, banking: dict, banking_job: dict, tmp_path: Path) -> None:
    model = banking_job["fine_tuned_model"]
    held = banking["held"][:5]
    expected = [item["label"] for item in classify(
        server, model, [row["text"] for row in held])["data"]]
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env["TUNEFORGE_URL"] = server.url
    run = subprocess.run([sys.executable, "-m", "tuneforge.cli", "predict", model,
                          held[0]["text"], held[1]["text"], "--top-k", "2"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    for row, label in zip(held[:2], expected, strict=False):
        line = next(line for line in lines if row["text"][:30] in line)
        assert label in line

    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(row["text"] for row in held) + "\n\n", encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "tuneforge.cli", "predict", model,
                          "--file", str(texts), "--json"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert [item["label"] for item in json.loads(run.stdout)["data"]] == expected

    run = subprocess.run([sys.executable, "-m", "tuneforge.cli", "predict", "ft:nope:x:y", "hi"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 1 and "model_not_found" in run.stderr


def test_classifications_refuse_what_they_cannot_do(server: Server, model_id: str) -> None:
    def post(body: dict) -> tuple[int, dict]:
        r = server.client.post("/v1/classifications", json=body)
        return r.status_code, r.json()["error"]

    status, error = post({"model": "ft:nope:x:123", "input": ["hi"]})
    assert status == 404 and error["code"] == "model_not_found" and error["param"] == "model"
    # all-MiniLM-L6-v2 itself embeds sentences; it has no classification head.
    status, error = post({"model": model_id, "input": ["hi"]})
    assert status == 400 and error["code"] == "invalid_request"
    assert "not a text-classification model" in error["message"]
    for body, param in [({"model": model_id, "input": []}, "input"),
                        ({"model": model_id, "input": [""]}, "input"),
                        ({"model": model_id, "input": ["x"] * 2049}, "input"),
                        ({"model": model_id, "input": ["hi"], "top_k": 0}, "top_k"),
                        ({"model": model_id, "input": ["hi"], "temperature": 1}, "temperature"),
                        ({"model": "../etc", "input": ["hi"]}, "model")]:
        status, error = post(body)
        assert status in (400, 422) and error["param"].startswith(param), (body, error)


def test_seed_003_layout_trains_unchanged_with_lora_and_class_weights(
        server: Server, model_id: str, tmp_path: Path, offline_hub: Path) -> None:
    path = tmp_path / "training_data_export.csv"
    path.write_text(SEED_003, encoding="utf-8")
    uploaded = server.upload(path)
    assert uploaded["status"] == "processed"
    body = classification_job(
        model_id, uploaded["id"], tuning="lora", lora={"r": 8},
        hyperparameters={"learning_rate": 1e-3, "n_epochs": 3, "batch_size": 4,
                         "class_weights": "balanced"})
    job = server.client.post("/v1/fine_tuning/jobs", json={**body, "seed": 1}).json()
    job = server.wait_for(job["id"], timeout=600)
    assert job["status"] == "succeeded", job["error"]
    assert job_result(server, job["id"])["labels"] == FRAMES

    predictions = classify(server, job["fine_tuned_model"],
                           ["Die Preise steigen weiter.", "Niemand hört uns zu."])["data"]
    for item in predictions:
        assert item["label"] in FRAMES and sum(s["score"] for s in item["scores"]) == \
            pytest.approx(1.0)

    # A plain classification model: the adapters are merged, nothing of peft is left.
    folder = server.home / "models" / job["id"]
    assert not (folder / "adapter_config.json").exists()
    tuned = load_file(folder / "model.safetensors")
    assert not any("lora" in key or key.startswith("base_model.") for key in tuned)
    minilm = offline_hub / "hub" / "models--sentence-transformers--all-MiniLM-L6-v2"
    base = load_file(next(minilm.rglob("model.safetensors")))
    # The adapters changed the linear layers; what they do not reach kept its base weights.
    assert not tuned["bert.encoder.layer.0.attention.self.query.weight"].allclose(
        base["encoder.layer.0.attention.self.query.weight"], atol=1e-6)
    for name in ("embeddings.word_embeddings.weight", "encoder.layer.3.output.LayerNorm.weight"):
        assert tuned[f"bert.{name}"].equal(base[name]), name
    assert tuned["classifier.weight"].shape == (len(FRAMES), 384)


def test_pause_and_resume_end_with_the_same_weights(
        server: Server, model_id: str, tmp_path: Path, offline_hub: Path) -> None:
    rows = [row for row in banking77() if row["category"] in CLASSES[:4]]
    taken: Counter[str] = Counter()
    subset = []
    for row in rows:
        if taken[row["category"]] < 24:
            subset.append(row)
            taken[row["category"]] += 1
    file_id = server.upload(write_csv(tmp_path / "four-intents.csv", subset))["id"]
    # No checkpoints but the pause's: the resumed run can only continue from that one.
    body = classification_job(model_id, file_id, hyperparameters={
        "n_epochs": 3, "batch_size": 8, "max_seq_length": 48, "class_weights": "balanced",
        "checkpoint_steps": 1000})
    body["seed"] = 11
    straight = server.client.post("/v1/fine_tuning/jobs", json=body).json()
    straight = server.wait_for(straight["id"], timeout=600)
    assert straight["status"] == "succeeded", straight["error"]

    paused = server.client.post("/v1/fine_tuning/jobs", json=body).json()
    server.wait_for(paused["id"], ("running",))
    deadline = time.monotonic() + 120
    while (server.client.get(f"/v1/fine_tuning/jobs/{paused['id']}").json()["progress"]
           or {}).get("step", 0) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    requested = server.client.post(f"/v1/fine_tuning/jobs/{paused['id']}/pause")
    assert requested.status_code == 200 and requested.json()["pause_requested"]
    job = server.wait_for(paused["id"], ("paused", "succeeded"))
    assert job["status"] == "paused", "the job ended before the pause reached it"
    step = job["progress"]["step"]
    assert 2 <= step < job["progress"]["total_steps"]

    resumed = server.client.post(f"/v1/fine_tuning/jobs/{paused['id']}/resume")
    assert resumed.status_code == 200 and resumed.json()["status"] == "queued"
    job = server.wait_for(paused["id"], timeout=600)
    assert job["status"] == "succeeded", job["error"]
    texts = [e["message"] for e in server.client.get(
        f"/v1/fine_tuning/jobs/{paused['id']}/events", params={"limit": 1000}).json()["data"]]
    assert f"Resuming from the checkpoint at step {step}." in texts

    a = load_file(server.home / "models" / straight["id"] / "model.safetensors")
    b = load_file(server.home / "models" / paused["id"] / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].allclose(b[name], atol=1e-5), name
    minilm = offline_hub / "hub" / "models--sentence-transformers--all-MiniLM-L6-v2"
    base = load_file(next(minilm.rglob("model.safetensors")))
    assert any(not a[f"bert.{name}"].allclose(base[name], atol=1e-4)
               for name in base if f"bert.{name}" in a)
    assert straight["evaluation"]["fine_tuned_model"] == pytest.approx(
        job["evaluation"]["fine_tuned_model"], abs=1e-6)
