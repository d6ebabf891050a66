"""Deployments end to end: a real server trains two versions of a tiny Llama, deploys them to
a stand-in Ollama server (over HTTP, through the official `ollama` client) and to its own
endpoints under an alias, rolls back, and restores what was live when a health check fails."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Server
from tests.deploy.ollama_standin import OllamaStandIn
from tests.tiny_llm import LLAMA, install_in_hf_cache, one_thread_jobs, write_jsonl
from tests.training.conftest import json_chats
from tuneforge.net import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def tiny_llama(offline_hub: Path) -> Iterator[None]:
    install_in_hf_cache(offline_hub, LLAMA)
    with one_thread_jobs():
        yield


@pytest.fixture(scope="module")
def versions(server: Server, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """`tiny-llama-deploy@v1` and `@v2`: two short trainings of the same registered model."""
    uploaded = server.upload(write_jsonl(tmp_path_factory.mktemp("data") / "c.jsonl",
                                         json_chats()))
    names = []
    for seed, lr in ((1, 1e-2), (2, 3e-2)):
        job = server.client.post("/v1/fine_tuning/jobs", json={
            "model": LLAMA, "training_file": uploaded["id"], "seed": seed, "suffix": "deploy",
            "method": {"type": "supervised", "supervised": {
                "generation_checks": {"samples": 1, "max_new_tokens": 4},
                "hyperparameters": {"n_epochs": 2, "batch_size": 8, "learning_rate": lr,
                                    "warmup_ratio": 0, "eval_steps": 1000}}}})
        assert job.status_code == 200, job.text
        done = server.wait_for(job.json()["id"], timeout=600)
        assert done["status"] == "succeeded", done["error"]
        names.append(done["fine_tuned_model"])
    registered = server.client.get("/v1/registered_models/tiny-llama-deploy/versions").json()
    assert sorted(v["version"] for v in registered["data"]) == [1, 2], registered
    return names


@pytest.fixture(scope="module")
def ollama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OllamaStandIn]:
    standin = OllamaStandIn(tmp_path_factory.mktemp("ollama"))
    yield standin
    standin.stop()


def _deploy(server: Server, model: str, target: dict, expect: str = "succeeded") -> dict:
    r = server.client.post("/v1/deployments", json={"model": model, "target": target})
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "deployment"
    done = server.wait_for(r.json()["id"], timeout=600, resource="/v1/deployments")
    assert done["status"] == expect, (done["error"], done["health_check"])
    return done


def _digest(server: Server, deployment: dict) -> str:
    """The SHA-256 of the GGUF file the deployment pushed."""
    source = deployment["details"]["export"]
    path = server.home / "exports" / source / deployment["details"]["gguf_file"]
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_ollama_deploys_checks_rolls_back_and_restores_on_a_failed_check(
    server: Server, versions: list[str], ollama: OllamaStandIn
) -> None:
    target = {"type": "ollama", "url": ollama.url, "name": "social-media", "quantization": "f16"}
    first = _deploy(server, "tiny-llama-deploy@v1", target)
    assert first["version"] == 1 and first["model"] == versions[0]
    check = first["health_check"]
    # As many prompts as asked (3) where the export was verified on that many: here the job's
    # validation split (and so the verification) has fewer.
    verified = len(first["details"]["export_details"]["verification"]["samples"])
    assert check["prompts"] == min(3, verified) >= 1, check
    assert check["passed"] and check["agreement"] >= 0.5, check
    assert all(a["answer"] for a in check["answers"])
    v1 = _digest(server, first)
    assert ollama.models["social-media:latest"]["digest"] == v1
    assert ollama.models["social-media:latest"]["stop"], "the Modelfile's stops went along"
    assert set(ollama.models) == {"social-media:latest"}

    second = _deploy(server, versions[1], target)
    assert second["details"]["replaced"] is True
    v2 = _digest(server, second)
    assert v2 != v1 and ollama.models["social-media:latest"]["digest"] == v2
    assert set(ollama.models) == {"social-media:latest"}, "the backup is gone once it passed"

    r = server.client.post(f"/v1/deployments/{second['id']}/rollback")
    assert r.status_code == 200, r.text
    back = server.wait_for(r.json()["id"], timeout=600, resource="/v1/deployments")
    assert back["status"] == "succeeded" and back["version"] == 1, back
    assert back["rollback_of"] == second["id"]
    assert back["details"]["export"] == first["id"], "v1's verified file is reused"
    assert ollama.models["social-media:latest"]["digest"] == v1

    ollama.broken = True
    try:
        failed = _deploy(server, "tiny-llama-deploy@v2", target, expect="failed")
    finally:
        ollama.broken = False
    assert failed["error"]["code"] == "deployment_failed"
    assert "health check" in failed["error"]["message"]
    assert failed["health_check"] is None or not failed["health_check"]["passed"]
    assert ollama.models["social-media:latest"]["digest"] == v1, "what was live is restored"
    assert set(ollama.models) == {"social-media:latest"}
    events = server.client.get(f"/v1/fine_tuning/jobs/{failed['id']}/events?limit=100").json()
    assert any("Rolled back" in e["message"] for e in events["data"])


def test_bad_targets_fail_clearly_and_touch_nothing(
    server: Server, versions: list[str], ollama: OllamaStandIn
) -> None:
    before = dict(ollama.models)
    nowhere = f"http://127.0.0.1:{free_port()}"
    failed = _deploy(server, "tiny-llama-deploy@v1",
                     {"type": "ollama", "url": nowhere, "quantization": "f16"}, expect="failed")
    assert failed["error"]["code"] == "deployment_failed"
    assert nowhere in failed["error"]["message"] and "unreachable" in failed["error"]["message"]
    assert ollama.models == before

    r = server.client.post("/v1/deployments", json={
        "model": "tiny-llama-deploy@v1", "target": {"type": "ollama", "url": "ftp://x"}})
    assert r.status_code in (400, 422) and "url" in r.json()["error"]["param"]
    r = server.client.post("/v1/deployments", json={
        "model": LLAMA, "target": {"type": "local"}})
    assert r.status_code == 400 and "registered model version" in r.json()["error"]["message"]
    r = server.client.post("/v1/deployments", json={
        "model": "tiny-llama-deploy@v9", "target": {"type": "local"}})
    assert r.status_code == 404
    # The first deployment to a target has nothing to roll back to.
    r = server.client.post(f"/v1/deployments/{failed['id']}/rollback")
    assert r.status_code == 409 and "Nothing to roll back to" in r.json()["error"]["message"]


def test_local_target_moves_the_alias_only_after_its_check(
    server: Server, versions: list[str]
) -> None:
    target = {"type": "local", "alias": "live"}
    first = _deploy(server, "tiny-llama-deploy@v1", target)
    assert first["health_check"]["passed"] and first["details"]["previous_version"] is None
    chat = {"model": "tiny-llama-deploy@live", "max_tokens": 4,
            "messages": [{"role": "user", "content": "Hashtags for cats"}]}
    r = server.client.post("/v1/chat/completions", json=chat)
    assert r.status_code == 200 and r.json()["model"] == "tiny-llama-deploy@live", r.text
    second = _deploy(server, "tiny-llama-deploy@v2", target)
    assert second["details"]["previous_version"] == 1
    aliases = server.client.get("/v1/registered_models/tiny-llama-deploy").json()
    assert aliases["aliases"]["live"] == 2, aliases
    r = server.client.post(f"/v1/deployments/{second['id']}/rollback")
    back = server.wait_for(r.json()["id"], timeout=600, resource="/v1/deployments")
    assert back["status"] == "succeeded" and back["version"] == 1
    aliases = server.client.get("/v1/registered_models/tiny-llama-deploy").json()
    assert aliases["aliases"]["live"] == 1
    listed = server.client.get("/v1/deployments?limit=100").json()
    assert {first["id"], second["id"], back["id"]} <= {d["id"] for d in listed["data"]}


def test_agreement_counts_the_shared_start_of_the_shorter_answer() -> None:
    from tuneforge.deploy.ollama import agreement, backup_name, read_modelfile

    assert agreement("abcd", "abXYZZ") == 0.5
    assert agreement("", "") == 1.0 and agreement("", "a") == 0.0
    assert agreement("x#el", "x#\ufffdel and more") == 1.0
    parsed = read_modelfile('FROM ./m.gguf\nTEMPLATE """{{ .Prompt }}\n"""\n'
                            'SYSTEM """Be brief."""\nPARAMETER stop "<|im_end|>"\n'
                            'PARAMETER stop "say \\"hi\\""\n')
    assert parsed.template == "{{ .Prompt }}\n" and parsed.system == "Be brief."
    assert parsed.parameters == {"stop": ["<|im_end|>", 'say "hi"']}
    assert backup_name("team/m", "deploy-0123456789abcdef") == "team/m-before-89abcdef:latest"
