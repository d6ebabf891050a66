"""The README runs as written: its blocks marked `<!-- readme-test: NAME -->` are run by bash,
in order, against a real server, as a newcomer would run them: a base model made available
the README's offline way (TUNEFORGE_MODEL_DIRS, with an empty Hugging Face cache and the Hub
off), the curl walk-through from upload to a registered model with an alias, and the
embeddings request that uses it. The only change: `localhost:8000` becomes the test server's
port. Any HTTP error of a curl fails the test (curl runs with --fail-with-body)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DATA, ROOT
from tests.server import TEST_ENV, Server

MARKED = re.compile(r"<!-- readme-test: ([\w-]+) -->\n```bash\n(.*?)\n```", re.S)
# curl answers an HTTP error with exit code 22 (and still prints the body); under `set -e` it
# ends the script there.
PRELUDE = "set -euo pipefail\ncurl() { command curl --fail-with-body \"$@\"; }\n"


def readme_blocks() -> dict[str, str]:
    return dict(MARKED.findall((ROOT / "README.md").read_text(encoding="utf-8")))


def run_block(script: str, cwd: Path, env: dict[str, str], port: int | None = None,
              timeout: float = 300) -> str:
    if port is not None:
        script = script.replace("localhost:8000", f"127.0.0.1:{port}")
    done = subprocess.run(["bash", "-c", PRELUDE + script], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr}"
    return done.stdout


def test_the_readme_blocks_are_found() -> None:
    assert set(readme_blocks()) == {"offline-model", "walkthrough", "use-model"}


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("jq") is None, reason="the walk-through reads ids with jq")
def test_the_walkthrough_runs_as_written(tmp_path: Path) -> None:
    blocks = readme_blocks()
    # A checkout as the README expects it: the repository (.venv set up) beside ../shared.
    checkout = tmp_path / "tuneforge"
    checkout.mkdir()
    (checkout / ".venv").symlink_to(Path(sys.prefix))
    (tmp_path / "shared").symlink_to(DATA.parent)
    empty_cache = tmp_path / "hf-home"
    empty_cache.mkdir()
    env = {**os.environ, "HF_HOME": str(empty_cache), "PYTHONPATH": str(ROOT)}
    env.pop("TUNEFORGE_MODEL_DIRS", None)

    # The offline model: the block exports the variables the server then starts with.
    run_block(blocks["offline-model"] + "\nprintf '%s' \"$TUNEFORGE_MODEL_DIRS\" > .dirs",
              checkout, env)
    dirs = (checkout / ".dirs").read_text()
    assert dirs == str(checkout / "models")
    server_env = {**TEST_ENV, "HF_HOME": str(empty_cache), "TUNEFORGE_MODEL_DIRS": dirs,
                  "HF_HUB_OFFLINE": "1"}
    server = Server(checkout / "tuneforge-data", env=server_env)
    try:
        out = run_block(blocks["walkthrough"], checkout, env, server.port)
        job = server.client.get(
            f"/v1/fine_tuning/jobs/{json.loads((checkout / 'job.json').read_text())['id']}"
        ).json()
        assert job["status"] == "succeeded", job
        assert '"status":"processed"' in out.replace(" ", "")
        alias = server.client.get("/v1/registered_models/sts-minilm").json()
        assert alias["aliases"] == {"production": 1} or "production" in str(alias["aliases"])

        answer = json.loads(run_block(blocks["use-model"], checkout, env, server.port))
        assert answer["model"] == "sts-minilm@production"
        assert [len(d["embedding"]) for d in answer["data"]] == [128, 128]
    finally:
        server.stop()
