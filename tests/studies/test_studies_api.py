"""Studies end to end: the real server searches learning rates for all-MiniLM-L6-v2 on STS
Benchmark pairs; every trial is a real job, losers are pruned, the best model is registered."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..conftest import Server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sts_file(server: Server, stsb_slice: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    # 200 pairs: 180 to train on (12 steps of 16), 20 held out and evaluated every 3 steps.
    path = tmp_path_factory.mktemp("study-data") / "sts-200.csv"
    path.write_bytes(b"\n".join(stsb_slice.read_bytes().split(b"\n")[:200]) + b"\n")
    return server.upload(path)["id"]


def study_body(model_id: str, file_id: str, **extra) -> dict:
    body = {
        "name": "sts-lr",
        "job": {"model": model_id, "training_file": file_id, "seed": 7, "suffix": "study",
                "method": {"type": "embedding", "embedding": {"loss": "cosent", "hyperparameters": {
                    "n_epochs": 1, "batch_size": 16, "eval_steps": 3, "logging_steps": 3,
                    "max_seq_length": 48}}}},
        # From far too small to far too large: the sampler's seed draws learning rates that
        # wreck the model (2.1e-3, 2.3e-3, 7.3e-4) beside ones that do not (1.6e-4, 8.8e-6).
        "search_space": {"learning_rate": {"low": 1e-7, "high": 3e-3, "log": True},
                         "warmup_ratio": [0.0, 0.1]},
        "objective": {"metric": "spearman_cosine"},
        "n_trials": 6,
        "pruner": {"type": "median", "n_startup_trials": 2},
        "sampler": {"type": "random", "seed": 4},
    }
    body.update(extra)
    return body


def wait_for_study(server: Server, study_id: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        study = server.client.get(f"/v1/studies/{study_id}").json()
        if study["status"] != "running":
            return study
        time.sleep(1)
    raise AssertionError(f"study {study_id} still running after {timeout}s: {study}")


def test_a_study_runs_trials_as_jobs_prunes_and_registers_the_best(
        server: Server, sts_file: str, model_id: str) -> None:
    created = server.client.post("/v1/studies", json=study_body(model_id, sts_file))
    assert created.status_code == 200, created.text
    study = created.json()
    assert study["object"] == "study" and study["status"] == "running"
    assert study["objective"] == {"metric": "spearman_cosine", "direction": "maximize"}

    study = wait_for_study(server, study["id"])
    assert study["status"] == "succeeded", study
    trials = study["trials"]
    assert [t["number"] for t in trials] == list(range(6))
    # Each trial is a normal job with the sampled values.
    for t in trials:
        job = server.client.get(f"/v1/fine_tuning/jobs/{t['job_id']}").json()
        assert job["metadata"]["study"] == study["id"]
        hp = job["hyperparameters"]
        assert hp["learning_rate"] == t["params"]["learning_rate"]
        assert hp["warmup_ratio"] == t["params"]["warmup_ratio"]
        assert 1e-7 <= hp["learning_rate"] <= 3e-3
    states = [t["state"] for t in trials]
    assert "running" not in states
    assert states.count("pruned") >= 1, trials
    assert states.count("complete") >= 2, trials
    assert study["trial_counts"]["pruned"] == states.count("pruned")

    # A pruned trial's job stopped early, said why in its events, and was cancelled.
    pruned = next(t for t in trials if t["state"] == "pruned")
    job = server.wait_for(pruned["job_id"])
    assert job["status"] == "cancelled"
    assert job["progress"]["step"] < job["progress"]["total_steps"]
    events = server.client.get(f"/v1/fine_tuning/jobs/{pruned['job_id']}/events",
                               params={"limit": 1000}).json()["data"]
    pruned_events = [e for e in events if (e["data"] or {}).get("pruned")]
    assert pruned_events and "Pruned by study" in pruned_events[0]["message"]
    assert pruned["intermediate_values"], pruned

    # The best trial: the highest final spearman_cosine of the completed trials.
    complete = [t for t in trials if t["state"] == "complete"]
    best = max(complete, key=lambda t: t["value"])
    assert study["best_trial"]["number"] == best["number"]
    assert study["best_trial"]["params"] == best["params"]
    best_job = server.client.get(f"/v1/fine_tuning/jobs/{best['job_id']}").json()
    assert best_job["evaluation"]["fine_tuned_model"]["spearman_cosine"] == best["value"]

    # Registered: the alias `best` points at the best trial's version.
    registered = study["registered_model"]
    assert registered["version"] == best_job["registered_model"]["version"]
    model = server.client.get(f"/v1/registered_models/{registered['name']}").json()
    assert model["aliases"]["best"] == registered["version"]
    imp, note = study["param_importances"], study["param_importances_note"]
    assert (imp and set(imp) == {"learning_rate", "warmup_ratio"}
            and abs(sum(imp.values()) - 1) < 1e-3) or note, study

    # promote moves another alias to the same version.
    promoted = server.client.post(f"/v1/studies/{study['id']}/promote",
                                  json={"alias": "production"})
    assert promoted.status_code == 200, promoted.text
    model = server.client.get(f"/v1/registered_models/{registered['name']}").json()
    assert model["aliases"]["production"] == registered["version"]

    listed = server.client.get("/v1/studies", params={"status": "succeeded"}).json()["data"]
    assert study["id"] in [s["id"] for s in listed]

    # The CLI shows the trials table and the best trial.
    shown = subprocess.run(
        [sys.executable, "-m", "tuneforge.cli", "studies", "show", study["id"],
         "--url", server.url], capture_output=True, text=True, env=server.env, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert f"Best: trial {best['number']}" in shown.stdout and "pruned" in shown.stdout


def test_a_cancelled_study_cancels_its_trial_jobs(server: Server, sts_file: str,
                                                  model_id: str) -> None:
    body = study_body(model_id, sts_file, n_trials=4, name="to-cancel")
    study = server.client.post("/v1/studies", json=body).json()
    deadline = time.monotonic() + 120
    while not server.client.get(f"/v1/studies/{study['id']}").json()["trials"]:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    r = server.client.post(f"/v1/studies/{study['id']}/cancel")
    assert r.status_code == 200 and r.json()["cancel_requested"]
    study = wait_for_study(server, study["id"], timeout=120)
    assert study["status"] == "cancelled"
    assert len(study["trials"]) < 4
    for t in study["trials"]:
        assert t["state"] == "cancelled"
        assert server.wait_for(t["job_id"], timeout=120)["status"] == "cancelled"
    again = server.client.post(f"/v1/studies/{study['id']}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "invalid_state"


@pytest.mark.parametrize(("change", "status", "param"), [
    ({"search_space": {"no_such_knob": [1, 2]}}, 400, "search_space.no_such_knob"),
    ({"search_space": {"batch_size": {"low": 0, "high": 8}}}, 400, "search_space.batch_size"),
    ({"search_space": {"learning_rate": {"low": 1, "high": 0.1}}}, 422,
     "search_space.learning_rate"),
    ({"n_trials": 0}, 422, "n_trials"),
    ({"pruner": {"type": "guess"}}, 422, "pruner.type"),
    ({"objective": {}}, 422, "objective.metric"),
])
def test_bad_studies_are_refused_and_change_nothing(server: Server, sts_file: str,
                                                    model_id: str, change, status,
                                                    param) -> None:
    before = server.client.get("/v1/studies", params={"limit": 100}).json()["data"]
    r = server.client.post("/v1/studies", json=study_body(model_id, sts_file, **change))
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"].startswith(param), r.json()
    assert server.client.get("/v1/studies", params={"limit": 100}).json()["data"] == before


def test_unknown_files_and_studies(server: Server, model_id: str) -> None:
    r = server.client.post("/v1/studies", json=study_body(model_id, "file-nope"))
    assert r.status_code == 404 and r.json()["error"]["code"] == "file_not_found"
    r = server.client.get("/v1/studies/study-nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "study_not_found"
    assert json.loads(r.text)["error"]["param"] == "id"
