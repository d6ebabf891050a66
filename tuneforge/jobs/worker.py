"""The worker: claims queued jobs and runs each in a process of its own.

While the process runs, the worker renews the job's lease (its heartbeat) and enforces what
the process may not manage itself: a cancel or timeout that it does not honour within the
grace period ends in a kill. When the process is gone and left the job `running`, the run
crashed: the job is retried from its last checkpoint, or failed at `max_attempts`.

On shutdown (SIGTERM) the worker asks its job to checkpoint and waits for it; the job goes
back to the queue and continues on the next start, on this or any other worker.
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
from typing import Any

from tuneforge.config import Settings
from tuneforge.db.store import Row, Store
from tuneforge.errors import InvalidStateError, LeaseLostError
from tuneforge.jobs.status import JobStatus

log = logging.getLogger(__name__)


class Worker:
    """Runs queued jobs one at a time until `stop` is set; optionally only some job kinds,
    or only jobs for some devices."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        worker_id: str | None = None,
        *,
        kinds: list[str] | None = None,
        devices: list[str] | None = None,
    ):
        self.store = store
        self.settings = settings
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.kinds = kinds or None
        self.devices = devices or None
        self.stop = threading.Event()

    def run_forever(self) -> None:
        self.store.register_worker(
            {
                "id": self.worker_id,
                "hostname": socket.gethostname(),
                "pid": os.getpid(),
                "kinds": self.kinds,
                "devices": self.devices,
            }
        )
        last_recovery = last_beat = 0.0
        try:
            while not self.stop.is_set():
                try:
                    if time.monotonic() - last_recovery > self.settings.stalled_after_seconds / 2:
                        self.store.requeue_stalled(self.settings.stalled_after_seconds)
                        last_recovery = time.monotonic()
                    ran = self.run_once()
                    if time.monotonic() - last_beat > self.settings.heartbeat_seconds:
                        self.store.worker_alive(self.worker_id, None)
                        last_beat = time.monotonic()
                except Exception:  # a database hiccup must not end the worker
                    log.exception("worker loop error")
                    ran = False
                if not ran:
                    self.stop.wait(self.settings.poll_seconds)
        finally:
            with contextlib.suppress(Exception):
                self.store.worker_stopped(self.worker_id)

    def run_once(self, job_id: str | None = None) -> bool:
        """Claim and run one job (the oldest, or `job_id`) until its process ends; False if
        none was queued."""
        job = self.store.claim_next_job(
            self.worker_id, job_id, kinds=self.kinds, devices=self.devices
        )
        if job is None:
            return False
        self._supervise(job)
        return True

    def _supervise(self, job: Row) -> None:
        job_id, lease = job["id"], job["lease"]
        self.store.worker_alive(self.worker_id, job_id)
        log_path = self.settings.jobs_dir / job_id / "process.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        runner_args = [job_id, str(lease), self.settings.model_dump_json()]
        if _world_size(job["spec"]) > 1:
            # The ranks are the launcher's children: they watch this worker's pid themselves.
            command, extra = launch_command(job["spec"], self.settings.runner_module, runner_args)
            command.append(str(os.getpid()))
            env: dict[str, str] | None = {**os.environ, **extra}
        else:
            command = [sys.executable, "-m", self.settings.runner_module, *runner_args]
            env = None
        with log_path.open("ab") as log_file:
            process = subprocess.Popen(
                command,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        timeout = job["spec"].get("timeout_seconds")
        hard_deadline = (
            job["claimed_at"] + timeout - job["run_seconds"] + self.settings.cancel_grace_seconds
            if timeout
            else None
        )
        cancel_seen: float | None = None
        shutdown_seen: float | None = None
        killed_for: str | None = None
        while process.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=self.settings.heartbeat_seconds)
                break
            now = time.time()
            try:
                held = self.store.heartbeat(job_id, lease)
                self.store.worker_alive(self.worker_id, job_id)
            except Exception:  # the database is away: keep the process, try again
                log.exception("heartbeat failed")
                continue
            if not held:
                # Ended by its own process a moment ago (paused, requeued on shutdown), or
                # taken over by another worker: either way this run must not go on.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=5)
                if process.poll() is None:
                    log.warning("job %s is no longer held by lease %s; killing it", job_id, lease)
                    _kill(process)
                return
            if self.stop.is_set() and shutdown_seen is None:
                shutdown_seen = now
                if _world_size(job["spec"]) > 1:
                    # Not the launcher, which would end its ranks before they checkpoint.
                    _signal_ranks(process, signal.SIGTERM)
                else:
                    _signal(process, signal.SIGTERM)
            if cancel_seen is None and self.store.job_controls(job_id)["cancel_requested"]:
                cancel_seen = now
            if shutdown_seen and now - shutdown_seen > self.settings.shutdown_grace_seconds:
                killed_for = "shutdown"
            elif cancel_seen and now - cancel_seen > self.settings.cancel_grace_seconds:
                killed_for = "cancelled"
            elif hard_deadline and now > hard_deadline:
                killed_for = "timeout"
            if killed_for:
                _kill(process)
        self.store.worker_alive(self.worker_id, None)
        self._settle(job_id, lease, process.returncode, killed_for, timeout)

    def _settle(
        self,
        job_id: str,
        lease: int,
        returncode: int,
        killed_for: str | None,
        timeout: int | None,
    ) -> None:
        """Give a job its next status if its process ended without doing so."""
        job = self.store.require_job(job_id)
        if job["status"] != JobStatus.RUNNING.value or job["lease"] != lease:
            return
        try:
            if killed_for == "cancelled" or job["cancel_requested"]:
                self.store.transition(
                    job_id,
                    JobStatus.CANCELLED,
                    "Job cancelled (process stopped).",
                    expected={JobStatus.RUNNING},
                    lease=lease,
                )
            elif killed_for == "shutdown" or self.stop.is_set():
                self.store.transition(
                    job_id,
                    JobStatus.QUEUED,
                    "Worker shut down; job queued again to continue from its last checkpoint.",
                    expected={JobStatus.RUNNING},
                    lease=lease,
                    level="warning",
                    worker_id=None,
                )
            elif killed_for == "timeout":
                message = f"The job ran longer than timeout_seconds={timeout} and was stopped."
                self.store.retry_or_fail(
                    job_id, lease, {"code": "timeout", "message": message}, retry=False
                )
            elif returncode in (-signal.SIGKILL, 137):
                message = (
                    "The job's process was killed (SIGKILL), most likely for lack of memory. "
                    "Try a smaller batch_size or max_seq_length."
                )
                self.store.retry_or_fail(
                    job_id, lease, {"code": "out_of_memory", "message": message}
                )
            else:
                message = f"The job's process exited with code {returncode}; see its log."
                self.store.retry_or_fail(job_id, lease, {"code": "internal", "message": message})
        except (InvalidStateError, LeaseLostError):
            pass  # someone else settled it meanwhile


