"""A real `tuneforge serve` on a free port, with an HTTP client for it: the tests' fixtures
start one (tests/conftest.py), and so does the service benchmark (bench/service.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Collection, Mapping
from pathlib import Path

import httpx

from tuneforge.jobs.status import TERMINAL
from tuneforge.net import free_port

# What the tests' servers change: a cancelled job that does not stop is killed after 10 s,
# not the default 15.
TEST_ENV = {"TUNEFORGE_CANCEL_GRACE_SECONDS": "10"}


class Server:
    """A running `tuneforge serve` and an HTTP client for it.

    Its database is `database_url`'s, or SQLite in `home`; never one named by this process's
    DATABASE_URL or TUNEFORGE_DATABASE_URL. `env`: variables for the server besides this
    process's (the tests' by default); `args`: more options of `tuneforge serve`."""

    def __init__(self, home: Path, database_url: str | None = None,
                 args: tuple[str, ...] = (), headers: dict[str, str] | None = None,
                 env: Mapping[str, str] = TEST_ENV):
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("DATABASE_URL", "TUNEFORGE_DATABASE_URL")}
        self.env.update(env, TUNEFORGE_HOME=str(home))
        if database_url:
            self.env["DATABASE_URL"] = database_url
        self.log = (home.parent / f"server-{self.port}.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tuneforge.cli", "serve", "--port", str(self.port), *args],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT, cwd=str(home.parent))
        # `headers`: e.g. an API key's Authorization, for a server that needs one.
        self.client = httpx.Client(base_url=self.url, timeout=60, headers=headers)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if self.client.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
            if self.process.poll() is not None:
                break
        raise RuntimeError(f"tuneforge serve did not start; see {self.log.name}")

    def upload(self, path: Path, name: str | None = None) -> dict:
        with path.open("rb") as f:
            r = self.client.post("/v1/files", files={"file": (name or path.name, f)},
                                 data={"purpose": "fine-tune"})
        assert r.status_code == 200, r.text
        return r.json()

    def wait_for(self, job_id: str, statuses: Collection[str] = TERMINAL,
                 timeout: float = 300, poll: float = 0.5,
                 resource: str = "/v1/fine_tuning/jobs") -> dict:
        """The job once its status is one of `statuses`, asked for every `poll` seconds at
        `resource`/`job_id` (fine-tuning jobs, or /v1/exports, /v1/model_imports ...)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.client.get(f"{resource}/{job_id}").json()
            if job["status"] in statuses:
                return job
            time.sleep(poll)
        raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s")

    def stop(self) -> None:
        """SIGTERM, as a service manager would; a second call does nothing."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.client.close()
        self.log.close()
