"""A real `tuneforge serve` beyond loopback: it refuses to start without keys; with keys made
by `tuneforge keys`, it serves only requests that carry one (the `openai` client included)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.server import Server
from tuneforge.net import free_port


def tuneforge(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TUNEFORGE_HOME=str(home), COLUMNS="250")
    return subprocess.run([sys.executable, "-m", "tuneforge.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_exposed_server_runs_only_behind_keys(tmp_path: Path) -> None:
    home = tmp_path / "tuneforge-data"
    refused = tuneforge(home, "serve", "--host", "0.0.0.0", "--port", str(free_port()))
    assert refused.returncode == 1
    assert "Refusing to listen on 0.0.0.0" in refused.stderr
    assert "tuneforge keys create" in refused.stderr

    bad = tuneforge(home, "keys", "create", "--name", "x", "--scope", "root")
    assert bad.returncode != 0
    created = tuneforge(home, "keys", "create", "--name", "ops", "--scope", "admin")
    assert created.returncode == 0, created.stderr
    admin = created.stdout.strip()
    assert admin.startswith("tf-") and "\n" not in admin
    read = tuneforge(home, "keys", "create", "--name", "viewer", "--scope", "read").stdout.strip()
    listing = tuneforge(home, "keys", "list").stdout
    assert "ops" in listing and "viewer" in listing
    assert admin not in listing and read not in listing
    viewer_line = next(line for line in listing.splitlines() if "viewer" in line)
    read_id = re.search(r"key-[0-9a-f]+", viewer_line).group(0)

    server = Server(home, args=("--host", "0.0.0.0"),
                    headers={"Authorization": f"Bearer {admin}"})
    try:
        plain = httpx.Client(base_url=server.url, timeout=30)
        r = plain.get("/v1/models")
        assert (r.status_code, r.json()["error"]["code"]) == (401, "missing_api_key")
        assert server.client.get("/v1/models").status_code == 200
        r = server.client.get("/v1/models", headers={"Host": "evil.example"})
        assert (r.status_code, r.json()["error"]["code"]) == (400, "host_not_allowed")

        # The openai client sends its key as a Bearer token.
        good = openai.OpenAI(base_url=server.url + "/v1", api_key=admin, max_retries=0)
        assert good.models.list().object == "list"
        wrong = openai.OpenAI(base_url=server.url + "/v1", api_key="tf-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.models.list()
        viewer = openai.OpenAI(base_url=server.url + "/v1", api_key=read, max_retries=0)
        with pytest.raises(openai.PermissionDeniedError):
            viewer.files.create(file=("p.jsonl", b'{"anchor": "a", "positive": "b"}\n' * 3),
                                purpose="fine-tune")

        revoked = tuneforge(home, "keys", "revoke", read_id)
        assert revoked.returncode == 0, revoked.stderr
        assert tuneforge(home, "keys", "revoke", read_id).returncode == 1
        deadline = time.monotonic() + 15
        while plain.get("/v1/models", headers={"Authorization": f"Bearer {read}"}
                        ).status_code != 401:
            assert time.monotonic() < deadline, "a revoked key still works"
            time.sleep(0.2)

        audit = server.client.get("/v1/audit").json()["data"]
        assert [(e["method"], e["path"], e["status"]) for e in audit] == []  # no writes yet
        file_id = server.upload(_pairs(tmp_path))["id"]
        audit = server.client.get("/v1/audit").json()["data"]
        assert [(e["method"], e["path"], e["resource_id"]) for e in audit] == [
            ("POST", "/v1/files", file_id)]
        assert audit[0]["actor"].startswith("key-")
    finally:
        server.stop()


def _pairs(tmp_path: Path) -> Path:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(f'{{"anchor": "q {i}", "positive": "a {i}"}}\n' for i in range(4)))
    return path
