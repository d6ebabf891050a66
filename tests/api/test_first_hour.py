"""A newcomer's mistakes, through a real server: errors that name their field in one sentence,
a CSV header that names no known column, and the warnings a job carries at its top (texts
cut at the model's length, validation rows that are training rows, a warm-up longer than the
training, a device the worker does not have)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.offline_models import MINILM
from tests.server import Server
from tuneforge.jobs.status import TERMINAL

JOBS = "/v1/fine_tuning/jobs"


def post_raw(server: Server, path: str, body: str) -> dict:
    r = server.client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    return r.json()["error"]


def test_a_body_that_is_not_json_is_one_sentence_with_its_line_and_column(server: Server) -> None:
    error = post_raw(server, JOBS, '{"model": "m",\n  "training_file": }')
    assert error["param"] is None
    assert error["message"].startswith("The request body is not valid JSON: Expecting value")
    assert error["message"].endswith("at line 2, column 20.")
    assert "[" not in error["message"]


def test_a_missing_training_file_is_named(server: Server) -> None:
    error = post_raw(server, JOBS, json.dumps({"model": MINILM}))
    assert error["param"] == "training_file"
    assert error["message"].startswith("training_file: a training file is required")
    assert [d["param"] for d in error["details"]] == ["training_file"]


def test_an_empty_embedding_input_is_one_sentence_naming_input(server: Server) -> None:
    for given, param, says in (
        ("", "input", "String should have at least 1 character"),
        ([], "input", "List should have at least 1 item"),
        (["a", ""], "input[1]", "String should have at least 1 character"),
        (7, "input", "expected a string, a list of strings, a list of integers or a list of "
         "lists of integers"),
    ):
        error = post_raw(server, "/v1/embeddings", json.dumps({"model": MINILM, "input": given}))
        assert error["param"] == param, error
        assert len(error["details"]) == 1, error
        assert error["message"].startswith(f"{param}: {says}"), error
        assert "list[" not in error["message"] and "constrained" not in error["message"]


def test_a_csv_header_that_names_no_known_column_is_a_problem_not_a_row(
    server: Server, tmp_path: Path
) -> None:
    path = tmp_path / "titles.csv"
    path.write_text("title,body\nA man plays a guitar.,Someone makes music.\n"
                    "A dog runs in a park.,An animal is outside.\n")
    uploaded = server.upload(path)
    assert uploaded["status"] == "error"
    report = server.client.get(f"/v1/datasets/{uploaded['id']}").json()
    [problem] = report["problems"]
    assert problem["line"] == 1 and problem["code"] == "unknown_header"
    assert "(title, body)" in problem["message"] and "sentence1, sentence2, score" in problem[
        "message"]
    # Headerless data whose first row is words, as the second is, stays data.
    words = tmp_path / "synonyms.csv"
    words.write_text("happy,glad\nsad,unhappy\nbig,large\n")
    assert server.upload(words)["status"] == "processed"


@pytest.mark.slow
def test_a_job_carries_its_warnings_with_their_numbers(server: Server, tmp_path: Path) -> None:
    pairs = [{"anchor": f"question number {i} about tea", "positive": f"answer {i} on tea"}
             for i in range(12)]
    pairs[3]["positive"] = "word " * 600  # 600 tokens and more: MiniLM reads 256
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(json.dumps(p) for p in pairs) + "\n")
    valid = tmp_path / "valid.jsonl"
    valid.write_text("\n".join(json.dumps(p) for p in pairs[:3] + [
        {"anchor": "a new question", "positive": "a new answer"}]) + "\n")
    body = {
        "model": MINILM, "training_file": server.upload(train)["id"],
        "validation_file": server.upload(valid)["id"], "seed": 1, "device": "cuda",
        "method": {"type": "embedding", "embedding": {"loss": "mnrl", "hyperparameters": {
            "n_epochs": 1, "batch_size": 8, "warmup_steps": 200}}},
    }
    r = server.client.post(JOBS, json=body)
    assert r.status_code == 200, r.text
    job = r.json()
    found = {w["code"]: w for w in job["warnings"]}
    assert set(found) == {"truncated_texts", "validation_overlap", "warmup_longer_than_training"}
    cut = found["truncated_texts"]["data"]
    assert (cut["texts"], cut["of"], cut["max_tokens"]) == (1, 32, 256)
    assert cut["longest"] > 600 and cut["share"] == round(1 / 32, 4)
    assert "1 of 32 texts (3.1%) are longer than 256 tokens" in found["truncated_texts"]["message"]
    overlap = found["validation_overlap"]["data"]
    assert (overlap["rows"], overlap["validation_rows"]) == (3, 4)
    assert found["warmup_longer_than_training"]["data"] == {"warmup_steps": 200, "total_steps": 2}
    assert "warmup_steps is 200, but the training takes 2 steps" in found[
        "warmup_longer_than_training"]["message"]
    # The worker has no CUDA: it trains on the CPU, and the job says so at its top as soon
    # as it starts (then it is cancelled: the rest is any job's training).
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        running = server.client.get(f"{JOBS}/{job['id']}").json()
        if len(running["warnings"]) > 3 or running["status"] in TERMINAL:
            break
        time.sleep(0.3)
    server.client.post(f"{JOBS}/{job['id']}/cancel")
    assert running["warnings"][-1]["code"] == "device_unavailable", running
    assert running["warnings"][-1]["data"] == {"requested": "cuda", "used": "cpu"}
    assert "no CUDA device: it trains on the CPU" in running["warnings"][-1]["message"]
    events = server.client.get(f"{JOBS}/{job['id']}/events", params={"limit": 100}).json()
    warned = {e["data"]["warning"] for e in events["data"]
              if e["level"] == "warn" and e["data"] and "warning" in e["data"]}
    assert warned == set(found) | {"device_unavailable"}
    # The CLI shows them first, on stderr, above the job's JSON.
    shown = subprocess.run(
        [sys.executable, "-m", "tuneforge.cli", "jobs", "get", job["id"]],
        env={**os.environ, "TUNEFORGE_URL": server.url}, capture_output=True, text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stderr.startswith("Warning [validation_overlap]: 3 of the 4 rows"), shown.stderr
    assert "Warning [truncated_texts]: 1 of 32 texts" in shown.stderr
    assert "Warning [device_unavailable]" in shown.stderr and job["id"] in shown.stdout


def test_a_clean_job_has_no_warnings(server: Server, tmp_path: Path) -> None:
    train = tmp_path / "clean.jsonl"
    train.write_text("\n".join(json.dumps({"anchor": f"q {i}", "positive": f"a {i}"})
                               for i in range(10)) + "\n")
    body = {"model": MINILM, "training_file": server.upload(train)["id"],
            "method": {"type": "embedding", "embedding": {"hyperparameters": {"n_epochs": 1}}}}
    job = server.client.post(JOBS, json=body).json()
    assert job["warnings"] == []
    server.client.post(f"{JOBS}/{job['id']}/cancel")
