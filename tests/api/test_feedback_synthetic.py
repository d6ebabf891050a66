"""Feedback and synthetic data end to end against a real server with a tiny Qwen2 model:
synthetic answers written locally and through tuneforge's own /v1/chat/completions (its API
key sent but never stored), the feedback loop (rate a production model, export, retrain in one
call, promotion gate), and the CLI's commands for them, run as a user runs them."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import Server
from tests.test_cli import tuneforge, user_env
from tests.tiny_llm import QWEN, install_in_hf_cache, write_jsonl
from tests.training.conftest import json_chats

pytestmark = pytest.mark.slow

NAME = "feedback-demo"
FAST = {
    "n_epochs": 1,
    "batch_size": 4,
    "gradient_accumulation_steps": 1,
    "learning_rate": 1e-3,
    "warmup_ratio": 0,
    "gradient_checkpointing": False,
}


# The key the server's worker finds in its environment (endpoint.api_key_env).
KEY_VARIABLE = "TUNEFORGE_TEST_ENDPOINT_KEY"
ENV_KEY = "env-key-5f1c0d9e7a"
INLINE_KEY = "inline-key-93b2e4f6c8"


@pytest.fixture(scope="module", autouse=True)
def tiny_models(offline_hub: Path) -> Iterator[None]:
    """The tiny model in the offline Hub cache, and the environment the module's server
    starts with (autouse: set before `server`)."""
    install_in_hf_cache(offline_hub, QWEN)
    saved = {name: os.environ.get(name) for name in ("OMP_NUM_THREADS", KEY_VARIABLE)}
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ[KEY_VARIABLE] = ENV_KEY
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name)
        else:
            os.environ[name] = value


class RecordingEndpoint:
    """An OpenAI-compatible endpoint in front of the test server: it records each request's
    Authorization header, and the modes of the endpoint key files in the server's data folder
    at that moment, and forwards the request to the server's /v1/chat/completions."""

    def __init__(self, server: Server):
        self.requests: list[dict[str, Any]] = []
        secrets = server.home / "secrets"
        forward = httpx.Client(base_url=server.url, timeout=120)
        recorded = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                recorded.append(
                    {
                        "path": self.path,
                        "authorization": self.headers.get("Authorization"),
                        "key_files": {
                            p.name: stat.S_IMODE(p.stat().st_mode) for p in secrets.glob("*.key")
                        },
                        "secrets_mode": stat.S_IMODE(secrets.stat().st_mode)
                        if secrets.exists()
                        else None,
                    }
                )
                answer = forward.post(
                    self.path, content=body, headers={"Content-Type": "application/json"}
                )
                self.send_response(answer.status_code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()
        self.forward = forward

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.forward.close()


@pytest.fixture(scope="module")
def endpoint(server: Server) -> Iterator[RecordingEndpoint]:
    recording = RecordingEndpoint(server)
    yield recording
    recording.close()


@pytest.fixture(scope="module")
def cli_env(server: Server) -> dict[str, str]:
    return user_env(TUNEFORGE_URL=server.url)


@pytest.fixture(scope="module")
def production(server: Server, tmp_path_factory: pytest.TempPathFactory) -> str:
    """NAME version 1, trained on the JSON chats and promoted to `production`."""
    path = write_jsonl(tmp_path_factory.mktemp("data") / "chats.jsonl", json_chats())
    file_id = server.upload(path)["id"]
    first = server.client.post(
        "/v1/fine_tuning/jobs",
        json={
            "model": QWEN,
            "training_file": file_id,
            "seed": 1,
            "registered_model": NAME,
            "promote": {"alias": "production", "min_delta": -1e9},
            "method": {
                "type": "supervised",
                "supervised": {"generation_checks": {"samples": 0}, "hyperparameters": FAST},
            },
        },
    )
    assert first.status_code == 200, first.text
    done = server.wait_for(first.json()["id"])
    assert done["status"] == "succeeded", done["error"]
    return NAME


def wait_synthetic(server: Server, job_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = server.client.get(f"/v1/synthetic-data/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"{job_id} still {job['status']}")


def synthetic_body(**source: object) -> dict:
    return {
        "template_prompts": ["Write a short post about {topic}.", "Hashtags for {topic}?"],
        "values": {"topic": ["coffee", "football", "music", "travel"]},
        "generation_config": {"num_samples": 6, "temperature": 1.0, "max_tokens": 12},
        "quality": {"near_duplicate_threshold": 0.95},
        "seed": 3,
        **source,
    }


def test_synthetic_data_becomes_a_valid_dataset(server: Server) -> None:
    created = server.client.post("/v1/synthetic-data", json=synthetic_body(model=QWEN))
    assert created.status_code == 200, created.text
    assert created.json()["object"] == "synthetic_data"
    job = wait_synthetic(server, created.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    result = job["result"]
    assert result["generated"] == 6
    assert result["kept"] + sum(result["removed"].values()) == 6
    dataset = server.client.get(f"/v1/datasets/{job['dataset_id']}").json()
    assert dataset["valid"] and dataset["kind"] == "supervised"
    assert dataset["statistics"]["rows"] == result["kept"]
    assert dataset["synthetic"]["job_id"] == job["id"]
    content = server.client.get(f"/v1/files/{job['dataset_id']}/content").text
    assert "Write a short post about" in content or "Hashtags for" in content
    # Synthetic jobs are not fine-tuning jobs.
    listed = server.client.get("/v1/fine_tuning/jobs", params={"limit": 100}).json()["data"]
    assert job["id"] not in [j["id"] for j in listed]


def test_synthetic_errors_are_clear(server: Server) -> None:
    body = synthetic_body(model=QWEN)
    body["template_prompts"].append("About {brand} and {topic}")
    refused = server.client.post("/v1/synthetic-data", json=body)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["param"] == "template_prompts"
    assert "no values for {brand}" in refused.json()["error"]["message"]
    both = server.client.post(
        "/v1/synthetic-data",
        json=synthetic_body(model=QWEN, endpoint={"url": server.url, "model": QWEN}),
    )
    assert both.status_code == 422
    unknown = server.client.post("/v1/synthetic-data", json=synthetic_body(model="ft:no:such:x"))
    assert unknown.status_code == 404
    schema = server.client.post(
        "/v1/synthetic-data",
        json=synthetic_body(model=QWEN, quality={"json_schema": {"type": "object", "oneOf": []}}),
    )
    assert schema.status_code == 400 and "oneOf" in schema.json()["error"]["message"]
    closed = server.client.post(
        "/v1/synthetic-data",
        json=synthetic_body(endpoint={"url": "http://127.0.0.1:9", "model": "m"}),
    )
    job = wait_synthetic(server, closed.json()["id"])
    assert job["status"] == "failed"
    assert job["error"]["code"] == "endpoint_error" and "127.0.0.1:9" in job["error"]["message"]
    # Every answer fails a JSON schema: the job says so instead of storing an empty dataset.
    strict = server.client.post(
        "/v1/synthetic-data",
        json=synthetic_body(model=QWEN, quality={"json_schema": {"type": "object"}}),
    )
    job = wait_synthetic(server, strict.json()["id"])
    assert job["status"] == "failed" and job["error"]["code"] == "invalid_dataset"
    assert "0 of 6" in job["error"]["message"]


def test_feedback_retrain_in_one_call(server: Server, production: str) -> None:
    production = f"{production}@production"

    def rate(prompt: str, output: str, rating: str, corrected: str | None = None) -> dict:
        body = {"model": production, "prompt": prompt, "output": output, "rating": rating}
        if corrected:
            body["corrected_output"] = corrected
        r = server.client.post("/v1/feedback", json=body)
        assert r.status_code == 200, r.text
        return r.json()

    rate("Hashtags for coffee", '{"topic": "coffee", "hashtags": ["#coffee"]}', "up")
    rate("Hashtags for coffee", "coffee coffee coffee", "down")
    edited = rate("Hashtags for tea", "tea", "edited", '{"topic": "tea", "hashtags": ["#tea"]}')
    rate("Hashtags for music", '{"topic": "music", "hashtags": ["#music"]}', "up")
    rate("Hashtags for music", "la la la", "down")
    assert edited["registered_model"] == NAME and edited["rating"] == "edited"
    listed = server.client.get("/v1/feedback", params={"registered_model": NAME, "rating": "down"})
    assert len(listed.json()["data"]) == 2
    missing = server.client.post(
        "/v1/feedback",
        json={"model": f"{NAME}@staging", "prompt": "p", "output": "o", "rating": "up"},
    )
    assert missing.status_code == 404

    sft = server.client.post(
        "/v1/feedback/export", json={"registered_model": NAME, "kind": "supervised"}
    )
    assert sft.status_code == 200, sft.text
    assert sft.json()["dataset"]["valid"] and sft.json()["rows"] == 3

    files_before = len(server.client.get("/v1/files").json()["data"])
    bad = server.client.post(
        "/v1/feedback/retrain",
        json={"registered_model": NAME, "kind": "dpo", "method": {"hyperparameters": {"beta": -1}}},
    )
    assert bad.status_code == 400 and "beta" in bad.json()["error"]["param"]
    assert len(server.client.get("/v1/files").json()["data"]) == files_before

    retrain = server.client.post(
        "/v1/feedback/retrain",
        json={
            "registered_model": NAME,
            "kind": "dpo",
            "seed": 2,
            "min_delta": -1e9,
            "method": {"generation_checks": {"samples": 0}, "hyperparameters": FAST},
        },
    )
    assert retrain.status_code == 200, retrain.text
    body = retrain.json()
    assert body["export"]["by_source"] == {"edited": 1, "up_vs_down": 2}
    assert body["job"]["model"] == production
    job = server.wait_for(body["job"]["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["registered_model"] == {"name": NAME, "version": 2}
    assert job["promotion"]["promote"] is True
    registered = server.client.get(f"/v1/registered_models/{NAME}").json()
    assert registered["aliases"] == {"production": 2}


# -- the endpoint's API key --------------------------------------------------------------------


def wait_until_gone(path: Path, timeout: float = 60) -> None:
    """The runner deletes an ended job's key right after the job's last state change."""
    deadline = time.monotonic() + timeout
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not path.exists(), f"{path} is still there"


def stored_text(server: Server) -> str:
    """Every row of every table of the server's database, as text."""
    with sqlite3.connect(server.home / "tuneforge.db") as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return "\n".join(repr(row) for t in tables for row in db.execute(f'SELECT * FROM "{t}"'))


def test_endpoint_key_is_sent_but_never_stored(server: Server, endpoint: RecordingEndpoint) -> None:
    inline = server.client.post(
        "/v1/synthetic-data",
        json=synthetic_body(endpoint={"url": endpoint.url, "model": QWEN, "api_key": INLINE_KEY}),
    )
    assert inline.status_code == 200, inline.text
    job_id = inline.json()["id"]
    assert inline.json()["request"]["endpoint"]["api_key"] == "***"
    job = wait_synthetic(server, job_id)
    assert job["status"] == "succeeded", job["error"]
    dataset = server.client.get(f"/v1/datasets/{job['dataset_id']}").json()
    assert dataset["valid"] and dataset["statistics"]["rows"] == job["result"]["kept"]
    # Every answer was asked for with the key; while the job ran, the key lay in its file,
    # readable by the service's user only.
    assert len(endpoint.requests) == 6
    for request in endpoint.requests:
        assert request["path"] == "/v1/chat/completions"
        assert request["authorization"] == f"Bearer {INLINE_KEY}"
        assert request["key_files"] == {f"{job_id}.key": 0o600}
        assert request["secrets_mode"] == 0o700
    wait_until_gone(server.home / "secrets" / f"{job_id}.key")

    endpoint.requests.clear()
    by_env = server.client.post(
        "/v1/synthetic-data",
        json=synthetic_body(
            endpoint={"url": endpoint.url, "model": QWEN, "api_key_env": KEY_VARIABLE}
        ),
    )
    assert by_env.status_code == 200, by_env.text
    assert by_env.json()["request"]["endpoint"]["api_key_env"] == KEY_VARIABLE
    assert by_env.json()["request"]["endpoint"]["api_key"] is None
    job = wait_synthetic(server, by_env.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    assert [r["authorization"] for r in endpoint.requests] == [f"Bearer {ENV_KEY}"] * 6
    assert all(r["key_files"] == {} for r in endpoint.requests)

    # A variable the worker does not have: the job says which, and asks nothing.
    endpoint.requests.clear()
    unset = server.client.post(
        "/v1/synthetic-data",
        json=synthetic_body(
            endpoint={"url": endpoint.url, "model": QWEN, "api_key_env": "TUNEFORGE_TEST_UNSET"}
        ),
    )
    job = wait_synthetic(server, unset.json()["id"])
    assert job["status"] == "failed" and job["error"]["param"] == "endpoint.api_key_env"
    assert "TUNEFORGE_TEST_UNSET is not set" in job["error"]["message"]
    assert endpoint.requests == []
    jobs_before = len(server.client.get("/v1/synthetic-data", params={"limit": 100}).json()["data"])
    for wrong in (
        {"api_key": INLINE_KEY, "api_key_env": KEY_VARIABLE},
        {"api_key_env": "NOT-A-NAME"},
    ):
        refused = server.client.post(
            "/v1/synthetic-data",
            json=synthetic_body(endpoint={"url": endpoint.url, "model": QWEN, **wrong}),
        )
        assert refused.status_code == 422, refused.text
    jobs_after = len(server.client.get("/v1/synthetic-data", params={"limit": 100}).json()["data"])
    assert jobs_after == jobs_before

    # Neither key is anywhere in the database (jobs, events, audit), nor in its files.
    text = stored_text(server)
    assert job_id in text and KEY_VARIABLE in text
    assert INLINE_KEY not in text and ENV_KEY not in text
    for path in server.home.glob("tuneforge.db*"):
        assert INLINE_KEY.encode() not in path.read_bytes(), path
    with sqlite3.connect(server.home / "tuneforge.db") as db:
        (spec,) = db.execute("SELECT spec FROM jobs WHERE id = ?", (job_id,)).fetchone()
    assert json.loads(spec)["endpoint"]["api_key"] == "***"
    assert list((server.home / "secrets").glob("*.key")) == []


# -- the CLI -----------------------------------------------------------------------------------


def flat(text: str) -> str:
    """Output with Rich's line wrapping undone."""
    return " ".join(text.split())


def test_cli_synthetic_create(server: Server, cli_env: dict[str, str], tmp_path: Path) -> None:
    request = tmp_path / "request.yaml"
    request.write_text(yaml.safe_dump(synthetic_body(model=QWEN)), encoding="utf-8")
    made = tuneforge("synthetic", "create", request, env=cli_env, timeout=300)
    assert made.returncode == 0, made.stderr
    found = re.search(r"Dataset (\S+): (\d+) of 6 answers kept", flat(made.stdout))
    assert found, made.stdout
    dataset = server.client.get(f"/v1/datasets/{found[1]}").json()
    assert dataset["valid"] and dataset["statistics"]["rows"] == int(found[2])
    assert dataset["synthetic"]["source"] == {"model": QWEN}

    jobs_before = len(server.client.get("/v1/synthetic-data", params={"limit": 100}).json()["data"])
    body = synthetic_body(model=QWEN)
    body["template_prompts"].append("About {brand}")
    request.write_text(yaml.safe_dump(body), encoding="utf-8")
    refused = tuneforge("synthetic", "create", request, env=cli_env)
    assert refused.returncode == 1
    assert "no values for {brand}" in flat(refused.stderr)
    assert "param: template_prompts" in refused.stderr
    jobs_after = len(server.client.get("/v1/synthetic-data", params={"limit": 100}).json()["data"])
    assert jobs_after == jobs_before
    # A job that fails: the command waits for it and exits with its error.
    request.write_text(
        yaml.safe_dump(synthetic_body(endpoint={"url": "http://127.0.0.1:9", "model": "m"})),
        encoding="utf-8",
    )
    failed = tuneforge("synthetic", "create", request, env=cli_env, timeout=300)
    assert failed.returncode == 1
    assert "endpoint_error: Could not reach http://127.0.0.1:9" in flat(failed.stderr)


def test_cli_datasets_prepare(server: Server, cli_env: dict[str, str], tmp_path: Path) -> None:
    rows = json_chats()
    raw = server.upload(write_jsonl(tmp_path / "raw.jsonl", [*rows, rows[0], rows[3]]))["id"]
    prepared = tuneforge(
        "datasets", "prepare", raw, "--near-duplicates", "0", "--validation-share", "0.25",
        "--seed", "3", env=cli_env,
    )  # fmt: skip
    assert prepared.returncode == 0, prepared.stderr
    out = flat(prepared.stdout)
    found = re.search(
        r"10 rows in, 8 kept; train (\S+) \((\d+) rows\), validation (\S+) \((\d+) rows\)", out
    )
    assert found, out
    assert (int(found[2]), int(found[4])) == (6, 2)
    assert re.search(r"exact_duplicate\W+2\b", out) and "Languages: en 8" in out
    for dataset_id, n in ((found[1], 6), (found[3], 2)):
        dataset = server.client.get(f"/v1/datasets/{dataset_id}").json()
        assert dataset["valid"] and dataset["statistics"]["rows"] == n
        assert dataset["preparation"]["removed"] == {"exact_duplicate": 2}

    files_before = len(server.client.get("/v1/files", params={"limit": 100}).json()["data"])
    refused = tuneforge("datasets", "prepare", raw, "--merge", "file-nosuchfile", env=cli_env)
    assert refused.returncode == 1
    assert "file-nosuchfile" in flat(refused.stderr)
    out_of_range = tuneforge("datasets", "prepare", raw, "--validation-share", "1.5", env=cli_env)
    assert out_of_range.returncode == 1 and "validation_share" in out_of_range.stderr
    files_after = len(server.client.get("/v1/files", params={"limit": 100}).json()["data"])
    assert files_after == files_before


def test_cli_feedback_loop_retrains_supervised(
    server: Server, cli_env: dict[str, str], production: str, tmp_path: Path
) -> None:
    wide = dict(cli_env, COLUMNS="200")  # the table's ids and prompts unabridged
    model = f"{production}@production"
    corrected = '{"topic": "tea", "hashtags": ["#tea", "#news"]}'
    added = tuneforge(
        "feedback", "add", "--model", model, "--prompt", "Hashtags for tea", "--output", "tea",
        "--rating", "edited", "--corrected", corrected, env=cli_env,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    found = re.match(r"(\S+) \(edited, (\S+)\)", flat(added.stdout))
    assert found, added.stdout
    feedback = server.client.get(f"/v1/feedback/{found[1]}").json()
    assert feedback["corrected_output"] == corrected and feedback["registered_model"] == NAME
    liked = '{"topic": "jazz", "hashtags": ["#jazz", "#news"]}'
    up = tuneforge(
        "feedback", "add", "--model", model, "--prompt", "Hashtags for jazz", "--output", liked,
        "--rating", "up", env=cli_env,
    )  # fmt: skip
    assert up.returncode == 0, up.stderr

    count = len(server.client.get("/v1/feedback", params={"limit": 1000}).json()["data"])
    for wrong, says in (
        (("--model", model, "--rating", "meh"), "rating"),
        (("--model", f"{NAME}@staging", "--rating", "up"), "staging"),
    ):
        refused = tuneforge(
            "feedback", "add", *wrong, "--prompt", "p", "--output", "o", env=cli_env
        )
        assert refused.returncode == 1 and says in refused.stderr, refused.stderr
    assert len(server.client.get("/v1/feedback", params={"limit": 1000}).json()["data"]) == count

    listed = tuneforge(
        "feedback", "list", "--registered-model", NAME, "--rating", "edited", env=wide
    )
    assert listed.returncode == 0, listed.stderr
    assert found[1] in listed.stdout and "Hashtags for tea" in listed.stdout
    assert "Hashtags for jazz" not in listed.stdout
    bad_list = tuneforge("feedback", "list", "--rating", "meh", env=cli_env)
    assert bad_list.returncode == 1 and "rating" in bad_list.stderr

    exported = tuneforge("feedback", "export", "--registered-model", NAME, env=cli_env)
    assert exported.returncode == 0, exported.stderr
    found = re.match(r"(\S+): (\d+) supervised rows", flat(exported.stdout))
    assert found, exported.stdout
    rated = server.client.get(
        "/v1/feedback", params={"registered_model": NAME, "limit": 1000}
    ).json()["data"]
    assert int(found[2]) == sum(r["rating"] in ("up", "edited") for r in rated)
    content = server.client.get(f"/v1/files/{found[1]}/content").text
    assert "#tea" in content and "#jazz" in content
    bad_export = tuneforge("feedback", "export", "--kind", "sft", env=cli_env)
    assert bad_export.returncode == 1 and "kind" in bad_export.stderr

    # Retrain: supervised, on the exported feedback, from the production version.
    versions = server.client.get(f"/v1/registered_models/{NAME}/versions").json()["data"]
    latest = max(v["version"] for v in versions)
    was = server.client.get(f"/v1/registered_models/{NAME}").json()["aliases"]["production"]
    config = tmp_path / "retrain.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "seed": 4,
                "suffix": "cli",
                "method": {"generation_checks": {"samples": 0}, "hyperparameters": FAST},
            }
        ),
        encoding="utf-8",
    )
    retrained = tuneforge("feedback", "retrain", NAME, "--config", config, env=cli_env)
    assert retrained.returncode == 0, retrained.stderr
    found = re.match(r"Job (\S+) queued on (\S+) \((\d+) rows\)", flat(retrained.stdout))
    assert found, retrained.stdout
    job = server.wait_for(found[1])
    assert job["status"] == "succeeded", job["error"]
    assert job["model"] == model and job["method"]["type"] == "supervised"
    assert job["training_file"] == found[2] and job["suffix"] == "cli"
    trained_on = server.client.get(f"/v1/files/{found[2]}/content").text
    assert "#tea" in trained_on and "#jazz" in trained_on
    assert job["registered_model"] == {"name": NAME, "version": latest + 1}
    # The gate measured the new version against production on the same data, and decided.
    gate = job["promotion"]
    assert gate["alias"] == "production" and gate["against_version"] == was
    assert gate["min_delta"] == 0 and gate["promote"] == (gate["gain"] >= 0)
    now = server.client.get(f"/v1/registered_models/{NAME}").json()["aliases"]["production"]
    assert now == (latest + 1 if gate["promote"] else was)

    jobs_before = len(
        server.client.get("/v1/fine_tuning/jobs", params={"limit": 100}).json()["data"]
    )
    unknown = tuneforge("feedback", "retrain", "no-such-model", env=cli_env)
    assert unknown.returncode == 1 and "no-such-model" in flat(unknown.stderr)
    config.write_text("- just\n- a list\n", encoding="utf-8")
    not_a_mapping = tuneforge("feedback", "retrain", NAME, "--config", config, env=cli_env)
    assert not_a_mapping.returncode == 1
    assert "must hold a mapping" in flat(not_a_mapping.stderr)
    jobs_after = len(
        server.client.get("/v1/fine_tuning/jobs", params={"limit": 100}).json()["data"]
    )
    assert jobs_after == jobs_before