def _world_size(spec: dict[str, Any]) -> int:
    machines = (spec.get("distributed") or {}).get("num_machines", 1)
    return int(spec.get("num_processes", 1)) * int(machines)


def launch_command(
    spec: dict[str, Any], runner_module: str, runner_args: list[str]
) -> tuple[list[str], dict[str, str]]:
    """(command, environment additions) that start the job runner once per device: torch's
    launcher (torchrun) for ddp, gloo on CPU and NCCL on CUDA; `accelerate launch` with an
    Accelerate config for fsdp and deepspeed, whose `config` is passed through."""
    import json
    import tempfile

    dist = spec.get("distributed") or {}
    machines = int(dist.get("num_machines", 1))
    per_machine = int(spec.get("num_processes", 1))
    port = str(dist.get("main_process_port") or (_free_port() if machines == 1 else 29500))
    address = str(dist.get("main_process_ip") or "127.0.0.1")
    rank = str(int(dist.get("machine_rank", 0)))
    env = {}
    if spec.get("devices"):
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(d) for d in spec["devices"])
    strategy = dist.get("strategy", "ddp")
    if strategy == "ddp":
        command = [
            sys.executable, "-m", "torch.distributed.run",
            "--nproc_per_node", str(per_machine),
            "--nnodes", str(machines),
            "--node_rank", rank,
            "--master_addr", address,
            "--master_port", port,
        ]  # fmt: skip
        return [*command, "-m", runner_module, *runner_args], env
    key = "fsdp_config" if strategy == "fsdp" else "deepspeed_config"
    config = {
        "distributed_type": "FSDP" if strategy == "fsdp" else "DEEPSPEED",
        key: dist.get("config") or {},
    }
    # Accelerate reads YAML, and JSON is YAML.
    with tempfile.NamedTemporaryFile(
        "w", suffix=".yaml", prefix="tuneforge-accelerate-", delete=False
    ) as handle:
        json.dump(config, handle)
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", handle.name,
        "--num_processes", str(per_machine * machines),
        "--num_machines", str(machines),
        "--machine_rank", rank,
        "--main_process_ip", address,
        "--main_process_port", port,
    ]  # fmt: skip
    return [*command, "-m", runner_module, *runner_args], env


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _signal(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


def _signal_ranks(process: subprocess.Popen[bytes], signum: int) -> None:
    # A launcher's ranks run in sessions of their own (torch's elastic agent starts them so).
    import psutil

    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(process.pid).children():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signum)


def _kill(process: subprocess.Popen[bytes]) -> None:
    _signal_ranks(process, signal.SIGKILL)
    _signal(process, signal.SIGKILL)
    process.wait()
