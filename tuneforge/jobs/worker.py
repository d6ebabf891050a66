"""The worker: claims queued jobs and runs each in a process of its own.

While the process runs, the worker beats the job's heartbeat, and enforces what the process
may not manage itself: a cancel or timeout that it does not honour within the grace period
ends in a kill. When the process is gone, a job it left `running` is failed with the reason.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from tuneforge.config import Settings
from tuneforge.db.store import Row, Store
from tuneforge.errors import InvalidStateError
from tuneforge.jobs.status import JobStatus

log = logging.getLogger(__name__)


class Worker:
    """Runs queued jobs one at a time until `stop` is set."""

    def __init__(self, store: Store, settings: Settings, worker_id: str | None = None):
        self.store = store
        self.settings = settings
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.stop = threading.Event()

    def run_forever(self) -> None:
        self.store.requeue_stalled(self.settings.stalled_after_seconds)
        last_recovery = time.monotonic()
        while not self.stop.is_set():
            try:
                ran = self.run_once()
                if time.monotonic() - last_recovery > self.settings.stalled_after_seconds / 2:
                    self.store.requeue_stalled(self.settings.stalled_after_seconds)
                    last_recovery = time.monotonic()
            except Exception:  # a database hiccup must not end the worker
                log.exception("worker loop error")
                ran = False
            if not ran:
                self.stop.wait(self.settings.poll_seconds)

    def run_once(self, job_id: str | None = None) -> bool:
        """Claim and run one job (the oldest, or `job_id`) to its end; False if none was
        queued."""
        job = self.store.claim_next_job(self.worker_id, job_id)
        if job is None:
            return False
        self._supervise(job)
        return True

    def _supervise(self, job: Row) -> None:
        job_id = job["id"]
        log_path = self.settings.jobs_dir / job_id / "process.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log_file:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tuneforge.jobs.runner",
                    job_id,
                    self.settings.model_dump_json(),
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        timeout = job["spec"].get("timeout_seconds")
        hard_deadline = (
            job["started_at"] + timeout + self.settings.cancel_grace_seconds if timeout else None
        )
        cancel_seen: float | None = None
        killed_for: str | None = None
        while process.poll() is None:
            if self.stop.wait(self.settings.heartbeat_seconds):
                _kill(process)
                self._requeue_after_shutdown(job_id)
                return
            self.store.heartbeat(job_id, self.worker_id)
            now = time.time()
            if cancel_seen is None and self.store.cancel_requested(job_id):
                cancel_seen = now
            if cancel_seen and now - cancel_seen > self.settings.cancel_grace_seconds:
                killed_for = "cancelled"
            elif hard_deadline and now > hard_deadline:
                killed_for = "timeout"
            if killed_for:
                _kill(process)
        self._settle(job_id, process.returncode, killed_for, timeout)

    def _settle(
        self, job_id: str, returncode: int, killed_for: str | None, timeout: int | None
    ) -> None:
        """Give a job its final status if its process ended without doing so."""
        job = self.store.require_job(job_id)
        if job["status"] != JobStatus.RUNNING.value:
            return
        try:
            if killed_for == "cancelled" or job["cancel_requested"]:
                self.store.transition(
                    job_id,
                    JobStatus.CANCELLED,
                    "Job cancelled (process stopped).",
                    expected={JobStatus.RUNNING},
                )
            elif killed_for == "timeout":
                self._fail(
                    job_id,
                    "timeout",
                    f"The job ran longer than timeout_seconds={timeout} and was stopped.",
                )
            elif returncode in (-signal.SIGKILL, 137):
                self._fail(
                    job_id,
                    "out_of_memory",
                    "The job's process was killed (SIGKILL), most likely for lack of "
                    "memory. Try a smaller batch_size or max_seq_length.",
                )
            else:
                self._fail(
                    job_id,
                    "internal",
                    f"The job's process exited with code {returncode}; see its log.",
                )
        except InvalidStateError:
            pass  # someone else settled it meanwhile

    def _fail(self, job_id: str, code: str, message: str) -> None:
        self.store.transition(
            job_id,
            JobStatus.FAILED,
            f"Job failed: {message}",
            expected={JobStatus.RUNNING},
            level="error",
            error={"code": code, "message": message, "param": None},
        )

    def _requeue_after_shutdown(self, job_id: str) -> None:
        with contextlib.suppress(InvalidStateError):
            self.store.transition(
                job_id,
                JobStatus.QUEUED,
                "Worker shut down; job queued again.",
                expected={JobStatus.RUNNING},
                level="warning",
                worker_id=None,
            )


def _kill(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
