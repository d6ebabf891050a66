"""Deployments to a Hugging Face Hub repository, end to end: a real server trains two versions
of all-MiniLM-L6-v2 and deploys them to a stand-in Hub over HTTP (through `huggingface_hub`,
the token from the server's HF_TOKEN), reads every file back, rolls back, and restores the
repository when the files come back altered."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Server
from tests.deploy.hub_standin import HubStandIn
from tests.server import TEST_ENV
from tuneforge.net import free_port

pytestmark = pytest.mark.slow

NAME = "sts-hub"
TOKEN = "hf_standin_token"
REPO = "acme/sts-hub"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubStandIn]:
    standin = HubStandIn(tmp_path_factory.mktemp("hub"), TOKEN)
    yield standin
    standin.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, offline_hub: Path) -> Iterator[Server]:
    """The module's server: the hub token in its environment, no Xet uploads (the stand-in
    speaks the LFS protocol only), and not offline (huggingface_hub then sends nothing; the
    base model is found in the offline cache all the same)."""
    srv = Server(tmp_path_factory.mktemp("server") / "tuneforge-data",
                 env={**TEST_ENV, "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_XET": "1",
                      "HF_HUB_OFFLINE": "0"})
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def versions(server: Server, stsb_slice: Path, model_id: str,
             tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """`sts-hub@v1` and `@v2`: two one-epoch trainings on 32 STS Benchmark pairs."""
    small = tmp_path_factory.mktemp("data") / "stsb-32.csv"
    small.write_bytes(b"\n".join(stsb_slice.read_bytes().split(b"\n")[:32]) + b"\n")
    file_id = server.upload(small)["id"]
    for seed in (1, 2):
        job = server.client.post("/v1/fine_tuning/jobs", json={
            "model": model_id, "training_file": file_id, "seed": seed,
            "registered_model": NAME, "method": {"type": "embedding", "embedding": {
                "loss": "cosent", "hyperparameters": {"n_epochs": 1, "batch_size": 16}}}})
        assert job.status_code == 200, job.text
        done = server.wait_for(job.json()["id"], timeout=600)
        assert done["status"] == "succeeded", done["error"]
    found = [server.client.get(f"/v1/registered_models/{NAME}/versions/{v}").json()
             for v in (1, 2)]
    assert all(v["artefacts"] for v in found), found
    return found


def _files(version: dict) -> dict[str, str]:
    return {a["path"]: a["sha256"] for a in version["artefacts"]}


def _deploy(server: Server, model: str, target: dict, expect: str = "succeeded") -> dict:
    r = server.client.post("/v1/deployments", json={"model": model, "target": target})
    assert r.status_code == 200, r.text
    done = server.wait_for(r.json()["id"], timeout=600, resource="/v1/deployments")
    assert done["status"] == expect, (done["error"], done["health_check"])
    return done


def _held(hub: HubStandIn, repo: str, revision: str = "main") -> dict[str, str]:
    return {p: s for p, s in hub.files(repo, revision).items() if p != ".gitattributes"}


def test_hub_deploys_checks_rolls_back_and_restores_on_a_failed_check(
    server: Server, versions: list[dict], hub: HubStandIn
) -> None:
    v1, v2 = (_files(v) for v in versions)
    assert v1 != v2 and "README.md" in v1 and "model.safetensors" in v1
    target = {"type": "huggingface", "repo_id": REPO, "endpoint": hub.url}
    first = _deploy(server, f"{NAME}@v1", target)
    assert first["target_key"] == f"huggingface {hub.url} {REPO}"
    details, check = first["details"], first["health_check"]
    assert details["created_repo"] is True and details["commit"] == hub.head(REPO)
    assert hub.repos[REPO]["private"] is True, "private unless told otherwise"
    assert check["passed"] and check["files"] == len(v1) and not check["mismatched"], check
    assert check["model"]["kind"] == "embedding" and check["model"]["passed"], check
    assert _held(hub, REPO) == v1
    message = hub.repos[REPO]["commits"][details["commit"]]["message"]
    assert f"{NAME} v1" in message and first["id"] in message
    # The model weights went as LFS (batch + PUT), the small files inline in the commit.
    assert any(path.endswith(".lfs") for method, path in hub.requests if method == "PUT")

    second = _deploy(server, f"{NAME}@v2", target)
    assert second["details"]["previous_commit"] == details["commit"]
    assert second["details"]["commit"] == hub.head(REPO) != details["commit"]
    assert second["details"]["created_repo"] is False
    assert _held(hub, REPO) == v2

    r = server.client.post(f"/v1/deployments/{second['id']}/rollback")
    assert r.status_code == 200, r.text
    back = server.wait_for(r.json()["id"], timeout=600, resource="/v1/deployments")
    assert back["status"] == "succeeded" and back["version"] == 1, back
    assert back["rollback_of"] == second["id"]
    assert _held(hub, REPO) == v1
    live = hub.head(REPO)

    hub.corrupt = True
    try:
        failed = _deploy(server, f"{NAME}@v2", target, expect="failed")
    finally:
        hub.corrupt = False
    assert failed["error"]["code"] == "deployment_failed"
    assert "health check" in failed["error"]["message"]
    assert "restored" in failed["error"]["message"]
    assert hub.head(REPO) != live, "the restore is a commit of its own"
    assert _held(hub, REPO) == v1, "the files live before are back"
    events = server.client.get(f"/v1/fine_tuning/jobs/{failed['id']}/events?limit=100").json()
    reported = [e for e in events["data"] if (e.get("data") or {}).get("health_check")]
    assert reported and set(reported[0]["data"]["health_check"]["mismatched"]) == set(v2)
    assert any("Rolled back" in e["message"] for e in events["data"])


def test_a_repository_the_failed_deployment_created_is_deleted(
    server: Server, versions: list[dict], hub: HubStandIn
) -> None:
    hub.corrupt = True
    try:
        failed = _deploy(server, f"{NAME}@v1", {"type": "huggingface", "repo_id": "acme/new",
                                                "endpoint": hub.url, "private": False},
                         expect="failed")
    finally:
        hub.corrupt = False
    assert "deleted" in failed["error"]["message"]
    assert "acme/new" not in hub.repos


def test_bad_hub_targets_fail_clearly_and_touch_nothing(
    server: Server, versions: list[dict], hub: HubStandIn
) -> None:
    before = {repo: dict(r["branches"]) for repo, r in hub.repos.items()}
    nowhere = f"http://127.0.0.1:{free_port()}"
    failed = _deploy(server, f"{NAME}@v1", {"type": "huggingface", "repo_id": REPO,
                                            "endpoint": nowhere}, expect="failed")
    assert failed["error"]["code"] == "deployment_failed"
    assert nowhere in failed["error"]["message"] and "unreachable" in failed["error"]["message"]
    assert {repo: dict(r["branches"]) for repo, r in hub.repos.items()} == before

    for target, param in (({"repo_id": "no-namespace"}, "repo_id"),
                          ({"repo_id": REPO, "endpoint": "ftp://x"}, "endpoint"),
                          ({"repo_id": REPO, "token": "hf_x"}, "token")):
        r = server.client.post("/v1/deployments", json={
            "model": f"{NAME}@v1", "target": {"type": "huggingface", **target}})
        assert r.status_code in (400, 422), r.text
        assert param in (r.json()["error"].get("param") or "") + r.json()["error"]["message"]
