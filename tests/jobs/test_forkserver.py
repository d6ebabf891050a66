"""The warm job process: a forked job is a process of its own that the worker supervises as
before (exit status, signals to its session, its log, its environment); a job the fork server
cannot start starts cold; a worker forks its single-process jobs and ends its server when it
stops."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.jobs.conftest import add_job
from tuneforge.config import Settings
from tuneforge.db.store import Store
from tuneforge.jobs.forkserver import UNKNOWN_EXIT, ForkedJob, ForkServer, JobProcess
from tuneforge.jobs.status import JobStatus
from tuneforge.jobs.worker import Worker, _kill, _signal

PROBE = "tests.jobs.probe_runner"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = Settings(home=tmp_path / "data", runner_module=PROBE)
    settings.ensure_dirs()
    return settings


@contextmanager
def serving(settings: Settings) -> Iterator[ForkServer]:
    """A fork server for the probe runner."""
    server = ForkServer(PROBE, len(settings.model_dump_json()) + 100)
    server.start()
    try:
        yield server
    finally:
        server.close()


def start(server: ForkServer, settings: Settings, job_id: str, action: str = "exit 0"
          ) -> tuple[JobProcess, Path]:
    folder = settings.jobs_dir / job_id
    folder.mkdir(parents=True)
    (folder / "probe-action").write_text(action)
    command = [sys.executable, "-m", PROBE, job_id, "1", settings.model_dump_json()]
    return server.start_job(command, folder / "process.log"), folder


def probe(folder: Path, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while not (folder / "probe.json").exists():
        assert time.monotonic() < deadline, "the job process did not run"
        time.sleep(0.02)
    return json.loads((folder / "probe.json").read_text())


def alive(pid: int) -> bool:
    try:
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False


def test_a_forked_job_is_a_process_of_its_own(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    with serving(settings) as server:
        process, folder = start(server, settings, "ftjob-first")
        assert isinstance(process, ForkedJob)
        assert process.wait(timeout=120) == 0 and process.poll() == 0
        seen = probe(folder)
        # Its own session, forked by the server; the arguments and command line of a cold
        # start; its output in its log; gone once it has ended.
        assert seen["pid"] == process.pid == seen["session"]
        assert seen["parent"] == server.pid != os.getpid()
        assert seen["argv"] == ["ftjob-first", "1", settings.model_dump_json()]
        assert seen["cmdline"] == [sys.executable, "-m", PROBE, *seen["argv"]]
        assert (folder / "process.log").read_text() == "probe of ftjob-first ran\n"
        assert not alive(seen["pid"])

        # The worker's environment and folder of the moment.
        monkeypatch.setenv("TUNEFORGE_TEST_PER_JOB", "yes")
        monkeypatch.chdir(settings.home)
        process, folder = start(server, settings, "ftjob-second")
        assert process.wait(timeout=120) == 0
        seen = probe(folder)
        assert seen["env"] == dict(os.environ) and seen["cwd"] == str(settings.home)
        assert seen["parent"] == server.pid


def test_exit_status_and_signals_reach_the_worker(settings: Settings) -> None:
    """Exit codes, SIGTERM to the job's session and the worker's kill, as from Popen."""
    with serving(settings) as server:
        process, _ = start(server, settings, "ftjob-three", "exit 3")
        assert process.wait(timeout=120) == 3

        process, folder = start(server, settings, "ftjob-term", "wait")
        probe(folder)
        assert process.poll() is None
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(timeout=0.2)
        _signal(process, signal.SIGTERM)  # to its session, as on the worker's shutdown
        assert process.wait(timeout=60) == -signal.SIGTERM

        process, folder = start(server, settings, "ftjob-kill", "wait")
        pid = probe(folder)["pid"]
        _kill(process)  # as on a cancel past its grace period
        assert process.returncode == -signal.SIGKILL and not alive(pid)

        # A service manager's SIGTERM to all its processes leaves the server to its worker.
        assert server.pid is not None
        os.kill(server.pid, signal.SIGTERM)
        process, folder = start(server, settings, "ftjob-after-term")
        assert process.wait(timeout=120) == 0 and probe(folder)["parent"] == server.pid


def test_a_job_starts_cold_when_the_server_cannot(settings: Settings) -> None:
    with serving(settings) as server:
        # It ends before it is ready: this job, and the next, start cold and still run.
        assert server.pid is not None
        os.kill(server.pid, signal.SIGKILL)
        process, folder = start(server, settings, "ftjob-cold")
        assert process.wait(timeout=120) == 0
        assert probe(folder)["parent"] == os.getpid()
        process, folder = start(server, settings, "ftjob-cold-again")
        assert not isinstance(process, ForkedJob)
        assert process.wait(timeout=120) == 0 and probe(folder)["parent"] == os.getpid()


def test_a_job_whose_server_ends_is_still_supervised(settings: Settings) -> None:
    with serving(settings) as server:
        process, folder = start(server, settings, "ftjob-orphan", "wait")
        pid = probe(folder)["pid"]
        assert server.pid is not None
        os.kill(server.pid, signal.SIGKILL)  # its exit status is lost with it
        with pytest.raises(subprocess.TimeoutExpired):  # sees the server end, not the job
            process.wait(timeout=1)
        _signal(process, signal.SIGKILL)
        assert process.wait(timeout=60) == UNKNOWN_EXIT and not alive(pid)


@pytest.mark.parametrize("warm", [True, False])
def test_a_worker_forks_its_jobs_and_ends_its_server(
        store: Store, tmp_path: Path, warm: bool) -> None:
    settings = Settings(home=tmp_path / "data", database_url=store.url, warm_start=warm,
                        runner_module="tests.jobs.quick_runner", poll_seconds=0.05)
    settings.ensure_dirs()
    worker = Worker(store, settings, "w")
    thread = threading.Thread(target=worker.run_forever)
    thread.start()
    try:
        job_ids = [add_job(store), add_job(store)]
        deadline = time.monotonic() + 120
        while store.count_jobs().get("succeeded", 0) < len(job_ids):
            assert time.monotonic() < deadline, store.count_jobs()
            time.sleep(0.05)
        server = worker._forkserver.pid
    finally:
        worker.stop.set()
        thread.join(timeout=60)
    parents = set()
    for job_id in job_ids:
        assert store.require_job(job_id)["status"] == JobStatus.SUCCEEDED.value
        events, _ = store.list_events(job_id, limit=100, newest_first=False)
        parents |= {e["data"]["parent"] for e in events if (e["data"] or {}).get("ran")}
    # Forked by the worker's one server, or started by the worker itself.
    assert parents == ({server} if warm else {os.getpid()})
    if warm:
        assert server is not None and not alive(server)
    assert worker._forkserver.pid is None
